//! The device protocol, version 1: JSON messages in WebSocket text frames over mutually
//! authenticated TLS 1.3.
//!
//! Commands that move a lock are signed by the server's command key (Ed25519) and bound to one
//! device, one compartment, a nonce and a short expiry. The signature covers
//! [`OpenCommand::signing_bytes`], a canonical binary encoding, so it does not depend on how the
//! JSON around it was formatted.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Domain label of open-command signatures.
pub const OPEN_COMMAND_DOMAIN: &[u8] = b"custody/open-command/v1";

/// Largest frame either side accepts, in bytes. Every message is small; anything larger is an
/// attack or a bug.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;

/// An instruction to unlock one compartment once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenCommand {
    /// The device that may execute it.
    pub device: String,
    /// The bank it belongs to.
    pub bank: String,
    /// The compartment number (1–999).
    pub compartment: u16,
    /// 16 random bytes, hex; each nonce is executed at most once.
    pub nonce: String,
    /// When it was issued (ms since the epoch).
    pub issued_at_ms: i64,
    /// After this it must be refused (ms since the epoch).
    pub expires_at_ms: i64,
    /// Why the door opens (`pickup`, `deposit`, `return`, `retrieve`, `remote_open`).
    pub purpose: String,
}

fn put(buf: &mut Vec<u8>, field: &[u8]) {
    buf.extend_from_slice(&(field.len() as u64).to_be_bytes());
    buf.extend_from_slice(field);
}

impl OpenCommand {
    /// The bytes the signature covers: every field, length-prefixed, in a fixed order.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(128);
        put(&mut buf, self.device.as_bytes());
        put(&mut buf, self.bank.as_bytes());
        put(&mut buf, &self.compartment.to_be_bytes());
        put(&mut buf, self.nonce.as_bytes());
        put(&mut buf, &self.issued_at_ms.to_be_bytes());
        put(&mut buf, &self.expires_at_ms.to_be_bytes());
        put(&mut buf, self.purpose.as_bytes());
        buf
    }
}

/// A bank's presence key, base64. A secret: its `Debug` prints nothing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PresenceKey(pub String);

impl std::fmt::Debug for PresenceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresenceKey(<redacted>)")
    }
}

/// An open command with the server's signature (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedOpenCommand {
    /// The command.
    pub command: OpenCommand,
    /// Ed25519 signature over `command.signing_bytes()` with [`OPEN_COMMAND_DOMAIN`], base64.
    pub signature: String,
}

/// What the door sensor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorReading {
    /// Open.
    Open,
    /// Closed.
    Closed,
    /// No trustworthy reading.
    Unknown,
}

/// How an agent dealt with an open command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result", deny_unknown_fields)]
pub enum CommandOutcome {
    /// The lock was released.
    Unlocked,
    /// The agent refused the command (bad signature, replay, expired, another device's).
    Refused {
        /// Why.
        reason: String,
    },
    /// The agent tried and the hardware failed.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Messages from the agent to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum AgentMessage {
    /// First message after connecting.
    Hello {
        /// Protocol version the agent speaks.
        protocol: u32,
        /// Agent software version.
        agent_version: String,
    },
    /// Someone typed a pickup code at the kiosk.
    PickupAttempt {
        /// Chosen by the agent; echoed in the answer.
        request_id: u64,
        /// What was typed. Travels only inside the mutually authenticated channel and is never
        /// logged on either side.
        code: String,
    },
    /// Someone held a QR pickup token to the kiosk's scanner. The agent has checked the
    /// token's signature, bank and expiry offline; a token that failed is still sent (under a
    /// request id the agent does not wait for), so every scan is audited.
    QrPickup {
        /// Chosen by the agent; echoed in the answer.
        request_id: u64,
        /// The token's text as scanned. A bearer credential until used: never logged.
        token: String,
    },
    /// Someone held a badge to the kiosk's reader, to pick up their parcels. The agent has
    /// checked the number against its bank's badge list; an unknown one is still sent (under a
    /// request id the agent does not wait for), so every read is audited and spends the budget.
    BadgeRead {
        /// Chosen by the agent; echoed in the answer.
        request_id: u64,
        /// The badge as read.
        badge: BadgeRead,
    },
    /// A courier typed their code, or held their badge, at the kiosk, to see their work or do
    /// one part of it.
    Courier {
        /// Chosen by the agent; echoed in the answer.
        request_id: u64,
        /// Who they are.
        credential: CourierCredential,
        /// What they chose.
        action: CourierAction,
    },
    /// A door sensor changed.
    DoorReport {
        /// Compartment number.
        compartment: u16,
        /// New reading.
        door: DoorReading,
        /// The agent's monotonic event counter.
        counter: u64,
    },
    /// The outcome of an open command.
    CommandResult {
        /// The command's nonce.
        nonce: String,
        /// What happened.
        outcome: CommandOutcome,
    },
    /// How the agent is doing: sent after the welcome and every minute.
    Health(HealthReport),
    /// A new certificate, for a key the agent has just made: sent when two thirds of the
    /// current certificate's lifetime has passed.
    Renew {
        /// The certificate signing request, PEM.
        csr_pem: String,
    },
    /// Something the kiosk did while the server was unreachable, sent after the next welcome
    /// and again after every welcome until the server acknowledges it.
    Offline(OfflineUse),
    /// A tamper sensor's reading that counts (debounced at the agent): `impact`, `pry`,
    /// `drill`, `door_forced`, `door_left_open`, `override_key`, `reader_tamper`,
    /// `enclosure_open` or `power_loss`. Sent again after every welcome until the server
    /// acknowledges it ([`ServerMessage::SensorAck`]).
    Sensor {
        /// The kind of alert it raises.
        kind: String,
        /// The compartment, unless it concerns the bank as a whole.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compartment: Option<u16>,
        /// When, by the agent's clock (ms since the epoch).
        at_ms: i64,
        /// The agent's monotonic event counter.
        counter: u64,
    },
}

/// What a bank's kiosk may open while its agent cannot reach the server: a verifier for each
/// pickup code that works, the couriers who may deposit there with the parcels they may
/// deposit and the free compartments, and how long the list may be trusted. Sent after the
/// welcome, every minute, and at once when a code is drawn.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineList {
    /// The bank's offline key, base64 (32 bytes): a typed code's verifier is computed under it.
    /// A secret: never logged.
    pub key: String,
    /// When the server made the list (ms since the epoch).
    pub issued_at_ms: i64,
    /// The sync deadline: after this the agent opens nothing offline, so a revoked code stops
    /// working by then even if the agent never hears of it (ms since the epoch).
    pub valid_until_ms: i64,
    /// The codes.
    pub codes: Vec<OfflineCode>,
    /// The couriers who may deposit here: those whose carrier has parcels announced for the
    /// bank's site.
    #[serde(default)]
    pub couriers: Vec<OfflineCourier>,
    /// The parcels announced for the bank's site, waiting to be deposited.
    #[serde(default)]
    pub expected: Vec<OfflineParcel>,
    /// The bank's free compartments.
    #[serde(default)]
    pub free: Vec<OfflineCompartment>,
}

/// A courier's code for one UTC day, as the agent may check it offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineCourier {
    /// The courier's person id.
    pub courier: String,
    /// Their carrier's id.
    pub carrier: String,
    /// The UTC day (days since the epoch) the code works on.
    pub day: i64,
    /// The Argon2id verifier of the code's twelve digits under the bank's offline key and the
    /// day, base64.
    pub verifier: String,
}

/// A parcel announced for the bank's site, as the kiosk shows it to its carrier's courier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineParcel {
    /// The parcel as the kiosk shows it.
    pub parcel: KioskParcel,
    /// Its carrier's id.
    pub carrier: String,
    /// Whether it needs an accessible compartment.
    pub accessible: bool,
    /// Whether it needs a refrigerated compartment.
    pub refrigerated: bool,
}

/// A free compartment of the bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineCompartment {
    /// Its number.
    pub compartment: u16,
    /// Its size (`small`, `medium`, `large`, `extra_large`).
    pub size: String,
    /// Whether it is accessible.
    pub accessible: bool,
    /// Whether it is refrigerated.
    pub refrigerated: bool,
}

impl std::fmt::Debug for OfflineList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineList")
            .field("codes", &self.codes.len())
            .field("couriers", &self.couriers.len())
            .field("expected", &self.expected.len())
            .field("free", &self.free.len())
            .field("valid_until_ms", &self.valid_until_ms)
            .finish_non_exhaustive()
    }
}

/// One pickup code that works at the bank, as its agent may check it offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineCode {
    /// The code record's id (the one a QR token names). Not a secret.
    pub id: String,
    /// The compartment it opens.
    pub compartment: u16,
    /// The keyed hash of locker number and code under the bank's offline key, base64.
    pub verifier: String,
    /// When it stops working (ms since the epoch).
    pub expires_at_ms: i64,
}

/// Something the kiosk did offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineUse {
    /// Unique at this agent; the server records each id once, so a use reported twice is
    /// consumed once.
    pub id: String,
    /// When it happened, by the agent's clock (ms since the epoch).
    pub at_ms: i64,
    /// What happened.
    pub what: OfflineWhat,
}

/// What the kiosk did offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum OfflineWhat {
    /// A pickup code or a QR token from the list opened its compartment.
    Opened {
        /// The code record's id.
        code: String,
        /// The compartment.
        compartment: u16,
        /// How it was presented: `code` or `qr`.
        method: String,
    },
    /// A credential was refused.
    Refused {
        /// How it was presented: `code`, `qr` or `courier`.
        method: String,
    },
    /// A courier's code from the list opened a free compartment to deposit a parcel.
    Deposited {
        /// The courier's person id.
        courier: String,
        /// The parcel's id.
        parcel: String,
        /// The compartment.
        compartment: u16,
    },
    /// The courier confirmed the deposit: the parcel is in and the door shut.
    Confirmed {
        /// The courier's person id.
        courier: String,
        /// The parcel's id.
        parcel: String,
    },
}

/// The kiosk's answer to a pickup attempt. One refusal for every kind of failure: the kiosk
/// cannot tell, and so cannot show, why a code did not work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result", deny_unknown_fields)]
pub enum PickupAnswer {
    /// The code worked; an open command for the compartment follows.
    Accepted {
        /// The compartment that will open.
        compartment: u16,
    },
    /// The code did not work.
    Refused,
    /// Too many wrong codes at this bank: typed codes are paused until its budget renews. Not a
    /// statement about the code that was typed.
    Paused,
}

/// A badge as a reader at the kiosk reported it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadgeRead {
    /// The number, in hexadecimal (at least 48 bits).
    pub number: String,
    /// The reader it came from: `osdp_secure` (Secure Channel), `osdp_clear` (commissioning
    /// only), `wiegand` or `keyboard`.
    pub reader: String,
}

impl std::fmt::Debug for BadgeRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A person's identifier: logs see the reader only.
        f.debug_struct("BadgeRead").field("reader", &self.reader).finish_non_exhaustive()
    }
}

/// How a courier says who they are at the kiosk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum CourierCredential {
    /// Today's courier code, as typed. Like a pickup code, never logged.
    Code {
        /// The code.
        code: String,
    },
    /// Their badge, read by a reader with Secure Channel (other readers are not enough).
    Badge {
        /// The badge.
        badge: BadgeRead,
    },
}

/// The site's badges as the kiosk checks a read: the site's badge key and the keyed hash of
/// every badge number not revoked. Sent after the welcome and again whenever the site's badges
/// change, so a revoked badge is refused at the kiosk from the next sync on.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadgeList {
    /// The site's badge key, base64 (32 bytes). A secret: never logged.
    pub key: String,
    /// Keyed hashes of the numbers, base64.
    pub verifiers: Vec<String>,
}

impl std::fmt::Debug for BadgeList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BadgeList").field("badges", &self.verifiers.len()).finish_non_exhaustive()
    }
}

/// What a courier does at the kiosk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", deny_unknown_fields)]
pub enum CourierAction {
    /// Show what they may deposit here and take back.
    Visit,
    /// Deposit this parcel: a compartment of its size opens, or of the larger size the
    /// courier chose because it does not fit (`small`, `medium`, `large`, `extra_large`).
    Deposit {
        /// The parcel's id.
        parcel: String,
        /// A larger size than announced; a smaller one is ignored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<String>,
    },
    /// The parcel is in and the door shut.
    Confirm {
        /// The parcel's id.
        parcel: String,
    },
    /// Take this expired parcel back: its compartment opens.
    Return {
        /// The parcel's id.
        parcel: String,
    },
}

/// How many compartments of one size are free at the bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreeCompartments {
    /// The size (`small`, `medium`, `large`, `extra_large`).
    pub size: String,
    /// How many are free.
    pub count: u32,
}

/// A parcel as the kiosk shows it to a courier: nothing about its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KioskParcel {
    /// The parcel's id.
    pub id: String,
    /// The carrier's tracking reference.
    pub tracking_ref: String,
    /// Its size class.
    pub size: String,
}

/// The answer to a courier at the kiosk. One refusal for every kind of failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result", deny_unknown_fields)]
pub enum CourierAnswer {
    /// Their work here.
    Work {
        /// Parcels to deposit.
        deposits: Vec<KioskParcel>,
        /// Parcels to take back.
        returns: Vec<KioskParcel>,
        /// Free compartments here by size, smallest first (sizes with none left out).
        free: Vec<FreeCompartments>,
    },
    /// This compartment will open (an open command follows).
    Opening {
        /// The compartment.
        compartment: u16,
    },
    /// Done (a deposit confirmed).
    Done,
    /// Not accepted.
    Refused,
}

/// One lock board, as the agent last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardHealth {
    /// Its bus address.
    pub address: u8,
    /// Whether it answered its last poll.
    pub answering: bool,
}

/// How an agent is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    /// Its lock boards (none for simulated doors).
    pub boards: Vec<BoardHealth>,
    /// The last round trip of the link (a WebSocket ping), in milliseconds, once measured.
    pub round_trip_ms: Option<u32>,
    /// How many times the link has been re-established since the agent started.
    pub reconnects: u32,
    /// Whether the interlock is engaged (locked down, or the journal failed).
    pub interlocked: bool,
}

/// Messages from the server to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum ServerMessage {
    /// Answer to the agent's hello.
    Welcome {
        /// Protocol version the server speaks.
        protocol: u32,
        /// The device id the server knows this agent as.
        device: String,
        /// The bank it runs.
        bank: String,
        /// The bank's compartment numbers.
        compartments: Vec<u16>,
        /// Server time (ms since the epoch), for the agent's information only.
        server_time_ms: i64,
        /// The bank's presence key: the kiosk shows the six-digit code it gives every 30
        /// seconds (RFC 6238), which a resident types into the app to open from the phone.
        presence_key: PresenceKey,
        /// Whether the bank is locked down: the agent opens nothing while it is, and remembers
        /// it across restarts.
        locked_down: bool,
    },
    /// The agent's new certificate, answering its `Renew`.
    Renewed {
        /// The certificate, PEM.
        certificate_pem: String,
    },
    /// The bank was locked down (`on`) or its lockdown lifted, after the welcome.
    Lockdown {
        /// Whether it is locked down now.
        on: bool,
    },
    /// Unlock a compartment.
    Open(SignedOpenCommand),
    /// Answer to a pickup attempt.
    Pickup {
        /// The attempt's request id.
        request_id: u64,
        /// The outcome.
        answer: PickupAnswer,
    },
    /// The site's badges, for checking reads at the kiosk.
    Badges(BadgeList),
    /// The bank's pickup codes, for checking them while the server is unreachable.
    OfflineList(OfflineList),
    /// The server has recorded this offline use: the agent need not send it again.
    OfflineAck {
        /// The use's id.
        id: String,
    },
    /// Answer to a courier.
    Courier {
        /// The request's id.
        request_id: u64,
        /// The outcome.
        answer: CourierAnswer,
    },
    /// The bank's sensor settings and its site's lockdown rules: sent after the welcome and
    /// whenever they change. The agent keeps them across restarts and applies the rules to
    /// its own readings, so a pry locks the bank down even while the server is unreachable.
    Policy(BankPolicy),
    /// The server has recorded the sensor reading journaled under `counter`: the agent need
    /// not send it again, and the server's word on the lockdown holds from now on.
    SensorAck {
        /// The reading's journal counter.
        counter: u64,
    },
    /// The server refuses to talk to this agent (revoked, unknown, wrong protocol) and closes.
    Goodbye {
        /// Why.
        reason: String,
    },
}

/// What a bank's agent applies to its own sensor readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankPolicy {
    /// The bank's debounce rules and door time.
    pub sensors: crate::api::SensorSettingsView,
    /// The site's lockdown rules.
    pub lockdown: Vec<crate::api::LockdownRuleView>,
}

/// Enrolment request: sent once, over the public HTTPS port, with a single-use token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The enrolment token an admin issued for the bank.
    pub token: String,
    /// A PKCS#10 certificate signing request, PEM, for a key made on the device.
    pub csr_pem: String,
}

/// Enrolment answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrolResponse {
    /// The device's new id.
    pub device: String,
    /// The bank it runs.
    pub bank: String,
    /// Its client certificate, PEM.
    pub certificate_pem: String,
    /// The platform CA, PEM.
    pub ca_pem: String,
    /// The server's command verification key (Ed25519, base64).
    pub command_key: String,
    /// Address of the device gateway (`host:port`).
    pub gateway: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> OpenCommand {
        OpenCommand {
            device: "dev_a".into(),
            bank: "bnk_b".into(),
            compartment: 12,
            nonce: "00ff".into(),
            issued_at_ms: 1,
            expires_at_ms: 2,
            purpose: "pickup".into(),
        }
    }

    #[test]
    fn signing_bytes_cover_every_field() {
        let base = command().signing_bytes();
        let variants = [
            OpenCommand { device: "dev_x".into(), ..command() },
            OpenCommand { bank: "bnk_x".into(), ..command() },
            OpenCommand { compartment: 13, ..command() },
            OpenCommand { nonce: "00fe".into(), ..command() },
            OpenCommand { issued_at_ms: 0, ..command() },
            OpenCommand { expires_at_ms: 3, ..command() },
            OpenCommand { purpose: "deposit".into(), ..command() },
        ];
        for v in variants {
            assert_ne!(v.signing_bytes(), base, "{v:?}");
        }
        // Field boundaries are unambiguous.
        let shifted = OpenCommand { device: "dev_ab".into(), bank: "nk_b".into(), ..command() };
        assert_ne!(shifted.signing_bytes(), base);
    }

    #[test]
    fn messages_round_trip_and_reject_unknown_fields() {
        let m = AgentMessage::CommandResult {
            nonce: "ab".into(),
            outcome: CommandOutcome::Refused { reason: "replay".into() },
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<AgentMessage>(&json).unwrap(), m);
        let s = ServerMessage::Pickup {
            request_id: 7,
            answer: PickupAnswer::Accepted { compartment: 3 },
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"type":"pickup","request_id":7,"answer":{"result":"accepted","compartment":3}}"#
        );
        assert_eq!(serde_json::from_str::<ServerMessage>(&json).unwrap(), s);
        assert!(
            serde_json::from_str::<AgentMessage>(
                r#"{"type":"hello","protocol":1,"agent_version":"x","open_all":true}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<AgentMessage>(r#"{"type":"open_all"}"#).is_err());
    }
}
