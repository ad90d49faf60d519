//! Passkeys as a second factor: registering one, and proving one in a session (the second
//! step of signing in, or a step-up). Each ceremony's state is kept in the store, bound to the
//! person, used once and for five minutes at most; the browser only ever sees options and
//! answers (JSON). Proving a passkey is throttled and audited like any other factor and
//! rotates the session.

use std::time::Duration;

use custody_core::audit::{AuditAction, Outcome};
use custody_core::person::Factor;
use custody_core::time::minutes;
use custody_crypto::passkey::StoredPasskey;
use data_encoding::BASE64URL_NOPAD;
use futures_util::FutureExt as _;

use crate::auth::{Client, SessionInfo};
use crate::factors::Proven;
use crate::{App, AppError};

/// How long a ceremony waits for the browser's answer.
pub const CEREMONY_TTL: Duration = minutes(5);

/// A ceremony begun: its id (to send back with the answer) and the options for
/// `navigator.credentials.create()` or `.get()`, as JSON.
#[derive(Debug, Clone)]
pub struct PasskeyCeremony {
    /// Id of the ceremony.
    pub id: String,
    /// The options, JSON.
    pub options: String,
}

const REGISTER: &str = "register";
const AUTHENTICATE: &str = "authenticate";

impl App {
    async fn passkeys_of(&self, s: &SessionInfo) -> Result<Vec<StoredPasskey>, AppError> {
        let person = s.person.id.clone();
        let rows = self
            .store()
            .read(move |tx| async move { tx.passkeys_of(&person).await }.boxed())
            .await?;
        Ok(rows.into_iter().map(|(id, json)| StoredPasskey { id, json }).collect())
    }

    async fn keep_ceremony(
        &self,
        s: &SessionInfo,
        kind: &'static str,
        state: String,
    ) -> Result<String, AppError> {
        let id = BASE64URL_NOPAD.encode(&self.rng().bytes::<16>()?);
        let (person, expires, stored) =
            (s.person.id.clone(), self.now().plus(CEREMONY_TTL), id.clone());
        self.store()
            .write(move |tx| {
                async move { tx.insert_ceremony(&stored, &person, kind, &state, expires).await }
                    .boxed()
            })
            .await?;
        Ok(id)
    }

    async fn take_ceremony(
        &self,
        s: &SessionInfo,
        kind: &'static str,
        id: &str,
    ) -> Result<Option<String>, AppError> {
        let (person, id, now) = (s.person.id.clone(), id.to_owned(), self.now());
        Ok(self
            .store()
            .write(move |tx| async move { tx.take_ceremony(&id, &person, kind, now).await }.boxed())
            .await?)
    }

    /// Begins registering a passkey. Like any change of factors it needs a step-up when the
    /// person holds a factor, or a fresh password when they hold none.
    pub async fn begin_passkey(&self, s: &SessionInfo) -> Result<PasskeyCeremony, AppError> {
        self.may_change_factors(s).await?;
        let existing = self.passkeys_of(s).await?;
        let mut handle = [0u8; 16];
        let digest = custody_crypto::sha256(s.person.id.as_str().as_bytes());
        handle.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
        let ceremony = self.0.relying_party.begin_registration(
            handle,
            s.person.email.as_str(),
            s.person.name.as_str(),
            &existing,
        )?;
        let id = self.keep_ceremony(s, REGISTER, ceremony.state).await?;
        Ok(PasskeyCeremony { id, options: ceremony.options })
    }

    /// Finishes registering a passkey with the browser's answer: stored, proven in this
    /// session (which is rotated), and ten recovery codes when the person had none.
    pub async fn finish_passkey(
        &self,
        token: &str,
        s: &SessionInfo,
        ceremony: &str,
        answer: &str,
        client: &Client,
    ) -> Result<Proven, AppError> {
        let budgets = self.spend_factor_attempt(s).await?;
        let Some(state) = self.take_ceremony(s, REGISTER, ceremony).await? else {
            return Err(self.refuse_factor(s, "bad_passkey:ceremony").await);
        };
        let Ok(passkey) = self.0.relying_party.finish_registration(answer, &state) else {
            return Err(self.refuse_factor(s, "bad_passkey:registration").await);
        };
        let (person, now) = (s.person.id.clone(), self.now());
        let codes_left = self.factors(s).await?.recovery_codes_left;
        self.store()
            .write(move |tx| {
                async move {
                    tx.insert_passkey(&person, &passkey.id, &passkey.json, now).await.map_err(|e| {
                        match e {
                            custody_store::StoreError::Conflict => AppError::conflict(
                                "passkey_taken",
                                "that passkey is registered already",
                            ),
                            other => other.into(),
                        }
                    })
                }
                .boxed()
            })
            .await?;
        let event = self.factor_event(s, AuditAction::PasskeyRegister, Outcome::Success, "added");
        let recovery =
            if codes_left == 0 { Some(self.new_recovery_codes(&s.person.id)?) } else { None };
        self.rotate_with_factor(token, s, Factor::Passkey, budgets, vec![event], recovery, client)
            .await
    }

    /// Begins proving one of the person's passkeys in this session.
    pub async fn begin_passkey_proof(&self, s: &SessionInfo) -> Result<PasskeyCeremony, AppError> {
        let passkeys = self.passkeys_of(s).await?;
        if passkeys.is_empty() {
            return Err(AppError::conflict("no_passkey", "you have no passkey registered"));
        }
        let ceremony = self.0.relying_party.begin_authentication(&passkeys)?;
        let id = self.keep_ceremony(s, AUTHENTICATE, ceremony.state).await?;
        Ok(PasskeyCeremony { id, options: ceremony.options })
    }

    /// Proves a passkey with the browser's answer: the session is rotated with the factor.
    /// A wrong origin, another person's passkey, a reused or lapsed ceremony all fail alike.
    pub async fn prove_passkey(
        &self,
        token: &str,
        s: &SessionInfo,
        ceremony: &str,
        answer: &str,
        client: &Client,
    ) -> Result<Proven, AppError> {
        let budgets = self.spend_factor_attempt(s).await?;
        let Some(state) = self.take_ceremony(s, AUTHENTICATE, ceremony).await? else {
            return Err(self.refuse_factor(s, "bad_passkey:ceremony").await);
        };
        let passkeys = self.passkeys_of(s).await?;
        let Ok(used) = self.0.relying_party.finish_authentication(answer, &state, &passkeys) else {
            return Err(self.refuse_factor(s, "bad_passkey:assertion").await);
        };
        let (person, now) = (s.person.id.clone(), self.now());
        self.store()
            .write(move |tx| {
                async move { tx.use_passkey(&person, &used.id, &used.json, now).await }.boxed()
            })
            .await?;
        self.rotate_with_factor(token, s, Factor::Passkey, budgets, Vec::new(), None, client).await
    }
}
