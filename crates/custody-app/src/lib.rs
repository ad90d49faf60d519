//! Custody's use cases: what operators, carriers, couriers, residents and devices can make
//! happen, each as one atomic unit of work with its audit entry.
//!
//! **Architecture Invariant:** this crate knows nothing of HTTP, HTML or WebSockets. The server
//! proves who is calling and hands over a [`Caller`]; every use case checks the access policy of
//! `custody-core` itself before touching anything, so no route can forget it.
//!
//! **Architecture Invariant:** every state change appends its audit entry inside the same
//! [`custody_store::Store::write`] unit. If the append fails, the change fails (DESIGN.md §4
//! invariant 1). Refusals are audited in a unit of their own, which commits even though the
//! caller gets an error.

/// Declares a use case's view of a stored record: the fields its callers may see, copied from
/// the store's row. What a view leaves out (a secret's hash, a badge's number) never leaves the
/// app, and a change to the store's rows stops here instead of reaching the server's pages.
macro_rules! view {
    (
        $(#[$meta:meta])*
        $name:ident from $row:ty {
            $($(#[$field_meta:meta])* $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl From<$row> for $name {
            fn from(row: $row) -> Self {
                Self { $($field: row.$field,)* }
            }
        }
    };
}

pub mod alerts;
pub mod api_keys;
pub mod approvals;
pub mod audit;
pub mod badges;
pub mod breaches;
pub mod bulk;
pub mod carriers;
pub mod compartments;
pub mod conflicts;
pub mod couriers;
pub mod devices;
pub mod factors;
pub mod fanout;
pub mod incident;
pub mod lockdown;
pub mod offline;
pub mod outbox;
pub mod parcels;
pub mod passkeys;
pub mod people;
pub mod personal;
pub mod presence;
pub mod qr;
pub mod refusals;
pub mod remote_opens;
pub mod retention;
pub mod sensors;
pub mod sessions;
pub mod setup;
pub mod sign_in_links;
pub mod sites;
mod throttle;
pub mod unaddressed;

use crate::conflicts::ConflictCode;
use std::sync::Arc;
use std::time::Duration;

use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Target};
use custody_core::compartment::DoorState;
use custody_core::policy::{Denied, Principal};
use custody_core::time::{days, hours, minutes};
use custody_core::{BankId, Clock, PersonId, SiteId, Timestamp};
use custody_crypto::kek::KekRing;
use custody_crypto::pki::CertificateAuthority;
use custody_crypto::seal::Sealer;
use custody_crypto::sign::{PublicKey, SigningKey};
use custody_crypto::{CryptoError, KeyedHasher, MasterKey, Purpose, Rng};
use custody_proto::device::{OPEN_COMMAND_DOMAIN, OpenCommand, SignedOpenCommand};
use custody_store::{CompartmentRow, Store, StoreError, Tx};
use data_encoding::{BASE64, HEXLOWER};
use futures_util::FutureExt as _;
use tokio::sync::Semaphore;

/// A use case failed. Each variant has a stable machine-readable [`AppError::code`].
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The thing does not exist, or the caller may not know that it does.
    #[error("not found")]
    NotFound,
    /// The caller's role does not allow this.
    #[error("not allowed")]
    Forbidden,
    /// The request is malformed; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// The request clashes with the current state; `code` names the clash.
    #[error("{message}")]
    Conflict {
        /// Which clash: one of the documented [`ConflictCode`]s.
        code: ConflictCode,
        /// What to do about it.
        message: String,
    },
    /// Sign-in failed. Deliberately says nothing about which part was wrong.
    #[error("sign-in failed")]
    AuthenticationFailed,
    /// The session was started with a password only, and the person's role needs a second
    /// factor before anything else.
    #[error("prove your second factor (authenticator app, passkey or recovery code) first")]
    SecondFactorRequired,
    /// The action needs a second factor proven within the last few minutes.
    #[error("confirm with your second factor first; this action needs a fresh one")]
    StepUpRequired,
    /// Too many attempts; wait and try again.
    #[error("too many attempts; try again later")]
    Throttled,
    /// The pickup code was not accepted. One error for every reason.
    #[error("code not accepted")]
    PickupRefused,
    /// The bank's agent is not connected, so a door cannot be opened now.
    #[error("the bank's agent is not connected; try again when it is online")]
    BankOffline,
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
    /// A cryptographic operation failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The store's refusals are the caller's to fix, so they become the use case's own errors (and
/// the server never has to know the store's error type); every other store failure is ours.
impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(_) => Self::Invalid(e.to_string()),
            StoreError::Conflict => Self::conflict(ConflictCode::Exists, e.to_string()),
            other => Self::Store(other),
        }
    }
}

impl AppError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::Invalid(_) => "invalid_request",
            Self::Conflict { code, .. } => code.as_str(),
            Self::AuthenticationFailed => "authentication_failed",
            Self::SecondFactorRequired => "second_factor_required",
            Self::StepUpRequired => "step_up_required",
            Self::Throttled => "throttled",
            Self::PickupRefused => "pickup_refused",
            Self::BankOffline => "bank_offline",
            Self::Store(_) | Self::Crypto(_) => "internal",
        }
    }

    /// A conflict with the current state, with its stable code.
    pub fn conflict(code: ConflictCode, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into() }
    }

    pub(crate) fn invalid(e: impl std::fmt::Display) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// Rows as their views, for a use case's answer.
pub(crate) fn views<R, V: From<R>>(rows: Vec<R>) -> Vec<V> {
    rows.into_iter().map(V::from).collect()
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator at the `custody` command, with the data directory in hand. Whoever can read
    /// the keys can do anything, so the policy does not apply; every act is still audited.
    Operator,
    /// A verified principal.
    Principal(Principal),
}

impl Caller {
    /// The actor recorded in the audit log.
    pub fn actor(&self) -> Actor {
        match self {
            Self::Operator => Actor { kind: ActorKind::System, id: Some("operator".into()) },
            Self::Principal(Principal::Person { id, .. }) => {
                Actor { kind: ActorKind::Person, id: Some(id.to_string()) }
            }
            Self::Principal(Principal::CarrierKey { key, .. }) => {
                Actor { kind: ActorKind::CarrierKey, id: Some(key.to_string()) }
            }
            Self::Principal(Principal::Device { device, .. }) => {
                Actor { kind: ActorKind::Device, id: Some(device.to_string()) }
            }
        }
    }

    /// The signed-in person calling, if it is one.
    pub fn person(&self) -> Option<&PersonId> {
        match self {
            Self::Principal(Principal::Person { id, .. }) => Some(id),
            _ => None,
        }
    }

    /// For a read: what the rule keeps from the caller is not there for them
    /// ([`AppError::NotFound`]), whatever the reason. Not audited, since nothing was done or
    /// refused; a read that is refused on the record goes through [`App::authorize_sight`].
    pub(crate) fn unless_hidden(
        &self,
        rule: impl FnOnce(&Principal) -> Result<(), Denied>,
    ) -> Result<(), AppError> {
        self.check(rule).map_err(|_| AppError::NotFound)
    }

    /// Applies a policy check; the operator passes every check.
    pub(crate) fn check(
        &self,
        rule: impl FnOnce(&Principal) -> Result<(), Denied>,
    ) -> Result<(), Denied> {
        match self {
            Self::Operator => Ok(()),
            Self::Principal(p) => rule(p),
        }
    }
}

/// Timing settings. The defaults are the product's; tests shorten none of them — they move the
/// clock instead.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The portal's public URL, for links in messages.
    pub public_url: String,
    /// Where agents reach the device gateway (`host:port`), told to them at enrolment.
    pub gateway_address: String,
    /// How long a deposit may hold a compartment before it is released.
    pub reservation_ttl: Duration,
    /// How long an open command stays executable.
    pub command_ttl: Duration,
    /// Session ends after this long without a request (ASVS 7.3.1).
    pub session_idle: Duration,
    /// … and a super-admin's sooner: they hold every key (ASVS 7.3.1 at level 3).
    pub session_idle_super_admin: Duration,
    /// Session ends this long after sign-in whatever happens (ASVS 7.3.2).
    pub session_absolute: Duration,
    /// A second factor proven this recently counts as a step-up for sensitive actions.
    pub step_up_window: Duration,
    /// How long an enrolment token stays usable.
    pub enrolment_token_ttl: Duration,
    /// Lifetime of device certificates.
    pub device_cert_lifetime: Duration,
    /// Outbox channel for notifications (`email` or `file`).
    pub notification_channel: String,
    /// Concurrent password hashes at most (each takes about 19 MiB and tens of milliseconds).
    pub password_hash_concurrency: usize,
    /// The work of each password hash: production's always, except for a test suite on a debug
    /// build (a release build has no other choice).
    pub password_cost: custody_crypto::password::PasswordCost,
    /// Whether lifting a lockdown needs a second person's approval (on unless a site turns
    /// it off: a lockdown follows an attack, and one stolen account must not end it).
    pub lockdown_lift_needs_approval: bool,
    /// How long an alert of medium severity or above may stay unacknowledged before it is
    /// escalated to everyone who agreed to hear of its site's alerts.
    pub alert_escalation: Duration,
    /// How long a bank's agent may trust the list of codes it checks offline: past this it
    /// opens nothing offline, so a revoked code stops working by then at the latest.
    pub offline_list_ttl: Duration,
    /// Doors opened without a parcel's own credential before each further one needs a second
    /// person (`[security] remote_opens_*`).
    pub remote_opens: custody_core::approval::RemoteOpenBudget,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            public_url: "https://localhost:8443".into(),
            gateway_address: "localhost:8444".into(),
            reservation_ttl: minutes(10),
            command_ttl: Duration::from_secs(30),
            session_idle: minutes(30),
            session_idle_super_admin: minutes(15),
            session_absolute: hours(12),
            step_up_window: minutes(5),
            enrolment_token_ttl: hours(24),
            device_cert_lifetime: days(30),
            notification_channel: "email".into(),
            password_hash_concurrency: 4,
            password_cost: custody_crypto::password::PasswordCost::Production,
            lockdown_lift_needs_approval: true,
            alert_escalation: minutes(15),
            offline_list_ttl: hours(24),
            remote_opens: custody_core::approval::RemoteOpenBudget::default(),
        }
    }
}

/// The keys the use cases work with, all derived from or loaded beside the master key.
pub struct KeyRing {
    pub(crate) codes: KeyedHasher,
    pub(crate) sessions: KeyedHasher,
    pub(crate) api_keys: KeyedHasher,
    pub(crate) enrolment: KeyedHasher,
    pub(crate) csrf: KeyedHasher,
    pub(crate) outbox: Sealer,
    pub(crate) keks: KekRing,
    pub(crate) totp: Sealer,
    pub(crate) webhooks: Sealer,
    pub(crate) recovery: KeyedHasher,
    pub(crate) devices: KeyedHasher,
    pub(crate) sign_in_links: KeyedHasher,
    pub(crate) courier_codes: KeyedHasher,
    pub(crate) presence: KeyedHasher,
    pub(crate) badges: KeyedHasher,
    pub(crate) offline: KeyedHasher,
    pub(crate) email_index: KeyedHasher,
    pub(crate) tracking: Sealer,
    pub(crate) breaches: Sealer,
    pub(crate) throttle: KeyedHasher,
    pub(crate) command: SigningKey,
    pub(crate) ca: CertificateAuthority,
    pub(crate) checkpoint: custody_audit::checkpoint::NoteSigner,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("command", &self.command.public_key())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Derives the purpose keys from `master` and holds the key-encryption keys, the command
    /// key, the CA and the checkpoint signer beside them.
    pub fn new(
        master: &MasterKey,
        keks: KekRing,
        command: SigningKey,
        ca: CertificateAuthority,
        checkpoint: custody_audit::checkpoint::NoteSigner,
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            codes: master.hasher(Purpose::PickupCode),
            sessions: master.hasher(Purpose::Session),
            api_keys: master.hasher(Purpose::ApiKey),
            enrolment: master.hasher(Purpose::Enrolment),
            csrf: master.hasher(Purpose::Csrf),
            outbox: Sealer::new(master, Purpose::Outbox)?,
            keks,
            totp: Sealer::new(master, Purpose::TotpSeeds)?,
            webhooks: Sealer::new(master, Purpose::WebhookSecrets)?,
            recovery: master.hasher(Purpose::RecoveryCodes),
            devices: master.hasher(Purpose::DeviceCookies),
            sign_in_links: master.hasher(Purpose::SignInLinks),
            courier_codes: master.hasher(Purpose::CourierCodes),
            presence: master.hasher(Purpose::PresenceCodes),
            badges: master.hasher(Purpose::Badges),
            offline: master.hasher(Purpose::OfflineCodes),
            email_index: master.hasher(Purpose::EmailIndex),
            tracking: Sealer::new(master, Purpose::TrackingRefs)?,
            breaches: Sealer::new(master, Purpose::Breaches)?,
            throttle: master.hasher(Purpose::ThrottleSubjects),
            command,
            ca,
            checkpoint,
        })
    }
}

/// How many alert changes a slow listener may fall behind before it is told it lagged.
pub const ALERT_CHANGES_BACKLOG: usize = 256;

/// Whether a bank's agent can receive a command now. The server's device hub answers; without
/// one (the `custody` command, use-case tests) every bank counts as reachable.
pub trait Presence: Send + Sync {
    /// Whether `bank`'s agent is connected.
    fn is_online(&self, bank: &BankId) -> bool;

    /// `bank`'s pickup codes changed (one drawn or retired): its agent's offline list is due
    /// again.
    fn codes_changed(&self, _bank: &BankId) {}

    /// `bank` was locked down (`on`) or its lockdown lifted, and that is committed: its agent
    /// is due the news.
    fn lockdown_changed(&self, _bank: &BankId, _on: bool) {}

    /// `bank`'s sensor settings or its site's lockdown rules changed: its agent is due its
    /// policy again.
    fn policy_changed(&self, _bank: &BankId) {}
}

struct Inner {
    presence: std::sync::OnceLock<Arc<dyn Presence>>,
    /// Sites whose alerts changed, once committed: for the portal's live list and the alert
    /// sender.
    alert_changes: tokio::sync::broadcast::Sender<SiteId>,
    store: Store,
    clock: Arc<dyn Clock>,
    rng: Rng,
    keys: KeyRing,
    config: AppConfig,
    passwords: custody_crypto::password::PasswordHasher,
    relying_party: custody_crypto::passkey::RelyingParty,
    hash_permits: Semaphore,
    /// Offline verifiers of couriers' codes worked out so far, by bank, courier and day: each
    /// is an Argon2id hash, so it is worked out once, not at every sync ([`offline`]).
    courier_verifiers:
        std::sync::Mutex<std::collections::HashMap<(BankId, PersonId, i64), [u8; 32]>>,
}

/// The application: every use case is a method. Cheap to clone.
#[derive(Clone)]
pub struct App(Arc<Inner>);

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("backend", &self.0.store.backend()).finish_non_exhaustive()
    }
}

impl App {
    /// Assembles the application.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        keys: KeyRing,
        config: AppConfig,
    ) -> Result<Self, AppError> {
        let rng = Rng::new();
        let passwords =
            custody_crypto::password::PasswordHasher::with_cost(&rng, config.password_cost)?;
        let relying_party =
            custody_crypto::passkey::RelyingParty::new(&config.public_url, "Custody")?;
        let permits = config.password_hash_concurrency.max(1);
        Ok(Self(Arc::new(Inner {
            presence: std::sync::OnceLock::new(),
            alert_changes: tokio::sync::broadcast::channel(ALERT_CHANGES_BACKLOG).0,
            store,
            clock,
            rng,
            keys,
            config,
            passwords,
            relying_party,
            hash_permits: Semaphore::new(permits),
            courier_verifiers: std::sync::Mutex::default(),
        })))
    }

    /// Connects the source of truth for which banks are online (once; later calls are ignored).
    pub fn set_presence(&self, presence: Arc<dyn Presence>) {
        let _ = self.0.presence.set(presence);
    }

    /// Tells the source of truth for which banks are online that `bank`'s codes changed, so
    /// its agent's offline list follows at once rather than at the next minute's sync.
    pub(crate) fn codes_changed(&self, bank: &BankId) {
        if let Some(p) = self.0.presence.get() {
            p.codes_changed(bank);
        }
    }

    /// Tells the source of truth for which banks are online that `bank`'s lockdown changed, so
    /// its agent hears it at once.
    pub(crate) fn lockdown_changed(&self, bank: &BankId, on: bool) {
        if let Some(p) = self.0.presence.get() {
            p.lockdown_changed(bank, on);
        }
    }

    /// Tells the source of truth for which banks are online that `bank`'s policy changed, so
    /// its agent applies the new one at once.
    pub(crate) fn policy_changed(&self, bank: &BankId) {
        if let Some(p) = self.0.presence.get() {
            p.policy_changed(bank);
        }
    }

    /// Every site whose alerts change from now on (raised, joined, acknowledged, noted,
    /// resolved, escalated), each once the change is committed. A receiver that falls more
    /// than [`ALERT_CHANGES_BACKLOG`] behind is told it lagged, and should look again at all
    /// it shows.
    pub fn alert_changes(&self) -> tokio::sync::broadcast::Receiver<SiteId> {
        self.0.alert_changes.subscribe()
    }

    /// `site`'s alerts changed, and that is committed.
    pub(crate) fn alert_changed(&self, site: &SiteId) {
        // Nobody listening is not an error: no portal page is open.
        let _ = self.0.alert_changes.send(site.clone());
    }

    /// Refuses commands to a bank whose agent is not connected: a door command that cannot be
    /// delivered must not be issued and audited as if it were.
    pub(crate) fn require_online(&self, bank: &BankId) -> Result<(), AppError> {
        match self.0.presence.get() {
            Some(p) if !p.is_online(bank) => Err(AppError::BankOffline),
            _ => Ok(()),
        }
    }

    /// How many passwords have been checked since start, each with one Argon2 verification
    /// (a sign-in for an unknown account checks a decoy): for the metrics, and for the test
    /// that every sign-in does the same work.
    pub fn password_checks(&self) -> u64 {
        self.0.passwords.checks()
    }

    /// The store, for the `custody` command's maintenance and read-only listings.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// Whether the database answers, for readiness checks.
    pub async fn ping(&self) -> Result<(), AppError> {
        Ok(self.0.store.ping().await?)
    }

    /// The current time by the application's clock.
    pub fn now(&self) -> Timestamp {
        self.0.clock.now()
    }

    /// The clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.0.clock.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &AppConfig {
        &self.0.config
    }

    /// The public key agents verify open commands with.
    pub fn command_public_key(&self) -> PublicKey {
        self.0.keys.command.public_key()
    }

    /// The platform CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.0.keys.ca.cert_pem()
    }

    pub(crate) fn rng(&self) -> &Rng {
        &self.0.rng
    }

    pub(crate) fn keys(&self) -> &KeyRing {
        &self.0.keys
    }

    /// Records a refusal in a unit of its own (so it commits though the request fails) and
    /// returns the error the caller should see: `Forbidden` for a role that cannot do this at
    /// all, `NotFound` for things outside the caller's reach, so ids cannot be probed.
    pub(crate) async fn refuse(
        &self,
        caller: &Caller,
        action: AuditAction,
        target: Target,
        denied: Denied,
    ) -> AppError {
        let event =
            AuditEvent::denied(self.now(), caller.actor(), action, target).because(denied.as_str());
        if let Err(e) =
            self.0.store.write(move |tx| async move { tx.append_audit(&event) }.boxed()).await
        {
            // The refusal stands either way; losing its record is worth an operator's attention.
            tracing::error!(error = %e, "could not record a refused request in the audit log");
        }
        match denied {
            Denied::Role => AppError::Forbidden,
            Denied::Scope | Denied::NotOwner => AppError::NotFound,
            Denied::StepUp => AppError::StepUpRequired,
        }
    }

    /// Applies the access `rule` to the caller: the one way a use case says no. A refusal is
    /// audited as `action` on `target` in a unit of its own and answered as the policy's reason
    /// says (out of scope reads as not found).
    pub(crate) async fn authorize(
        &self,
        caller: &Caller,
        action: AuditAction,
        target: &Target,
        rule: impl FnOnce(&Principal) -> Result<(), Denied>,
    ) -> Result<(), AppError> {
        match caller.check(rule) {
            Ok(()) => Ok(()),
            Err(denied) => Err(self.refuse(caller, action, target.clone(), denied).await),
        }
    }

    /// [`App::authorize`] for reading: a thing out of the caller's reach looks exactly like
    /// one that does not exist, whatever the reason.
    pub(crate) async fn authorize_sight(
        &self,
        caller: &Caller,
        action: AuditAction,
        target: &Target,
        rule: impl FnOnce(&Principal) -> Result<(), Denied>,
    ) -> Result<(), AppError> {
        let rule =
            |p: &Principal| rule(p).map_err(|d| if d == Denied::Role { Denied::Scope } else { d });
        self.authorize(caller, action, target, rule).await
    }

    /// [`App::authorize`] for what only a person may do (ask a second person for an approval,
    /// give one): the operator, who is nobody, is refused as well. Answers who the person is.
    pub(crate) async fn authorize_person(
        &self,
        caller: &Caller,
        action: AuditAction,
        target: &Target,
        rule: impl FnOnce(&Principal) -> Result<(), Denied>,
    ) -> Result<PersonId, AppError> {
        let judged = match caller {
            Caller::Principal(p @ Principal::Person { id, .. }) => rule(p).map(|()| id.clone()),
            Caller::Principal(_) | Caller::Operator => Err(Denied::Role),
        };
        match judged {
            Ok(id) => Ok(id),
            Err(denied) => Err(self.refuse(caller, action, target.clone(), denied).await),
        }
    }

    /// The principal proved a second factor within the step-up window: a rule for
    /// [`App::authorize`].
    pub(crate) fn stepped_up(&self, p: &Principal) -> Result<(), Denied> {
        custody_core::policy::stepped_up(p, self.now(), self.config().step_up_window)
    }

    /// Signs an open command for `compartment` and records it, inside the caller's unit of
    /// work. The door's state becomes unknown until its sensor reports again: a command is
    /// not a reading.
    pub(crate) async fn issue_open(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        now: Timestamp,
        what: OpenFor<'_>,
    ) -> Result<SignedOpenCommand, AppError> {
        let OpenFor { site, compartment, parcel, purpose, charge } = what;
        // Invariant 9: while the bank is locked down nothing opens, whoever asks. Use cases
        // check (and audit) first; this is the guarantee, inside the unit that would open.
        if tx.lockdown(&compartment.bank).await?.is_some() {
            return Err(lockdown::locked_down());
        }
        // Invariant 11: a door opened without the parcel's own credential spends the
        // remote-open budget, and past it needs a second person, whichever route asked.
        self.charge_open(tx, &compartment.bank, charge, now).await?;
        let device = tx
            .devices_of_bank(&compartment.bank)
            .await?
            .into_iter()
            .find(|d| d.revoked_at.is_none())
            .ok_or_else(|| {
                AppError::conflict(ConflictCode::BankNotEnrolled, "the bank has no enrolled device")
            })?;
        let nonce: [u8; 16] = self.rng().bytes()?;
        let command = OpenCommand {
            device: device.id.to_string(),
            bank: compartment.bank.to_string(),
            compartment: compartment.number.get(),
            nonce: HEXLOWER.encode(&nonce),
            issued_at_ms: now.as_millis(),
            expires_at_ms: now.plus(self.0.config.command_ttl).as_millis(),
            purpose: purpose.into(),
        };
        let signature = self.0.keys.command.sign(OPEN_COMMAND_DOMAIN, &command.signing_bytes());
        tx.set_door(&compartment.id, DoorState::Unknown, now).await?;
        tx.append_audit(
            &AuditEvent::success(
                now,
                actor.clone(),
                AuditAction::OpenCommand,
                Target {
                    site: Some(site.clone()),
                    bank: Some(compartment.bank.clone()),
                    compartment: Some(compartment.id.clone()),
                    parcel: parcel.cloned(),
                },
            )
            .because(purpose),
        )?;
        Ok(SignedOpenCommand { command, signature: BASE64.encode(&signature) })
    }
}

/// What an open command is for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenFor<'a> {
    pub(crate) site: &'a SiteId,
    pub(crate) compartment: &'a CompartmentRow,
    pub(crate) parcel: Option<&'a custody_core::ParcelId>,
    pub(crate) purpose: &'static str,
    /// How it counts against the remote-open budget.
    pub(crate) charge: remote_opens::Charge<'a>,
}

/// Looks up the bank's site, for audit targets and policy checks.
pub(crate) async fn bank_site(
    tx: &mut Tx,
    bank: &BankId,
) -> Result<(custody_store::BankRow, custody_store::SiteRow), AppError> {
    let bank = tx.bank(bank).await?.ok_or(AppError::NotFound)?;
    let site = tx.site(&bank.site).await?.ok_or(AppError::NotFound)?;
    Ok((bank, site))
}

impl App {
    pub(crate) fn new_id<T>(&self, make: fn([u8; 16]) -> T) -> Result<T, AppError> {
        Ok(make(self.rng().bytes()?))
    }

    /// A random token for one-off uses such as a sign-in form's CSRF token.
    pub fn random_token(&self) -> Result<String, AppError> {
        let bytes: [u8; 32] = self.rng().bytes()?;
        Ok(data_encoding::BASE64URL_NOPAD.encode(&bytes))
    }
}
