//! Every cryptographic primitive Custody uses, in one place.
//!
//! **Architecture Invariant:** this is the only crate that depends on primitive crates
//! (`aws-lc-rs`, `argon2`, `rcgen`, `x509-parser`); everything else asks for an operation by
//! purpose ("hash this pickup code for that bank", "sign this open command"). TLS configurations
//! are built here too, so "TLS 1.3 only" and "pin the server key" are written once. The provider is
//! aws-lc-rs throughout; `ring` and OpenSSL are not in the build.
//!
//! The two platform adapters live here too: [`Rng`], the one CSPRNG, and [`SystemClock`], the one
//! reader of wall-clock time. Everything else receives them.
//!
//! Secrets live in types whose `Debug` prints nothing and whose memory is wiped on drop.

pub mod clock;
pub mod fips;
pub mod kek;
#[cfg(feature = "passkeys")]
pub mod passkey;
pub mod password;
pub mod pki;
pub mod private_files;
pub mod rng;
pub mod seal;
pub mod secret;
pub mod sign;
pub mod tls;
pub mod totp;
pub mod webhook;

pub use clock::SystemClock;
pub use rng::Rng;
pub use secret::{KeyedHasher, MasterKey, Purpose, constant_time_eq, sha256};

/// A cryptographic operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The system random number generator failed; nothing that needs randomness can proceed.
    #[error("random number generator failed")]
    Rng,
    /// A key file or key bytes could not be used.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A signature, tag or proof did not verify.
    #[error("verification failed")]
    Verification,
    /// Certificate or CSR generation or parsing failed.
    #[error("certificate error: {0}")]
    Certificate(String),
    /// A TLS configuration could not be built.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// Password hashing failed (parameters or encoding).
    #[error("password hashing failed")]
    PasswordHash,
    /// A `fips` build whose cryptographic module is not in FIPS mode, or a TLS configuration
    /// that is not FIPS.
    #[error("{0}")]
    Fips(&'static str),
    /// A PKCS#11 module (an HSM holding key-encryption keys) refused or failed.
    #[error("PKCS#11 module: {0}")]
    Pkcs11(String),
}
