//! Second factors: authenticator apps (TOTP, RFC 6238) and recovery codes, what proving one
//! does to a session, and the person's view of their own sessions.
//!
//! A session of a role that needs a second factor starts password-only and reaches nothing
//! but this module until a factor is proven in it (`SessionInfo::needs_second_factor`).
//! Proving one rotates the session's token (ASVS 7.2.4) and records the factor and the time:
//! a factor proven within [`crate::AppConfig::step_up_window`] is a step-up, which the most
//! sensitive actions ask for.
//!
//! Codes are throttled per account (`ACCOUNT_SECOND_FACTOR`, `ACCOUNT_SECOND_FACTOR_DAY`),
//! every attempt is audited, and a code is accepted once: the time step of the last accepted
//! TOTP code is stored and spent by a conditional update, so of two requests carrying the same
//! code exactly one wins (ASVS 6.5.1).

use crate::conflicts::ConflictCode;
use crate::sessions::Session;
use custody_core::audit::{AuditAction, AuditEvent, Outcome, Target};
use custody_core::person::Factor;
use custody_core::throttle::{
    ACCOUNT_SECOND_FACTOR, ACCOUNT_SECOND_FACTOR_DAY, TOTP_CONSECUTIVE_FAILURES,
};
use custody_core::{PersonId, SessionId};
use custody_crypto::totp::TotpSeed;
use data_encoding::BASE32_NOPAD;
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

use crate::sessions::{Client, NewSession, SessionInfo};
use crate::throttle::Budgets;
use crate::{App, AppError};

/// Recovery codes issued at a time.
pub const RECOVERY_CODES: usize = 10;
/// Random bytes in a recovery code: 120 bits, above the 112 bits at which ASVS 6.5.2 allows
/// a keyed hash instead of a slow password hash; 24 base32 characters, shown in groups of
/// four.
const RECOVERY_CODE_BYTES: usize = 15;
/// How long setting up an authenticator app may take, from the seed shown to its first code.
pub const TOTP_ENROLMENT_TTL: std::time::Duration = custody_core::time::minutes(15);

/// What a person needs to set up an authenticator app. Shown once; never logged.
pub struct TotpEnrolment {
    /// The `otpauth://` URI, for the QR code.
    pub uri: Zeroizing<String>,
    /// The seed in base32, for typing in.
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolment(<redacted>)")
    }
}

/// The second factors a person holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Factors {
    /// An authenticator app, confirmed.
    pub totp: bool,
    /// An authenticator app being set up (begun, first code not yet typed).
    pub totp_pending: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// Registered passkeys.
    pub passkeys: u32,
}

impl Factors {
    /// Whether the person can prove a second factor at all.
    pub fn any(self) -> bool {
        self.totp || self.passkeys > 0 || self.recovery_codes_left > 0
    }
}

/// A second factor as presented.
#[derive(Clone)]
pub enum Proof {
    /// A six-digit code from the authenticator app.
    Totp(Zeroizing<String>),
    /// One of the recovery codes.
    RecoveryCode(Zeroizing<String>),
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Totp(_) => "Proof::Totp(<redacted>)",
            Self::RecoveryCode(_) => "Proof::RecoveryCode(<redacted>)",
        })
    }
}

/// A factor just proven: the rotated session, and recovery codes when new ones were issued
/// (shown once, with the first authenticator app).
#[derive(Debug)]
pub struct Proven {
    /// The session under its new token.
    pub session: NewSession,
    /// New recovery codes, when the person had none.
    pub recovery_codes: Option<Vec<Zeroizing<String>>>,
}

/// A recovery code for showing once, and the keyed hash that is stored.
type NewRecoveryCode = (Zeroizing<String>, [u8; 32]);

/// What became of an authenticator-app code.
enum TotpCheck {
    /// Right, and its step spent.
    Accepted,
    /// Wrong, used already, or no app.
    Refused,
    /// Not checked: too many wrong codes in a row.
    Locked,
}

/// A recovery code as typed, normalised: case, spaces and dashes do not matter.
fn normalise_recovery_code(code: &str) -> String {
    code.chars().filter(|c| !matches!(c, '-' | ' ')).collect::<String>().to_ascii_uppercase()
}

/// A recovery code for showing: base32 in groups of four.
fn show_recovery_code(raw: &[u8]) -> Zeroizing<String> {
    let plain = Zeroizing::new(BASE32_NOPAD.encode(raw));
    let groups: Vec<&str> =
        plain.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    Zeroizing::new(groups.join("-"))
}

impl App {
    pub(crate) fn factor_event(
        &self,
        s: &SessionInfo,
        action: AuditAction,
        outcome: Outcome,
        reason: &str,
    ) -> AuditEvent {
        AuditEvent::ended(
            outcome,
            self.now(),
            s.caller.actor(),
            action,
            Target { site: s.person.site.clone(), ..Target::default() },
        )
        .because(reason)
    }

    /// The second factors `s`'s person holds.
    pub async fn factors(&self, s: &SessionInfo) -> Result<Factors, AppError> {
        let person = s.person.id.clone();
        self.store()
            .read(move |tx| {
                async move {
                    Ok::<_, AppError>(Factors {
                        totp: tx.totp(&person).await?.is_some(),
                        totp_pending: tx.totp_enrolment(&person).await?.is_some(),
                        recovery_codes_left: tx.recovery_codes_left(&person).await?,
                        passkeys: u32::try_from(tx.passkeys_of(&person).await?.len())
                            .unwrap_or(u32::MAX),
                    })
                }
                .boxed()
            })
            .await
    }

    /// Changing factors needs a recent proof of who is asking (ASVS 7.5.1): a step-up when a
    /// factor is held, so that a stolen session or a password alone cannot swap in the
    /// attacker's authenticator; a password given within the step-up window when none is.
    pub(crate) async fn may_change_factors(&self, s: &SessionInfo) -> Result<Factors, AppError> {
        let factors = self.factors(s).await?;
        let (now, window) = (self.now(), self.config().step_up_window);
        if factors.any() && !s.stepped_up(now, window) {
            return Err(AppError::StepUpRequired);
        }
        if !factors.any() && s.signed_in_at.plus(window) <= now {
            return Err(AppError::conflict(
                ConflictCode::SignInAgain,
                "sign in again to set up a second factor: this sign-in is too old for that",
            ));
        }
        Ok(factors)
    }

    /// Begins setting up an authenticator app: a new seed, kept sealed and apart until
    /// [`App::confirm_totp`] sees its first valid code (an app already working stays in use
    /// until then). A person who holds a factor already must have stepped up; one who holds
    /// none may begin from the password-only session, which is how an admin's first factor is
    /// set up.
    pub async fn begin_totp(&self, s: &SessionInfo) -> Result<TotpEnrolment, AppError> {
        self.may_change_factors(s).await?;
        let seed = TotpSeed::generate(self.rng())?;
        let person = s.person.id.clone();
        let sealed = self.keys().totp.seal(person.as_str().as_bytes(), seed.expose_bytes())?;
        let now = self.now();
        let event = self.factor_event(s, AuditAction::TotpEnrol, Outcome::Success, "begun");
        self.store()
            .write(move |tx| {
                async move {
                    tx.put_totp_enrolment(&person, &sealed, now).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(self.enrolment_of(&seed, s))
    }

    fn enrolment_of(&self, seed: &TotpSeed, s: &SessionInfo) -> TotpEnrolment {
        let issuer = format!("Custody {}", host_of(&self.config().public_url));
        TotpEnrolment {
            uri: seed.otpauth_uri(&issuer, s.person.email.as_str()),
            secret: seed.base32(),
        }
    }

    /// The authenticator app being set up, to show again after a mistyped first code; `None`
    /// when there is none or it has expired.
    pub async fn pending_totp(&self, s: &SessionInfo) -> Result<Option<TotpEnrolment>, AppError> {
        let person = s.person.id.clone();
        let lookup = person.clone();
        let found = self
            .store()
            .read(move |tx| async move { tx.totp_enrolment(&lookup).await }.boxed())
            .await?;
        match found {
            Some((sealed, begun)) if begun.plus(TOTP_ENROLMENT_TTL) > self.now() => {
                Ok(Some(self.enrolment_of(&self.open_seed(&person, &sealed)?, s)))
            }
            _ => Ok(None),
        }
    }

    /// Spends one second-factor attempt from the person's budgets; refused unchecked (and
    /// audited) when they are spent. The budgets are returned for a refund on success.
    pub(crate) async fn spend_factor_attempt(&self, s: &SessionInfo) -> Result<Budgets, AppError> {
        let subject = s.person.id.to_string();
        let budgets = Budgets::new(
            "factor",
            [(ACCOUNT_SECOND_FACTOR, subject.clone()), (ACCOUNT_SECOND_FACTOR_DAY, subject)],
        );
        let denied = self.factor_event(s, AuditAction::FactorProve, Outcome::Denied, "");
        self.spend_or_throttle(&budgets, denied).await?;
        Ok(budgets)
    }

    /// Records a refused code and answers as every refusal does.
    pub(crate) async fn refuse_factor(&self, s: &SessionInfo, reason: &str) -> AppError {
        let event = self.factor_event(s, AuditAction::FactorProve, Outcome::Failure, reason);
        match self.store().write(move |tx| async move { tx.append_audit(&event) }.boxed()).await {
            Ok(()) => AppError::AuthenticationFailed,
            Err(e) => e.into(),
        }
    }

    /// Proves a second factor in the session whose token is `token`: the second step of
    /// signing in, or a step-up. On success the session is rotated (new token, same id) with
    /// the factor and the time recorded.
    pub async fn prove_second_factor(
        &self,
        token: &str,
        s: &SessionInfo,
        proof: Proof,
        client: &Client,
    ) -> Result<Proven, AppError> {
        let budgets = self.spend_factor_attempt(s).await?;
        let person = &s.person.id;
        let factor = match &proof {
            Proof::Totp(code) => match self.check_totp(person, code).await? {
                TotpCheck::Accepted => Some(Factor::Totp),
                TotpCheck::Refused => None,
                TotpCheck::Locked => {
                    let event = self.factor_event(
                        s,
                        AuditAction::FactorProve,
                        Outcome::Denied,
                        "totp_locked",
                    );
                    self.store()
                        .write(move |tx| async move { tx.append_audit(&event) }.boxed())
                        .await?;
                    return Err(AppError::conflict(
                        ConflictCode::TotpLocked,
                        "too many wrong codes: the authenticator app is locked. Use a recovery \
                         code, then set the app up again",
                    ));
                }
            },
            Proof::RecoveryCode(code) => {
                self.check_recovery_code(person, code).await?.then_some(Factor::RecoveryCode)
            }
        };
        let Some(factor) = factor else {
            let reason = match proof {
                Proof::Totp(_) => "bad_code:totp",
                Proof::RecoveryCode(_) => "bad_code:recovery_code",
            };
            return Err(self.refuse_factor(s, reason).await);
        };
        self.rotate_with_factor(token, s, factor, budgets, Vec::new(), None, client).await
    }

    /// Confirms the authenticator app being set up with its first valid code: it becomes the
    /// person's app (replacing any earlier one), the session is rotated as by a proven factor,
    /// and a person who had no recovery codes gets ten (shown once).
    pub async fn confirm_totp(
        &self,
        token: &str,
        s: &SessionInfo,
        code: &str,
        client: &Client,
    ) -> Result<Proven, AppError> {
        let budgets = self.spend_factor_attempt(s).await?;
        let now = self.now();
        let person = s.person.id.clone();
        let lookup = person.clone();
        let found = self
            .store()
            .read(move |tx| {
                async move {
                    Ok::<_, AppError>((
                        tx.totp_enrolment(&lookup).await?,
                        tx.recovery_codes_left(&lookup).await?,
                    ))
                }
                .boxed()
            })
            .await?;
        let (Some((sealed, begun)), codes_left) = found else {
            return Err(AppError::conflict(
                ConflictCode::NoEnrolment,
                "no authenticator app is being set up; start again",
            ));
        };
        if begun.plus(TOTP_ENROLMENT_TTL) <= now {
            return Err(AppError::conflict(
                ConflictCode::EnrolmentExpired,
                "setting up the authenticator app took too long; start again",
            ));
        }
        let seed = self.open_seed(&person, &sealed)?;
        let step = seed.accept(code, now.as_millis(), None);
        let confirmed = match step {
            Some(step) => {
                let spend = person.clone();
                self.store()
                    .write(move |tx| {
                        async move { tx.confirm_totp(&spend, &sealed, step, now).await }.boxed()
                    })
                    .await?
            }
            None => false,
        };
        if !confirmed {
            return Err(self.refuse_factor(s, "bad_code:totp_enrolment").await);
        }
        let event = self.factor_event(s, AuditAction::TotpEnrol, Outcome::Success, "confirmed");
        let recovery = if codes_left == 0 { Some(self.new_recovery_codes(&person)?) } else { None };
        self.rotate_with_factor(token, s, Factor::Totp, budgets, vec![event], recovery, client)
            .await
    }

    /// Rotates the session `token` after `factor` was proven: new token, same id and start
    /// (so the absolute timeout still runs from sign-in), the factor and the time recorded,
    /// the attempt refunded, and `recovery` codes stored when given.
    #[allow(clippy::too_many_arguments, reason = "one internal step with its whole context")]
    pub(crate) async fn rotate_with_factor(
        &self,
        token: &str,
        s: &SessionInfo,
        factor: Factor,
        budgets: Budgets,
        mut events: Vec<AuditEvent>,
        recovery: Option<Vec<NewRecoveryCode>>,
        client: &Client,
    ) -> Result<Proven, AppError> {
        let now = self.now();
        let created_at = self.session_created_at(token).await?;
        let (new_token, row) =
            self.new_session_row(&s.person.id, s.id.clone(), created_at, Some((factor, now)))?;
        let old = self.session_hash(token);
        if recovery.is_some() {
            events.push(self.factor_event(
                s,
                AuditAction::RecoveryCodesIssue,
                Outcome::Success,
                "first_factor",
            ));
        }
        events.push(self.factor_event(
            s,
            AuditAction::FactorProve,
            Outcome::Success,
            factor.as_str(),
        ));
        let hashes: Vec<[u8; 32]> = recovery.iter().flatten().map(|(_, h)| *h).collect();
        let (app, client) = (self.clone(), client.clone());
        self.store()
            .write(move |tx| {
                async move {
                    // The old token stops working in the same unit the new one starts.
                    if !tx.delete_session(&old).await? {
                        return Err(AppError::AuthenticationFailed);
                    }
                    let person = row.person.clone();
                    app.insert_session(tx, row, &client).await?;
                    budgets.refund(tx, now).await?;
                    if !hashes.is_empty() {
                        tx.replace_recovery_codes(&person, &hashes, now).await?;
                    }
                    for event in &events {
                        tx.append_audit(event)?;
                    }
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(Proven {
            session: NewSession {
                token: new_token,
                person: s.person.clone(),
                // A super-admin who proved an authenticator code still owes a passkey.
                needs_second_factor: s.person.role.needs_second_factor()
                    && !s.person.role.accepts_second_factor(factor),
                device_cookie: Some(self.device_cookie(&s.person.id)?),
            },
            recovery_codes: recovery.map(|codes| codes.into_iter().map(|(c, _)| c).collect()),
        })
    }

    /// When the session with this token began.
    async fn session_created_at(&self, token: &str) -> Result<custody_core::Timestamp, AppError> {
        let hash = self.session_hash(token);
        self.store()
            .read(move |tx| async move { tx.session(&hash).await }.boxed())
            .await?
            .map(|s| s.created_at)
            .ok_or(AppError::AuthenticationFailed)
    }

    fn open_seed(&self, person: &PersonId, sealed: &[u8]) -> Result<TotpSeed, AppError> {
        let bytes = Zeroizing::new(self.keys().totp.open(person.as_str().as_bytes(), sealed)?);
        Ok(TotpSeed::from_bytes(&bytes)?)
    }

    /// Checks a code of the person's authenticator app and spends its step; counts a wrong
    /// code, and refuses unchecked once [`TOTP_CONSECUTIVE_FAILURES`] came in a row.
    async fn check_totp(&self, person: &PersonId, code: &str) -> Result<TotpCheck, AppError> {
        let lookup = person.clone();
        let Some(row) =
            self.store().read(move |tx| async move { tx.totp(&lookup).await }.boxed()).await?
        else {
            return Ok(TotpCheck::Refused);
        };
        if row.failures >= TOTP_CONSECUTIVE_FAILURES {
            return Ok(TotpCheck::Locked);
        }
        let seed = self.open_seed(person, &row.sealed_seed)?;
        let step = seed.accept(code, self.now().as_millis(), Some(row.last_step));
        let person = person.clone();
        let accepted = self
            .store()
            .write(move |tx| {
                async move {
                    let spent = match step {
                        Some(step) => tx.spend_totp_step(&person, step).await?,
                        None => false,
                    };
                    if !spent {
                        tx.record_totp_failure(&person).await?;
                    }
                    Ok::<_, AppError>(spent)
                }
                .boxed()
            })
            .await?;
        Ok(if accepted { TotpCheck::Accepted } else { TotpCheck::Refused })
    }

    /// Checks a recovery code and spends it.
    async fn check_recovery_code(&self, person: &PersonId, code: &str) -> Result<bool, AppError> {
        let hash = self.recovery_code_hash(person, &normalise_recovery_code(code));
        let now = self.now();
        let person = person.clone();
        Ok(self
            .store()
            .write(move |tx| {
                async move { tx.spend_recovery_code(&person, &hash, now).await }.boxed()
            })
            .await?)
    }

    fn recovery_code_hash(&self, person: &PersonId, normalised: &str) -> [u8; 32] {
        self.keys().recovery.hash(&[person.as_str().as_bytes(), normalised.as_bytes()])
    }

    /// Ten new recovery codes for showing, with the keyed hashes to store.
    pub(crate) fn new_recovery_codes(
        &self,
        person: &PersonId,
    ) -> Result<Vec<NewRecoveryCode>, AppError> {
        (0..RECOVERY_CODES)
            .map(|_| {
                let raw: Zeroizing<[u8; RECOVERY_CODE_BYTES]> = Zeroizing::new(self.rng().bytes()?);
                let shown = show_recovery_code(raw.as_slice());
                let hash = self.recovery_code_hash(person, &normalise_recovery_code(&shown));
                Ok((shown, hash))
            })
            .collect()
    }

    /// Replaces the person's recovery codes with ten new ones (shown once). Needs a step-up.
    pub async fn issue_recovery_codes(
        &self,
        s: &SessionInfo,
    ) -> Result<Vec<Zeroizing<String>>, AppError> {
        let factors = self.may_change_factors(s).await?;
        if !factors.totp && factors.passkeys == 0 {
            return Err(AppError::conflict(
                ConflictCode::NoFactor,
                "set up an authenticator app or a passkey first; recovery codes back one up",
            ));
        }
        let codes = self.new_recovery_codes(&s.person.id)?;
        let hashes: Vec<[u8; 32]> = codes.iter().map(|(_, h)| *h).collect();
        let (person, now) = (s.person.id.clone(), self.now());
        let event =
            self.factor_event(s, AuditAction::RecoveryCodesIssue, Outcome::Success, "replaced");
        self.store()
            .write(move |tx| {
                async move {
                    tx.replace_recovery_codes(&person, &hashes, now).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(codes.into_iter().map(|(c, _)| c).collect())
    }

    /// Removes the person's authenticator app. Needs a step-up; refused when the person's
    /// role needs a second factor and the app is the only one they hold.
    pub async fn remove_totp(&self, s: &SessionInfo) -> Result<(), AppError> {
        let factors = self.may_change_factors(s).await?;
        if s.person.role.needs_second_factor() && factors.totp && factors.passkeys == 0 {
            return Err(AppError::conflict(
                ConflictCode::LastFactor,
                "your role needs a second factor: add a passkey before removing the app",
            ));
        }
        let person = s.person.id.clone();
        let event = self.factor_event(s, AuditAction::TotpEnrol, Outcome::Success, "removed");
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.delete_totp(&person).await? {
                        return Err(AppError::NotFound);
                    }
                    tx.append_audit(&event)?;
                    Ok(())
                }
                .boxed()
            })
            .await
    }

    /// The person's live sessions, newest first.
    pub async fn sessions_of(&self, s: &SessionInfo) -> Result<Vec<Session>, AppError> {
        let (person, app) = (s.person.id.clone(), self.clone());
        let now = self.now();
        let idle = self.session_idle(s.person.role);
        self.store()
            .read(move |tx| {
                async move {
                    let rows = tx.sessions_of(&person).await?;
                    let live = rows
                        .into_iter()
                        .filter(|r| r.expires_at > now && r.last_seen_at.plus(idle) > now);
                    let Some(sealer) = app.existing_subject_sealer(tx, &person).await? else {
                        return Ok(Vec::new());
                    };
                    live.map(|r| Session::open(r, &sealer)).collect()
                }
                .boxed()
            })
            .await
    }

    /// Ends one of the person's own sessions. Another person's session id is "not found".
    pub async fn end_session(&self, s: &SessionInfo, id: &SessionId) -> Result<(), AppError> {
        let (person, id) = (s.person.id.clone(), id.clone());
        let event = self.factor_event(s, AuditAction::SessionEnd, Outcome::Success, "one");
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.delete_session_of(&person, &id).await? {
                        return Err(AppError::NotFound);
                    }
                    tx.append_audit(&event)?;
                    Ok(())
                }
                .boxed()
            })
            .await
    }

    /// Ends every session of the person but the one whose token is `token`; how many ended.
    pub async fn end_other_sessions(&self, s: &SessionInfo, token: &str) -> Result<u64, AppError> {
        let (person, keep) = (s.person.id.clone(), self.session_hash(token));
        let event = self.factor_event(s, AuditAction::SessionEnd, Outcome::Success, "all_others");
        self.store()
            .write(move |tx| {
                async move {
                    let n = tx.delete_sessions_of(&person, Some(&keep)).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(n)
                }
                .boxed()
            })
            .await
    }
}

/// The host of a URL, for labelling the authenticator entry.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', ':']).next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_read_forgivingly() {
        let shown = show_recovery_code(&[0xA5; RECOVERY_CODE_BYTES]);
        assert_eq!(shown.len(), 24 + 5);
        assert!(shown.split('-').all(|g| g.len() == 4));
        let typed = shown.to_lowercase().replace('-', " ");
        assert_eq!(normalise_recovery_code(&typed), normalise_recovery_code(&shown));
    }

    #[test]
    fn hosts_label_the_app_entry() {
        assert_eq!(host_of("https://lockers.example.org:8443/portal"), "lockers.example.org");
        assert_eq!(host_of("lockers.example.org"), "lockers.example.org");
    }
}
