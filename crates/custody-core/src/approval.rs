//! Requests that a second person must approve before they run (ASVS 2.3.5): what they are,
//! how long they wait, and who may answer them.

use std::time::Duration;

use crate::compartment::named_enum;
use crate::time::minutes;

named_enum!(
    /// What a request would do.
    ApprovalKind {
        /// Make a person super-admin.
        GrantSuperAdmin = "grant_super_admin",
        /// Open more compartments of a bank at once than one person may alone.
        BulkOpen = "bulk_open",
        /// Lift a bank's lockdown.
        LiftLockdown = "lift_lockdown",
    }
);

named_enum!(
    /// How a request was answered.
    ApprovalOutcome {
        /// Approved, and run in the same unit of work.
        Approved = "approved",
        /// Turned down (or withdrawn by the person who asked).
        Rejected = "rejected",
    }
);

/// How long a request waits for its second person.
pub const APPROVAL_TTL: Duration = minutes(15);

/// A bulk open of more compartments than this needs a second person's approval.
pub const BULK_OPEN_ALONE: usize = 3;

/// The most compartments one bulk open may name.
pub const BULK_OPEN_MAX: usize = 64;
