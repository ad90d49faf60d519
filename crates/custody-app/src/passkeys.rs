//! Passkeys: registering one, proving one in a session (the second step of signing in, or a
//! step-up), and signing in with one alone. Each ceremony's state is kept in the store, bound
//! to the person (or to nobody yet, for a sign-in), used once and for five minutes at most;
//! the browser only ever sees options and answers (JSON). Proving a passkey is throttled and
//! audited like any other factor and rotates the session.
//!
//! A passkey alone is a full sign-in: it is something held (the authenticator's key) unlocked
//! by something known or been (user verification is required), a multi-factor cryptographic
//! authenticator in NIST SP 800-63B's terms, so the session counts it as its second factor.

use crate::conflicts::ConflictCode;
use std::time::Duration;

use custody_core::PersonId;
use custody_core::Timestamp;
use custody_core::audit::{Actor, AuditAction, AuditEvent, Outcome, Target};
use custody_core::person::Factor;
use custody_core::throttle::{GLOBAL_LOGIN, SOURCE_LOGIN};
use custody_core::time::minutes;
use custody_crypto::passkey::StoredPasskey;
use data_encoding::BASE64URL_NOPAD;
use futures_util::FutureExt as _;

use crate::factors::Proven;
use crate::sessions::{Client, NewSession, SessionInfo};
use crate::throttle::Budgets;
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
const SIGN_IN: &str = "sign_in";

/// The 16-byte user handle a person's passkeys carry: derived from their id, so it names
/// nobody outside Custody and needs no column.
fn user_handle(person: &PersonId) -> [u8; 16] {
    let mut handle = [0u8; 16];
    let digest = custody_crypto::sha256(person.as_str().as_bytes());
    handle.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
    handle
}

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
        person: Option<&PersonId>,
        kind: &'static str,
        state: String,
    ) -> Result<String, AppError> {
        let id = BASE64URL_NOPAD.encode(&self.rng().bytes::<16>()?);
        let (person, now, stored) = (person.cloned(), self.now(), id.clone());
        let expires = now.plus(CEREMONY_TTL);
        self.store()
            .write(move |tx| {
                async move {
                    tx.insert_ceremony(&stored, person.as_ref(), kind, &state, now, expires).await
                }
                .boxed()
            })
            .await?;
        Ok(id)
    }

    async fn take_ceremony(
        &self,
        person: Option<&PersonId>,
        kind: &'static str,
        id: &str,
    ) -> Result<Option<String>, AppError> {
        let (person, id, now) = (person.cloned(), id.to_owned(), self.now());
        Ok(self
            .store()
            .write(move |tx| {
                async move { tx.take_ceremony(&id, person.as_ref(), kind, now).await }.boxed()
            })
            .await?)
    }

    /// Begins registering a passkey. Like any change of factors it needs a step-up when the
    /// person holds a factor, or a fresh password when they hold none.
    pub async fn begin_passkey(&self, s: &SessionInfo) -> Result<PasskeyCeremony, AppError> {
        self.may_change_factors(s).await?;
        let existing = self.passkeys_of(s).await?;
        let ceremony = self.0.relying_party.begin_registration(
            user_handle(&s.person.id),
            s.person.email.as_str(),
            s.person.name.as_str(),
            &existing,
        )?;
        let id = self.keep_ceremony(Some(&s.person.id), REGISTER, ceremony.state).await?;
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
        let Some(state) = self.take_ceremony(Some(&s.person.id), REGISTER, ceremony).await? else {
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
                                ConflictCode::PasskeyTaken,
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
            return Err(AppError::conflict(
                ConflictCode::NoPasskey,
                "you have no passkey registered",
            ));
        }
        let ceremony = self.0.relying_party.begin_authentication(&passkeys)?;
        let id = self.keep_ceremony(Some(&s.person.id), AUTHENTICATE, ceremony.state).await?;
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
        let Some(state) = self.take_ceremony(Some(&s.person.id), AUTHENTICATE, ceremony).await?
        else {
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

    /// Begins signing in with a passkey alone. Nobody is known yet, so the attempt counts
    /// against its source address and the whole installation, like a password attempt, and
    /// is given back when it succeeds.
    pub async fn begin_passkey_sign_in(
        &self,
        client: &Client,
    ) -> Result<PasskeyCeremony, AppError> {
        let budgets = sign_in_budgets(self, client);
        self.spend_or_throttle(&budgets, anonymous(self.now(), Outcome::Denied, None)).await?;
        let ceremony = self.0.relying_party.begin_sign_in()?;
        let id = self.keep_ceremony(None, SIGN_IN, ceremony.state).await?;
        Ok(PasskeyCeremony { id, options: ceremony.options })
    }

    /// Signs in with the browser's answer to a passkey sign-in: a full session (the passkey is
    /// its second factor) for the passkey's owner. The answer must be for a registered
    /// passkey, carry its owner's user handle and sign this ceremony's challenge for this
    /// origin; an unknown passkey, someone else's handle, a disabled person, a reused or lapsed
    /// ceremony all get the one answer `authentication_failed`.
    pub async fn sign_in_with_passkey(
        &self,
        ceremony: &str,
        answer: &str,
        client: &Client,
    ) -> Result<NewSession, AppError> {
        let now = self.now();
        let state = self.take_ceremony(None, SIGN_IN, ceremony).await?;
        let claim = self.0.relying_party.sign_in_claim(answer).ok();
        let found = match claim {
            Some((credential, handle)) => {
                let person = self
                    .store()
                    .read(move |tx| {
                        async move {
                            let Some((owner, json)) = tx.passkey(&credential).await? else {
                                return Ok::<_, AppError>(None);
                            };
                            let person = tx.person(&owner).await?;
                            Ok(person.map(|p| (p, StoredPasskey { id: credential, json })))
                        }
                        .boxed()
                    })
                    .await?;
                person.filter(|(p, _)| user_handle(&p.id) == handle && p.disabled_at.is_none())
            }
            None => None,
        };
        let verified = state.zip(found).and_then(|(state, (person, claimed))| {
            self.0.relying_party.finish_sign_in(answer, &state, &claimed).ok().map(|k| (person, k))
        });
        let Some((person, used)) = verified else {
            let event = anonymous(now, Outcome::Failure, Some("bad_passkey".into()));
            self.store().write(move |tx| async move { tx.append_audit(&event) }.boxed()).await?;
            return Err(AppError::AuthenticationFailed);
        };
        let (owner, budgets) = (person.id.clone(), sign_in_budgets(self, client));
        self.store()
            .write(move |tx| {
                async move {
                    tx.use_passkey(&owner, &used.id, &used.json, now).await?;
                    budgets.refund(tx, now).await?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        self.start_session(person, client, "passkey", Some(Factor::Passkey)).await
    }
}

/// The budgets a passkey sign-in draws on: its source address and the whole installation.
fn sign_in_budgets(app: &App, client: &Client) -> Budgets {
    Budgets::new(
        "login",
        [(SOURCE_LOGIN, app.throttle_subject(&client.address)), (GLOBAL_LOGIN, "all".into())],
    )
}

/// A sign-in event before anyone is known.
fn anonymous(at: Timestamp, outcome: Outcome, reason: Option<String>) -> AuditEvent {
    AuditEvent::ended(outcome, at, Actor::anonymous(), AuditAction::Login, Target::default())
        .with_reason(reason)
}
