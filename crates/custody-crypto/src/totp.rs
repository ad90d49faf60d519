//! Time-based one-time passwords (RFC 6238) for authenticator apps.
//!
//! HOTP (RFC 4226) over HMAC-SHA-1, six digits, 30-second steps: the parameters every
//! authenticator app supports. A code is accepted for the current step and one step either
//! side, so a phone clock a little off still works; the caller stores the step a code was
//! accepted for and passes it back, and no code of that step or an earlier one is accepted
//! again (ASVS 6.5.1). Time always comes from the server's clock (ASVS 6.5.8).

use std::fmt;

use aws_lc_rs::hmac;
use data_encoding::BASE32_NOPAD;
use zeroize::Zeroizing;

use custody_core::text::percent_encode_component;

use crate::{CryptoError, Rng, constant_time_eq};

/// Digits in a code.
pub const DIGITS: u32 = 6;
/// Seconds per step.
pub const STEP_SECONDS: i64 = 30;
/// Steps either side of the current one that are still accepted.
pub const DRIFT_STEPS: u64 = 1;
/// Seed length: 160 bits, RFC 4226's recommendation (ASVS 6.5.3 asks for a CSPRNG).
pub const SEED_LEN: usize = 20;

/// A person's TOTP seed. Its `Debug` prints nothing and its memory is wiped on drop.
pub struct TotpSeed(Zeroizing<[u8; SEED_LEN]>);

impl fmt::Debug for TotpSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSeed(<redacted>)")
    }
}

/// The step that `now_ms` (milliseconds since the Unix epoch) falls in.
pub fn step_at(now_ms: i64) -> u64 {
    u64::try_from(now_ms.div_euclid(STEP_SECONDS * 1000)).unwrap_or(0)
}

/// HOTP value of `key` at `counter`, `digits` long (RFC 4226 §5.3).
fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac.last().copied().unwrap_or(0) & 0x0f);
    let word: [u8; 4] =
        mac.get(offset..offset + 4).and_then(|w| w.try_into().ok()).unwrap_or([0; 4]);
    (u32::from_be_bytes(word) & 0x7fff_ffff) % 10_u32.pow(digits)
}

impl TotpSeed {
    /// A new random seed.
    pub fn generate(rng: &Rng) -> Result<Self, CryptoError> {
        Ok(Self(Zeroizing::new(rng.bytes()?)))
    }

    /// The seed from its stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; SEED_LEN] =
            bytes.try_into().map_err(|_| CryptoError::InvalidKey("TOTP seed must be 20 bytes"))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The raw bytes, to seal for storage.
    pub fn expose_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// The code for `step`, as the authenticator app shows it (six digits, leading zeros kept).
    pub fn code_at(&self, step: u64) -> Zeroizing<String> {
        Zeroizing::new(format!("{:06}", hotp(self.expose_bytes(), step, DIGITS)))
    }

    /// The step `code` belongs to, if it is the code of the step at `now_ms` or of one step
    /// either side, and that step is later than `last_used` (the step of the last code
    /// accepted). Every candidate is compared, in constant time, whatever matches first.
    pub fn accept(&self, code: &str, now_ms: i64, last_used: Option<u64>) -> Option<u64> {
        let code = code.trim();
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = step_at(now_ms);
        let mut found = None;
        for step in now.saturating_sub(DRIFT_STEPS)..=now.saturating_add(DRIFT_STEPS) {
            let matches = constant_time_eq(self.code_at(step).as_bytes(), code.as_bytes());
            if matches && last_used.is_none_or(|last| step > last) {
                found = Some(step);
            }
        }
        found
    }

    /// The `otpauth://` URI an authenticator app reads from a QR code (the de facto "Key Uri
    /// Format"): issuer and account label it in the app, the seed is in base32.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Zeroizing<String> {
        let label =
            format!("{}:{}", percent_encode_component(issuer), percent_encode_component(account));
        Zeroizing::new(format!(
            "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            BASE32_NOPAD.encode(self.expose_bytes()),
            percent_encode_component(issuer),
        ))
    }

    /// The seed in base32, for typing into an app that cannot scan.
    pub fn base32(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE32_NOPAD.encode(self.expose_bytes()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    const RFC_SEED: &[u8; 20] = b"12345678901234567890";

    /// RFC 4226 Appendix D: HOTP values for counters 0–9.
    #[test]
    fn rfc4226_vectors() {
        let expected = [
            755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871,
            520_489,
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(hotp(RFC_SEED, counter as u64, 6), *want, "counter {counter}");
        }
    }

    /// RFC 6238 Appendix B, the SHA-1 rows (eight digits, as the RFC prints them).
    #[test]
    fn rfc6238_vectors() {
        let rows: [(i64, u32); 6] = [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ];
        for (seconds, want) in rows {
            assert_eq!(hotp(RFC_SEED, step_at(seconds * 1000), 8), want, "T = {seconds}");
        }
    }

    #[test]
    fn codes_work_once_within_one_step_of_now() {
        let seed = TotpSeed::from_bytes(RFC_SEED).unwrap();
        let now = 1_111_111_111_000;
        let step = step_at(now);
        assert_eq!(seed.code_at(step).as_str(), "050471");
        assert_eq!(seed.accept("050471", now, None), Some(step));
        assert_eq!(seed.accept(" 050471 ", now, None), Some(step), "spaces around are fine");
        // The same code again, or any code of that step or before, is refused.
        assert_eq!(seed.accept("050471", now, Some(step)), None);
        assert_eq!(seed.accept(&seed.code_at(step - 1), now, Some(step)), None);
        // The next step's code is still good (the phone runs a little ahead).
        assert_eq!(seed.accept(&seed.code_at(step + 1), now, Some(step)), Some(step + 1));
        // Two steps away is too far either way.
        assert_eq!(seed.accept(&seed.code_at(step + 2), now, None), None);
        assert_eq!(seed.accept(&seed.code_at(step - 2), now, None), None);
        // Not six digits.
        for bad in ["", "05047", "0504711", "05047a", "050 471", "٠٥٠٤٧١"] {
            assert_eq!(seed.accept(bad, now, None), None, "{bad:?}");
        }
    }

    #[test]
    fn the_uri_carries_the_seed_and_parameters() {
        let seed = TotpSeed::from_bytes(RFC_SEED).unwrap();
        let uri = seed.otpauth_uri("lockers.example.org Custody", "ann@example.org");
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/lockers.example.org%20Custody:ann%40example.org\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=lockers.example.org%20Custody\
             &algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(format!("{seed:?}"), "TotpSeed(<redacted>)");
    }
}
