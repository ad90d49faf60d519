//! Password hashing: Argon2id with the OWASP minimum parameters (m = 19 MiB, t = 2, p = 1).
//! A test suite that seeds many people may ask a debug build for the least Argon2id allows
//! ([`PasswordCost::Test`]); a release build has no such choice.
//!
//! One hash takes tens of milliseconds of CPU. Callers run it on a blocking thread behind a
//! concurrency cap (see `custody-app`), never on the async workers and never unbounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

use crate::{CryptoError, Rng};

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
        let argon = Argon2::default();
        if let Some(phc) = stored {
            argon.verify_password(password.as_bytes(), phc).is_ok()
        } else {
            let _ = argon.verify_password(password.as_bytes(), self.decoy.as_str());
            false
        }
    }
}

fn hash_with(rng: &Rng, password: &[u8], cost: PasswordCost) -> Result<String, CryptoError> {
    let salt: [u8; 16] = rng.bytes()?;
    cost.argon()
        .hash_password_with_salt(password, &salt)
        .map(|h| h.to_string())
        .map_err(|_| CryptoError::PasswordHash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let rng = Rng::new();
        let hasher = PasswordHasher::new(&rng).unwrap();
        let phc = hasher.hash(&rng, "correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
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
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        let production = PasswordHasher::new(&rng).unwrap();
        assert!(production.verify("correct horse battery", Some(&phc)));
        let strong = production.hash(&rng, "correct horse battery").unwrap();
        assert!(cheap.verify("correct horse battery", Some(&strong)));
        assert_eq!(PasswordCost::default(), PasswordCost::Production);
    }
}
