//! FIPS 140-3 mode. A build with the `fips` feature runs every primitive, TLS included, on
//! AWS-LC's FIPS module (`aws-lc-rs/fips`, `rustls/fips`); it checks at start that the module
//! entered FIPS mode (its power-on self-tests passed) and that every TLS configuration reports
//! itself FIPS, and refuses to run otherwise. Passwords are then hashed with PBKDF2 from the
//! module ([`crate::password`]) instead of Argon2id, which FIPS 140-3 does not approve.
//!
//! Which module, exactly: the locked rustls, rustls-webpki and rcgen need aws-lc-rs ≥ 1.18,
//! whose `aws-lc-fips-sys` builds AWS-LC's FIPS module 4.x. That module was submitted to NIST
//! and is not the one certified in the 3.x line: a `fips` build runs in FIPS mode on a module
//! whose validation is pending, and says so ([`describe`]).

use crate::CryptoError;

/// Whether this build was made with the `fips` feature.
pub const BUILT: bool = cfg!(feature = "fips");

/// Whether the cryptographic module runs in FIPS mode now.
pub fn active() -> bool {
    aws_lc_rs::try_fips_mode().is_ok()
}

/// The mode in a few words, for `custody --version`, `/readyz` and the logs.
pub fn describe() -> &'static str {
    if active() {
        "FIPS mode on: AWS-LC FIPS module 4.x (FIPS 140-3 validation pending, not the certified 3.x module)"
    } else if BUILT {
        "FIPS mode FAILED: the AWS-LC FIPS module did not enter FIPS mode"
    } else {
        "FIPS mode off: AWS-LC, not its FIPS module"
    }
}

/// At start: a `fips` build refuses to run unless the module is in FIPS mode.
pub fn check() -> Result<(), CryptoError> {
    if BUILT && !active() {
        return Err(CryptoError::Fips(describe()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build's mode and the module's agree: a `fips` build runs in FIPS mode and passes
    /// its start check; any other build is plainly not in FIPS mode, and says so.
    #[test]
    fn the_mode_is_what_the_build_says() {
        assert_eq!(active(), BUILT);
        assert!(check().is_ok());
        let said = describe();
        if BUILT {
            assert!(said.starts_with("FIPS mode on") && said.contains("pending"), "{said}");
        } else {
            assert!(said.starts_with("FIPS mode off"), "{said}");
        }
    }
}
