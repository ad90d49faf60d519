//! Passkeys (WebAuthn, through `webauthn-rs`): registering one and proving it.
//!
//! The relying party is the portal: its id is the host of the public URL and the origin must
//! match that URL exactly. Everything crossing this module is JSON text — the options the
//! browser's `navigator.credentials` takes, its answer, the ceremony state the server keeps
//! between the two, a stored passkey — so the rest of Custody needs no WebAuthn types.
//! User verification is required (a passkey is a second factor by itself: something held and
//! something known or been). Each ceremony's challenge is 256 random bits; the caller keeps
//! the state server-side and uses it once (ASVS 6.7.2).
//!
//! Passkeys are registered as discoverable credentials where the authenticator can, so that
//! a person can also sign in with one alone: the authenticator names the credential and its
//! user handle, the server finds the passkey by its id and checks that the handle is its
//! owner's.

use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url, Uuid,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::CryptoError;

/// The portal as a WebAuthn relying party.
pub struct RelyingParty(Webauthn);

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelyingParty")
    }
}

/// A registered passkey as stored: its credential id (base64url) and the passkey (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// The credential id, base64url.
    pub id: String,
    /// The passkey: public key, counter, flags.
    pub json: String,
}

/// A ceremony begun: what the browser needs, and what the server keeps until the answer.
#[derive(Debug, Clone)]
pub struct Ceremony {
    /// `PublicKeyCredentialCreationOptions` or `…RequestOptions`, as JSON.
    pub options: String,
    /// The server's state, JSON: keep it server-side, use it once.
    pub state: String,
}

fn credential_id(id: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(id)
}

fn refused<E: std::fmt::Display>(_: E) -> CryptoError {
    CryptoError::Verification
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, CryptoError> {
    serde_json::to_string(value).map_err(|_| CryptoError::InvalidKey("passkey state"))
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, CryptoError> {
    serde_json::from_str(text).map_err(refused)
}

impl RelyingParty {
    /// The relying party of the portal at `public_url` (`https://host[:port]`).
    pub fn new(public_url: &str, name: &str) -> Result<Self, CryptoError> {
        let origin = Url::parse(public_url).map_err(|_| CryptoError::InvalidKey("public URL"))?;
        let id = origin.host_str().ok_or(CryptoError::InvalidKey("public URL has no host"))?;
        let webauthn = WebauthnBuilder::new(id, &origin)
            .and_then(|b| b.rp_name(name).build())
            .map_err(|_| CryptoError::InvalidKey("public URL as a WebAuthn origin"))?;
        Ok(Self(webauthn))
    }

    /// Begins registering a passkey for the person with the 16-byte `user` handle; the
    /// passkeys they hold already are excluded, so one authenticator is not registered twice.
    pub fn begin_registration(
        &self,
        user: [u8; 16],
        name: &str,
        display_name: &str,
        existing: &[StoredPasskey],
    ) -> Result<Ceremony, CryptoError> {
        let exclude = existing
            .iter()
            .map(|p| parse::<Passkey>(&p.json).map(|k| k.cred_id().clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let (options, state): (CreationChallengeResponse, PasskeyRegistration) = self
            .0
            .start_passkey_registration(Uuid::from_bytes(user), name, display_name, Some(exclude))
            .map_err(refused)?;
        // Ask for a discoverable credential, so the passkey can sign in on its own; an
        // authenticator that cannot keep one still registers (the server checks nothing here).
        let mut options = serde_json::to_value(&options).map_err(refused)?;
        if let Some(selection) = options
            .get_mut("publicKey")
            .and_then(|k| k.get_mut("authenticatorSelection"))
            .and_then(serde_json::Value::as_object_mut)
        {
            selection.insert("residentKey".into(), "preferred".into());
        }
        Ok(Ceremony { options: json(&options)?, state: json(&state)? })
    }

    /// Checks the browser's answer to a registration against the kept state: the new passkey.
    pub fn finish_registration(
        &self,
        answer: &str,
        state: &str,
    ) -> Result<StoredPasskey, CryptoError> {
        let answer: RegisterPublicKeyCredential = parse(answer)?;
        let state: PasskeyRegistration = parse(state)?;
        let passkey = self.0.finish_passkey_registration(&answer, &state).map_err(refused)?;
        Ok(StoredPasskey { id: credential_id(passkey.cred_id()), json: json(&passkey)? })
    }

    /// Begins proving one of `passkeys`.
    pub fn begin_authentication(
        &self,
        passkeys: &[StoredPasskey],
    ) -> Result<Ceremony, CryptoError> {
        let keys =
            passkeys.iter().map(|p| parse::<Passkey>(&p.json)).collect::<Result<Vec<_>, _>>()?;
        let (options, state): (RequestChallengeResponse, PasskeyAuthentication) =
            self.0.start_passkey_authentication(&keys).map_err(refused)?;
        Ok(Ceremony { options: json(&options)?, state: json(&state)? })
    }

    /// Begins a sign-in with a passkey alone: no credential is named, the authenticator
    /// offers the ones it holds for this relying party. The browser shows its usual prompt
    /// (the options ask for no conditional mediation).
    pub fn begin_sign_in(&self) -> Result<Ceremony, CryptoError> {
        let (mut options, state): (RequestChallengeResponse, DiscoverableAuthentication) =
            self.0.start_discoverable_authentication().map_err(refused)?;
        options.mediation = None;
        Ok(Ceremony { options: json(&options)?, state: json(&state)? })
    }

    /// Which passkey a sign-in answer claims to be, and for whom: the credential id
    /// (base64url) and the 16-byte user handle. Nothing is verified yet.
    pub fn sign_in_claim(&self, answer: &str) -> Result<(String, [u8; 16]), CryptoError> {
        let answer: PublicKeyCredential = parse(answer)?;
        let (user, id) = self.0.identify_discoverable_authentication(&answer).map_err(refused)?;
        Ok((credential_id(id), *user.as_bytes()))
    }

    /// Checks a sign-in answer against the kept state and the passkey it claims to be: that
    /// passkey, updated (its signature counter) when it changed.
    pub fn finish_sign_in(
        &self,
        answer: &str,
        state: &str,
        claimed: &StoredPasskey,
    ) -> Result<StoredPasskey, CryptoError> {
        let answer: PublicKeyCredential = parse(answer)?;
        let state: DiscoverableAuthentication = parse(state)?;
        let mut passkey: Passkey = parse(&claimed.json)?;
        let result = self
            .0
            .finish_discoverable_authentication_v2(&answer, state, &passkey)
            .map_err(refused)?;
        if credential_id(result.cred_id()) != claimed.id {
            return Err(CryptoError::Verification);
        }
        passkey.update_credential(&result);
        Ok(StoredPasskey { id: claimed.id.clone(), json: json(&passkey)? })
    }

    /// Checks the browser's answer to an authentication: the passkey used, updated (its
    /// signature counter) when it changed.
    pub fn finish_authentication(
        &self,
        answer: &str,
        state: &str,
        passkeys: &[StoredPasskey],
    ) -> Result<StoredPasskey, CryptoError> {
        let answer: PublicKeyCredential = parse(answer)?;
        let state: PasskeyAuthentication = parse(state)?;
        let result = self.0.finish_passkey_authentication(&answer, &state).map_err(refused)?;
        let used = credential_id(result.cred_id());
        let stored = passkeys.iter().find(|p| p.id == used).ok_or(CryptoError::Verification)?;
        let mut passkey: Passkey = parse(&stored.json)?;
        passkey.update_credential(&result);
        Ok(StoredPasskey { id: used, json: json(&passkey)? })
    }
}
