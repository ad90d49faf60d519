//! The master key and what is derived from it: keyed hashes for secrets that must be looked up.
//!
//! Pickup codes, session tokens, API key secrets and enrolment tokens are stored only as
//! HMAC-SHA256 under a key derived from the master key for that purpose. A stolen database
//! therefore yields no usable secret: 10^8 pickup codes cannot be tried offline without the key,
//! which lives in a 0600 file outside the database (DESIGN.md §4 invariant 3). Keyed hashing (not
//! a slow password hash) is what lets the kiosk find a code without scanning every active one.

use std::fmt;

use aws_lc_rs::{constant_time, digest, hkdf, hmac};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{CryptoError, Rng};

/// Length of the master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The installation's root secret. Every other symmetric key is derived from it by purpose.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// What a derived key is for. Distinct purposes give independent keys, so a hash made for one
/// purpose never matches one made for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Keyed hashes of pickup codes.
    PickupCode,
    /// Keyed hashes of session tokens.
    Session,
    /// Keyed hashes of carrier API key secrets.
    ApiKey,
    /// Keyed hashes of device enrolment tokens.
    Enrolment,
    /// CSRF tokens derived from session tokens.
    Csrf,
    /// Encryption of queued notification bodies.
    Outbox,
    /// Wrapping of each data subject's own key.
    SubjectKeys,
    /// Sealing of authenticator-app (TOTP) seeds.
    TotpSeeds,
    /// Keyed hashes of recovery codes.
    RecoveryCodes,
    /// Device cookies: a browser that signed in to an account before.
    DeviceCookies,
    /// Keyed hashes of e-mailed sign-in links and the browsers that asked for them. (Its label
    /// keeps the links' first name, "magic links": a label cannot change once keys derive from
    /// it, nor can the table's name.)
    SignInLinks,
    /// Couriers' daily kiosk codes: derived from the courier and the day, and their keyed
    /// hashes.
    CourierCodes,
    /// Each bank's presence key: the kiosk shows a code from it that the resident's app
    /// sends to open from the phone.
    PresenceCodes,
    /// Each site's badge key: the keyed hashes of its badge numbers, which its agents check a
    /// read against.
    Badges,
    /// Each bank's offline key: the keyed hashes of its pickup codes that its agent checks a
    /// typed code against while the server is unreachable.
    OfflineCodes,
    /// Sealing of the secrets that sign alert webhooks.
    WebhookSecrets,
    /// Blind indexes of people's e-mail addresses: sign-in and look-ups by address without
    /// storing it in clear.
    EmailIndex,
    /// Sealing of parcels' tracking numbers, each bound to its parcel.
    TrackingRefs,
    /// Keyed hashes of the personal subjects of throttle counters (addresses typed at sign-in,
    /// network addresses).
    ThrottleSubjects,
    /// Sealing of staff's accounts of personal-data breaches, each bound to its breach.
    Breaches,
}

impl Purpose {
    const fn label(self) -> &'static [u8] {
        match self {
            Self::PickupCode => b"custody/v1/pickup-code",
            Self::Session => b"custody/v1/session",
            Self::ApiKey => b"custody/v1/api-key",
            Self::Enrolment => b"custody/v1/enrolment",
            Self::Csrf => b"custody/v1/csrf",
            Self::Outbox => b"custody/v1/outbox",
            Self::SubjectKeys => b"custody/v1/subject-keys",
            Self::TotpSeeds => b"custody/v1/totp-seeds",
            Self::RecoveryCodes => b"custody/v1/recovery-codes",
            Self::DeviceCookies => b"custody/v1/device-cookies",
            Self::SignInLinks => b"custody/v1/magic-links",
            Self::CourierCodes => b"custody/v1/courier-codes",
            Self::PresenceCodes => b"custody/v1/presence-codes",
            Self::Badges => b"custody/v1/badges",
            Self::OfflineCodes => b"custody/v1/offline-codes",
            Self::WebhookSecrets => b"custody/v1/webhook-secrets",
            Self::EmailIndex => b"custody/v1/email-index",
            Self::TrackingRefs => b"custody/v1/tracking-refs",
            Self::ThrottleSubjects => b"custody/v1/throttle-subjects",
            Self::Breaches => b"custody/v1/breaches",
        }
    }
}

impl MasterKey {
    /// A new random master key.
    pub fn generate(rng: &Rng) -> Result<Self, CryptoError> {
        Ok(Self(rng.bytes()?))
    }

    /// The key from its stored bytes, refusing keys that are obviously not random (all bytes
    /// equal, such as a zero-filled file), so the server never runs on a default secret.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; MASTER_KEY_LEN] =
            bytes.try_into().map_err(|_| CryptoError::InvalidKey("master key must be 32 bytes"))?;
        let distinct = arr.iter().collect::<std::collections::BTreeSet<_>>().len();
        if distinct == 1 {
            return Err(CryptoError::InvalidKey("master key is not random (all bytes equal)"));
        }
        // 32 uniform bytes have fewer than 16 distinct values with probability below 1e-9.
        if distinct < 16 {
            return Err(CryptoError::InvalidKey(
                "master key is not random (too few distinct bytes)",
            ));
        }
        Ok(Self(arr))
    }

    /// The raw bytes, for writing the key file at `custody init`.
    pub fn expose_bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }

    /// 32 bytes of key material for `purpose` (HKDF-SHA256, RFC 5869).
    pub(crate) fn derive(&self, purpose: Purpose) -> [u8; 32] {
        struct Len;
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"custody master key v1");
        let prk = salt.extract(&self.0);
        let mut out = [0u8; 32];
        let info = [purpose.label()];
        // HKDF-SHA256 can expand to 255 × 32 bytes; 32 is always within bounds, so neither
        // step can fail. Should aws-lc ever disagree, the zero key fails closed: its hashes match
        // nothing stored under the real key.
        if let Ok(okm) = prk.expand(&info, Len) {
            let _ = okm.fill(&mut out);
        }
        out
    }

    /// A keyed hasher for `purpose`.
    pub fn hasher(&self, purpose: Purpose) -> KeyedHasher {
        let mut k = self.derive(purpose);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &k);
        k.zeroize();
        KeyedHasher { key, purpose }
    }
}

/// HMAC-SHA256 under a purpose-specific key, over length-prefixed parts so that
/// ("ab", "c") and ("a", "bc") never collide.
#[derive(Clone)]
pub struct KeyedHasher {
    key: hmac::Key,
    purpose: Purpose,
}

impl fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyedHasher({:?})", self.purpose)
    }
}

impl KeyedHasher {
    /// The keyed hash of `parts`.
    pub fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `expected` is the keyed hash of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], expected: &[u8]) -> bool {
        constant_time_eq(&self.hash(parts), expected)
    }
}

/// The keyed hash of a badge number under its site's badge key: what the store keeps and the
/// site's agents are sent. The server derives the site key from the master key
/// ([`Purpose::Badges`]); an agent receives it, so both compute the same verifier.
pub fn badge_verifier(site_key: &[u8; 32], number: &[u8]) -> [u8; 32] {
    let hasher =
        KeyedHasher { key: hmac::Key::new(hmac::HMAC_SHA256, site_key), purpose: Purpose::Badges };
    hasher.hash(&[b"badge", number])
}

/// The keyed hash of a pickup code for locker `locker` under its bank's offline key: what the
/// server computes when it draws the code, stores beside the code's own hash, and sends the
/// bank's agent, which computes the same for a code typed while the server is unreachable. The
/// server derives the bank key from the master key ([`Purpose::OfflineCodes`]) and the bank.
pub fn offline_code_verifier(bank_key: &[u8; 32], locker: u16, code: &[u8]) -> [u8; 32] {
    let hasher = KeyedHasher {
        key: hmac::Key::new(hmac::HMAC_SHA256, bank_key),
        purpose: Purpose::OfflineCodes,
    };
    hasher.hash(&[b"offline-code", &locker.to_be_bytes(), code])
}

/// The verifier of a courier's code for UTC day `day` under its bank's offline key: what the
/// server sends the bank's agent for each courier who may deposit there, and what the agent
/// computes for a courier code typed while the server is unreachable.
///
/// Unlike a pickup code, a courier code works at every bank of the courier's sites, so whoever
/// reads one agent's disk must not be able to work the codes out from their verifiers and use
/// them elsewhere. The verifier is therefore Argon2id (the OWASP minimum, m = 19 MiB, t = 2),
/// salted by bank and day: trying the 10^12 codes costs thousands of CPU-years for one bank and
/// day. One verifier takes tens of milliseconds, paid once per code typed at the kiosk.
pub fn offline_courier_verifier(
    bank_key: &[u8; 32],
    day: i64,
    digits: &[u8],
) -> Result<[u8; 32], CryptoError> {
    let salter = KeyedHasher {
        key: hmac::Key::new(hmac::HMAC_SHA256, bank_key),
        purpose: Purpose::OfflineCodes,
    };
    let salt = salter.hash(&[b"courier-salt", &day.to_be_bytes()]);
    let mut out = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(digits, &salt, &mut out)
        .map_err(|_| CryptoError::PasswordHash)?;
    Ok(out)
}

/// Compares two byte strings in time that depends only on their lengths (ASVS 11.2.4).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::generate(&Rng::new()).unwrap()
    }

    #[test]
    fn purposes_give_independent_hashes() {
        let k = key();
        let a = k.hasher(Purpose::PickupCode).hash(&[b"bank", b"12345678"]);
        let b = k.hasher(Purpose::Session).hash(&[b"bank", b"12345678"]);
        assert_ne!(a, b);
        assert!(k.hasher(Purpose::PickupCode).verify(&[b"bank", b"12345678"], &a));
        assert!(!k.hasher(Purpose::PickupCode).verify(&[b"bank", b"12345679"], &a));
    }

    #[test]
    fn parts_are_unambiguous() {
        let h = key().hasher(Purpose::PickupCode);
        assert_ne!(h.hash(&[b"ab", b"c"]), h.hash(&[b"a", b"bc"]));
    }

    #[test]
    fn different_master_keys_disagree() {
        let parts: &[&[u8]] = &[b"x"];
        assert_ne!(
            key().hasher(Purpose::ApiKey).hash(parts),
            key().hasher(Purpose::ApiKey).hash(parts)
        );
    }

    #[test]
    fn default_master_keys_are_refused() {
        assert!(MasterKey::from_bytes(&[0; 32]).is_err());
        assert!(MasterKey::from_bytes(&[7; 32]).is_err());
        assert!(MasterKey::from_bytes(&[1, 2].repeat(16)).is_err());
        assert!(MasterKey::from_bytes(&[1; 31]).is_err());
        let k = key();
        assert!(MasterKey::from_bytes(k.expose_bytes()).is_ok());
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
    }
}
