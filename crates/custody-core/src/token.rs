//! QR pickup tokens: a pickup credential the kiosk scans instead of a code being typed.
//!
//! A token is a statement signed by the server's command key (Ed25519, under its own domain
//! label, so no token can pass for an open command or the reverse): "the parcel `parcel` in
//! compartment `compartment` of bank `bank` may be picked up with the pickup code record `code`
//! until `expires_at`". The agent checks it offline with the public key it received at
//! enrolment; the server checks it again and redeems the code record it names, so a token is
//! single use, and dies with its code on pickup, expiry or revocation.
//!
//! The binary form is fixed-length, so the decoder has no lengths to trust:
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1    16  bank id
//!     17     2  compartment number, big-endian (1–999)
//!     19    16  parcel id
//!     35    16  pickup code record id (the token's nonce)
//!     51     8  expiry, ms since the epoch, big-endian
//!     59    64  Ed25519 signature over bytes 0–58, domain `custody/qr-pickup/v1`
//! ```
//!
//! The text form is `CQ1:` and the 123 bytes in RFC 4648 base32 without padding: 201 characters,
//! all in the QR code's alphanumeric set, so the QR stays small (version 10 at medium error
//! correction).

use std::fmt;

use data_encoding::BASE32_NOPAD;

use crate::compartment::CompartmentNumber;
use crate::id::ID_BYTES;
use crate::{BankId, CodeId, ParcelId, Timestamp};

/// Domain label of QR token signatures.
pub const QR_TOKEN_DOMAIN: &[u8] = b"custody/qr-pickup/v1";
/// What every token's text starts with.
pub const QR_TOKEN_PREFIX: &str = "CQ1:";
/// The version byte this build writes and reads.
const VERSION: u8 = 1;
/// Bytes the signature covers.
pub const QR_SIGNED_BYTES: usize = 1 + ID_BYTES + 2 + ID_BYTES + ID_BYTES + 8;
/// Length of the signature.
pub const QR_SIGNATURE_BYTES: usize = 64;
/// Length of a whole token in binary.
pub const QR_TOKEN_BYTES: usize = QR_SIGNED_BYTES + QR_SIGNATURE_BYTES;
/// Length of a token's text: longer input is refused before decoding.
pub const QR_TOKEN_TEXT_LEN: usize = QR_TOKEN_PREFIX.len() + (QR_TOKEN_BYTES * 8).div_ceil(5);

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickupToken {
    /// The bank whose kiosk may accept it.
    pub bank: BankId,
    /// The compartment it opens.
    pub compartment: CompartmentNumber,
    /// The parcel in it.
    pub parcel: ParcelId,
    /// The pickup code record it redeems; also the token's nonce.
    pub code: CodeId,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// Text that is not a well-formed token. Says nothing more: scans of anything at all arrive
/// here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a Custody pickup token")]
pub struct TokenFormatError;

impl PickupToken {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> [u8; QR_SIGNED_BYTES] {
        let mut out = [0u8; QR_SIGNED_BYTES];
        let fields: [&[u8]; 6] = [
            &[VERSION],
            &self.bank.to_bytes(),
            &self.compartment.get().to_be_bytes(),
            &self.parcel.to_bytes(),
            &self.code.to_bytes(),
            &self.expires_at.as_millis().to_be_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            if let Some(slot) = out.get_mut(at..at + field.len()) {
                slot.copy_from_slice(field);
            }
            at += field.len();
        }
        out
    }

    /// The token's text, with the server's `signature` over [`PickupToken::signed_bytes`].
    pub fn encode(&self, signature: &[u8; QR_SIGNATURE_BYTES]) -> String {
        let mut bytes = Vec::with_capacity(QR_TOKEN_BYTES);
        bytes.extend_from_slice(&self.signed_bytes());
        bytes.extend_from_slice(signature);
        let mut text = String::with_capacity(QR_TOKEN_TEXT_LEN);
        text.push_str(QR_TOKEN_PREFIX);
        text.push_str(&BASE32_NOPAD.encode(&bytes));
        text
    }
}

/// A decoded token with the signature it came with, not yet verified.
#[derive(Clone, PartialEq, Eq)]
pub struct ScannedToken {
    /// What it claims.
    pub token: PickupToken,
    signed: [u8; QR_SIGNED_BYTES],
    signature: [u8; QR_SIGNATURE_BYTES],
}

impl ScannedToken {
    /// Decodes a scanned token's text. Strict: the exact prefix and length, canonical
    /// base32, version 1, a compartment number of 1–999 and a non-negative expiry.
    pub fn decode(text: &str) -> Result<Self, TokenFormatError> {
        if text.len() != QR_TOKEN_TEXT_LEN {
            return Err(TokenFormatError);
        }
        let body = text.strip_prefix(QR_TOKEN_PREFIX).ok_or(TokenFormatError)?;
        let bytes = BASE32_NOPAD.decode(body.as_bytes()).map_err(|_| TokenFormatError)?;
        let (signed, signature) =
            bytes.split_at_checked(QR_SIGNED_BYTES).ok_or(TokenFormatError)?;
        let signed: [u8; QR_SIGNED_BYTES] = signed.try_into().map_err(|_| TokenFormatError)?;
        let signature: [u8; QR_SIGNATURE_BYTES] =
            signature.try_into().map_err(|_| TokenFormatError)?;
        let mut fields = Fields(&signed);
        if fields.take::<1>()? != [VERSION] {
            return Err(TokenFormatError);
        }
        let bank = BankId::from_random(fields.take()?);
        let compartment = CompartmentNumber::new(u16::from_be_bytes(fields.take()?))
            .map_err(|_| TokenFormatError)?;
        let parcel = ParcelId::from_random(fields.take()?);
        let code = CodeId::from_random(fields.take()?);
        let expires_at = i64::from_be_bytes(fields.take()?);
        if expires_at < 0 {
            return Err(TokenFormatError);
        }
        let token = PickupToken {
            bank,
            compartment,
            parcel,
            code,
            expires_at: Timestamp::from_millis(expires_at),
        };
        Ok(Self { token, signed, signature })
    }

    /// The bytes the signature must cover, exactly as scanned.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// The signature, to verify under the command key with [`QR_TOKEN_DOMAIN`].
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl fmt::Debug for ScannedToken {
    // The signature is what makes a token a credential; it is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScannedToken").field("token", &self.token).finish_non_exhaustive()
    }
}

/// Reads fixed-size fields off the front of the signed bytes.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], TokenFormatError> {
        let (head, rest) = self.0.split_at_checked(N).ok_or(TokenFormatError)?;
        self.0 = rest;
        head.try_into().map_err(|_| TokenFormatError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> PickupToken {
        PickupToken {
            bank: BankId::from_random([1; 16]),
            compartment: CompartmentNumber::new(12).unwrap(),
            parcel: ParcelId::from_random([2; 16]),
            code: CodeId::from_random([3; 16]),
            expires_at: Timestamp::from_millis(1_893_456_000_000),
        }
    }

    #[test]
    fn a_token_round_trips_and_its_text_fits_a_qr_alphanumeric_code() {
        let text = token().encode(&[9; 64]);
        assert_eq!(text.len(), QR_TOKEN_TEXT_LEN);
        assert_eq!(QR_TOKEN_TEXT_LEN, 201);
        // The QR alphanumeric set: digits, upper-case letters and ` $%*+-./:`.
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || b" $%*+-./:".contains(&b))
        );
        let scanned = ScannedToken::decode(&text).unwrap();
        assert_eq!(scanned.token, token());
        assert_eq!(scanned.signed_bytes(), token().signed_bytes());
        assert_eq!(scanned.signature(), [9; 64]);
    }

    #[test]
    fn malformed_text_is_refused() {
        let good = token().encode(&[9; 64]);
        let body = good.strip_prefix(QR_TOKEN_PREFIX).unwrap();
        let with_version = |version: u8| {
            let mut bytes = BASE32_NOPAD.decode(body.as_bytes()).unwrap();
            bytes[0] = version;
            format!("{QR_TOKEN_PREFIX}{}", BASE32_NOPAD.encode(&bytes))
        };
        let version_two = with_version(2);
        let mut bytes = BASE32_NOPAD.decode(body.as_bytes()).unwrap();
        bytes[17..19].copy_from_slice(&0u16.to_be_bytes());
        let compartment_zero = format!("{QR_TOKEN_PREFIX}{}", BASE32_NOPAD.encode(&bytes));
        let mut bytes = BASE32_NOPAD.decode(body.as_bytes()).unwrap();
        bytes[51] = 0x80;
        let negative_expiry = format!("{QR_TOKEN_PREFIX}{}", BASE32_NOPAD.encode(&bytes));
        let lower = format!("{QR_TOKEN_PREFIX}{}", body.to_ascii_lowercase());
        let other_prefix = format!("CQ2:{body}");
        for bad in [
            String::new(),
            QR_TOKEN_PREFIX.to_owned(),
            body.to_owned(),
            format!("{good}A"),
            good[..good.len() - 1].to_owned(),
            lower,
            other_prefix,
            version_two,
            compartment_zero,
            negative_expiry,
            format!("{}1", &good[..good.len() - 1]),
        ] {
            assert_eq!(ScannedToken::decode(&bad), Err(TokenFormatError), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_signature() {
        let scanned = ScannedToken::decode(&token().encode(&[0xAB; 64])).unwrap();
        let shown = format!("{scanned:?}");
        assert!(shown.contains("prc_"));
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("abab"));
    }

    proptest! {
        #[test]
        fn decode_never_panics(s in ".{0,260}") {
            let _ = ScannedToken::decode(&s);
        }

        #[test]
        fn decode_never_panics_on_any_bytes_of_the_right_length(
            bytes in proptest::collection::vec(any::<u8>(), QR_TOKEN_BYTES)
        ) {
            let text = format!("{QR_TOKEN_PREFIX}{}", BASE32_NOPAD.encode(&bytes));
            if let Ok(t) = ScannedToken::decode(&text) {
                // Whatever decodes, encodes back to exactly the scanned text.
                let signature: [u8; 64] = t.signature().try_into().unwrap();
                prop_assert_eq!(t.token.encode(&signature), text);
            }
        }
    }
}
