//! Password hashing: Argon2id with the OWASP minimum parameters (m = 19 MiB, t = 2, p = 1).
//! A test suite that seeds many people may ask a debug build for the least Argon2id allows
//! ([`PasswordCost::Test`]); a release build has no such choice.
//!
//! A `fips` build hashes with PBKDF2-HMAC-SHA256 from the FIPS module instead (NIST SP 800-132;
//! FIPS 140-3 approves no Argon2), at OWASP's 600,000 iterations, stored as
//! `$pbkdf2-sha256$i=600000$<salt>$<hash>`. It never runs Argon2id: a password stored as an
//! Argon2id hash does not verify there, and its holder signs in by link or passkey and sets a
//! new one. Every build verifies PBKDF2 hashes, so an installation that leaves FIPS mode keeps
//! its passwords.
//!
//! One hash takes tens of milliseconds of CPU. Callers run it on a blocking thread behind a
//! concurrency cap (see `custody-app`), never on the async workers and never unbounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::num::NonZeroU32;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use aws_lc_rs::pbkdf2;
use data_encoding::BASE64_NOPAD;

use crate::{CryptoError, Rng};

/// What a PBKDF2 hash starts with.
const PBKDF2_PREFIX: &str = "$pbkdf2-sha256$i=";
/// OWASP's iterations for PBKDF2-HMAC-SHA256.
const PBKDF2_ITERATIONS: u32 = 600_000;
/// The most iterations a stored hash may ask for: a hash is ours, but a row altered to ask for
/// billions must not stall a sign-in.
const PBKDF2_MAX_ITERATIONS: u32 = 10_000_000;

/// How much work hashing one password is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PasswordCost {
    /// OWASP's minimum for Argon2id: m = 19 MiB, t = 2, p = 1. What every release build uses.
    #[default]
    Production,
    /// The least Argon2id allows (m = 8 KiB, t = 1, p = 1), for test suites that seed many
    /// people. Only a debug build has it, so no release can hash this cheaply.
    #[cfg(debug_assertions)]
    Test,
}

impl PasswordCost {
    /// PBKDF2's iterations at this cost: OWASP's, or the least SP 800-132 allows.
    fn pbkdf2_iterations(self) -> NonZeroU32 {
        let n = match self {
            Self::Production => PBKDF2_ITERATIONS,
            #[cfg(debug_assertions)]
            Self::Test => 1_000,
        };
        NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
    }

    fn argon(self) -> Argon2<'static> {
        match self {
            Self::Production => Argon2::default(),
            #[cfg(debug_assertions)]
            Self::Test => Params::new(Params::MIN_M_COST, Params::MIN_T_COST, 1, None).map_or_else(
                |_| Argon2::default(),
                |p| Argon2::new(Algorithm::Argon2id, Version::V0x13, p),
            ),
        }
    }
}

/// Hashes and verifies passwords.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    /// A hash of a random password, verified when an account does not exist, so that a login
    /// for an unknown account costs the same time as one for a known account (ASVS 6.3.8).
    decoy: String,
    /// Passwords checked so far, decoys included: each one is one Argon2 verification.
    checks: Arc<AtomicU64>,
    /// The work of each new hash.
    cost: PasswordCost,
}

impl PasswordHasher {
    /// A hasher with the production parameters.
    pub fn new(rng: &Rng) -> Result<Self, CryptoError> {
        Self::with_cost(rng, PasswordCost::Production)
    }

    /// A hasher whose new hashes cost `cost`. Any stored hash verifies, at the parameters it
    /// was made with.
    pub fn with_cost(rng: &Rng, cost: PasswordCost) -> Result<Self, CryptoError> {
        let decoy_password: [u8; 16] = rng.bytes()?;
        let decoy = hash_with(rng, &decoy_password, cost)?;
        Ok(Self { decoy, checks: Arc::default(), cost })
    }

    /// How many passwords this hasher has checked, each with one Argon2 verification, the
    /// decoys for unknown accounts included: that work, not a clock, is what keeps accounts
    /// from being told apart by response time.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of `password` with a fresh salt.
    pub fn hash(&self, rng: &Rng, password: &str) -> Result<String, CryptoError> {
        hash_with(rng, password.as_bytes(), self.cost)
    }

    /// Whether `password` matches `stored`. With `stored == None` (no such account) it spends
    /// the same effort on the decoy and answers `false`.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if let Some(stored) = stored {
            verify_stored(password.as_bytes(), stored)
        } else {
            let _ = verify_stored(password.as_bytes(), &self.decoy);
            false
        }
    }
}

/// Whether `password` matches the stored hash, by the scheme it names.
fn verify_stored(password: &[u8], stored: &str) -> bool {
    if stored.starts_with(PBKDF2_PREFIX) {
        return verify_pbkdf2(password, stored);
    }
    // A FIPS build never runs Argon2id.
    !crate::fips::BUILT && Argon2::default().verify_password(password, stored).is_ok()
}

fn hash_with(rng: &Rng, password: &[u8], cost: PasswordCost) -> Result<String, CryptoError> {
    let salt: [u8; 16] = rng.bytes()?;
    if crate::fips::BUILT {
        return Ok(hash_pbkdf2(password, &salt, cost.pbkdf2_iterations()));
    }
    cost.argon()
        .hash_password_with_salt(password, &salt)
        .map(|h| h.to_string())
        .map_err(|_| CryptoError::PasswordHash)
}

fn hash_pbkdf2(password: &[u8], salt: &[u8; 16], iterations: NonZeroU32) -> String {
    let mut out = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password, &mut out);
    format!(
        "{PBKDF2_PREFIX}{iterations}${}${}",
        BASE64_NOPAD.encode(salt),
        BASE64_NOPAD.encode(&out)
    )
}

fn verify_pbkdf2(password: &[u8], stored: &str) -> bool {
    let Some(rest) = stored.strip_prefix(PBKDF2_PREFIX) else { return false };
    let mut parts = rest.split('$');
    let (Some(iterations), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some(iterations) = iterations
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= PBKDF2_MAX_ITERATIONS)
        .and_then(NonZeroU32::new)
    else {
        return false;
    };
    let (Ok(salt), Ok(hash)) =
        (BASE64_NOPAD.decode(salt.as_bytes()), BASE64_NOPAD.decode(hash.as_bytes()))
    else {
        return false;
    };
    if salt.len() < 16 || hash.len() != 32 {
        return false;
    }
    pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, password, &hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let rng = Rng::new();
        let hasher = PasswordHasher::new(&rng).unwrap();
        let phc = hasher.hash(&rng, "correct horse battery").unwrap();
        let scheme = if crate::fips::BUILT {
            "$pbkdf2-sha256$i=600000$"
        } else {
            "$argon2id$v=19$m=19456,t=2,p=1$"
        };
        assert!(phc.starts_with(scheme), "{phc}");
        assert!(hasher.verify("correct horse battery", Some(&phc)));
        assert!(!hasher.verify("correct horse batterY", Some(&phc)));
        assert!(!hasher.verify("correct horse battery", None));
        assert!(!hasher.verify("x", Some("not a phc string")));
        assert_ne!(phc, hasher.hash(&rng, "correct horse battery").unwrap(), "salts differ");
    }

    /// The test cost hashes with the least Argon2id allows, and its hashes and the
    /// production ones verify alike.
    #[test]
    fn the_test_cost_is_cheap_and_verifies_like_any() {
        let rng = Rng::new();
        let cheap = PasswordHasher::with_cost(&rng, PasswordCost::Test).unwrap();
        let phc = cheap.hash(&rng, "correct horse battery").unwrap();
        let scheme = if crate::fips::BUILT {
            "$pbkdf2-sha256$i=1000$"
        } else {
            "$argon2id$v=19$m=8,t=1,p=1$"
        };
        assert!(phc.starts_with(scheme), "{phc}");
        let production = PasswordHasher::new(&rng).unwrap();
        assert!(production.verify("correct horse battery", Some(&phc)));
        let strong = production.hash(&rng, "correct horse battery").unwrap();
        assert!(cheap.verify("correct horse battery", Some(&strong)));
        assert_eq!(PasswordCost::default(), PasswordCost::Production);
    }

    /// PBKDF2 hashes verify in every build; a FIPS build refuses Argon2id ones rather than run
    /// a non-approved algorithm; an altered hash, or one asking for absurd work, never verifies.
    #[test]
    fn pbkdf2_hashes_verify_everywhere_and_argon2_only_outside_fips() {
        let salt = [9u8; 16];
        let stored =
            hash_pbkdf2(b"correct horse battery", &salt, PasswordCost::Test.pbkdf2_iterations());
        assert!(stored.starts_with("$pbkdf2-sha256$i=1000$"), "{stored}");
        assert!(verify_stored(b"correct horse battery", &stored));
        assert!(!verify_stored(b"correct horse batterY", &stored));
        let tampered = stored.replace("i=1000$", "i=1001$");
        assert!(!verify_stored(b"correct horse battery", &tampered));
        let greedy = stored.replace("i=1000$", "i=4000000000$");
        assert!(!verify_stored(b"correct horse battery", &greedy));
        for broken in ["$pbkdf2-sha256$i=1000$", "$pbkdf2-sha256$i=0$AAAA$AAAA", "$pbkdf2-sha256$"]
        {
            assert!(!verify_stored(b"x", broken), "{broken}");
        }
        let argon = Argon2::default()
            .hash_password_with_salt(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert_eq!(verify_stored(b"correct horse battery", &argon), !crate::fips::BUILT);
    }
}
