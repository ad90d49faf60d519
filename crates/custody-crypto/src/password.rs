//! Password hashing: Argon2id with the OWASP minimum parameters (m = 19 MiB, t = 2, p = 1).
//!
//! One hash takes tens of milliseconds of CPU. Callers run it on a blocking thread behind a
//! concurrency cap (see `custody-app`), never on the async workers and never unbounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};

use crate::{CryptoError, Rng};

/// Hashes and verifies passwords.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    /// A hash of a random password, verified when an account does not exist, so that a login
    /// for an unknown account costs the same time as one for a known account (ASVS 6.3.8).
    decoy: String,
    /// Passwords checked so far, decoys included: each one is one Argon2 verification.
    checks: Arc<AtomicU64>,
}

impl PasswordHasher {
    /// A hasher with the default parameters.
    pub fn new(rng: &Rng) -> Result<Self, CryptoError> {
        let decoy_password: [u8; 16] = rng.bytes()?;
        let decoy = hash_with(rng, &decoy_password)?;
        Ok(Self { decoy, checks: Arc::default() })
    }

    /// How many passwords this hasher has checked, each with one Argon2 verification, the
    /// decoys for unknown accounts included: that work, not a clock, is what keeps accounts
    /// from being told apart by response time.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of `password` with a fresh salt.
    pub fn hash(&self, rng: &Rng, password: &str) -> Result<String, CryptoError> {
        hash_with(rng, password.as_bytes())
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

fn hash_with(rng: &Rng, password: &[u8]) -> Result<String, CryptoError> {
    let salt: [u8; 16] = rng.bytes()?;
    Argon2::default()
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
}
