//! RFID badges: the number a reader reports for a card, and how far a read can be trusted.
//!
//! A badge number is what a reader sends for a card: its UID or the credential number a secure
//! card yields, as bytes. Custody writes it as hexadecimal, the way sites export it from their
//! access-control system. Nothing here treats it as a secret: numbers are printed on cards,
//! handed out in sequence and read by anyone with a reader. What keeps a guessed number from
//! opening a door is its length and the kiosk's budgets (`docs/SECURITY.md`, "Badges"):
//! a number shorter than [`MIN_BADGE_BITS`] is refused at registration.

use std::fmt;

/// The fewest bits a badge number may have. With the bank's daily budget (8,784 failed guesses
/// a year), a guess opens something with probability at most `N / 2^48` for `N` registered
/// badges, which stays below a pickup code's `10^-10` while a site has fewer than 28,147 badges.
/// 26-bit Wiegand and 4-byte UIDs fall short; 7-byte UIDs and 48-bit formats do not.
pub const MIN_BADGE_BITS: usize = 48;

/// The most badges a site may hold at once (not revoked): with [`MIN_BADGE_BITS`], a guessed
/// number then opens something with probability at most `25,000 / 2^48 = 8.9e-11`, less than a
/// guessed pickup code's `10^-10`.
pub const MAX_SITE_BADGES: u64 = 25_000;

/// The most bytes a badge number may have (OSDP carries at most 64; no card format uses more
/// than 32).
pub const MAX_BADGE_BYTES: usize = 32;

/// A badge number: whole bytes, at least [`MIN_BADGE_BITS`] of them. Shown in upper-case
/// hexadecimal.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BadgeNumber(Vec<u8>);

/// Why a badge number is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadgeNumberError {
    /// Not hexadecimal digits (spaces, `:` and `-` between them are allowed).
    #[error("a badge number is written in hexadecimal digits, as the reader reports it")]
    NotHex,
    /// Fewer bits than [`MIN_BADGE_BITS`].
    #[error(
        "a badge number needs at least 48 bits (12 hex digits); shorter card formats can be guessed"
    )]
    TooShort,
    /// More bytes than [`MAX_BADGE_BYTES`].
    #[error("a badge number has at most 32 bytes (64 hex digits)")]
    TooLong,
}

impl BadgeNumber {
    /// Parses hexadecimal as written in an export or typed by a keyboard-wedge reader:
    /// `04A2B3C4D5E6F7`, `04:a2:b3:c4:d5:e6:f7` or `04 A2 B3 …`.
    pub fn parse(text: &str) -> Result<Self, BadgeNumberError> {
        let digits: Vec<u8> =
            text.trim().bytes().filter(|b| !matches!(b, b' ' | b':' | b'-')).collect();
        if digits.is_empty() || !digits.len().is_multiple_of(2) {
            return Err(BadgeNumberError::NotHex);
        }
        let mut bytes = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks_exact(2) {
            let [hi, lo] = [pair.first(), pair.get(1)]
                .map(|d| d.copied().and_then(hex_value).ok_or(BadgeNumberError::NotHex));
            bytes.push(hi? << 4 | lo?);
        }
        Self::from_bytes(bytes)
    }

    /// A number as a reader sent it: `bits` valid bits, left-aligned in `data` (the OSDP and
    /// Wiegand convention). Bits past `bits` in the last byte are cleared, so two reads of one
    /// card always give the same number.
    pub fn from_bits(bits: usize, data: &[u8]) -> Result<Self, BadgeNumberError> {
        let len = bits.div_ceil(8);
        if bits < MIN_BADGE_BITS {
            return Err(BadgeNumberError::TooShort);
        }
        let mut bytes = data.get(..len).ok_or(BadgeNumberError::TooShort)?.to_vec();
        if let Some(last) = bytes.last_mut()
            && !bits.is_multiple_of(8)
        {
            *last &= 0xFFu8 << (8 - bits % 8);
        }
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: Vec<u8>) -> Result<Self, BadgeNumberError> {
        if bytes.len() * 8 < MIN_BADGE_BITS {
            return Err(BadgeNumberError::TooShort);
        }
        if bytes.len() > MAX_BADGE_BYTES {
            return Err(BadgeNumberError::TooLong);
        }
        Ok(Self(bytes))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Upper-case hexadecimal, no separators: the one written form.
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        self.0.iter().fold(String::with_capacity(self.0.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
    }

    /// The last four hex digits, to tell a person's badges apart in a list.
    pub fn hint(&self) -> String {
        let hex = self.to_hex();
        hex.get(hex.len().saturating_sub(4)..).unwrap_or_default().to_owned()
    }
}

impl fmt::Debug for BadgeNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not a secret, but a person's identifier: logs see only the hint.
        write!(f, "BadgeNumber(…{})", self.hint())
    }
}

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The kind of reader a badge was read by, which is how far the read can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReaderKind {
    /// OSDP with Secure Channel: the reader is authenticated and the line encrypted, so the
    /// number is the one the reader read.
    OsdpSecure,
    /// OSDP without Secure Channel, accepted only during the reader's commissioning window.
    OsdpClear,
    /// A Wiegand reader: the wires can be tapped and replayed.
    Wiegand,
    /// A keyboard-wedge reader: anything that types can pose as one.
    Keyboard,
}

impl ReaderKind {
    /// Every kind, for tables and tests.
    pub const ALL: [Self; 4] = [Self::OsdpSecure, Self::OsdpClear, Self::Wiegand, Self::Keyboard];

    /// The name used on the wire and in the audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OsdpSecure => "osdp_secure",
            Self::OsdpClear => "osdp_clear",
            Self::Wiegand => "wiegand",
            Self::Keyboard => "keyboard",
        }
    }

    /// Parses [`ReaderKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the number read can be taken as the number on the card: only over OSDP's Secure
    /// Channel. Reads from other readers are lower trust: they pick up a badge holder's own
    /// parcels, and do nothing else.
    pub const fn is_trusted(self) -> bool {
        matches!(self, Self::OsdpSecure)
    }
}

impl fmt::Display for ReaderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_are_hex_of_at_least_48_bits() {
        let n = BadgeNumber::parse("04:a2:b3:c4:d5:e6:f7").unwrap();
        assert_eq!(n.to_hex(), "04A2B3C4D5E6F7");
        assert_eq!(n.hint(), "E6F7");
        assert_eq!(BadgeNumber::parse("04 A2 B3 C4 D5 E6 F7").unwrap(), n);
        assert_eq!(format!("{n:?}"), "BadgeNumber(…E6F7)");
        assert_eq!(BadgeNumber::parse("A2B3C4D5E6F7").unwrap().as_bytes().len(), 6);
        assert_eq!(BadgeNumber::parse("A2B3C4D5E6"), Err(BadgeNumberError::TooShort));
        assert_eq!(BadgeNumber::parse("0123ABC"), Err(BadgeNumberError::NotHex));
        assert_eq!(BadgeNumber::parse("0123ABCDEFGH"), Err(BadgeNumberError::NotHex));
        assert_eq!(BadgeNumber::parse(""), Err(BadgeNumberError::NotHex));
        assert_eq!(BadgeNumber::parse(&"AB".repeat(33)), Err(BadgeNumberError::TooLong));
    }

    #[test]
    fn a_read_keeps_only_its_valid_bits() {
        // 26-bit Wiegand is too short to be a badge here.
        assert_eq!(BadgeNumber::from_bits(26, &[0xFF; 4]), Err(BadgeNumberError::TooShort));
        let n = BadgeNumber::from_bits(50, &[0xFF; 8]).unwrap();
        assert_eq!(n.to_hex(), "FFFFFFFFFFFFC0");
        assert_eq!(BadgeNumber::from_bits(56, &[0x01; 3]), Err(BadgeNumberError::TooShort));
    }

    #[test]
    fn only_secure_channel_reads_are_trusted() {
        for kind in ReaderKind::ALL {
            assert_eq!(ReaderKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.is_trusted(), kind == ReaderKind::OsdpSecure);
        }
        assert_eq!(ReaderKind::parse("nfc"), None);
    }

    proptest! {
        #[test]
        fn every_number_reads_back_from_its_hex(bytes in proptest::collection::vec(any::<u8>(), 6..=32)) {
            let n = BadgeNumber::parse(&hex(&bytes)).unwrap();
            prop_assert_eq!(n.as_bytes(), &bytes[..]);
            prop_assert_eq!(BadgeNumber::parse(&n.to_hex()).unwrap(), n);
        }

        #[test]
        fn reads_of_any_shape_never_panic(bits in 0usize..600, data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(n) = BadgeNumber::from_bits(bits, &data) {
                prop_assert_eq!(n.as_bytes().len(), bits.div_ceil(8));
            }
        }
    }

    fn hex(bytes: &[u8]) -> String {
        BadgeNumber(bytes.to_vec()).to_hex().to_lowercase()
    }
}
