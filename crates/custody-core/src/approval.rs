//! Requests that a second person must approve before they run (ASVS 2.3.5): what they are,
//! how long they wait, and who may answer them.

use std::time::Duration;

use crate::compartment::named_enum;
use crate::time::{hours, minutes};

named_enum!(
    /// What a request would do.
    ApprovalKind {
        /// Make a person super-admin.
        GrantSuperAdmin = "grant_super_admin",
        /// Open more compartments of a bank at once than one person may alone.
        BulkOpen = "bulk_open",
        /// Lift a bank's lockdown.
        LiftLockdown = "lift_lockdown",
        /// Open one compartment remotely past the remote-open budget.
        RemoteOpen = "remote_open",
        /// Take a parcel out of its compartment past the remote-open budget.
        Retrieve = "retrieve",
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

/// How many doors may be opened without a parcel's own credential (remote opens, bulk opens,
/// retrievals) before every further one waits for a second person: per opener and per bank,
/// over a sliding window. An approved open counts too, so the doors that follow it wait as
/// well. The derivation of the defaults is in `docs/SECURITY.md` ("Opening many doors needs
/// two people").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteOpenBudget {
    /// Doors one person (or key) opens alone in a window, at any bank.
    pub per_opener: u32,
    /// Doors opened alone at one bank in a window, by anyone.
    pub per_bank: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for RemoteOpenBudget {
    fn default() -> Self {
        Self { per_opener: 4, per_bank: 8, window: hours(24) }
    }
}

impl RemoteOpenBudget {
    /// Whether `doors` more may open alone, given what the window already holds.
    pub fn allows(&self, opened_by_opener: u32, opened_at_bank: u32, doors: u32) -> bool {
        opened_by_opener.saturating_add(doors) <= self.per_opener
            && opened_at_bank.saturating_add(doors) <= self.per_bank
    }

    /// Checks the settings: at least one door alone (else staff could open nothing without a
    /// colleague, and would learn to approve without looking), the bank's budget at least one
    /// person's, and a window between an hour and a week.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.per_opener == 0 || self.per_bank < self.per_opener {
            return Err("per_opener must be at least 1 and per_bank at least per_opener");
        }
        if usize::try_from(self.per_bank).map_or(true, |n| n > BULK_OPEN_MAX) {
            return Err("per_bank must be at most 64, what one approved bulk open may name");
        }
        if self.window < hours(1) || self.window > hours(24 * 7) {
            return Err("the window must be between 1 and 168 hours");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_opener_and_bank_together() {
        let budget = RemoteOpenBudget::default();
        assert!(budget.allows(0, 0, 4));
        assert!(!budget.allows(0, 0, 5), "one person alone opens at most four");
        assert!(budget.allows(3, 7, 1));
        assert!(!budget.allows(3, 8, 1), "the bank's budget is spent by anyone's opens");
        assert!(!budget.allows(4, 0, 1));
        assert!(budget.validate().is_ok());
        for bad in [
            RemoteOpenBudget { per_opener: 0, ..budget },
            RemoteOpenBudget { per_bank: 3, ..budget },
            RemoteOpenBudget { per_bank: 65, per_opener: 4, ..budget },
            RemoteOpenBudget { window: minutes(59), ..budget },
            RemoteOpenBudget { window: hours(169), ..budget },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
