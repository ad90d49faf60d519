//! Ed25519 signatures: the server's command key signs every open command; agents verify with
//! the public key they were given at enrolment.
//!
//! Every signature covers a domain label as well as the message, so a signature made for one
//! kind of message can never be replayed as another kind.

use std::fmt;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use data_encoding::BASE64;
use zeroize::Zeroizing;

use crate::{CryptoError, Rng};

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A private signing key.
pub struct SigningKey(Ed25519KeyPair);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public: {})", self.public_key())
    }
}

fn framed(domain: &[u8], message: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(8 + domain.len() + message.len());
    buf.extend_from_slice(&(domain.len() as u64).to_be_bytes());
    buf.extend_from_slice(domain);
    buf.extend_from_slice(message);
    buf
}

impl SigningKey {
    /// A new key, returned with its PKCS#8 encoding for the key file.
    pub fn generate(rng: &Rng) -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        let seed: [u8; 32] = rng.bytes()?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| CryptoError::InvalidKey("ed25519 seed"))?;
        let pkcs8 = pair.to_pkcs8().map_err(|_| CryptoError::InvalidKey("ed25519 pkcs8"))?;
        let doc = Zeroizing::new(pkcs8.as_ref().to_vec());
        Ok((Self(pair), doc))
    }

    /// The key from its 32-byte seed (the form signed-note private keys carry).
    pub fn from_seed(seed: &[u8]) -> Result<Self, CryptoError> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .map(Self)
            .map_err(|_| CryptoError::InvalidKey("an Ed25519 seed is 32 bytes"))
    }

    /// The key from its PKCS#8 encoding.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, CryptoError> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(Self)
            .map_err(|_| CryptoError::InvalidKey("not an Ed25519 PKCS#8 key"))
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(pk)
    }

    /// Signs `message` for `domain`.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.sign_exact(&framed(domain, message))
    }

    /// Signs exactly `message`, for formats that define their own signed bytes and domain
    /// separation (C2SP signed notes). Everything else uses [`SigningKey::sign`].
    pub fn sign_exact(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let sig = self.0.sign(message);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(sig.as_ref());
        out
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| CryptoError::InvalidKey("an Ed25519 public key is 32 bytes"))
    }

    /// The key from its base64 text form.
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let bytes =
            BASE64.decode(s.trim().as_bytes()).map_err(|_| CryptoError::InvalidKey("base64"))?;
        Self::from_bytes(&bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks that `signature` is this key's signature of `message` for `domain`.
    pub fn verify(
        &self,
        domain: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.verify_exact(&framed(domain, message), signature)
    }

    /// Checks a signature made with [`SigningKey::sign_exact`].
    pub fn verify_exact(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .map_err(|_| CryptoError::Verification)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_domain_separation() {
        let rng = Rng::new();
        let (key, pkcs8) = SigningKey::generate(&rng).unwrap();
        let reloaded = SigningKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(key.public_key(), reloaded.public_key());
        let pk = key.public_key();
        let sig = key.sign(b"open", b"msg");
        assert!(pk.verify(b"open", b"msg", &sig).is_ok());
        assert!(pk.verify(b"other", b"msg", &sig).is_err());
        assert!(pk.verify(b"open", b"msh", &sig).is_err());
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(pk.verify(b"open", b"msg", &bad).is_err());
        let (other, _) = SigningKey::generate(&rng).unwrap();
        assert!(other.public_key().verify(b"open", b"msg", &sig).is_err());
        assert_eq!(PublicKey::from_base64(&pk.to_string()).unwrap(), pk);
    }
}
