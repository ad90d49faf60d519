//! Pickup codes: the form of the secret a recipient types at the kiosk.
//!
//! A code is [`PICKUP_CODE_DIGITS`] decimal digits drawn uniformly by the CSPRNG in
//! `custody-crypto`. It is bound to one bank and compartment, single use, and expires with the
//! parcel's pickup window. The platform never stores or logs it in clear: the store keeps a keyed
//! hash, and this type's `Debug` prints nothing of it.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Digits in a pickup code.
pub const PICKUP_CODE_DIGITS: usize = 8;
/// How long after a pickup the same code opens the emptied compartment once more (a bag left
/// behind).
pub const GRACE_REOPEN: std::time::Duration = crate::time::minutes(2);
/// Number of distinct pickup codes: 10^8.
pub const PICKUP_CODE_SPACE: u32 = 100_000_000;

/// A pickup code in clear. Exists only between generation and the outgoing message, and between
/// the kiosk keypad and the check.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PickupCode(String);

/// Input that is not a pickup code. Deliberately says nothing about how close it came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a pickup code is {PICKUP_CODE_DIGITS} digits")]
pub struct PickupCodeFormatError;

impl PickupCode {
    /// The code with index `n` (0 ≤ n < 10^8), or `None` outside the code space. The caller
    /// draws `n` uniformly (rejection sampling, never a biased modulo).
    pub fn from_index(n: u32) -> Option<Self> {
        (n < PICKUP_CODE_SPACE).then(|| Self(format!("{n:0PICKUP_CODE_DIGITS$}")))
    }

    /// Parses what a person typed. Spaces and hyphens are ignored, so `1234 5678` and
    /// `1234-5678` work as printed in the message.
    pub fn parse(input: &str) -> Result<Self, PickupCodeFormatError> {
        if input.len() > 32 {
            return Err(PickupCodeFormatError);
        }
        let digits: String = input.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if digits.len() == PICKUP_CODE_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(digits))
        } else {
            Err(PickupCodeFormatError)
        }
    }

    /// The digits, for the message to the recipient and for hashing. Nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The code grouped for reading aloud and typing: `1234 5678`.
    pub fn grouped(&self) -> String {
        let (a, b) = self.0.split_at(PICKUP_CODE_DIGITS / 2);
        format!("{a} {b}")
    }
}

impl fmt::Debug for PickupCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickupCode(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codes_are_zero_padded_and_bounded() {
        assert_eq!(PickupCode::from_index(42).unwrap().expose(), "00000042");
        assert_eq!(PickupCode::from_index(99_999_999).unwrap().expose(), "99999999");
        assert!(PickupCode::from_index(PICKUP_CODE_SPACE).is_none());
    }

    #[test]
    fn parsing_accepts_typing_habits_only() {
        let code = PickupCode::from_index(12_345_678).unwrap();
        for ok in ["12345678", "1234 5678", "1234-5678", " 12345678 "] {
            assert_eq!(PickupCode::parse(ok).unwrap(), code);
        }
        for bad in ["1234567", "123456789", "1234567a", "１２３４５６７８", "", &"1".repeat(40)]
        {
            assert!(PickupCode::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(code.grouped(), "1234 5678");
    }

    #[test]
    fn debug_never_shows_the_code() {
        let code = PickupCode::from_index(12_345_678).unwrap();
        assert!(!format!("{code:?}").contains("1234"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = PickupCode::parse(&s);
        }
    }
}
