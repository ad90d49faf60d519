//! What the store holds, as domain-typed records. Every value read back is parsed again, so a
//! corrupted or hand-edited row is an error, not a wrong door.

use custody_audit::entry::{Entry, Sealed};
use custody_core::alert::{AlertKind, AlertState, Channel, Severity};
use custody_core::approval::{ApprovalKind, ApprovalOutcome};
use custody_core::audit::AuditEvent;
use custody_core::compartment::{CompartmentNumber, CompartmentState, DoorState, SizeClass};
use custody_core::parcel::ParcelState;
use custody_core::person::{Factor, Role};
use custody_core::site::PickupWindow;
use custody_core::text::{Email, Name};
use custody_core::{
    AlertId, ApiKeyId, ApprovalId, BadgeId, BankId, BreachId, CarrierId, CodeId, CompartmentId,
    DeliveryId, DeviceId, EndpointId, MessageId, OrgId, ParcelId, PersonId, SessionId, SiteId,
    Timestamp, TokenId,
};

/// An organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRow {
    /// Id.
    pub id: OrgId,
    /// Display name.
    pub name: Name,
    /// Created.
    pub created_at: Timestamp,
}

/// A site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRow {
    /// Id.
    pub id: SiteId,
    /// Organisation.
    pub org: OrgId,
    /// Display name.
    pub name: Name,
    /// IANA time zone name.
    pub time_zone: String,
    /// How long parcels wait here.
    pub pickup_window: PickupWindow,
    /// Created.
    pub created_at: Timestamp,
}

/// A locker bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankRow {
    /// Id.
    pub id: BankId,
    /// Site.
    pub site: SiteId,
    /// Display name.
    pub name: Name,
    /// Created.
    pub created_at: Timestamp,
}

/// A compartment and its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompartmentRow {
    /// Id.
    pub id: CompartmentId,
    /// Bank.
    pub bank: BankId,
    /// Number on the door.
    pub number: CompartmentNumber,
    /// Size class.
    pub size: SizeClass,
    /// At accessible height.
    pub accessible: bool,
    /// Refrigerated.
    pub refrigerated: bool,
    /// Occupancy.
    pub state: CompartmentState,
    /// Last sensed door state.
    pub door: DoorState,
    /// The parcel it is reserved for or holds.
    pub parcel: Option<ParcelId>,
    /// End of the current reservation.
    pub reserved_until: Option<Timestamp>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// What a new compartment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCompartment {
    /// Id.
    pub id: CompartmentId,
    /// Bank.
    pub bank: BankId,
    /// Number on the door.
    pub number: CompartmentNumber,
    /// Size class.
    pub size: SizeClass,
    /// At accessible height.
    pub accessible: bool,
    /// Refrigerated.
    pub refrigerated: bool,
}

/// What a deposit needs from a compartment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompartmentNeeds {
    /// The parcel's size: the compartment must be this size or larger.
    pub size: SizeClass,
    /// Must be at accessible height.
    pub accessible: bool,
    /// Must be refrigerated.
    pub refrigerated: bool,
}

/// A carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierRow {
    /// Id.
    pub id: CarrierId,
    /// Organisation that accepts it.
    pub org: OrgId,
    /// Display name.
    pub name: Name,
    /// Created.
    pub created_at: Timestamp,
}

/// A person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRow {
    /// Id.
    pub id: PersonId,
    /// Organisation.
    pub org: OrgId,
    /// Keyed hash of the login and notification address (a blind index), by which sign-in and
    /// look-ups find the person; `None` before the row is sealed and once the person is erased.
    pub email_index: Option<Vec<u8>>,
    /// Address and name, as stored.
    pub details: PersonDetails,
    /// The person's data key as stored, read with the row: `None` if they have none yet or
    /// have been erased.
    pub key: Option<WrappedKeyRow>,
    /// Role.
    pub role: Role,
    /// Site the role is limited to, if any.
    pub site: Option<SiteId>,
    /// For couriers, their carrier.
    pub carrier: Option<CarrierId>,
    /// Argon2id PHC string; `None` for people who cannot log in with a password.
    pub password_hash: Option<String>,
    /// When the account was disabled.
    pub disabled_at: Option<Timestamp>,
    /// Created.
    pub created_at: Timestamp,
}

/// A personal text as a row holds it: sealed by the application under its subject's key, or
/// in clear from before it was, waiting to be sealed in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredText {
    /// Sealed.
    Sealed(Vec<u8>),
    /// Stored in clear by an earlier version.
    Clear(String),
}

/// A person's address and name as the row holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersonDetails {
    /// Sealed under the person's data key, each bound to the person and the field.
    Sealed {
        /// The login and notification address.
        email: Vec<u8>,
        /// The display name.
        name: Vec<u8>,
    },
    /// Stored before people were sealed and not sealed in place yet.
    Clear {
        /// The login and notification address.
        email: Email,
        /// The display name.
        name: Name,
    },
    /// Neither: the person has been erased.
    Erased,
}

/// A carrier API key (its secret is stored only as a keyed hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// Id: the public half of the key.
    pub id: ApiKeyId,
    /// Carrier.
    pub carrier: CarrierId,
    /// The carrier's organisation.
    pub org: OrgId,
    /// What the issuer called it.
    pub label: Name,
    /// Keyed hash of the secret half.
    pub secret_hash: Vec<u8>,
    /// Sites it may deliver to.
    pub sites: Vec<SiteId>,
    /// Created.
    pub created_at: Timestamp,
    /// Last authenticated use.
    pub last_used_at: Option<Timestamp>,
    /// When it stops (or stopped) working: revoked, or retired by a rotation.
    pub revoked_at: Option<Timestamp>,
}

/// A signed-in session (its token is stored only as a keyed hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Keyed hash of the cookie's token.
    pub token_hash: Vec<u8>,
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
    /// Where it was started from (the network address and the browser's name for itself),
    /// sealed under the person's key.
    pub client: Vec<u8>,
}

/// A request waiting for (or answered by) a second person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    /// Id.
    pub id: ApprovalId,
    /// The organisation it concerns.
    pub org: OrgId,
    /// What it would do.
    pub kind: ApprovalKind,
    /// Whom or what it would do it to (a person id for role grants).
    pub subject: String,
    /// Its exact parameters, as canonical JSON.
    pub params: String,
    /// SHA-256 of kind, subject and parameters.
    pub digest: Vec<u8>,
    /// Who asked.
    pub requested_by: PersonId,
    /// When.
    pub requested_at: Timestamp,
    /// Unanswered past this, it lapses.
    pub expires_at: Timestamp,
    /// Who answered, when, and how.
    pub decision: Option<(PersonId, Timestamp, ApprovalOutcome)>,
}

/// A person's authenticator-app seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpRow {
    /// Whose.
    pub person: PersonId,
    /// The seed, sealed under the master key.
    pub sealed_seed: Vec<u8>,
    /// When its first code was typed.
    pub confirmed_at: Timestamp,
    /// Time step of the last code accepted.
    pub last_step: u64,
    /// Wrong codes since the last right one.
    pub failures: u32,
}

/// A parcel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelRow {
    /// Id.
    pub id: ParcelId,
    /// Organisation.
    pub org: OrgId,
    /// Site.
    pub site: SiteId,
    /// Bank, once a compartment is assigned.
    pub bank: Option<BankId>,
    /// Compartment, once assigned.
    pub compartment: Option<CompartmentId>,
    /// Delivering carrier.
    pub carrier: CarrierId,
    /// Who may collect it: none for a parcel announced for an address that matched no resident
    /// of the site, until the site's staff name one.
    pub recipient: Option<PersonId>,
    /// The carrier's tracking number, sealed under the installation's tracking key and bound
    /// to the parcel; `None` once the recipient has been erased.
    pub tracking_ref: Option<StoredText>,
    /// Size class.
    pub size: SizeClass,
    /// Needs an accessible compartment.
    pub needs_accessible: bool,
    /// Needs a refrigerated compartment.
    pub needs_refrigerated: bool,
    /// Lifecycle state.
    pub state: ParcelState,
    /// Announced.
    pub created_at: Timestamp,
    /// Deposited.
    pub deposited_at: Option<Timestamp>,
    /// Recipient notified.
    pub notified_at: Option<Timestamp>,
    /// End of the pickup window.
    pub expires_at: Option<Timestamp>,
    /// Left the locker for good (picked up, returned, retrieved).
    pub closed_at: Option<Timestamp>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// A pickup code record to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPickupCode {
    /// Record id.
    pub id: CodeId,
    /// Parcel.
    pub parcel: ParcelId,
    /// Bank the code works at.
    pub bank: BankId,
    /// Compartment it opens.
    pub compartment: CompartmentId,
    /// Keyed hash of (bank, code).
    pub code_hash: Vec<u8>,
    /// Keyed hash of (locker, code) under the bank's offline key, for its agent.
    pub offline_verifier: Vec<u8>,
    /// Issued.
    pub created_at: Timestamp,
    /// Expires.
    pub expires_at: Timestamp,
}

/// A pickup code that works, as its bank's agent may check it offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineCodeRow {
    /// Record id.
    pub id: CodeId,
    /// The compartment's number.
    pub compartment: CompartmentNumber,
    /// Keyed hash under the bank's offline key.
    pub verifier: Vec<u8>,
    /// Expires.
    pub expires_at: Timestamp,
}

/// A code that was just redeemed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemedCode {
    /// Its parcel.
    pub parcel: ParcelId,
    /// The compartment it opens.
    pub compartment: CompartmentId,
}

/// A badge registered to a person, without its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadgeRow {
    /// Id.
    pub id: BadgeId,
    /// The site it works at.
    pub site: SiteId,
    /// Whose it is.
    pub person: PersonId,
    /// The number's keyed hash.
    pub verifier: Vec<u8>,
    /// The number's last four hex digits, sealed under the holder's key.
    pub hint: StoredText,
    /// Registered.
    pub created_at: Timestamp,
    /// Revoked, if it is.
    pub revoked_at: Option<Timestamp>,
}

/// A badge to register.
#[derive(Debug, Clone)]
pub struct NewBadge {
    /// Id.
    pub id: BadgeId,
    /// The site.
    pub site: SiteId,
    /// Whose.
    pub person: PersonId,
    /// The number's keyed hash.
    pub verifier: Vec<u8>,
    /// The number's last four hex digits, sealed under the holder's key.
    pub hint: Vec<u8>,
    /// When.
    pub created_at: Timestamp,
}

/// A pickup code that still works, without the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCode {
    /// Record id (what a QR token names).
    pub id: CodeId,
    /// Bank it works at.
    pub bank: BankId,
    /// Compartment it opens.
    pub compartment: CompartmentId,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// A code that was not redeemed, and why. For the audit log only: the kiosk shows one message
/// for every reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRefused {
    /// Why.
    pub reason: CodeRefusal,
    /// The code's parcel and compartment, when the code exists at this bank.
    pub code: Option<RedeemedCode>,
}

/// Why a code was not redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRefusal {
    /// No such code at this bank (mistyped, guessed, or for another bank).
    Unknown,
    /// Already used.
    Used,
    /// Past its expiry.
    Expired,
    /// Revoked (the parcel was retrieved or returned).
    Revoked,
}

impl CodeRefusal {
    /// Stable reason for the audit log, after the credential's method (`code_used`,
    /// `qr_used`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Used => "used",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the log.
    pub seq: i64,
    /// The entry.
    pub event: AuditEvent,
}

/// An audit entry's row exactly as stored, borrowed from the database's buffers: nothing is
/// parsed into domain types or copied. What the verifier re-encodes and hashes, so that a
/// malformed value is reported as tampering at its index instead of failing the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef<'a> {
    /// Position.
    pub seq: i64,
    /// The entry's time.
    pub at: i64,
    /// The entry's actor's kind.
    pub actor_kind: &'a str,
    /// The entry's actor's id.
    pub actor_id: Option<&'a str>,
    /// The entry's action.
    pub action: &'a str,
    /// The entry's target: site, bank, compartment, parcel.
    pub target: [Option<&'a str>; 4],
    /// The entry's outcome.
    pub outcome: &'a str,
    /// The entry's reason.
    pub reason: Option<&'a str>,
    /// The entry's sealed part: subject and ciphertext.
    pub sealed: (Option<&'a str>, Option<&'a [u8]>),
    /// The entry's evidence hashes, laid end to end.
    pub evidence: &'a [u8],
    /// The stored leaf hash.
    pub leaf_hash: &'a [u8],
}

/// A row that cannot even be read as an audit row (a value of the wrong type in a column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedAuditRow {
    /// Its position, when that much could be read.
    pub seq: Option<i64>,
    /// The first column that could not be read.
    pub column: &'static str,
}

/// A stored audit entry with what the tree is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The entry's fields.
    pub row: AuditRow,
    /// Its evidence hashes.
    pub evidence: Vec<[u8; 32]>,
    /// The stored leaf hash, which the tree covers.
    pub leaf_hash: Vec<u8>,
}

impl StoredEntry {
    /// The entry in the audit format, as its fields say it is. Its encoding hashes to
    /// `leaf_hash` unless the row was changed after it was appended.
    pub fn entry(&self) -> Entry {
        let index = u64::try_from(self.row.seq).unwrap_or(u64::MAX);
        Entry { evidence: self.evidence.clone(), ..entry_of(index, &self.row.event) }
    }
}

/// Which audit entries to select: the audit vocabulary's, so that callers above the app need
/// not name the store.
pub use custody_core::audit::AuditFilter;

/// A notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Id.
    pub id: MessageId,
    /// Channel name (`email`, `file`).
    pub channel: String,
    /// The parcel it is about.
    pub parcel: Option<ParcelId>,
    /// The sealed message; `None` once delivered or abandoned.
    pub sealed: Option<Vec<u8>>,
    /// Queued.
    pub created_at: Timestamp,
    /// Next try.
    pub next_attempt_at: Timestamp,
    /// Tries so far.
    pub attempts: u32,
    /// Delivered.
    pub delivered_at: Option<Timestamp>,
    /// Given up.
    pub dead_at: Option<Timestamp>,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

/// An enrolment token record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnrolmentToken {
    /// Record id.
    pub id: TokenId,
    /// Bank the device will run.
    pub bank: BankId,
    /// Keyed hash of the token.
    pub token_hash: Vec<u8>,
    /// Issued.
    pub created_at: Timestamp,
    /// Expires.
    pub expires_at: Timestamp,
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Id (its certificate's common name).
    pub id: DeviceId,
    /// Bank it runs.
    pub bank: BankId,
    /// Serial of its current certificate, hex.
    pub cert_serial: String,
    /// SHA-256 of its public key.
    pub spki_sha256: Vec<u8>,
    /// Enrolled.
    pub enrolled_at: Timestamp,
    /// Certificate end of validity.
    pub cert_expires_at: Timestamp,
    /// Revoked.
    pub revoked_at: Option<Timestamp>,
    /// Last connection.
    pub last_seen_at: Option<Timestamp>,
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    /// Id.
    pub id: AlertId,
    /// Organisation.
    pub org: OrgId,
    /// Site.
    pub site: SiteId,
    /// Bank, unless it concerns the site as a whole.
    pub bank: Option<BankId>,
    /// Compartment number, unless it concerns the bank as a whole.
    pub compartment: Option<u16>,
    /// What it is about.
    pub kind: AlertKind,
    /// How serious.
    pub severity: Severity,
    /// Where it stands.
    pub state: AlertState,
    /// Who acknowledged it.
    pub owner: Option<PersonId>,
    /// Readings that raised it or joined it.
    pub readings: u64,
    /// Raised.
    pub raised_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// An alert to raise, or to join if one is live for the same thing.
#[derive(Debug, Clone)]
pub struct NewAlert {
    /// Id, if it is new.
    pub id: AlertId,
    /// Organisation.
    pub org: OrgId,
    /// Site.
    pub site: SiteId,
    /// Bank.
    pub bank: Option<BankId>,
    /// Compartment number.
    pub compartment: Option<u16>,
    /// Kind.
    pub kind: AlertKind,
    /// Severity.
    pub severity: Severity,
}

impl NewAlert {
    /// What makes two readings the same thing going on.
    pub fn live_key(&self) -> String {
        live_key(&self.site, self.bank.as_ref(), self.compartment, self.kind)
    }
}

/// The key a live alert of `kind` about this place holds: one live alert per place and kind.
pub fn live_key(
    site: &SiteId,
    bank: Option<&BankId>,
    compartment: Option<u16>,
    kind: AlertKind,
) -> String {
    format!(
        "{site}|{}|{}|{}",
        bank.map_or("", BankId::as_str),
        compartment.map(|c| c.to_string()).unwrap_or_default(),
        kind.as_str()
    )
}

/// One entry of an alert's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEventRow {
    /// Its place in the timeline, from 1.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// Who (an actor id: a person, a device, `system`).
    pub actor: String,
    /// What: `raised`, `reading`, `acknowledged`, `note`, `resolved`.
    pub what: String,
    /// The system's note (a channel, a bank), or a person's words from before they were
    /// sealed, if any.
    pub note: Option<String>,
    /// A person's note or reason, sealed under their key, if any.
    pub note_sealed: Option<Vec<u8>>,
}

/// Where a site's alerts are sent besides its staff: a webhook or a syslog receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRow {
    /// Id.
    pub id: EndpointId,
    /// The site whose alerts it gets.
    pub site: SiteId,
    /// `webhook` or `syslog`.
    pub channel: Channel,
    /// The URL, or `host:port`.
    pub target: String,
    /// The signing secret, sealed (webhooks).
    pub secret: Option<Vec<u8>>,
    /// The least severity it gets.
    pub min_severity: Severity,
    /// Added.
    pub created_at: Timestamp,
}

/// One notification of an alert to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// Id: the `webhook-id` of a webhook, the same on every try.
    pub id: DeliveryId,
    /// The alert.
    pub alert: AlertId,
    /// Its site.
    pub site: SiteId,
    /// How it goes.
    pub channel: Channel,
    /// The site's endpoint it goes to, for webhooks and syslog.
    pub endpoint: Option<EndpointId>,
    /// The person it goes to, for e-mail and text messages.
    pub person: Option<PersonId>,
    /// What it says happened (`raised`, `escalated`).
    pub event: String,
    /// Queued.
    pub created_at: Timestamp,
    /// Next try.
    pub next_attempt_at: Timestamp,
    /// Tries so far.
    pub attempts: u32,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// Delivered.
    pub delivered_at: Option<Timestamp>,
    /// Given up: in the dead-letter list.
    pub dead_at: Option<Timestamp>,
}

/// A person's consent to hear of a site's alerts on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// Who.
    pub person: PersonId,
    /// Which site's alerts.
    pub site: SiteId,
    /// `email` or `sms`.
    pub channel: Channel,
    /// The number for text messages (E.164), sealed under the person's key.
    pub phone: Option<StoredText>,
    /// The least severity they hear of.
    pub min_severity: Severity,
    /// When they agreed.
    pub consented_at: Timestamp,
}

/// A consent given or withdrawn, in a person's history of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentEventRow {
    /// Who.
    pub person: PersonId,
    /// Which site's alerts.
    pub site: SiteId,
    /// `email` or `sms`.
    pub channel: Channel,
    /// Given (with the least severity) or withdrawn (`None`).
    pub given: Option<Severity>,
    /// When.
    pub at: Timestamp,
}

/// A personal-data breach as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreachRow {
    /// Id.
    pub id: BreachId,
    /// Organisation.
    pub org: OrgId,
    /// The site it happened at.
    pub site: SiteId,
    /// The bank, when it was one bank.
    pub bank: Option<BankId>,
    /// The alert that raised it, if one did.
    pub alert: Option<AlertId>,
    /// Staff's account of it, sealed under an installation key bound to the breach.
    pub summary: Vec<u8>,
    /// The window of time it covers: from.
    pub window_from: Timestamp,
    /// To.
    pub window_to: Timestamp,
    /// When the organisation became aware of it: the clocks run from here.
    pub discovered_at: Timestamp,
    /// When it was declared.
    pub declared_at: Timestamp,
    /// Who declared it.
    pub declared_by: PersonId,
}

/// A step in answering a breach, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreachStepRow {
    /// Which step.
    pub step: custody_core::breach::BreachStep,
    /// When.
    pub at: Timestamp,
    /// Who recorded it.
    pub by: PersonId,
}

/// The audit entry (format v1) of an event at leaf `index`: what the store writes, and what a
/// verifier expects an entry's queryable fields to say.
pub fn entry_of(index: u64, e: &AuditEvent) -> Entry {
    let id = |v: Option<&str>| v.map(str::to_owned);
    Entry {
        index,
        at_ms: e.at.as_millis(),
        actor_kind: e.actor.kind.as_str().to_owned(),
        actor_id: e.actor.id.clone(),
        action: e.action.as_str().to_owned(),
        site: id(e.target.site.as_ref().map(SiteId::as_str)),
        bank: id(e.target.bank.as_ref().map(BankId::as_str)),
        compartment: id(e.target.compartment.as_ref().map(CompartmentId::as_str)),
        parcel: id(e.target.parcel.as_ref().map(ParcelId::as_str)),
        outcome: e.outcome.as_str().to_owned(),
        reason: e.reason.clone(),
        sealed: e.personal.as_ref().map(|p| Sealed {
            subject: p.subject.as_str().to_owned(),
            ciphertext: p.ciphertext.clone(),
        }),
        evidence: Vec::new(),
    }
}

/// A data subject's own key as stored: wrapped under the key-encryption key it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKeyRow {
    /// The id of the key-encryption key that wrapped it.
    pub kek: String,
    /// The wrapped key.
    pub wrapped: Vec<u8>,
}
