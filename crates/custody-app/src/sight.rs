//! What each caller may see of a parcel they may see at all.
//!
//! A carrier announces parcels by e-mail address, and an address that matches no resident is
//! accepted like any other (`unaddressed`), so what a carrier sees of any parcel must be the
//! same whether or not a resident was found: never who it is for, nor whether and when they
//! were told. The recipient, the site's staff and its auditors see the parcel as it is.

use crate::parcels::Parcel;
use custody_core::audit::AuditAction;
use custody_core::parcel::ParcelState;
use custody_core::policy;

use crate::Caller;

/// How a parcel with no recipient names its recipient to those who may see it.
pub const UNADDRESSED: &str = "nobody named yet (held for the site's staff)";

/// A parcel as `caller`, already allowed to see it, may see it. A carrier's couriers and keys
/// see neither who it is for nor whether and when anyone was told: a parcel waiting for its
/// recipient reads `deposited` to them, as does a parcel nobody could be told about.
pub fn as_seen_by(caller: &Caller, mut p: Parcel) -> Parcel {
    if caller.check(policy::may_see_recipient).is_err() {
        p.recipient = None;
        p.notified_at = None;
        if p.state == ParcelState::Notified {
            p.state = ParcelState::Deposited;
        }
    }
    p
}

/// The entries of a parcel's chain of custody `caller` may see: all of them, except that a
/// carrier sees only its own part ([`policy::carrier_sees`]).
pub(crate) fn entries_seen_by<T>(
    caller: &Caller,
    entries: Vec<T>,
    action: impl Fn(&T) -> AuditAction,
) -> Vec<T> {
    if caller.check(policy::may_see_recipient).is_ok() {
        return entries;
    }
    entries.into_iter().filter(|e| policy::carrier_sees(action(e))).collect()
}
