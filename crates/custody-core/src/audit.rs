//! The vocabulary of the audit log: who did what to which thing, and how it ended.
//!
//! Every state change and every access attempt, successful or not, becomes one [`AuditEvent`]
//! appended in the same transaction as the change (DESIGN.md §4 invariant 1). The reason for a
//! failure goes here and only here; the outside world sees one uniform failure.

use serde::{Deserialize, Serialize};

use crate::compartment::named_enum;
use crate::time::Timestamp;
use crate::{BankId, CompartmentId, ParcelId, PersonId, SiteId};

named_enum!(
    /// Who acted.
    ActorKind {
        /// A signed-in person.
        Person = "person",
        /// A carrier system with an API key.
        CarrierKey = "carrier_key",
        /// An enrolled agent, for what happens at its bank (kiosk entries, door sensors).
        Device = "device",
        /// The platform itself (expiry sweeps, the outbox).
        System = "system",
        /// Nobody identified yet (a failed login names no account).
        Anonymous = "anonymous",
    }
);

/// The acting party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// What kind of party.
    pub kind: ActorKind,
    /// Its opaque id, when it has one.
    pub id: Option<String>,
}

impl Actor {
    /// The platform itself.
    pub fn system() -> Self {
        Self { kind: ActorKind::System, id: None }
    }

    /// An unidentified party.
    pub fn anonymous() -> Self {
        Self { kind: ActorKind::Anonymous, id: None }
    }
}

named_enum!(
    /// How an action ended.
    Outcome {
        /// It happened.
        Success = "success",
        /// It was attempted and did not happen (wrong code, door jammed…).
        Failure = "failure",
        /// It was refused by the access policy or a throttle before being attempted.
        Denied = "denied",
    }
);

named_enum!(
    /// What happened. Names are stable: auditors filter on them.
    AuditAction {
        /// An organisation was created.
        OrgCreate = "org.create",
        /// A site was created.
        SiteCreate = "site.create",
        /// A bank was created.
        BankCreate = "bank.create",
        /// A compartment was added to a bank.
        CompartmentCreate = "compartment.create",
        /// A carrier was registered.
        CarrierCreate = "carrier.create",
        /// A person was added.
        PersonCreate = "person.create",
        /// A person's role changed (a grant or a demotion), or a change was refused.
        PersonRoleChange = "person.role",
        /// A person disabled: every session of theirs ended with it.
        PersonDisable = "person.disable",
        /// A request that needs a second person's approval was made.
        ApprovalRequest = "approval.request",
        /// A request was approved (and ran) or rejected, or an answer was refused.
        ApprovalDecide = "approval.decide",
        /// A carrier API key was issued.
        ApiKeyCreate = "api_key.create",
        /// A carrier API key was revoked.
        ApiKeyRevoke = "api_key.revoke",
        /// A request with an API key was refused (unknown, revoked, out of scope).
        ApiKeyReject = "api_key.reject",
        /// A password login, successful or not.
        Login = "session.login",
        /// A session ended by logout.
        Logout = "session.logout",
        /// A second factor proven in a session (sign-in's second step or a step-up), or not.
        FactorProve = "session.factor",
        /// A session ended by its owner from their list, or all their other sessions.
        SessionEnd = "session.end",
        /// A sign-in link asked for (and, for a resident's address, sent).
        SignInLink = "session.link",
        /// An authenticator app enrolled (begun, confirmed) or removed.
        TotpEnrol = "factor.totp",
        /// A new set of recovery codes issued.
        RecoveryCodesIssue = "factor.recovery_codes",
        /// A passkey registered.
        PasskeyRegister = "factor.passkey",
        /// An alert raised by a device's sensor or by the server, or a reading joining a live
        /// one (`<alert>:<kind>:raised|reading`).
        AlertRaise = "alert.raise",
        /// An alert acknowledged: its owner took it.
        AlertAcknowledge = "alert.acknowledge",
        /// A note added to an alert's timeline.
        AlertNote = "alert.note",
        /// An alert resolved, with what it was (sealed as personal data of the person who
        /// resolved it).
        AlertResolve = "alert.resolve",
        /// A site's alert endpoint (webhook, syslog) added or removed, or a change refused
        /// (`added:<id>:<channel>:<host>:<severity>`, `removed:<id>`).
        AlertEndpoint = "alert.endpoint",
        /// An alert's notification delivered, given up after its last try, or sent again from
        /// the dead-letter list.
        AlertNotify = "alert.notify",
        /// An alert target refused by the egress guard, as an admin gave it or as it resolved
        /// at delivery (`<reason>:from:<who>`), aggregated per minute.
        EgressRefused = "alert.egress_refused",
        /// A person agreed to hear of a site's alerts on a channel (`email`, `sms`), or withdrew.
        AlertConsent = "alert.consent",
        /// An alert left unacknowledged escalated to everyone who agreed to hear of its site's
        /// alerts.
        AlertEscalate = "alert.escalate",
        /// A bank locked down (every compartment refuses every credential and command), or an
        /// attempt to open one of its compartments refused because of it.
        LockdownEngage = "lockdown.engage",
        /// A site's lockdown rule set or removed (`set:<kind>:<severity>:<scope>`,
        /// `removed:<kind>`).
        LockdownRule = "lockdown.rule",
        /// A bank's sensor settings changed (its debounce rules and door time), or a change
        /// refused.
        SensorSettings = "bank.sensors",
        /// A lockdown lifted (at once, or by the approval of a second person).
        LockdownLift = "lockdown.lift",
        /// Audit entries exported over the API, with the reason given, or an export refused.
        AuditExport = "audit.export",
        /// A courier's code typed, or badge held, at a kiosk: whose it was, or why it did not
        /// work.
        CourierCode = "courier.code",
        /// A badge registered to a person (one, or a CSV import), or a registration refused.
        BadgeRegister = "badge.register",
        /// A badge revoked, or a revocation refused.
        BadgeRevoke = "badge.revoke",
        /// A parcel was announced by a carrier.
        ParcelExpect = "parcel.expect",
        /// A compartment was reserved for a deposit.
        DepositReserve = "parcel.deposit.reserve",
        /// The deposit was confirmed: the parcel is inside.
        Deposit = "parcel.deposit",
        /// Staff named the resident a parcel is for, when the carrier's address matched no
        /// resident of the site.
        ParcelAddress = "parcel.address",
        /// A reserved deposit was abandoned.
        DepositCancel = "parcel.deposit.cancel",
        /// A courier's code opened a compartment to deposit while its bank was offline, and the
        /// record, when the agent reported it, disagreed (the parcel deposited elsewhere, the
        /// compartment taken, the courier no longer one): nothing changes but this entry.
        DepositOfflineConflict = "parcel.deposit.offline_conflict",
        /// The recipient was sent a pickup code.
        Notify = "parcel.notify",
        /// A pickup code was entered; success or the reason it failed.
        PickupAttempt = "parcel.pickup.attempt",
        /// The recipient took the parcel.
        PickUp = "parcel.pick_up",
        /// A code opened a compartment while its bank was offline, and the record, when the
        /// agent reported it, disagreed (the code used, revoked or unknown by then).
        PickupOfflineConflict = "parcel.pickup.offline_conflict",
        /// The recipient's code opened the emptied compartment once more, just after pickup.
        PickupReopen = "parcel.pick_up.reopen",
        /// The pickup window passed.
        Expire = "parcel.expire",
        /// The carrier took the parcel back.
        ReturnToCarrier = "parcel.return",
        /// Staff took the parcel out.
        Retrieve = "parcel.retrieve",
        /// Staff opened a compartment remotely, with a reason.
        RemoteOpen = "compartment.remote_open",
        /// Several compartments of a bank opened at once by staff (asked, or run), or refused.
        BulkOpen = "compartment.bulk_open",
        /// A signed open command was issued to an agent.
        OpenCommand = "compartment.open_command",
        /// An agent reported a door opening or closing.
        DoorReport = "compartment.door",
        /// A device enrolled with a token.
        DeviceEnrol = "device.enrol",
        /// A device connected over the device link.
        DeviceConnect = "device.connect",
        /// A device's certificate was renewed for a new key it made.
        DeviceRenew = "device.renew",
        /// A device's identity was revoked: its certificate is refused and its link ended.
        DeviceRevoke = "device.revoke",
        /// One device identity was connected from two places at once.
        DeviceConflict = "device.conflict",
        /// A connection to the device gateway refused before a device was known: at the TLS
        /// handshake (no certificate, a foreign CA, expired, another usage, revoked) or at the
        /// upgrade (not enrolled). `<reason>:from:<address>`, aggregated per minute.
        DeviceRefused = "device.refused",
        /// An enrolment token was issued for a bank.
        EnrolmentTokenCreate = "device.enrolment_token.create",
        /// A notification was handed to its channel or gave up.
        NotificationDelivery = "notification.delivery",
        /// Reading something was refused (another resident's parcel, a site out of scope).
        AccessDenied = "access.denied",
        /// Everything personal the log held about a person was made unreadable (their key
        /// destroyed).
        PersonalDataErase = "person.erase_personal_data",
        /// Everything held about a person was exported for them (GDPR Art. 15 and 20).
        PersonalDataExport = "person.export_personal_data",
        /// Subjects' keys were re-wrapped under the key-encryption key now current (a
        /// rotation): the reason names it and how many keys moved.
        KeysRewrap = "keys.rewrap",
        /// Key-encryption keys that nothing needed any more were retired (their files
        /// deleted): the reason names them.
        KeysRetire = "keys.retire",
        /// Personal data stored in clear by an earlier version was sealed in place: the reason
        /// says how many people's rows.
        PersonalDataSeal = "personal.seal",
        /// A site's retention of personal data was set: the reason gives the days.
        SiteRetention = "site.retention",
        /// The sweeper dropped personal data past its site's retention: the reason counts the
        /// parcels anonymised and the sessions and delivery records deleted.
        RetentionApply = "retention.apply",
        /// Staff declared a personal-data breach: the reason counts the people the log shows
        /// affected; the clocks start from when it was discovered.
        BreachDeclare = "breach.declare",
        /// The notices of a breach were drafted (opening the affected people's names and
        /// addresses for their writer).
        BreachNotices = "breach.notices",
        /// A step in answering a breach was recorded: the reason names it.
        BreachStep = "breach.step",
        /// The server's periodic check found its own audit log not what it signed.
        AuditIntegrity = "audit.integrity",
    }
);

/// The things an event concerns; any of them may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The site.
    pub site: Option<SiteId>,
    /// The bank.
    pub bank: Option<BankId>,
    /// The compartment.
    pub compartment: Option<CompartmentId>,
    /// The parcel.
    pub parcel: Option<ParcelId>,
}

/// One audit log entry before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: AuditAction,
    /// To what.
    pub target: Target,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, as a machine reason that names nobody (`code_expired`, `throttled:bank`). Never a
    /// secret, never free text.
    pub reason: Option<String>,
    /// Personal data (the words a person gave for a sensitive action), only as ciphertext under
    /// its subject's own key, so that destroying that key erases it without touching the log.
    pub personal: Option<SealedText>,
}

impl AuditEvent {
    /// An action that happened.
    pub fn success(at: Timestamp, actor: Actor, action: AuditAction, target: Target) -> Self {
        Self::ended(Outcome::Success, at, actor, action, target)
    }

    /// An action attempted that did not happen; [`AuditEvent::because`] says why.
    pub fn failure(at: Timestamp, actor: Actor, action: AuditAction, target: Target) -> Self {
        Self::ended(Outcome::Failure, at, actor, action, target)
    }

    /// An action refused before it was attempted; [`AuditEvent::because`] says why.
    pub fn denied(at: Timestamp, actor: Actor, action: AuditAction, target: Target) -> Self {
        Self::ended(Outcome::Denied, at, actor, action, target)
    }

    /// An action that ended as `outcome`.
    pub fn ended(
        outcome: Outcome,
        at: Timestamp,
        actor: Actor,
        action: AuditAction,
        target: Target,
    ) -> Self {
        Self { at, actor, action, target, outcome, reason: None, personal: None }
    }

    /// The machine reason (`code_expired`, `throttled:bank`): never a secret, never free text.
    #[must_use]
    pub fn because(self, reason: impl Into<String>) -> Self {
        Self { reason: Some(reason.into()), ..self }
    }

    /// The machine reason, when there is one.
    #[must_use]
    pub fn with_reason(self, reason: Option<String>) -> Self {
        Self { reason, ..self }
    }

    /// The same event as another action on another target (a request's approval that runs
    /// it, a key's rotation that retires its predecessor).
    #[must_use]
    pub fn as_action(self, action: AuditAction, target: Target) -> Self {
        Self { action, target, ..self }
    }

    /// The words a person gave, sealed under their subject's key.
    #[must_use]
    pub fn with_personal(self, personal: Option<SealedText>) -> Self {
        Self { personal, ..self }
    }
}

/// Personal data about one person, encrypted under that person's own key. The domain only
/// carries it; the application seals and opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedText {
    /// Whose data it is: erasing this person's key makes it unreadable.
    pub subject: PersonId,
    /// `nonce ‖ ciphertext ‖ tag`.
    pub ciphertext: Vec<u8>,
}

/// Which audit entries to select (every given condition must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// About this parcel.
    pub parcel: Option<ParcelId>,
    /// About this compartment.
    pub compartment: Option<CompartmentId>,
    /// At this site.
    pub site: Option<SiteId>,
    /// By this actor (a person's, key's or device's id).
    pub actor: Option<String>,
    /// At or after.
    pub since: Option<Timestamp>,
    /// Before.
    pub until: Option<Timestamp>,
}
