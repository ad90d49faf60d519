//! Opaque identifiers.
//!
//! Every object a client can name has a random 128-bit id written as a short type prefix and
//! 26 lower-case base32 characters (`prc_…` for a parcel). Ids carry no sequence and no
//! meaning, so they reveal neither how many parcels a site handles nor which came first, and
//! guessing one is hopeless (ASVS 8.2.2: data-level access is still checked on every use).
//! The prefix makes a pasted id of the wrong kind a clear error instead of a silent miss.

use std::fmt;

use data_encoding::{Encoding, Specification};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string does not start with the kind's prefix and an underscore.
    #[error("expected an id starting with `{expected}_`")]
    WrongPrefix {
        /// The prefix this kind of id uses.
        expected: &'static str,
    },
    /// The part after the prefix is not 26 characters of lower-case base32.
    #[error("malformed id")]
    Malformed,
}

/// Number of random bytes in every id.
pub const ID_BYTES: usize = 16;
const ENCODED_LEN: usize = 26;

/// Built once: building an encoding from its specification costs more than using it.
static ENCODING: std::sync::LazyLock<Encoding> = std::sync::LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    // Non-canonical trailing bits are rejected, so one id has exactly one spelling.
    spec.check_trailing_bits = true;
    // The specification is a constant valid alphabet of 32 distinct symbols.
    #[allow(clippy::expect_used, reason = "the alphabet above is a fixed, valid base32 set")]
    spec.encoding().expect("valid base32 alphabet")
});

fn encoding() -> &'static Encoding {
    &ENCODING
}

fn encode(prefix: &str, bytes: &[u8; ID_BYTES]) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + ENCODED_LEN);
    out.push_str(prefix);
    out.push('_');
    out.push_str(&encoding().encode(bytes));
    out
}

fn parse(prefix: &'static str, s: &str) -> Result<[u8; ID_BYTES], IdError> {
    let rest = s
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .ok_or(IdError::WrongPrefix { expected: prefix })?;
    if rest.len() != ENCODED_LEN {
        return Err(IdError::Malformed);
    }
    let decoded = encoding().decode(rest.as_bytes()).map_err(|_| IdError::Malformed)?;
    decoded.try_into().map_err(|_| IdError::Malformed)
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix that marks this kind of id.
            pub const PREFIX: &'static str = $prefix;

            /// Makes an id from 16 bytes of the caller's CSPRNG.
            pub fn from_random(bytes: [u8; ID_BYTES]) -> Self {
                Self(encode($prefix, &bytes))
            }

            /// Parses an id a client or the store handed over.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                parse($prefix, s).map(|b| Self::from_random(b))
            }

            /// The id's 16 bytes, for compact binary forms (signed QR tokens).
            pub fn to_bytes(&self) -> [u8; ID_BYTES] {
                // Every value of this type was made by `encode` or checked by `parse`, so the
                // decode cannot fail; all zeros, which names nothing, is the closed fallback.
                parse($prefix, &self.0).unwrap_or([0; ID_BYTES])
            }

            /// The id as text, as it appears in URLs, JSON and the store.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

opaque_id!(
    /// An organisation: the tenant that owns sites, people and carrier agreements.
    OrgId, "org");
opaque_id!(
    /// A site: a building or campus with its own time zone and pickup window.
    SiteId, "sit");
opaque_id!(
    /// A locker bank: one controller, one agent, one kiosk.
    BankId, "bnk");
opaque_id!(
    /// One compartment of a bank.
    CompartmentId, "cmp");
opaque_id!(
    /// A parcel, from the moment it is expected until it leaves the locker.
    ParcelId, "prc");
opaque_id!(
    /// A person: resident, courier, admin, super-admin or auditor.
    PersonId, "per");
opaque_id!(
    /// A carrier (a delivery company) that an organisation accepts parcels from.
    CarrierId, "car");
opaque_id!(
    /// A carrier API key; the id is public, the secret that goes with it is not.
    ApiKeyId, "key");
opaque_id!(
    /// An enrolled agent device, identified by the certificate the platform issued it.
    DeviceId, "dev");
opaque_id!(
    /// A queued notification.
    MessageId, "msg");
opaque_id!(
    /// A pickup code record (never the code itself).
    CodeId, "cod");
opaque_id!(
    /// A device enrolment token record (never the token itself).
    TokenId, "tok");
opaque_id!(
    /// A signed-in session, as its owner sees it in their list (never its token).
    SessionId, "ses");
opaque_id!(
    /// A request waiting for a second person's approval.
    ApprovalId, "apr");
opaque_id!(
    /// A badge registered to a person (never its number).
    BadgeId, "bdg");
opaque_id!(
    /// An alert: a tamper reading, or something the server noticed.
    AlertId, "alr");
opaque_id!(
    /// Where a site's alerts are sent besides its staff: a webhook or a syslog receiver.
    EndpointId, "aep");
opaque_id!(
    /// One notification of an alert to one target, in the alerts' outbox.
    DeliveryId, "dlv");
opaque_id!(
    /// A personal-data breach declared by staff.
    BreachId, "brc");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_round_trip_and_reject_the_wrong_kind() {
        let id = ParcelId::from_random([7; ID_BYTES]);
        assert!(id.as_str().starts_with("prc_"));
        assert_eq!(id.as_str().len(), 4 + ENCODED_LEN);
        assert_eq!(ParcelId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(SiteId::parse(id.as_str()), Err(IdError::WrongPrefix { expected: "sit" }));
    }

    #[test]
    fn malformed_ids_are_errors() {
        for bad in [
            "",
            "prc",
            "prc_",
            "prc_short",
            "prc_AAAAAAAAAAAAAAAAAAAAAAAAAA",
            "prc_aaaaaaaaaaaaaaaaaaaaaaaaa1",
            "prc_aaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "prc_aaaaaaaaaaaaaaaaaaaaaaaaa",
            // non-canonical: the last symbol sets bits beyond the 128 encoded ones
            "prc_aaaaaaaaaaaaaaaaaaaaaaaaab",
            " prc_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(ParcelId::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn json_rejects_malformed_ids() {
        assert!(serde_json::from_str::<ParcelId>("\"prc_x\"").is_err());
        let id = ParcelId::from_random([1; ID_BYTES]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ParcelId>(&json).unwrap(), id);
    }

    proptest! {
        #[test]
        fn every_id_has_exactly_one_spelling(bytes in any::<[u8; ID_BYTES]>()) {
            let id = BankId::from_random(bytes);
            prop_assert_eq!(id.to_bytes(), bytes);
            prop_assert_eq!(BankId::parse(id.as_str()).unwrap(), id);
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = CompartmentId::parse(&s);
        }
    }
}
