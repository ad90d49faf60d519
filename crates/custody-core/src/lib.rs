//! The Custody domain: what a locker site is, what may happen to it, and who may make it happen.
//!
//! **Architecture Invariant:** this crate does no I/O. It reads neither the clock nor a random
//! number generator: callers pass `now` and random bytes in. It depends on no async runtime,
//! database, web or TLS crate (the tidy test in `custody-cli/tests/tidy.rs` checks this), so every
//! rule here is tested exhaustively with plain values.

pub mod alert;
pub mod approval;
pub mod audit;
pub mod badge;
pub mod breach;
pub mod code;
pub mod compartment;
pub mod id;
pub mod parcel;
pub mod person;
pub mod policy;
pub mod site;
pub mod text;
pub mod throttle;
pub mod time;
pub mod token;

pub use id::{
    AlertId, ApiKeyId, ApprovalId, BadgeId, BankId, BreachId, CarrierId, CodeId, CompartmentId,
    DeliveryId, DeviceId, EndpointId, MessageId, OrgId, ParcelId, PersonId, SessionId, SiteId,
    TokenId,
};
pub use time::{Clock, ManualClock, Timestamp};

/// An attempted lifecycle transition that the lifecycle does not allow.
///
/// Lifecycles never ignore an event silently: a transition that makes no sense from the current
/// state is this error, and the caller decides what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entity} cannot {event} when it is {from}")]
pub struct TransitionError {
    /// What kind of thing was asked to change (`"parcel"`, `"compartment"`).
    pub entity: &'static str,
    /// The event's name, as in the audit log.
    pub event: &'static str,
    /// The state it was in, which stays unchanged.
    pub from: &'static str,
}
