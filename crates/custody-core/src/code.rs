//! Pickup codes: the form of the secret a recipient types at the kiosk.
//!
//! What a recipient types is their locker's number, then a code of [`PICKUP_CODE_DIGITS`]
//! decimal digits drawn uniformly by the CSPRNG in `custody-crypto`: `12 48291 73506`. The
//! number is no secret (it is on the door); it binds a guess to one compartment, so a guess
//! opens something with probability `1 / 10^10` however full the bank is. A code is bound to
//! its bank and compartment, single use, and expires with the parcel's pickup window. The
//! platform never stores or logs it in clear: the store keeps a keyed hash of bank, locker
//! number and code, and this module's `Debug`s print nothing of it.
//!
//! Codes issued before this format were eight digits alone; they are still read
//! ([`PickupEntry::Legacy`]) until the last of them expires with its pickup window.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::compartment::CompartmentNumber;

/// Digits in a pickup code (the locker number comes before them).
pub const PICKUP_CODE_DIGITS: usize = 10;
/// Number of distinct pickup codes: 10^10.
pub const PICKUP_CODE_SPACE: u64 = 10_000_000_000;
/// Digits in a code of the first format (no locker number).
pub const LEGACY_PICKUP_CODE_DIGITS: usize = 8;
/// How long after a pickup the same code opens the emptied compartment once more (a bag left
/// behind).
pub const GRACE_REOPEN: std::time::Duration = crate::time::minutes(2);

/// Digits in a courier's daily code.
pub const COURIER_CODE_DIGITS: usize = 12;

/// A typed courier code without its spaces, if it has the code's shape (twelve digits): what
/// the server hashes to look it up, and an agent offline to check it.
pub fn courier_digits(typed: &str) -> Option<Zeroizing<String>> {
    let digits: Zeroizing<String> = Zeroizing::new(typed.chars().filter(|c| *c != ' ').collect());
    (digits.len() == COURIER_CODE_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// A pickup code in clear. Exists only between generation and the outgoing message, and between
/// the kiosk keypad and the check.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PickupCode(String);

/// Input that is not a pickup code. Deliberately says nothing about how close it came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a pickup code is the locker number followed by {PICKUP_CODE_DIGITS} digits")]
pub struct PickupCodeFormatError;

impl PickupCode {
    /// The code with index `n` (0 ≤ n < 10^10), or `None` outside the code space. The caller
    /// draws `n` uniformly (rejection sampling, never a biased modulo).
    pub fn from_index(n: u64) -> Option<Self> {
        (n < PICKUP_CODE_SPACE).then(|| Self(format!("{n:0PICKUP_CODE_DIGITS$}")))
    }

    /// The digits, for the message to the recipient and for hashing. Nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the recipient types for this code in locker `locker`, grouped for reading aloud:
    /// `12 48291 73506`.
    pub fn entry(&self, locker: CompartmentNumber) -> String {
        let (a, b) = self.0.split_at(PICKUP_CODE_DIGITS / 2);
        format!("{locker} {a} {b}")
    }
}

impl fmt::Debug for PickupCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickupCode(<redacted>)")
    }
}

/// What someone typed at the kiosk, read as a pickup code.
#[derive(Clone, PartialEq, Eq)]
pub enum PickupEntry {
    /// A locker number and a code: the current format.
    Current {
        /// The locker (compartment) number.
        locker: CompartmentNumber,
        /// The code.
        code: PickupCode,
    },
    /// Eight digits alone: a code of the first format, issued before the upgrade.
    Legacy(PickupCode),
}

impl PickupEntry {
    /// Parses what a person typed. Spaces, hyphens and dots are ignored, so `12 48291 73506`,
    /// `12-4829173506` and `124829173506` are the same entry: the last ten digits are the code
    /// and the digits before them the locker number.
    pub fn parse(input: &str) -> Result<Self, PickupCodeFormatError> {
        if input.len() > 40 {
            return Err(PickupCodeFormatError);
        }
        let digits: String =
            input.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '·')).collect();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PickupCodeFormatError);
        }
        if digits.len() == LEGACY_PICKUP_CODE_DIGITS {
            return Ok(Self::Legacy(PickupCode(digits)));
        }
        let Some(split) =
            digits.len().checked_sub(PICKUP_CODE_DIGITS).filter(|n| (1..=3).contains(n))
        else {
            return Err(PickupCodeFormatError);
        };
        let (locker, code) = digits.split_at(split);
        let locker = locker
            .parse::<u16>()
            .ok()
            .and_then(|n| CompartmentNumber::new(n).ok())
            .ok_or(PickupCodeFormatError)?;
        Ok(Self::Current { locker, code: PickupCode(code.to_owned()) })
    }
}

impl fmt::Debug for PickupEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickupEntry(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn locker(n: u16) -> CompartmentNumber {
        CompartmentNumber::new(n).unwrap()
    }

    #[test]
    fn a_courier_code_is_twelve_digits_spaces_aside() {
        assert_eq!(
            courier_digits("1234 5678 9012").as_deref().map(String::as_str),
            Some("123456789012")
        );
        assert!(courier_digits("1234 5678 901").is_none());
        assert!(courier_digits("1234 5678 901x").is_none());
        assert!(courier_digits("1234-5678-9012").is_none());
        assert_eq!(crate::Timestamp::from_millis(-1).utc_day(), -1);
        assert_eq!(crate::Timestamp::utc_day_start(2).as_millis(), 2 * 86_400_000);
    }

    #[test]
    fn codes_are_zero_padded_and_bounded() {
        assert_eq!(PickupCode::from_index(42).unwrap().expose(), "0000000042");
        assert_eq!(PickupCode::from_index(9_999_999_999).unwrap().expose(), "9999999999");
        assert!(PickupCode::from_index(PICKUP_CODE_SPACE).is_none());
    }

    #[test]
    fn an_entry_is_the_locker_number_then_the_code() {
        let code = PickupCode::from_index(4_829_173_506).unwrap();
        assert_eq!(code.entry(locker(12)), "12 48291 73506");
        let current = PickupEntry::Current { locker: locker(12), code: code.clone() };
        for ok in ["12 48291 73506", "12-4829173506", "124829173506", " 12 4829 1735 06 "] {
            assert_eq!(PickupEntry::parse(ok).unwrap(), current, "{ok}");
        }
        let first = PickupEntry::Current { locker: locker(1), code };
        assert_eq!(PickupEntry::parse("14829173506").unwrap(), first);
        assert_eq!(
            PickupEntry::parse("1234 5678").unwrap(),
            PickupEntry::Legacy(PickupCode("12345678".into()))
        );
        for bad in [
            "4829173506",         // no locker number
            "0 48291 73506",      // locker 0 does not exist
            "123456 48291 73506", // a locker number too long
            "12 48291 7350a",
            "１２ ４８２９１７３５０６",
            "",
            "1234567",
            &"1".repeat(41),
        ] {
            assert!(PickupEntry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_code() {
        let code = PickupCode::from_index(4_829_173_506).unwrap();
        assert!(!format!("{code:?}").contains("4829"));
        let entry = PickupEntry::parse("12 48291 73506").unwrap();
        assert!(!format!("{entry:?}").contains("4829"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,44}") {
            let _ = PickupEntry::parse(&s);
        }

        #[test]
        fn every_code_reads_back_from_its_entry(n in 0..PICKUP_CODE_SPACE, l in 1u16..=999) {
            let code = PickupCode::from_index(n).unwrap();
            let entry = PickupEntry::parse(&code.entry(locker(l))).unwrap();
            prop_assert_eq!(entry, PickupEntry::Current { locker: locker(l), code });
        }
    }
}
