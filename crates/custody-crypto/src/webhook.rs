//! Signatures for outgoing webhooks, per the Standard Webhooks scheme
//! (<https://www.standardwebhooks.com>): the sender signs `{id}.{timestamp}.{body}` with
//! HMAC-SHA256 under the endpoint's secret and sends the `webhook-id`, `webhook-timestamp`
//! (Unix seconds) and `webhook-signature` (`v1,<base64 tag>`) headers. The receiver recomputes
//! the tag, compares in constant time, and refuses a timestamp far from its own clock, so a
//! captured request cannot be replayed later.
//!
//! A secret is 32 random bytes, written `whsec_<base64>` as the scheme has it; it is shown to
//! the admin once, when the endpoint is added, and kept sealed.

use aws_lc_rs::hmac;
use data_encoding::BASE64;
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::rng::Rng;

/// How a secret is written.
pub const SECRET_PREFIX: &str = "whsec_";

/// An endpoint's signing secret.
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// A new random secret.
    pub fn generate(rng: &Rng) -> Result<Self, CryptoError> {
        Ok(Self(Zeroizing::new(rng.bytes::<32>()?.to_vec())))
    }

    /// The secret from its bytes, as kept sealed.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// The secret as written (`whsec_…`); `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(SECRET_PREFIX)?;
        let bytes = BASE64.decode(encoded.as_bytes()).ok().filter(|b| !b.is_empty())?;
        Some(Self(Zeroizing::new(bytes)))
    }

    /// The secret as written, for the admin who adds the endpoint.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{SECRET_PREFIX}{}", BASE64.encode(&self.0)))
    }

    /// The bytes, to seal.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `webhook-signature` header for message `id` sent at `timestamp` (Unix seconds).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", BASE64.encode(ctx.sign().as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's test vectors.
    #[test]
    fn signs_as_the_specification_does() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_secret_round_trips_and_anything_else_is_refused() {
        let secret = WebhookSecret::generate(&Rng::new()).unwrap();
        let again = WebhookSecret::parse(&secret.to_text()).unwrap();
        assert_eq!(again.sign("m", 1, b"{}"), secret.sign("m", 1, b"{}"));
        for bad in ["", "whsec_", "whsec_!!!", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            assert!(WebhookSecret::parse(bad).is_none(), "{bad}");
        }
        assert_ne!(secret.sign("m", 1, b"{}"), secret.sign("m", 2, b"{}"));
    }
}
