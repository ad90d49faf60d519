//! Compartments: numbering, size classes and the occupancy lifecycle.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::TransitionError;

/// A compartment number as printed on its door: 1 to 999.
///
/// Zero is unrepresentable on purpose: on common RS-485 lock boards channel 0 means "open every
/// door", so no number that could become channel 0 may exist (DESIGN.md §3, "Lock boards").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct CompartmentNumber(u16);

/// The highest compartment number a bank may have.
pub const MAX_COMPARTMENT_NUMBER: u16 = 999;

/// A compartment number outside 1–999.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compartment number must be between 1 and {MAX_COMPARTMENT_NUMBER}")]
pub struct CompartmentNumberError;

impl CompartmentNumber {
    /// Parses a compartment number.
    pub fn new(n: u16) -> Result<Self, CompartmentNumberError> {
        if (1..=MAX_COMPARTMENT_NUMBER).contains(&n) {
            Ok(Self(n))
        } else {
            Err(CompartmentNumberError)
        }
    }

    /// The number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u16> for CompartmentNumber {
    type Error = CompartmentNumberError;
    fn try_from(n: u16) -> Result<Self, Self::Error> {
        Self::new(n)
    }
}

impl From<CompartmentNumber> for u16 {
    fn from(n: CompartmentNumber) -> u16 {
        n.0
    }
}

impl fmt::Display for CompartmentNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Declares a closed enum with a stable lower-case name for storage, JSON and the audit log.
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The stable name used in storage, JSON and the audit log.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)+ }
            }

            /// Parses a stable name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use named_enum;

named_enum!(
    /// How big a compartment is; a parcel fits its own class and every larger one.
    SizeClass {
        /// Letters and small boxes.
        Small = "small",
        /// Shoe boxes.
        Medium = "medium",
        /// Large boxes.
        Large = "large",
        /// Bulky items.
        ExtraLarge = "extra_large",
    }
);

named_enum!(
    /// Whether a compartment can take a parcel.
    CompartmentState {
        /// Empty and available.
        Free = "free",
        /// Held for one deposit that is under way.
        Reserved = "reserved",
        /// Holds a parcel.
        Occupied = "occupied",
        /// Taken out of use by staff (broken lock, cleaning).
        OutOfService = "out_of_service",
    }
);

named_enum!(
    /// What the door sensor last reported. Commanded state is never taken for sensed state: after
    /// an unlock command the door stays `Unknown` until the sensor says otherwise.
    DoorState {
        /// The sensor reports the door open.
        Open = "open",
        /// The sensor reports the door closed.
        Closed = "closed",
        /// No trustworthy reading (never reported, sensor fault, or an unlock is in flight).
        Unknown = "unknown",
    }
);

/// What can happen to a compartment's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompartmentEvent {
    /// A deposit reserves it.
    Reserve,
    /// The deposit was abandoned or timed out.
    ReleaseReservation,
    /// The courier confirmed the parcel is inside.
    Occupy,
    /// The parcel left (picked up, returned, retrieved).
    Vacate,
    /// Staff take it out of service.
    TakeOutOfService,
    /// Staff put it back in service.
    ReturnToService,
}

impl CompartmentEvent {
    /// The event's name, as in the audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::ReleaseReservation => "release_reservation",
            Self::Occupy => "occupy",
            Self::Vacate => "vacate",
            Self::TakeOutOfService => "take_out_of_service",
            Self::ReturnToService => "return_to_service",
        }
    }
}

impl CompartmentState {
    /// The state after `event`, or an error when the event makes no sense now.
    pub fn apply(self, event: CompartmentEvent) -> Result<Self, TransitionError> {
        use CompartmentEvent as E;
        use CompartmentState as S;
        match (self, event) {
            (S::Free, E::Reserve) => Ok(S::Reserved),
            (S::Reserved, E::ReleaseReservation)
            | (S::Occupied, E::Vacate)
            | (S::OutOfService, E::ReturnToService) => Ok(S::Free),
            (S::Reserved, E::Occupy) => Ok(S::Occupied),
            (S::Free, E::TakeOutOfService) => Ok(S::OutOfService),
            (from, event) => Err(TransitionError {
                entity: "compartment",
                event: event.as_str(),
                from: from.as_str(),
            }),
        }
    }
}

impl SizeClass {
    /// Whether a parcel of class `self` fits a compartment of class `compartment`.
    pub fn fits_in(self, compartment: SizeClass) -> bool {
        self <= compartment
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CompartmentEvent as E;
    use CompartmentState as S;

    #[test]
    fn numbers_exclude_zero() {
        assert!(CompartmentNumber::new(0).is_err());
        assert!(CompartmentNumber::new(1000).is_err());
        assert_eq!(CompartmentNumber::new(12).unwrap().get(), 12);
        assert!(serde_json::from_str::<CompartmentNumber>("0").is_err());
    }

    /// Every (state, event) pair: the allowed ones give exactly this next state, all others fail
    /// and name the state they left untouched.
    #[test]
    fn lifecycle_table() {
        let allowed = [
            (S::Free, E::Reserve, S::Reserved),
            (S::Reserved, E::ReleaseReservation, S::Free),
            (S::Reserved, E::Occupy, S::Occupied),
            (S::Occupied, E::Vacate, S::Free),
            (S::Free, E::TakeOutOfService, S::OutOfService),
            (S::OutOfService, E::ReturnToService, S::Free),
        ];
        let events = [
            E::Reserve,
            E::ReleaseReservation,
            E::Occupy,
            E::Vacate,
            E::TakeOutOfService,
            E::ReturnToService,
        ];
        for &state in S::ALL {
            for event in events {
                let expected =
                    allowed.iter().find(|(s, e, _)| *s == state && *e == event).map(|t| t.2);
                match (state.apply(event), expected) {
                    (Ok(next), Some(want)) => assert_eq!(next, want),
                    (Err(err), None) => assert_eq!(err.from, state.as_str()),
                    (got, want) => panic!("{state:?} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn size_classes_fit_upwards() {
        assert!(SizeClass::Small.fits_in(SizeClass::Large));
        assert!(SizeClass::Large.fits_in(SizeClass::Large));
        assert!(!SizeClass::ExtraLarge.fits_in(SizeClass::Medium));
        for &s in SizeClass::ALL {
            assert_eq!(SizeClass::parse(s.as_str()), Some(s));
        }
    }
}
