//! People's sessions: password sign-in, the session cookie and its CSRF token, sign-out.
//!
//! Secrets are compared only through keyed hashes in constant time, and failed attempts look
//! the same whatever failed (ASVS 6.3.8): unknown account, wrong password and disabled account
//! all cost one Argon2id verification and give [`AppError::AuthenticationFailed`].

use crate::people::Person;
use crate::personal::{Field, SubjectSealer};
use crate::throttle::Budgets;
use crate::{App, AppError, Caller};
use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Target};
use custody_core::person::{Factor, Role};
use custody_core::text::Email;
use custody_core::throttle::{
    ACCOUNT_LOGIN, ACCOUNT_LOGIN_DAY, DEVICE_LOGIN, GLOBAL_LOGIN, SOURCE_LOGIN,
};
use custody_core::{PersonId, SessionId, Timestamp};
use custody_crypto::constant_time_eq;
use custody_store::{PersonRow, SessionRow, Tx};
use data_encoding::BASE64URL_NOPAD;
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

/// A signed-in session, without its token's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Public id, for the owner's list of sessions.
    pub id: SessionId,
    /// Who.
    pub person: PersonId,
    /// Created.
    pub created_at: Timestamp,
    /// Last request.
    pub last_seen_at: Timestamp,
    /// Absolute end.
    pub expires_at: Timestamp,
    /// The second factor last proven in this session, and when; `None` for password only.
    pub factor: Option<(Factor, Timestamp)>,
    /// The network address it was started from.
    pub source: String,
    /// The browser it was started in, as it named itself (truncated).
    pub user_agent: String,
}

impl Session {
    /// A stored session, where it was started from opened with its person's key.
    pub(crate) fn open(row: SessionRow, sealer: &SubjectSealer) -> Result<Self, AppError> {
        let client = sealer.open(Field::SessionClient, &row.client)?;
        let (source, user_agent): (String, String) = serde_json::from_str(&client)
            .map_err(|_| AppError::Crypto(custody_crypto::CryptoError::Verification))?;
        Ok(Self {
            id: row.id,
            person: row.person,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
            expires_at: row.expires_at,
            factor: row.factor,
            source,
            user_agent,
        })
    }
}

/// Where a request comes from, as far as the server can tell: the address throttles are
/// counted against, the browser's own name for itself (for the person's list of sessions;
/// never trusted for anything), and the device cookie it holds, if any.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    /// Network address (the peer, or the client a trusted proxy names).
    pub address: String,
    /// `User-Agent`, cut to [`Client::USER_AGENT_CHARS`] characters.
    pub user_agent: String,
    /// The device cookie: this browser signed in to an account before (see
    /// [`App::device_cookie`]).
    pub device: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("user_agent", &self.user_agent)
            .field("device", &self.device.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// Longest user agent kept.
    pub const USER_AGENT_CHARS: usize = 200;

    /// A client at `address` calling itself `user_agent`.
    pub fn new(address: impl Into<String>, user_agent: &str) -> Self {
        Self {
            address: address.into(),
            user_agent: user_agent.chars().take(Self::USER_AGENT_CHARS).collect(),
            device: None,
        }
    }

    /// The same client, holding device cookie `device`.
    #[must_use]
    pub fn with_device(self, device: Option<&str>) -> Self {
        Self { device: device.map(|d| Zeroizing::new(d.to_owned())), ..self }
    }
}

/// A session just created (or rotated). The token goes into the cookie and nowhere else.
#[derive(Debug)]
pub struct NewSession {
    /// The cookie value.
    pub token: Zeroizing<String>,
    /// Who signed in.
    pub person: Person,
    /// Whether the session still needs a second factor before it reaches anything else.
    pub needs_second_factor: bool,
    /// A new device cookie for the browser, once the sign-in is complete.
    pub device_cookie: Option<Zeroizing<String>>,
}

/// A verified session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The person.
    pub person: Person,
    /// As the policy sees them.
    pub caller: Caller,
    /// The session's public id.
    pub id: SessionId,
    /// The second factor last proven in it, and when.
    pub factor: Option<(Factor, Timestamp)>,
    /// When the password was given (a rotation keeps it).
    pub signed_in_at: Timestamp,
}

impl SessionInfo {
    /// Whether the session reaches only the second-factor step: the person's role needs a
    /// second factor and none that counts for it was proven in this session (ASVS 6.3.3; a
    /// super-admin's must be a passkey).
    pub fn needs_second_factor(&self) -> bool {
        self.person.role.needs_second_factor() && self.counted_factor_at().is_none()
    }

    /// When the session's second factor was proven, if it counts for the person's role: what
    /// the access policy sees as their step-up.
    pub fn counted_factor_at(&self) -> Option<Timestamp> {
        counted_factor_at(self.person.role, self.factor)
    }

    /// Whether any second factor was proven within `window` of `now`: enough to change
    /// factors, which is how a super-admin who proved an authenticator code adds a passkey.
    pub fn stepped_up(&self, now: Timestamp, window: std::time::Duration) -> bool {
        self.factor.is_some_and(|(_, at)| at.plus(window) > now && at <= now)
    }
}

/// When `factor` was proven, if it counts as a second factor for `role`.
fn counted_factor_at(role: Role, factor: Option<(Factor, Timestamp)>) -> Option<Timestamp> {
    factor.filter(|(f, _)| role.accepts_second_factor(*f)).map(|(_, at)| at)
}

/// Activity on a session is written at most this often, so reading a page is not a write.
pub(crate) const TOUCH_EVERY_MS: i64 = 60_000;

impl App {
    /// Signs a person in with e-mail and password. For a role that needs a second factor the
    /// session reaches only the second-factor step until one is proven in it.
    pub async fn login(
        &self,
        email: &str,
        password: Zeroizing<String>,
        client: &Client,
    ) -> Result<NewSession, AppError> {
        let now = self.now();
        // The account key uses what was typed (normalised when it parses), so throttling applies
        // equally to addresses that exist and ones that do not.
        let account = Email::parse(email)
            .map_or_else(|_| email.trim().to_lowercase(), |e| e.as_str().to_owned());
        let person = match Email::parse(email) {
            Ok(e) => {
                let index = self.email_index(&e);
                self.store()
                    .read(move |tx| async move { tx.person_by_email_index(&index).await }.boxed())
                    .await?
            }
            Err(_) => None,
        };
        let budgets = self.login_budgets(&account, person.as_ref(), client);
        let denied =
            AuditEvent::denied(now, Actor::anonymous(), AuditAction::Login, Target::default());
        self.spend_or_throttle(&budgets, denied).await?;

        let usable = person.as_ref().filter(|p| p.disabled_at.is_none());
        let stored = usable.and_then(|p| p.password_hash.clone());
        let ok = self.verify_password(password, stored).await? && usable.is_some();

        let person = match (ok, person) {
            (true, Some(p)) => p,
            (_, person) => {
                let event = AuditEvent::failure(
                    now,
                    person.as_ref().map_or_else(Actor::anonymous, |p| Actor {
                        kind: ActorKind::Person,
                        id: Some(p.id.to_string()),
                    }),
                    AuditAction::Login,
                    Target::default(),
                )
                .because("bad_credentials");
                self.store()
                    .write(move |tx| async move { tx.append_audit(&event) }.boxed())
                    .await?;
                return Err(AppError::AuthenticationFailed);
            }
        };

        // The attempt succeeded: give back the failures it reserved.
        self.store().write(move |tx| async move { budgets.refund(tx, now).await }.boxed()).await?;
        self.start_session(person, client, "password", None).await
    }

    /// Starts a session for `person`, who just proved who they are by `how` (`password`,
    /// `link`, `passkey`), and records the sign-in. `factor` is the second factor that proof
    /// was as well (a passkey is). Roles that need a second factor and have not shown one get
    /// a session that reaches only the second-factor step; everyone else's browser gets a
    /// device cookie.
    pub(crate) async fn start_session(
        &self,
        person: PersonRow,
        client: &Client,
        how: &str,
        factor: Option<Factor>,
    ) -> Result<NewSession, AppError> {
        let now = self.now();
        let view = self.person_view(&person)?;
        let (token, session) = self.new_session_row(
            &person.id,
            SessionId::from_random(self.rng().bytes()?),
            now,
            factor.map(|f| (f, now)),
        )?;
        let event = AuditEvent::success(
            now,
            Actor { kind: ActorKind::Person, id: Some(person.id.to_string()) },
            AuditAction::Login,
            Target { site: person.site.clone(), ..Target::default() },
        )
        .because(how);
        let (app, client) = (self.clone(), client.clone());
        self.store()
            .write(move |tx| {
                async move {
                    app.insert_session(tx, session, &client).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        let needs_second_factor = person.role.needs_second_factor()
            && !factor.is_some_and(|f| person.role.accepts_second_factor(f));
        let device_cookie =
            if needs_second_factor { None } else { Some(self.device_cookie(&person.id)?) };
        Ok(NewSession { token, person: view, needs_second_factor, device_cookie })
    }

    /// A fresh token and the session row it opens for `person`: at sign-in, or when a
    /// session is rotated (same `id`, new token) because a factor was proven in it.
    pub(crate) fn new_session_row(
        &self,
        person: &PersonId,
        id: SessionId,
        created_at: Timestamp,
        factor: Option<(Factor, Timestamp)>,
    ) -> Result<(Zeroizing<String>, SessionRow), AppError> {
        let token_bytes: [u8; 32] = self.rng().bytes()?;
        let token = Zeroizing::new(BASE64URL_NOPAD.encode(&token_bytes));
        let now = self.now();
        let session = SessionRow {
            token_hash: self.keys().sessions.hash(&[token.as_bytes()]).to_vec(),
            id,
            person: person.clone(),
            created_at,
            last_seen_at: now,
            expires_at: created_at.plus(self.config().session_absolute),
            factor,
            // Sealed under the person's key as it is stored (`App::insert_session`).
            client: Vec::new(),
        };
        Ok((token, session))
    }

    /// Stores `session`, started from `client`: where it came from is sealed under the
    /// person's own key. Someone erased has no key and gets no session.
    pub(crate) async fn insert_session(
        &self,
        tx: &mut Tx,
        mut session: SessionRow,
        client: &Client,
    ) -> Result<(), AppError> {
        let sealer = self.subject_sealer(tx, &session.person).await?;
        let sealer = sealer.ok_or(AppError::AuthenticationFailed)?;
        let text = serde_json::to_string(&(&client.address, &client.user_agent))
            .map_err(|_| AppError::Invalid("client".into()))?;
        session.client = sealer.seal(Field::SessionClient, &text)?;
        tx.insert_session(&session).await?;
        Ok(())
    }

    /// The budgets a sign-in attempt draws on. A browser that signed in to this account before
    /// counts against a budget of its own, which no one else's failures spend (OWASP "device
    /// cookies"); any other attempt counts against the account (short and daily), its source
    /// address and the whole installation.
    fn login_budgets(&self, account: &str, person: Option<&PersonRow>, client: &Client) -> Budgets {
        let trusted_device = person
            .zip(client.device.as_deref())
            .and_then(|(p, cookie)| self.device_cookie_of(cookie, &p.id));
        if let Some(device) = trusted_device {
            return Budgets::new("login", [(DEVICE_LOGIN, device)]);
        }
        let account = self.throttle_subject(account);
        Budgets::new(
            "login",
            [
                (ACCOUNT_LOGIN, account.clone()),
                (ACCOUNT_LOGIN_DAY, account),
                (SOURCE_LOGIN, self.throttle_subject(&client.address)),
                (GLOBAL_LOGIN, "all".to_owned()),
            ],
        )
    }

    /// A device cookie for a browser that has just completed signing in to `person`'s account:
    /// `<person id>.<random>.<keyed hash of both>`. It holds no secret of the person's and
    /// grants nothing by itself; it only lets that browser's sign-in attempts count against a
    /// budget of their own.
    pub fn device_cookie(&self, person: &PersonId) -> Result<Zeroizing<String>, AppError> {
        let nonce = BASE64URL_NOPAD.encode(&self.rng().bytes::<16>()?);
        let mac = self.keys().devices.hash(&[person.as_str().as_bytes(), nonce.as_bytes()]);
        Ok(Zeroizing::new(format!("{person}.{nonce}.{}", BASE64URL_NOPAD.encode(&mac))))
    }

    /// The device id (its random part) when `cookie` is a device cookie this server issued for
    /// `person`.
    fn device_cookie_of(&self, cookie: &str, person: &PersonId) -> Option<String> {
        let mut parts = cookie.splitn(3, '.');
        let (who, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if who != person.as_str() || nonce.len() > 64 {
            return None;
        }
        let mac = BASE64URL_NOPAD.decode(mac.as_bytes()).ok()?;
        self.keys()
            .devices
            .verify(&[who.as_bytes(), nonce.as_bytes()], &mac)
            .then(|| nonce.to_owned())
    }

    /// How long a session of `role` lives without a request.
    pub(crate) fn session_idle(&self, role: Role) -> std::time::Duration {
        let idle = self.config().session_idle;
        if role == Role::SuperAdmin {
            idle.min(self.config().session_idle_super_admin)
        } else {
            idle
        }
    }

    /// The keyed hash a session token is stored under.
    pub(crate) fn session_hash(&self, token: &str) -> Vec<u8> {
        self.keys().sessions.hash(&[token.as_bytes()]).to_vec()
    }

    async fn verify_password(
        &self,
        password: Zeroizing<String>,
        stored: Option<String>,
    ) -> Result<bool, AppError> {
        let _permit = self.0.hash_permits.acquire().await.map_err(|_| AppError::Throttled)?;
        let app = self.clone();
        tokio::task::spawn_blocking(move || app.0.passwords.verify(&password, stored.as_deref()))
            .await
            .map_err(|_| AppError::Crypto(custody_crypto::CryptoError::PasswordHash))
    }

    /// The person behind a session cookie, if the session is live: not expired, not idle too
    /// long, and the person not disabled. Counts as activity.
    pub async fn session(&self, token: &str) -> Result<SessionInfo, AppError> {
        self.live_session(token, true).await
    }

    /// As [`App::session`], without counting as activity: a page's live stream looks again
    /// before each update, and must not keep an idle session alive by itself.
    pub async fn session_unattended(&self, token: &str) -> Result<SessionInfo, AppError> {
        self.live_session(token, false).await
    }

    async fn live_session(&self, token: &str, activity: bool) -> Result<SessionInfo, AppError> {
        if token.len() > 128 {
            return Err(AppError::AuthenticationFailed);
        }
        let now = self.now();
        let hash = self.keys().sessions.hash(&[token.as_bytes()]).to_vec();
        let lookup = hash.clone();
        let found = self
            .store()
            .read(move |tx| {
                async move {
                    let Some(s) = tx.session(&lookup).await? else {
                        return Ok::<_, AppError>(None);
                    };
                    let person = tx.person(&s.person).await?;
                    Ok(person.map(|p| (s, p)))
                }
                .boxed()
            })
            .await?;
        let Some((session, person)) = found else { return Err(AppError::AuthenticationFailed) };
        let idle = self.session_idle(person.role);
        let live = session.expires_at > now
            && session.last_seen_at.plus(idle) > now
            && person.disabled_at.is_none();
        if !live {
            self.store()
                .write(move |tx| async move { tx.delete_session(&hash).await.map(|_| ()) }.boxed())
                .await?;
            return Err(AppError::AuthenticationFailed);
        }
        if activity && now.as_millis() - session.last_seen_at.as_millis() >= TOUCH_EVERY_MS {
            self.store()
                .write(move |tx| async move { tx.touch_session(&hash, now).await }.boxed())
                .await?;
        }
        let counted = counted_factor_at(person.role, session.factor);
        let caller = Caller::Principal(crate::people::principal_of_row(&person, counted));
        // Someone erased has no sessions left; a session found for them opens nothing.
        let view = match self.person_view(&person) {
            Err(AppError::NotFound) => return Err(AppError::AuthenticationFailed),
            other => other?,
        };
        Ok(SessionInfo {
            person: view,
            caller,
            id: session.id,
            factor: session.factor,
            signed_in_at: session.created_at,
        })
    }

    /// Ends a session.
    pub async fn logout(&self, token: &str) -> Result<(), AppError> {
        let hash = self.keys().sessions.hash(&[token.as_bytes()]).to_vec();
        let Ok(info) = self.session(token).await else { return Ok(()) };
        let event = AuditEvent::success(
            self.now(),
            info.caller.actor(),
            AuditAction::Logout,
            Target::default(),
        );
        self.store()
            .write(move |tx| {
                async move {
                    tx.delete_session(&hash).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await
    }

    /// The CSRF token that belongs to a session token: a keyed hash of it, so it needs no
    /// storage and is useless without the session.
    pub fn csrf_token(&self, session_token: &str) -> String {
        BASE64URL_NOPAD.encode(&self.keys().csrf.hash(&[session_token.as_bytes()]))
    }

    /// Whether `presented` is the CSRF token of `session_token` (constant time).
    pub fn csrf_ok(&self, session_token: &str, presented: &str) -> bool {
        constant_time_eq(self.csrf_token(session_token).as_bytes(), presented.as_bytes())
    }
}
