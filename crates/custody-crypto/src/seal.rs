//! Authenticated encryption (AES-256-GCM) of small records at rest: queued notifications that
//! carry a pickup code until they are delivered, and personal data in the audit log, which is
//! sealed under a key of its subject's own so that destroying the key erases the data
//! (crypto-shredding) while the log's hashes, taken over the ciphertext, still verify.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};

use crate::{CryptoError, MasterKey, Purpose};

/// Seals and opens records under a key derived from the master key.
pub struct Sealer(RandomizedNonceKey);

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// A sealer for `purpose`.
    pub fn new(master: &MasterKey, purpose: Purpose) -> Result<Self, CryptoError> {
        let mut k = master.derive(purpose);
        let key = Self::from_key(&k);
        zeroize::Zeroize::zeroize(&mut k);
        key
    }

    pub(crate) fn from_key(key: &[u8; 32]) -> Result<Self, CryptoError> {
        RandomizedNonceKey::new(&AES_256_GCM, key)
            .map(Self)
            .map_err(|_| CryptoError::InvalidKey("aes-256-gcm"))
    }

    /// `nonce ‖ ciphertext ‖ tag` of `plaintext`, bound to `context` (for example the record's
    /// id, so a sealed body cannot be moved to another record).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut buf = plaintext.to_vec();
        let nonce = self
            .0
            .seal_in_place_append_tag(Aad::from(context), &mut buf)
            .map_err(|_| CryptoError::Rng)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// The plaintext of a sealed record, if it was sealed by this key for `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (nonce, ct) = sealed.split_at_checked(NONCE_LEN).ok_or(CryptoError::Verification)?;
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Verification)?;
        let mut buf = ct.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| CryptoError::Verification)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    #[test]
    fn round_trip_and_tamper_detection() {
        let master = MasterKey::generate(&Rng::new()).unwrap();
        let s = Sealer::new(&master, Purpose::Outbox).unwrap();
        let sealed = s.seal(b"msg-1", b"your code is 1234 5678").unwrap();
        assert_eq!(s.open(b"msg-1", &sealed).unwrap(), b"your code is 1234 5678");
        assert!(s.open(b"msg-2", &sealed).is_err(), "moved to another record");
        let mut t = sealed.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(s.open(b"msg-1", &t).is_err());
        assert!(s.open(b"msg-1", &sealed[..5]).is_err());
        assert!(!sealed.windows(4).any(|w| w == b"1234"));
        let other =
            Sealer::new(&MasterKey::generate(&Rng::new()).unwrap(), Purpose::Outbox).unwrap();
        assert!(other.open(b"msg-1", &sealed).is_err());
    }
}
