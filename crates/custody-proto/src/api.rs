//! Bodies of the HTTP API under `/api/v1`. Requests reject unknown fields; times are RFC 3339
//! strings in UTC; ids are opaque strings.

use serde::{Deserialize, Serialize};

mod breaches;
pub use breaches::*;

mod parcels;
pub use parcels::*;

/// Every error response: `{"error": {"code": "…", "message": "…"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable code, such as `not_found`, `invalid_request`, `parcel_state`.
    pub code: String,
    /// What went wrong and, where possible, what to do.
    pub message: String,
}

/// Sign in with a password.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// E-mail address.
    pub email: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest").field("email", &self.email).finish_non_exhaustive()
    }
}

/// A person as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonView {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// `resident`, `courier`, `auditor`, `admin` or `super_admin`.
    pub role: String,
    /// The site their role is limited to.
    pub site: Option<String>,
    /// For couriers, their carrier.
    pub carrier: Option<String>,
}

/// Everything Custody holds about one person, for them (GDPR Art. 15 and 20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonalDataView {
    /// `custody-personal-data/1`.
    pub format: String,
    /// When it was exported (RFC 3339).
    pub exported_at: String,
    /// Who they are.
    pub person: PersonView,
    /// Their sessions, with where each was started from.
    pub sessions: Vec<SessionListItem>,
    /// Their consents to hear of alerts, with any phone number.
    pub consents: Vec<AlertSubscriptionView>,
    /// Every consent they gave or withdrew, oldest first.
    pub consent_history: Vec<ConsentChangeView>,
    /// Their badges, with each one's hint.
    pub badges: Vec<BadgeView>,
    /// Their parcels, with tracking numbers.
    pub parcels: Vec<ParcelView>,
    /// The audit log's entries about them: those about their parcels, and those holding words
    /// about them (with the words).
    pub events: Vec<EventView>,
}

/// A signed-in session. The session itself is the `__Host-custody-session` cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    /// Who is signed in.
    pub person: PersonView,
    /// Send as `X-CSRF-Token` with every state-changing request made with the cookie.
    pub csrf_token: String,
    /// The session reaches only the second-factor step until a factor is proven in it
    /// (`POST /api/v1/sessions/current/factor`), or set up (`POST /api/v1/me/totp`) when the
    /// person has none yet.
    pub second_factor_required: bool,
    /// New recovery codes, shown this once: when the first authenticator app was confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
}

/// Ask for a sign-in link (residents).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The resident's e-mail address.
    pub email: String,
}

/// Sign in with an e-mailed link's token, from the browser that asked for it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkRedeemRequest {
    /// The `token` of the link.
    pub token: String,
}

impl std::fmt::Debug for LinkRedeemRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkRedeemRequest(<redacted>)")
    }
}

/// A second factor for the current session: exactly one of the fields.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FactorRequest {
    /// A six-digit code from the authenticator app.
    #[serde(default)]
    pub totp: Option<String>,
    /// One of the recovery codes (case, spaces and dashes do not matter).
    #[serde(default)]
    pub recovery_code: Option<String>,
}

impl std::fmt::Debug for FactorRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FactorRequest(<redacted>)")
    }
}

/// A passkey ceremony begun: send `options` to `navigator.credentials.create()` (registering)
/// or `.get()` (proving), then the answer back with `ceremony`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasskeyCeremonyView {
    /// The ceremony's id.
    pub ceremony: String,
    /// The WebAuthn options (`publicKey` inside), as JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: serde_json::Value,
}

/// The browser's answer to a passkey ceremony.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasskeyAnswerRequest {
    /// The ceremony's id, as begun.
    pub ceremony: String,
    /// The `PublicKeyCredential`, as `toJSON()` gives it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub credential: serde_json::Value,
}

/// The first code of an authenticator app being set up.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TotpConfirmRequest {
    /// The six-digit code the app shows.
    pub code: String,
}

impl std::fmt::Debug for TotpConfirmRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpConfirmRequest(<redacted>)")
    }
}

/// The second factors the signed-in person holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FactorsView {
    /// An authenticator app is set up.
    pub totp: bool,
    /// An authenticator app is being set up (its first code not typed yet).
    pub totp_pending: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// Registered passkeys.
    pub passkeys: u32,
    /// Whether this session still needs a second factor before anything else.
    pub second_factor_required: bool,
}

/// An authenticator app to set up: show `otpauth_uri` as a QR code, or `secret` for typing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpEnrolmentView {
    /// The `otpauth://totp/…` URI.
    pub otpauth_uri: String,
    /// The seed in base32.
    pub secret: String,
}

impl std::fmt::Debug for TotpEnrolmentView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolmentView(<redacted>)")
    }
}

/// New recovery codes, shown once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryCodesView {
    /// Ten single-use codes; the earlier ones no longer work.
    pub codes: Vec<String>,
}

impl std::fmt::Debug for RecoveryCodesView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCodesView(<redacted>)")
    }
}

/// One of the signed-in person's sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionListItem {
    /// Id, to end it with `DELETE /api/v1/sessions/{id}`.
    pub id: String,
    /// Signed in at.
    pub created_at: String,
    /// Last request at.
    pub last_seen_at: String,
    /// Network address it was started from.
    pub source: String,
    /// The browser, as it named itself.
    pub user_agent: String,
    /// The second factor last proven in it (`totp`, `passkey`, `recovery_code`), if any.
    pub factor: Option<String>,
    /// Whether it is the session making this request.
    pub current: bool,
}

/// A courier's kiosk code for today.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CourierCodeView {
    /// Twelve digits in groups of four, to type at a kiosk.
    pub code: String,
    /// When it stops working (RFC 3339; the end of its UTC day).
    pub valid_until: String,
}

/// A bank's lockdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockdownView {
    /// The bank.
    pub bank: String,
    /// Whether it is locked down: while it is, none of its compartments opens.
    pub locked_down: bool,
    /// Since when (RFC 3339), if it is.
    pub engaged_at: Option<String>,
    /// Who engaged it (an id), if it is.
    pub engaged_by: Option<String>,
}

/// An alert: a tamper reading, or something the server noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertView {
    /// Its id.
    pub id: String,
    /// The site.
    pub site: String,
    /// The bank, unless it concerns the site as a whole.
    pub bank: Option<String>,
    /// The compartment's number, unless it concerns the bank as a whole.
    pub compartment: Option<u16>,
    /// What it is about (`pry`, `door_forced`, `brute_force`, …).
    pub kind: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// `open`, `acknowledged` or `resolved`.
    pub state: String,
    /// Who acknowledged it (a person's id), if anyone has.
    pub owner: Option<String>,
    /// Readings that raised or joined it.
    pub readings: u64,
    /// When it was raised (RFC 3339).
    pub raised_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// One entry of an alert's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertEventView {
    /// Its place in the timeline, from 1.
    pub seq: u64,
    /// When (RFC 3339).
    pub at: String,
    /// Who: a person's or device's id, or `system`.
    pub actor: String,
    /// `raised`, `reading`, `acknowledged`, `note` or `resolved`.
    pub what: String,
    /// The note or reason given.
    pub note: Option<String>,
}

/// An alert with its timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertDetailView {
    /// The alert.
    pub alert: AlertView,
    /// What happened to it, in order.
    pub timeline: Vec<AlertEventView>,
}

/// A site's lockdown rule: an alert of `kind` at `min_severity` or above locks down `scope`
/// as it is raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LockdownRuleView {
    /// An alert kind (`pry`, `drill`, …), or `any`.
    pub kind: String,
    /// `low`, `medium`, `high` or `critical`.
    pub min_severity: String,
    /// `bank` (the alert's bank) or `site` (every bank of the site).
    pub scope: String,
}

/// When one kind of sensor reading counts at a bank: `threshold` readings within `window_ms`,
/// and then none again for `quiet_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SensorRuleView {
    /// A kind a sensor reads: `impact`, `pry`, `drill`, `door_forced`, `door_left_open`,
    /// `override_key`, `reader_tamper`, `enclosure_open` or `power_loss`.
    pub kind: String,
    /// Readings needed within the window, 1 to 20.
    pub threshold: u32,
    /// The window, in milliseconds (at most an hour).
    pub window_ms: u64,
    /// After a reading counts, how long the next are not counted (1 s to an hour).
    pub quiet_ms: u64,
}

/// A bank's sensor settings: the kinds whose rules differ from the defaults, and how long a
/// door may stand open before it is `door_left_open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SensorSettingsView {
    /// Rules that differ from each kind's default (three impacts within ten seconds; any
    /// other kind at once; a minute's quiet after each).
    #[serde(default)]
    pub rules: Vec<SensorRuleView>,
    /// Seconds a door may stand open (30 to 86 400; 180 unless set).
    pub door_left_open_after_secs: u64,
}

/// How long a site keeps personal data once it has served its purpose, in days (1 to 3650
/// each). The sweeper enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetentionView {
    /// After a parcel closes, its tracking number and recipient are dropped (90 unless set).
    pub parcel_days: u32,
    /// After a session ends, its record is deleted (30 unless set).
    pub session_days: u32,
    /// After a message or alert notification is delivered or given up, its record is deleted
    /// (30 unless set).
    pub delivery_days: u32,
    /// Photos and clips are kept this long (90 unless set).
    pub evidence_days: u32,
}

/// Where a site's alerts are sent besides its staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertEndpointView {
    /// Id (`aep_…`).
    pub id: String,
    /// `webhook` or `syslog`.
    pub channel: String,
    /// The URL, or `host:port`.
    pub target: String,
    /// The least severity it gets: `low`, `medium`, `high` or `critical`.
    pub min_severity: String,
    /// Added (RFC 3339).
    pub created_at: String,
}

/// An endpoint to add for a site's alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewAlertEndpointRequest {
    /// `webhook` or `syslog`.
    pub channel: String,
    /// A webhook's `https://` URL, or a syslog receiver's `host:port` (RFC 5425, TLS), on a
    /// public address (private ones only where the operator allows the host).
    pub target: String,
    /// The least severity it gets: `low`, `medium`, `high` or `critical`.
    pub min_severity: String,
}

/// An endpoint just added, with its signing secret: shown this once, kept sealed after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertEndpointCreatedView {
    /// The endpoint.
    pub endpoint: AlertEndpointView,
    /// The Standard Webhooks secret (`whsec_…`) its requests are signed with.
    pub secret: Option<String>,
}

/// One notification of an alert to one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertDeliveryView {
    /// Id (`dlv_…`): a webhook's `webhook-id`.
    pub id: String,
    /// The alert.
    pub alert: String,
    /// How it goes: `webhook` or `syslog`.
    pub channel: String,
    /// The endpoint it goes to.
    pub endpoint: Option<String>,
    /// What it says happened: `raised`.
    pub event: String,
    /// `pending`, `delivered` or `dead` (in the dead-letter list).
    pub state: String,
    /// Tries so far.
    pub attempts: u32,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// Queued (RFC 3339).
    pub created_at: String,
    /// The next try (RFC 3339), while pending.
    pub next_attempt_at: Option<String>,
}

/// A person's consent to hear of a site's alerts on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AlertSubscriptionView {
    /// The site.
    pub site: String,
    /// `email` (to the account's address) or `sms`.
    pub channel: String,
    /// The number for text messages, in international form (`+447700900123`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The least severity: `low`, `medium`, `high` or `critical`. Text messages never carry
    /// low-severity alerts.
    pub min_severity: String,
    /// When consent was given (RFC 3339); ignored in a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consented_at: Option<String>,
}

/// A consent to hear of a site's alerts, given or withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentChangeView {
    /// The site.
    pub site: String,
    /// `email` or `sms`.
    pub channel: String,
    /// `given` or `withdrawn`.
    pub change: String,
    /// The least severity agreed to, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

/// A note for an alert's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// The note, in a few words.
    pub note: String,
}

/// An agent's identity (its certificate) at a bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceView {
    /// The device's id.
    pub id: String,
    /// Its bank.
    pub bank: String,
    /// Its certificate's serial number, hex.
    pub cert_serial: String,
    /// When it enrolled (RFC 3339).
    pub enrolled_at: String,
    /// When its certificate expires (RFC 3339).
    pub cert_expires_at: String,
    /// When it was revoked (RFC 3339), if it was.
    pub revoked_at: Option<String>,
    /// When it last connected (RFC 3339), if ever.
    pub last_seen_at: Option<String>,
    /// Whether it is connected now.
    pub connected: bool,
    /// Its last health report while connected.
    pub health: Option<DeviceHealthView>,
}

/// What a connected agent last reported about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceHealthView {
    /// When the report came (RFC 3339).
    pub at: String,
    /// Its lock boards: address, and whether each answered its last poll.
    pub boards: Vec<BoardHealthView>,
    /// The link's last round trip in milliseconds, once measured.
    pub round_trip_ms: Option<u32>,
    /// Links re-established since the agent started.
    pub reconnects: u32,
    /// Whether its interlock is engaged (locked down, or its journal failed).
    pub interlocked: bool,
}

/// One lock board in a health report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BoardHealthView {
    /// Its bus address.
    pub address: u8,
    /// Whether it answered its last poll.
    pub answering: bool,
}

/// A badge registered to a person. Its number is never shown again, only its last four hex
/// digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BadgeView {
    /// The badge's id.
    pub id: String,
    /// The site it works at.
    pub site: String,
    /// Whose it is (a person's id).
    pub person: String,
    /// The number's last four hex digits; null once the holder has been erased.
    pub hint: Option<String>,
    /// When it was registered (RFC 3339).
    pub created_at: String,
    /// When it was revoked (RFC 3339), if it was.
    pub revoked_at: Option<String>,
}

/// A badge to register to a person of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterBadgeRequest {
    /// The holder's e-mail address, as registered at the site.
    pub email: String,
    /// The badge's number as the reader reports it, in hexadecimal (at least 48 bits: 12
    /// digits; `:`, `-` and spaces between digits are allowed).
    pub badge: String,
}

/// An export from an access-control system, to register every badge in it or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportBadgesRequest {
    /// CSV text with a header naming an `email` column and a `badge` column (or `card`,
    /// `card_number`, `uid`); other columns are ignored. At most 5,000 rows.
    pub csv: String,
}

/// How many sessions were ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndedView {
    /// Sessions ended.
    pub ended: u64,
}

/// A compartment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompartmentView {
    /// Id.
    pub id: String,
    /// Number on the door.
    pub number: u16,
    /// `small`, `medium`, `large` or `extra_large`.
    pub size: String,
    /// At accessible height.
    pub accessible: bool,
    /// Refrigerated.
    pub refrigerated: bool,
    /// `free`, `reserved`, `occupied` or `out_of_service`.
    pub state: String,
    /// Last sensed door state: `open`, `closed` or `unknown`.
    pub door: String,
}

/// A locker bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BankView {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether its agent is connected now.
    pub online: bool,
    /// Its compartments.
    pub compartments: Vec<CompartmentView>,
}

/// A site with its banks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SiteView {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Pickup window in hours.
    pub pickup_window_hours: u64,
    /// Banks (empty in listings).
    pub banks: Vec<BankView>,
}

/// A reason for a sensitive action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why, in a few words; recorded in the audit log.
    pub reason: String,
}

/// Which of a site's audit entries to export, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditExportRequest {
    /// The site whose entries to export.
    pub site: String,
    /// Why, in a few words; recorded in the audit log.
    pub reason: String,
    /// Only entries about this parcel.
    #[serde(default)]
    pub parcel: Option<String>,
    /// Only entries about this compartment.
    #[serde(default)]
    pub compartment: Option<String>,
    /// Only entries by (or sealed to) this person, key or device.
    #[serde(default)]
    pub actor: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Only entries before this time (RFC 3339).
    #[serde(default)]
    pub until: Option<String>,
}

/// A compartment being opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpeningView {
    /// The compartment.
    pub compartment: CompartmentView,
    /// The parcel, when the opening changed it.
    pub parcel: Option<ParcelView>,
    /// Whether the open command reached the bank's agent.
    pub command_delivered: bool,
}

/// Create a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSiteRequest {
    /// Display name.
    pub name: String,
    /// IANA time zone, such as `Europe/Berlin`.
    pub time_zone: String,
    /// Pickup window in hours (default 168, seven days).
    pub pickup_window_hours: Option<u64>,
}

/// Create a bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateBankRequest {
    /// Display name.
    pub name: String,
}

/// One compartment to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompartmentSpec {
    /// Number on the door, 1–999.
    pub number: u16,
    /// `small`, `medium`, `large` or `extra_large`.
    pub size: String,
    /// At accessible height.
    #[serde(default)]
    pub accessible: bool,
    /// Refrigerated.
    #[serde(default)]
    pub refrigerated: bool,
}

/// Add compartments to a bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCompartmentsRequest {
    /// The compartments (all are added, or none).
    pub compartments: Vec<CompartmentSpec>,
}

/// Add a person.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePersonRequest {
    /// E-mail address (their login).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Limit the role to this site (required for residents).
    pub site: Option<String>,
    /// For couriers, their carrier.
    pub carrier: Option<String>,
    /// Initial password (at least 12 characters), if they sign in with one.
    pub password: Option<String>,
    /// Why: required when the role has power (auditor and up).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Open several compartments of a bank at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkOpenRequest {
    /// Compartment numbers (2 to 64).
    pub compartments: Vec<u16>,
    /// Why, in a few words; kept in the audit log, sealed.
    pub reason: String,
}

/// A person's new role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleChangeRequest {
    /// `resident`, `auditor`, `admin` or `super_admin` (couriers keep theirs).
    pub role: String,
    /// Why; recorded in the audit log.
    pub reason: String,
}

/// A request that waits for a second person's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalView {
    /// Id, to approve or reject it.
    pub id: String,
    /// What it would do (`grant_super_admin`).
    pub kind: String,
    /// Whom it concerns.
    pub subject: String,
    /// Its exact parameters, as JSON.
    pub params: String,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: String,
    /// Unanswered past this, it lapses.
    pub expires_at: String,
    /// `approved` or `rejected`, once answered.
    pub outcome: Option<String>,
    /// Who answered.
    pub decided_by: Option<String>,
}

impl std::fmt::Debug for CreatePersonRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatePersonRequest")
            .field("email", &self.email)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Register a carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCarrierRequest {
    /// Display name.
    pub name: String,
}

/// A carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CarrierView {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// Issue an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// What to call it.
    pub label: String,
    /// Sites it may deliver to.
    pub sites: Vec<String>,
    /// Why; recorded in the audit log.
    pub reason: String,
}

/// A carrier API key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyView {
    /// Key id.
    pub id: String,
    /// What the issuer called it.
    pub label: String,
    /// Sites it may deliver to.
    pub sites: Vec<String>,
    /// Issued.
    pub created_at: String,
    /// Last authenticated use.
    pub last_used_at: Option<String>,
    /// When it stops (or stopped) working: revoked, or retiring after a rotation.
    pub ends_at: Option<String>,
}

/// How long the old key keeps working beside its successor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateApiKeyRequest {
    /// Hours, 0–168 (default 24).
    #[serde(default)]
    pub overlap_hours: Option<u32>,
    /// Why; recorded in the audit log.
    pub reason: String,
}

/// A freshly issued API key. The token is shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyIssued {
    /// Key id.
    pub id: String,
    /// `Authorization: Bearer <token>`.
    pub token: String,
    /// For a rotation: when the key it replaces stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces_until: Option<String>,
}

impl std::fmt::Debug for ApiKeyIssued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyIssued").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A single-use enrolment token for a bank's agent. Shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrolmentTokenView {
    /// Give it to `custody agent enrol --token`.
    pub token: String,
}

impl std::fmt::Debug for EnrolmentTokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrolmentTokenView(<redacted>)")
    }
}

/// One event of a parcel's chain of custody, with its proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustodyEvent {
    /// The event.
    #[serde(flatten)]
    pub event: EventView,
    /// The entry's leaf index in the log.
    pub index: u64,
    /// The canonical entry bytes, base64 (what the leaf hash covers).
    pub entry: String,
    /// Inclusion proof against the checkpoint, hex hashes.
    pub proof: Vec<String>,
    /// Whether the server found the proof valid and the entry consistent with its record.
    pub verified: bool,
}

/// A parcel's chain of custody, proved against a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustodyView {
    /// The parcel.
    pub parcel: ParcelView,
    /// The signed checkpoint (C2SP signed note) the proofs lead to.
    pub checkpoint: String,
    /// Its events, oldest first.
    pub events: Vec<CustodyEvent>,
}

/// A consistency proof between two sizes of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsistencyView {
    /// The older size.
    pub old_size: u64,
    /// The newer size.
    pub new_size: u64,
    /// The proof, hex hashes (RFC 9162 §2.1.4).
    pub proof: Vec<String>,
}
