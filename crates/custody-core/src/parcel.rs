//! The parcel lifecycle: the chain of custody as a state machine (DESIGN.md §1).
//!
//! ```text
//! expected ──deposit──▶ deposited ──notify──▶ notified ──pick_up──▶ picked_up
//!                           │                    │
//!                           └──────expire────────┴──▶ expired ──return_to_carrier──▶ returned
//!                           │                    │       │
//!                           └──────────────retrieve──────┴──▶ retrieved   (staff, with a reason)
//! ```
//!
//! Every arrow is a custody event: it moves responsibility for the parcel from one party to
//! another and is recorded in the audit log in the same transaction.

use crate::TransitionError;
use crate::compartment::named_enum;

named_enum!(
    /// Where a parcel is in its chain of custody.
    ParcelState {
        /// Announced by the carrier; not in a locker yet.
        Expected = "expected",
        /// In a compartment; the recipient has not been told yet.
        Deposited = "deposited",
        /// In a compartment; the recipient has a pickup code.
        Notified = "notified",
        /// Collected by the recipient. Final.
        PickedUp = "picked_up",
        /// The pickup window passed; waiting for the carrier or staff to take it out.
        Expired = "expired",
        /// Taken back by the carrier. Final.
        Returned = "returned",
        /// Taken out by staff. Final.
        Retrieved = "retrieved",
    }
);

named_enum!(
    /// What can happen to a parcel.
    ParcelEvent {
        /// A courier placed it in a compartment and closed the door.
        Deposit = "deposit",
        /// The recipient was sent a pickup code.
        Notify = "notify",
        /// The recipient collected it.
        PickUp = "pick_up",
        /// The pickup window passed.
        Expire = "expire",
        /// The carrier took it back.
        ReturnToCarrier = "return_to_carrier",
        /// Staff took it out.
        Retrieve = "retrieve",
    }
);

impl ParcelState {
    /// The state after `event`, or an error when the event makes no sense now.
    pub fn apply(self, event: ParcelEvent) -> Result<Self, TransitionError> {
        use ParcelEvent as E;
        use ParcelState as S;
        match (self, event) {
            (S::Expected, E::Deposit) => Ok(S::Deposited),
            (S::Deposited, E::Notify) => Ok(S::Notified),
            (S::Notified, E::PickUp) => Ok(S::PickedUp),
            (S::Deposited | S::Notified, E::Expire) => Ok(S::Expired),
            (S::Expired, E::ReturnToCarrier) => Ok(S::Returned),
            (S::Deposited | S::Notified | S::Expired, E::Retrieve) => Ok(S::Retrieved),
            (from, event) => Err(TransitionError {
                entity: "parcel",
                event: event.as_str(),
                from: from.as_str(),
            }),
        }
    }

    /// Whether the parcel is physically in a compartment.
    pub fn is_in_locker(self) -> bool {
        matches!(self, Self::Deposited | Self::Notified | Self::Expired)
    }

    /// Whether nothing more can happen to the parcel.
    pub fn is_final(self) -> bool {
        matches!(self, Self::PickedUp | Self::Returned | Self::Retrieved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ParcelEvent as E;
    use ParcelState as S;

    const ALLOWED: &[(S, E, S)] = &[
        (S::Expected, E::Deposit, S::Deposited),
        (S::Deposited, E::Notify, S::Notified),
        (S::Notified, E::PickUp, S::PickedUp),
        (S::Deposited, E::Expire, S::Expired),
        (S::Notified, E::Expire, S::Expired),
        (S::Expired, E::ReturnToCarrier, S::Returned),
        (S::Deposited, E::Retrieve, S::Retrieved),
        (S::Notified, E::Retrieve, S::Retrieved),
        (S::Expired, E::Retrieve, S::Retrieved),
    ];

    /// All 42 (state, event) pairs: exactly the nine above succeed.
    #[test]
    fn lifecycle_table() {
        for &state in S::ALL {
            for &event in E::ALL {
                let want = ALLOWED.iter().find(|(s, e, _)| *s == state && *e == event).map(|t| t.2);
                match (state.apply(event), want) {
                    (Ok(next), Some(w)) => assert_eq!(next, w),
                    (Err(e), None) => {
                        assert_eq!(
                            (e.entity, e.event, e.from),
                            ("parcel", event.as_str(), state.as_str())
                        );
                    }
                    (got, want) => panic!("{state} + {event}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn final_states_accept_nothing() {
        for &state in S::ALL.iter().filter(|s| s.is_final()) {
            assert!(E::ALL.iter().all(|&e| state.apply(e).is_err()));
            assert!(!state.is_in_locker());
        }
    }

    #[test]
    fn names_round_trip() {
        for &s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
        assert_eq!(S::parse("lost"), None);
    }
}
