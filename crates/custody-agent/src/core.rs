//! The agent's decisions as a pure state machine: `handle(now, event) -> actions`.
//!
//! Nothing here touches a socket, a serial port, a file or a clock; the daemon feeds events in
//! and carries actions out. So the code that decides whether a door opens is tested
//! exhaustively with plain values (STYLE.md rule 3).
//!
//! An open command is executed only if all of these hold (DESIGN.md §3, "Device link"):
//! its signature verifies under the command key received at enrolment; it names this device and
//! this bank; its compartment is one of the bank's (and never 0, which some boards read as "open
//! all"); it has not expired; and its nonce has not been executed before.
//!
//! A QR pickup token is checked here too, offline, before the server is asked: the command
//! key's signature under the token domain, this bank, one of its compartments, not expired, and
//! not already used at this kiosk. The server checks it again and redeems it once.
//!
//! So is a badge read: a badge number, from a reader trusted now (OSDP without Secure Channel
//! only in the commissioning window), whose keyed hash is in the site's badge list as last
//! synced. A revoked badge is refused here from the sync after its revocation.
//!
//! While the server is unreachable, a typed code is checked against the bank's list of code
//! verifiers as last synced ([`ServerMessage::OfflineList`]), and a scanned token's code must be
//! in that list: each opens once, journaled before the door moves ([`Entry::Offline`]), and is
//! reported after every welcome until the server acknowledges it. Past the list's sync deadline
//! nothing opens offline. Wrong credentials offline spend a small daily budget of the agent's
//! own ([`OFFLINE_PICKUP_DAY`]), counted from the journal across restarts.
//!
//! A courier's code is checked offline against the list's Argon2id verifiers of today's codes.
//! The courier sees their carrier's parcels announced for the site and the free compartments;
//! a deposit opens the smallest free compartment that fits, journaled first like any offline
//! open, and is confirmed once the door is reported shut. Returns, badges and opening from the
//! app need the server.
//!
//! What must survive a power cut is journaled ([`Action::Record`], numbered by the core's
//! monotonic counter) before anything acts on it: an open command's nonce before its unlock,
//! each board answer, each door reading, each lockdown change. A core restored from the journal
//! ([`AgentCore::restore`]) refuses every nonce it began to execute, and stays locked down if
//! it was. While the bank is locked down, or once the journal cannot be written, the core
//! refuses every open command and keeps the hardware interlock engaged ([`Action::Interlock`]),
//! which the drivers check again at the moment of actuation.
//!
//! Tamper readings are debounced by the bank's sensor settings, journaled, and reported after
//! every welcome until the server acknowledges them ([`ServerMessage::SensorAck`]). The core
//! applies the site's lockdown rules ([`ServerMessage::Policy`], kept across restarts) to its own
//! readings: a reading a rule matches locks the bank down at once, even offline, and holds
//! until the server has the reading; from then the server's word on the lockdown holds, as the
//! server applies the same rules as it takes the reading. A door open past the bank's time is
//! `door_left_open`, checked on every [`Event::Tick`].

use std::collections::{BTreeMap, BTreeSet};

use crate::journal::{Entry, OfflineDeposit, Reading, Record, Restored};
use custody_core::Timestamp;
use custody_core::alert::{AlertKind, Debouncer, LockdownRule, SensorSettings};
use custody_core::badge::{BadgeNumber, ReaderKind};
use custody_core::code::{PickupEntry, courier_digits};
use custody_core::compartment::{CompartmentNumber, SizeClass};
use custody_core::throttle::OFFLINE_PICKUP_DAY;
use custody_core::token::{PickupToken, QR_TOKEN_DOMAIN, QR_TOKEN_TEXT_LEN, ScannedToken};
use custody_crypto::secret::badge_verifier;
use custody_crypto::secret::{constant_time_eq, offline_code_verifier, offline_courier_verifier};
use custody_crypto::sign::PublicKey;
use custody_proto::device::{
    AgentMessage, BadgeList, BadgeRead, BankPolicy, CommandOutcome, CourierAction, CourierAnswer,
    CourierCredential, DoorReading, FreeCompartments, KioskParcel, OPEN_COMMAND_DOMAIN,
    OfflineCompartment, OfflineCourier, OfflineList, OfflineParcel, OfflineUse, OfflineWhat,
    PROTOCOL_VERSION, PickupAnswer, PresenceKey, ServerMessage, SignedOpenCommand,
};

/// How the nonce of an unlock the agent decided offline begins: no server nonce does (those
/// are hexadecimal).
const OFFLINE_NONCE: &str = "offline-";

/// How far a list's deadline may move on before the list is saved again though its codes
/// did not change (ms): an hour.
const SAVE_EVERY_MS: i64 = 3_600_000;

/// How long after its compartment opened an offline deposit may be confirmed (ms): the
/// server's default reservation, ten minutes.
const CONFIRM_WITHIN_MS: i64 = 600_000;

/// How long after an unlock its door may open, once, without being taken for forced (ms):
/// ten minutes, as long as a deposit's reservation.
const FORCED_AFTER_MS: i64 = 600_000;
use data_encoding::BASE64;

/// What the agent knows about itself from enrolment.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its device id.
    pub device: String,
    /// Its bank.
    pub bank: String,
    /// The server's command verification key.
    pub command_key: PublicKey,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The device link is up.
    Connected,
    /// The device link is down.
    Disconnected,
    /// The server sent a message.
    Server(ServerMessage),
    /// Someone typed a code at the kiosk.
    CodeEntered(String),
    /// The kiosk's scanner read a QR code.
    QrScanned(String),
    /// A reader at the kiosk read a badge (hexadecimal, as the reader reported it).
    BadgeRead {
        /// The number.
        number: String,
        /// The reader it came from.
        reader: ReaderKind,
    },
    /// A courier typed their code, or held their badge, at the kiosk and chose what to do.
    Courier {
        /// Who they are.
        credential: CourierCredential,
        /// What they chose.
        action: CourierAction,
    },
    /// A door sensor changed.
    Door {
        /// Compartment.
        compartment: u16,
        /// Reading.
        reading: DoorReading,
    },
    /// The lock board answered an unlock.
    Unlocked {
        /// The command's nonce.
        nonce: String,
        /// Whether the board confirmed it.
        result: Result<(), String>,
    },
    /// A journal record could not be written (a full disk, a failing card): nothing may open
    /// from now on, since nothing could be accounted for.
    JournalFailed,
    /// A tamper sensor read something (a kind that comes from sensors; others are ignored).
    Sensor {
        /// What it read.
        kind: AlertKind,
        /// The compartment, unless it concerns the bank as a whole.
        compartment: Option<u16>,
    },
    /// Time passed: doors open too long are reported.
    Tick,
    /// The server refused this device's identity as it connected: its certificate revoked,
    /// superseded by a renewal or a re-enrolment, or its device no longer enrolled. The agent
    /// keeps nothing the server gave it (DESIGN.md §4 invariant 12) and is out of service.
    IdentityRefused,
}

/// What the kiosk screen should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// Waiting for the server's answer.
    Checking,
    /// This compartment is opening.
    Open(u16),
    /// One message for every kind of failure.
    NotAccepted,
    /// The link to the server is down; codes cannot be checked.
    Offline,
    /// Too many wrong codes at this bank: typed codes are paused until its budget renews; a
    /// QR code or the app still opens.
    CodesPaused,
    /// A courier's work here: parcels to deposit and to take back, and the free compartments
    /// by size (to choose a larger one for a parcel that does not fit).
    CourierWork {
        /// To deposit.
        deposits: Vec<KioskParcel>,
        /// To take back.
        returns: Vec<KioskParcel>,
        /// Free compartments by size.
        free: Vec<FreeCompartments>,
    },
    /// A courier's deposit is recorded.
    Thanks,
    /// The server no longer knows this device: nothing is checked here, online or offline.
    OutOfService,
}

impl Screen {
    /// What the kiosk says, in one sentence (a courier's work list is shown as a list, and
    /// this is its heading).
    pub fn message(&self) -> String {
        match self {
            Self::Checking => "Checking…".into(),
            Self::Open(n) => {
                format!("Compartment {n} is open. Please close the door when you are done.")
            }
            Self::NotAccepted => "Code not accepted.".into(),
            Self::Offline => {
                "The locker cannot check codes right now. Please try again later.".into()
            }
            Self::CodesPaused => "Too many wrong codes here: typed codes are paused for a while. \
                                  Scan the QR code from your message, or open from the app."
                .into(),
            Self::CourierWork { .. } => "Your work at this locker.".into(),
            Self::Thanks => "Thank you: the deposit is recorded.".into(),
            Self::OutOfService => {
                "This locker is out of service. Please ask the building's staff.".into()
            }
        }
    }
}

/// Something to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message to the server.
    Send(AgentMessage),
    /// Release the lock of a compartment, once.
    Unlock {
        /// Which compartment.
        compartment: CompartmentNumber,
        /// The command's nonce, echoed in [`Event::Unlocked`].
        nonce: String,
    },
    /// Show something on the kiosk.
    Show(Screen),
    /// Show the bank's presence code from this key beside everything else (a resident types
    /// it into the app to open from the phone), or, with `None`, show none.
    Presence(Option<PresenceKey>),
    /// Append this record to the journal, durably, before carrying out any action after it;
    /// if that fails, engage the interlock and report [`Event::JournalFailed`].
    Record(Record),
    /// Engage (`true`) or release the hardware interlock: while engaged, no latch moves.
    Interlock(bool),
    /// Keep this list of codes on disk, replacing the last, so that a restart while the server
    /// is unreachable still checks codes ([`AgentCore::saved_list`]); with `None`, keep none.
    /// Not a journal record: losing it only means the kiosk waits for the server.
    Save(Option<OfflineList>),
}

/// Why an open command was refused. Reported to the server and never executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The signature does not verify.
    BadSignature,
    /// The command is for another device.
    OtherDevice,
    /// The command is for another bank.
    OtherBank,
    /// No such compartment here (or 0).
    UnknownCompartment,
    /// Past its expiry.
    Expired,
    /// This nonce was executed already.
    Replay,
    /// Not yet connected and welcomed: the compartment list is unknown.
    NotReady,
    /// The bank is locked down.
    LockedDown,
    /// The journal cannot be written: nothing opens that could not be accounted for.
    JournalFailed,
}

/// Why a badge read was refused at the kiosk, before the server was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadgeRefusal {
    /// Not a badge number (too short, not hexadecimal).
    Malformed,
    /// Read over OSDP without Secure Channel after the reader's commissioning window.
    InsecureReader,
    /// No badge list from the server yet: no badge is known.
    NoList,
    /// Not in the site's list: unknown or revoked.
    Unknown,
}

/// Why a scanned QR token was refused at the kiosk, before or without asking the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not a token.
    Malformed,
    /// The signature does not verify under the command key.
    BadSignature,
    /// For another bank.
    OtherBank,
    /// For a compartment this bank does not have.
    UnknownCompartment,
    /// Past its expiry.
    Expired,
    /// Already used at this kiosk.
    Replay,
}

impl Refusal {
    /// Stable name for the server's audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::OtherDevice => "other_device",
            Self::OtherBank => "other_bank",
            Self::UnknownCompartment => "unknown_compartment",
            Self::Expired => "expired",
            Self::Replay => "replay",
            Self::NotReady => "not_ready",
            Self::LockedDown => "locked_down",
            Self::JournalFailed => "journal_failed",
        }
    }
}

/// The agent's state.
#[derive(Debug)]
pub struct AgentCore {
    identity: Identity,
    connected: bool,
    welcomed: bool,
    /// The server refused this identity: nothing is checked or opened for the kiosk until a
    /// welcome says otherwise.
    out_of_service: bool,
    compartments: BTreeSet<u16>,
    /// Nonces executed, with the expiry after which they can be forgotten (a command past its
    /// expiry is refused anyway).
    executed: BTreeMap<String, i64>,
    next_request: u64,
    waiting: BTreeSet<u64>,
    /// QR tokens being asked about, by request: their code record and expiry (ms).
    scanning: BTreeMap<u64, (String, i64)>,
    /// Code records of QR tokens that opened here, until they expire: a token is used once.
    used_tokens: BTreeMap<String, i64>,
    /// The site's badge key and the keyed hashes of its badges, as last synced.
    badges: Option<([u8; 32], BTreeSet<[u8; 32]>)>,
    /// Until when an OSDP reader may be read without Secure Channel (installation).
    commissioning_until: Option<Timestamp>,
    /// The journal's counter: the last record's number.
    counter: u64,
    /// Whether the server said the bank is locked down (kept across restarts).
    locked_down: bool,
    /// Whether a journal record could not be written.
    journal_failed: bool,
    /// The bank's codes as last synced, for checking them offline.
    offline: Option<HeldCodes>,
    /// Offline uses not yet acknowledged by the server, by id.
    pending: BTreeMap<String, OfflineUse>,
    /// Code records that opened offline here: never again, whatever a list says.
    spent: BTreeSet<String>,
    /// When offline refusals happened (ms), for the offline budget.
    refusals: Vec<i64>,
    /// Deposits couriers made offline, by parcel, until the server has them and a list has
    /// followed.
    deposits: BTreeMap<String, OfflineDeposit>,
    /// The last reading of each door (restored from the journal after a restart).
    doors: BTreeMap<u16, DoorReading>,
    /// When the core last released each compartment's latch (ms), until its door opened.
    unlocked_at: BTreeMap<u16, i64>,
    /// Turns tamper readings into the ones that count.
    debouncer: Debouncer,
    /// The bank's sensor settings, as the server last sent them.
    sensors: SensorSettings,
    /// The site's lockdown rules, as the server last sent them.
    rules: Vec<LockdownRule>,
    /// Readings reported and not yet acknowledged, by journal counter.
    readings: BTreeMap<u64, Reading>,
    /// Doors read open: since when (ms), and whether `door_left_open` was raised for it.
    open_since: BTreeMap<u16, (i64, bool)>,
    /// The deadline of the list last saved to disk ([`Action::Save`]).
    saved_until_ms: i64,
    /// The latest time handled: the clock is never taken back (a clock set back must not
    /// revive a command whose nonce was forgotten once it expired).
    latest: Timestamp,
}

/// The bank's codes as last synced: its offline key, the verifiers, what couriers may
/// deposit, and until when they may be trusted.
#[derive(Debug, PartialEq, Eq)]
struct HeldCodes {
    key: [u8; 32],
    valid_until_ms: i64,
    codes: Vec<HeldCode>,
    couriers: Vec<HeldCourier>,
    expected: Vec<OfflineParcel>,
    free: Vec<OfflineCompartment>,
}

#[derive(Debug, PartialEq, Eq)]
struct HeldCourier {
    id: String,
    carrier: String,
    day: i64,
    verifier: [u8; 32],
}

#[derive(Debug, PartialEq, Eq)]
struct HeldCode {
    id: String,
    compartment: u16,
    verifier: [u8; 32],
    expires_at_ms: i64,
}

impl HeldCodes {
    /// The list as synced; `None` for one that cannot be read (fail closed: nothing opens
    /// offline).
    fn take(list: &OfflineList) -> Option<Self> {
        let decode32 =
            |s: &str| -> Option<[u8; 32]> { BASE64.decode(s.as_bytes()).ok()?.try_into().ok() };
        let codes = list
            .codes
            .iter()
            .map(|c| {
                Some(HeldCode {
                    id: c.id.clone(),
                    compartment: c.compartment,
                    verifier: decode32(&c.verifier)?,
                    expires_at_ms: c.expires_at_ms,
                })
            })
            .collect::<Option<_>>()?;
        let couriers = list
            .couriers
            .iter()
            .map(|c: &OfflineCourier| {
                Some(HeldCourier {
                    id: c.courier.clone(),
                    carrier: c.carrier.clone(),
                    day: c.day,
                    verifier: decode32(&c.verifier)?,
                })
            })
            .collect::<Option<_>>()?;
        Some(Self {
            key: decode32(&list.key)?,
            valid_until_ms: list.valid_until_ms,
            codes,
            couriers,
            expected: list.expected.clone(),
            free: list.free.clone(),
        })
    }
}

impl AgentCore {
    /// A core for this device, disconnected.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            connected: false,
            welcomed: false,
            out_of_service: false,
            compartments: BTreeSet::new(),
            executed: BTreeMap::new(),
            next_request: 1,
            waiting: BTreeSet::new(),
            scanning: BTreeMap::new(),
            used_tokens: BTreeMap::new(),
            badges: None,
            commissioning_until: None,
            counter: 0,
            locked_down: false,
            journal_failed: false,
            offline: None,
            pending: BTreeMap::new(),
            spent: BTreeSet::new(),
            refusals: Vec::new(),
            deposits: BTreeMap::new(),
            doors: BTreeMap::new(),
            unlocked_at: BTreeMap::new(),
            debouncer: Debouncer::default(),
            sensors: SensorSettings::default(),
            rules: Vec::new(),
            readings: BTreeMap::new(),
            open_since: BTreeMap::new(),
            saved_until_ms: i64::MIN,
            latest: Timestamp::from_millis(0),
        }
    }

    /// Takes up the list saved before a restart ([`Action::Save`]), so the kiosk still checks
    /// codes if the server is unreachable when it starts. Its deadline holds as it was.
    #[must_use]
    pub fn saved_list(mut self, list: &OfflineList) -> Self {
        self.offline = HeldCodes::take(list);
        self.saved_until_ms = list.valid_until_ms;
        self
    }

    /// How many codes the kiosk can check offline now, or `None` without a list it may trust.
    pub fn offline_codes(&self, now: Timestamp) -> Option<usize> {
        self.held(now).map(|h| h.codes.len())
    }

    /// Takes up what the journal recorded before a restart: the nonces of commands begun (never
    /// executed again), the lockdown, the counter.
    #[must_use]
    pub fn restore(mut self, restored: Restored) -> Self {
        self.counter = restored.counter;
        self.executed = restored.executed;
        self.locked_down = restored.locked_down;
        self.pending = restored.pending;
        self.spent = restored.spent;
        self.refusals = restored.refusals;
        self.deposits = restored.deposits;
        self.doors = restored.doors;
        self.unlocked_at = restored.unlocked_at;
        self.readings = restored.readings;
        self.open_since = restored.open_since;
        if let Some((sensors, rules)) = restored.policy.as_ref().and_then(|p| policy(p).ok()) {
            self.sensors = sensors;
            self.rules = rules;
        }
        self
    }

    /// Whether the bank is locked down: the server says so, or a reading the server does not
    /// have yet matched one of the site's rules.
    fn locked(&self) -> bool {
        self.locked_down || self.readings.values().any(|r| r.locks)
    }

    /// Whether the interlock must be engaged: locked down, or the journal failed.
    pub fn interlocked(&self) -> bool {
        self.locked() || self.journal_failed
    }

    /// The next journal record.
    fn record(&mut self, now: Timestamp, entry: Entry) -> Action {
        self.counter += 1;
        Action::Record(Record { counter: self.counter, at_ms: now.as_millis(), entry })
    }

    /// Takes the server's word on the lockdown: journaled when it changes.
    fn lockdown(&mut self, now: Timestamp, on: bool) -> Vec<Action> {
        if on == self.locked_down {
            return Vec::new();
        }
        self.locked_down = on;
        vec![self.record(now, Entry::Lockdown { on }), Action::Interlock(self.interlocked())]
    }

    /// The server's welcome: the bank as the server knows it, its lockdown, and the presence
    /// key; then everything the server does not have yet goes again.
    fn welcome(
        &mut self,
        now: Timestamp,
        device: &str,
        bank: &str,
        compartments: Vec<u16>,
        presence_key: PresenceKey,
        locked_down: bool,
    ) -> Vec<Action> {
        if device != self.identity.device || bank != self.identity.bank {
            // The server names another device or bank: trust nothing it says.
            self.welcomed = false;
            return vec![Action::Presence(None)];
        }
        self.compartments =
            compartments.into_iter().filter(|n| CompartmentNumber::new(*n).is_ok()).collect();
        self.welcomed = true;
        let mut actions = self.lockdown(now, locked_down);
        actions.push(Action::Presence(Some(presence_key)));
        // Readings the server does not have yet, in the order they were made.
        actions.extend(self.readings.iter().map(|(c, r)| Action::Send(r.message(*c))));
        // What the kiosk did offline, until the server says it has it, in the order it
        // happened (a deposit before its confirmation).
        let mut pending: Vec<&OfflineUse> = self.pending.values().collect();
        pending.sort_by_key(|u| use_order(u));
        actions.extend(pending.into_iter().map(|u| Action::Send(AgentMessage::Offline(u.clone()))));
        actions
    }

    /// Takes the bank's policy as sent: journaled when it changed. One that cannot be read
    /// leaves the last one in force.
    fn take_policy(&mut self, now: Timestamp, sent: BankPolicy) -> Vec<Action> {
        let Ok((sensors, rules)) = policy(&sent) else { return Vec::new() };
        if sensors == self.sensors && rules == self.rules {
            return Vec::new();
        }
        self.sensors = sensors;
        self.rules = rules;
        vec![self.record(now, Entry::Policy { policy: sent })]
    }

    /// The server has a reading: it need not be sent again, and a lockdown it engaged here is
    /// the server's to keep or lift from now on.
    fn reading_acknowledged(&mut self, now: Timestamp, counter: u64) -> Vec<Action> {
        let was = self.interlocked();
        if self.readings.remove(&counter).is_none() {
            return Vec::new();
        }
        let mut actions = vec![self.record(now, Entry::SensorAck { counter })];
        if self.interlocked() != was {
            actions.push(Action::Interlock(self.interlocked()));
        }
        actions
    }

    /// Doors open longer than the bank allows, each once per opening.
    fn doors_left_open(&mut self, now: Timestamp) -> Vec<Action> {
        let after =
            i64::try_from(self.sensors.door_left_open_after.as_millis()).unwrap_or(i64::MAX);
        let due: Vec<u16> = self
            .open_since
            .iter()
            .filter(|(_, (since, told))| !told && now.as_millis().saturating_sub(*since) >= after)
            .map(|(c, _)| *c)
            .collect();
        let mut actions = Vec::new();
        for compartment in due {
            if let Some(open) = self.open_since.get_mut(&compartment) {
                open.1 = true;
            }
            actions.extend(self.sensor(now, AlertKind::DoorLeftOpen, Some(compartment)));
        }
        actions
    }

    /// Lets an OSDP reader be read without Secure Channel until `until` (the installer's
    /// commissioning window, from the agent's configuration); reads in the clear are refused
    /// outside it.
    #[must_use]
    pub const fn commissioning_until(mut self, until: Option<Timestamp>) -> Self {
        self.commissioning_until = until;
        self
    }

    /// Whether the link is up and the server has welcomed the agent.
    pub fn ready(&self) -> bool {
        self.connected && self.welcomed
    }

    /// The bank's compartments, as the server listed them.
    pub fn compartments(&self) -> &BTreeSet<u16> {
        &self.compartments
    }

    /// Handles one event at time `now`.
    pub fn handle(&mut self, now: Timestamp, event: Event) -> Vec<Action> {
        self.latest = self.latest.max(now);
        let now = self.latest;
        self.executed.retain(|_, expires| *expires > now.as_millis());
        self.used_tokens.retain(|_, expires| *expires > now.as_millis());
        match event {
            Event::Connected => {
                self.connected = true;
                self.welcomed = false;
                vec![Action::Send(AgentMessage::Hello {
                    protocol: PROTOCOL_VERSION,
                    agent_version: env!("CARGO_PKG_VERSION").into(),
                })]
            }
            Event::Disconnected => {
                self.connected = false;
                self.welcomed = false;
                // Pickups in flight will get no answer; the people waiting are told.
                let waited = !self.waiting.is_empty();
                self.waiting.clear();
                self.scanning.clear();
                // Offline, nothing can be opened from the app: the kiosk stops showing a code.
                let mut actions = vec![Action::Presence(None)];
                if waited {
                    actions.push(Action::Show(Screen::Offline));
                }
                actions
            }
            Event::IdentityRefused => {
                self.out_of_service = true;
                self.forget_what_the_server_gave()
            }
            Event::Server(message) => self.server(now, message),
            Event::CodeEntered(_)
            | Event::QrScanned(_)
            | Event::BadgeRead { .. }
            | Event::Courier { .. }
                if self.out_of_service =>
            {
                vec![Action::Show(Screen::OutOfService)]
            }
            Event::CodeEntered(code) if !self.ready() => self.offline_code(now, &code),
            Event::CodeEntered(code) => {
                self.ask(|request_id| AgentMessage::PickupAttempt { request_id, code })
            }
            Event::QrScanned(text) => self.scanned(now, &text),
            Event::BadgeRead { number, reader } => self.badge(now, &number, reader),
            Event::Courier { credential, action } if !self.ready() => {
                self.offline_courier(now, &credential, action)
            }
            Event::Courier { credential, action } => {
                if let CourierCredential::Badge { badge } = &credential
                    && let Some(reader) = ReaderKind::parse(&badge.reader)
                    && self.check_badge(now, &badge.number, reader).is_err()
                {
                    return vec![Action::Show(Screen::NotAccepted)];
                }
                self.ask(|request_id| AgentMessage::Courier { request_id, credential, action })
            }
            Event::Door { compartment, reading } => self.door(now, compartment, reading),
            Event::Sensor { kind, compartment } => self.sensor(now, kind, compartment),
            Event::Tick => self.doors_left_open(now),
            Event::Unlocked { nonce, result } => {
                let record = self.record(
                    now,
                    Entry::Unlocked { nonce: nonce.clone(), failure: result.clone().err() },
                );
                // An offline open answers to nobody now; its use is reported on reconnect.
                if nonce.starts_with(OFFLINE_NONCE) {
                    return vec![record];
                }
                let outcome = match result {
                    Ok(()) => CommandOutcome::Unlocked,
                    Err(reason) => CommandOutcome::Failed { reason },
                };
                vec![record, Action::Send(AgentMessage::CommandResult { nonce, outcome })]
            }
            Event::JournalFailed => {
                self.journal_failed = true;
                vec![Action::Interlock(true)]
            }
        }
    }

    /// A door reading: journaled and reported. A shut door that opens with no unlock shortly
    /// before was forced (or opened with the override key, which reads the same); each unlock
    /// allows one opening. A door never read before counts as shut (the journal gives the
    /// last reading before a restart, so a door opened while the agent was down is caught); an
    /// unknown reading says nothing either way.
    fn door(&mut self, now: Timestamp, compartment: u16, reading: DoorReading) -> Vec<Action> {
        let before = self.doors.insert(compartment, reading);
        match reading {
            DoorReading::Open if before != Some(DoorReading::Open) => {
                self.open_since.insert(compartment, (now.as_millis(), false));
            }
            DoorReading::Closed => {
                self.open_since.remove(&compartment);
            }
            DoorReading::Open | DoorReading::Unknown => {}
        }
        let record = self.record(now, Entry::Door { compartment, reading });
        let mut actions = vec![
            record,
            Action::Send(AgentMessage::DoorReport {
                compartment,
                door: reading,
                counter: self.counter,
            }),
        ];
        if reading != DoorReading::Open
            || before.unwrap_or(DoorReading::Closed) != DoorReading::Closed
        {
            return actions;
        }
        let unlocked = self
            .unlocked_at
            .remove(&compartment)
            .is_some_and(|at| now.as_millis().saturating_sub(at) < FORCED_AFTER_MS);
        if !unlocked {
            actions.extend(self.sensor(now, AlertKind::DoorForced, Some(compartment)));
        }
        actions
    }

    /// A tamper reading: if it counts under the bank's rule for its kind, journaled, then
    /// reported (and again after every welcome until acknowledged). A reading one of the site's
    /// lockdown rules matches locks the bank down here at once.
    fn sensor(&mut self, now: Timestamp, kind: AlertKind, compartment: Option<u16>) -> Vec<Action> {
        if !kind.from_sensor()
            || !self.debouncer.reading(self.sensors.debounce_for(kind), kind, compartment, now)
        {
            return Vec::new();
        }
        let was = self.interlocked();
        let locks = self.rules.iter().any(|r| r.matches(kind, kind.default_severity()));
        let alert = kind.as_str().to_owned();
        let record = self.record(now, Entry::Sensor { alert: alert.clone(), compartment, locks });
        let reading = Reading { alert, compartment, at_ms: now.as_millis(), locks };
        let message = reading.message(self.counter);
        self.readings.insert(self.counter, reading);
        let mut actions = vec![record];
        if self.interlocked() != was {
            actions.push(Action::Interlock(true));
        }
        actions.push(Action::Send(message));
        actions
    }

    /// Refused by the server (a goodbye, a revoked or unknown identity): the presence key, the
    /// badge list and the offline list go at once, the saved list with them, so nothing the
    /// server gave opens anything from now on, offline or after a restart.
    fn forget_what_the_server_gave(&mut self) -> Vec<Action> {
        self.welcomed = false;
        self.badges = None;
        self.offline = None;
        vec![Action::Presence(None), Action::Save(None)]
    }

    /// Whether the server refused this device's identity: the kiosk says it is out of service.
    pub fn out_of_service(&self) -> bool {
        self.out_of_service
    }

    /// Sends the kiosk's question under a new request id, or says the kiosk is offline.
    fn ask(&mut self, message: impl FnOnce(u64) -> AgentMessage) -> Vec<Action> {
        if !self.ready() {
            return vec![Action::Show(Screen::Offline)];
        }
        let request_id = self.next_request;
        self.next_request += 1;
        self.waiting.insert(request_id);
        vec![Action::Show(Screen::Checking), Action::Send(message(request_id))]
    }

    /// Refuses at once and still reports the attempt, under a request id nobody waits for, so
    /// the server audits it and counts it against the kiosk's budget; offline, only refuses.
    fn refuse_and_report(&mut self, message: impl FnOnce(u64) -> AgentMessage) -> Vec<Action> {
        if !self.ready() {
            return vec![Action::Show(Screen::NotAccepted)];
        }
        let request_id = self.next_request;
        self.next_request += 1;
        vec![Action::Show(Screen::NotAccepted), Action::Send(message(request_id))]
    }

    /// The list of codes, while it may be trusted: synced, and its deadline not passed.
    fn held(&self, now: Timestamp) -> Option<&HeldCodes> {
        self.offline.as_ref().filter(|h| now.as_millis() < h.valid_until_ms)
    }

    /// Whether the offline budget for wrong codes has room at `now`.
    fn offline_budget_left(&self, now: Timestamp) -> bool {
        let start = OFFLINE_PICKUP_DAY.window_start(now).as_millis();
        let end = OFFLINE_PICKUP_DAY.window_end(now).as_millis();
        let spent = self.refusals.iter().filter(|at| (start..end).contains(*at)).count();
        OFFLINE_PICKUP_DAY.allows(u32::try_from(spent).unwrap_or(u32::MAX))
    }

    /// A code typed while the server is unreachable: checked against the list as last synced.
    fn offline_code(&mut self, now: Timestamp, typed: &str) -> Vec<Action> {
        if self.interlocked() {
            return vec![Action::Show(Screen::NotAccepted)];
        }
        let Some(held) = self.held(now) else { return vec![Action::Show(Screen::Offline)] };
        if !self.offline_budget_left(now) {
            return vec![Action::Show(Screen::CodesPaused)];
        }
        // Codes of the first format (no locker number) are checked by the server only.
        let found = match PickupEntry::parse(typed) {
            Ok(PickupEntry::Current { locker, code }) => {
                let verifier =
                    offline_code_verifier(&held.key, locker.get(), code.expose().as_bytes());
                held.codes
                    .iter()
                    .find(|c| {
                        c.compartment == locker.get() && constant_time_eq(&c.verifier, &verifier)
                    })
                    .map(|c| (c.id.clone(), c.compartment, c.expires_at_ms))
            }
            _ => None,
        };
        match found {
            Some((id, n, expires)) if self.may_open_offline(now, &id, expires) => {
                self.open_offline(now, id, n, "code")
            }
            _ => self.refuse_offline(now, "code"),
        }
    }

    /// A scanned token while the server is unreachable: checked as ever, and its code must be
    /// in the list as last synced (so a code revoked since does not open).
    fn offline_token(
        &mut self,
        now: Timestamp,
        checked: Result<PickupToken, TokenRefusal>,
    ) -> Vec<Action> {
        // Locked down, no list, or the budget spent: refused without a record (a token cannot
        // be guessed, so such a refusal is not worth one). A genuine token with no list to
        // check it against waits for the server, as a typed code does.
        let held = self.held(now);
        let Some(held) = held.filter(|_| !self.interlocked() && self.offline_budget_left(now))
        else {
            let wait = checked.is_ok() && held.is_none() && !self.interlocked();
            return vec![Action::Show(if wait { Screen::Offline } else { Screen::NotAccepted })];
        };
        let found = checked.ok().and_then(|token| {
            held.codes
                .iter()
                .find(|c| c.id == token.code.as_str() && c.compartment == token.compartment.get())
                .map(|c| (c.id.clone(), c.compartment, c.expires_at_ms))
        });
        match found {
            Some((id, n, expires)) if self.may_open_offline(now, &id, expires) => {
                self.open_offline(now, id, n, "qr")
            }
            _ => self.refuse_offline(now, "qr"),
        }
    }

    /// Whether a held code may open its compartment offline now: not expired, and not spent
    /// here already. (Its compartment is the server's word, as the welcome's list is, and
    /// holds after a restart that has had no welcome yet.)
    fn may_open_offline(&self, now: Timestamp, id: &str, expires: i64) -> bool {
        now.as_millis() < expires && !self.spent.contains(id)
    }

    /// Opens a compartment for a code from the list: the use is journaled first (it is what
    /// the server is told on reconnect), the code is spent here, then the door is released.
    fn open_offline(&mut self, now: Timestamp, code: String, n: u16, method: &str) -> Vec<Action> {
        let Ok(compartment) = CompartmentNumber::new(n) else {
            return self.refuse_offline(now, method);
        };
        self.spent.insert(code.clone());
        let what = OfflineWhat::Opened { code, compartment: n, method: method.to_owned() };
        let (record, id) = self.offline_use(now, what);
        self.unlocked_at.insert(n, now.as_millis());
        vec![
            record,
            Action::Unlock { compartment, nonce: format!("{OFFLINE_NONCE}{id}") },
            Action::Show(Screen::Open(n)),
        ]
    }

    /// Refuses a credential offline: journaled and reported like an open, and it spends the
    /// offline budget.
    fn refuse_offline(&mut self, now: Timestamp, method: &str) -> Vec<Action> {
        self.refusals.push(now.as_millis());
        let (record, _) = self.offline_use(now, OfflineWhat::Refused { method: method.to_owned() });
        vec![record, Action::Show(Screen::NotAccepted)]
    }

    /// Journals an offline use under an id no other use of this agent has (the record's counter
    /// and time: a journal started afresh counts from 1 again, at another time), and keeps it
    /// until the server acknowledges it.
    fn offline_use(&mut self, now: Timestamp, what: OfflineWhat) -> (Action, String) {
        let id = format!("{}-{}", self.counter + 1, now.as_millis());
        let used = OfflineUse { id: id.clone(), at_ms: now.as_millis(), what };
        self.pending.insert(id.clone(), used.clone());
        (self.record(now, Entry::Offline { used }), id)
    }

    /// A courier at the kiosk while the server is unreachable: their code is checked against
    /// the list's verifiers of today's courier codes, then what they chose is done from the
    /// list. A badge, or taking a parcel back, needs the server.
    fn offline_courier(
        &mut self,
        now: Timestamp,
        credential: &CourierCredential,
        action: CourierAction,
    ) -> Vec<Action> {
        if self.interlocked() {
            return vec![Action::Show(Screen::NotAccepted)];
        }
        let CourierCredential::Code { code } = credential else {
            return vec![Action::Show(Screen::Offline)];
        };
        let Some(held) = self.held(now) else { return vec![Action::Show(Screen::Offline)] };
        if !self.offline_budget_left(now) {
            return vec![Action::Show(Screen::CodesPaused)];
        }
        let day = now.utc_day();
        let verifier = courier_digits(code)
            .and_then(|digits| offline_courier_verifier(&held.key, day, digits.as_bytes()).ok());
        let found = verifier.and_then(|v| {
            held.couriers
                .iter()
                .find(|c| c.day == day && constant_time_eq(&c.verifier, &v))
                .map(|c| (c.id.clone(), c.carrier.clone()))
        });
        let Some((courier, carrier)) = found else {
            return self.refuse_offline(now, "courier");
        };
        match action {
            CourierAction::Visit => vec![Action::Show(Screen::CourierWork {
                deposits: self.to_deposit(&carrier).map(|p| p.parcel.clone()).collect(),
                returns: Vec::new(),
                free: self.free_by_size(),
            })],
            CourierAction::Deposit { parcel, size } => {
                self.deposit_offline(now, &courier, &carrier, &parcel, size.as_deref())
            }
            CourierAction::Confirm { parcel } => self.confirm_offline(now, &courier, &parcel),
            CourierAction::Return { .. } => vec![Action::Show(Screen::Offline)],
        }
    }

    /// The carrier's parcels announced for the site and not deposited here offline.
    fn to_deposit<'a>(&'a self, carrier: &'a str) -> impl Iterator<Item = &'a OfflineParcel> {
        let expected = self.offline.as_ref().map_or(&[][..], |h| &h.expected[..]);
        expected
            .iter()
            .filter(move |p| p.carrier == carrier && !self.deposits.contains_key(&p.parcel.id))
    }

    /// The free compartments as last synced, less those deposits went into offline.
    fn free(&self) -> impl Iterator<Item = &OfflineCompartment> {
        let free = self.offline.as_ref().map_or(&[][..], |h| &h.free[..]);
        free.iter().filter(|c| !self.deposits.values().any(|d| d.compartment == c.compartment))
    }

    /// How many compartments of each size are free, smallest first; sizes with none left out.
    fn free_by_size(&self) -> Vec<FreeCompartments> {
        let mut by_size = BTreeMap::<SizeClass, u32>::new();
        for c in self.free() {
            if let Some(size) = SizeClass::parse(&c.size) {
                *by_size.entry(size).or_default() += 1;
            }
        }
        by_size
            .into_iter()
            .map(|(size, count)| FreeCompartments { size: size.as_str().to_owned(), count })
            .collect()
    }

    /// A courier deposits `parcel` offline: the smallest free compartment that fits it (or the
    /// larger size they chose, and its other needs) opens, journaled first.
    fn deposit_offline(
        &mut self,
        now: Timestamp,
        courier: &str,
        carrier: &str,
        parcel: &str,
        size: Option<&str>,
    ) -> Vec<Action> {
        let Some(p) = self.to_deposit(carrier).find(|p| p.parcel.id == parcel) else {
            return vec![Action::Show(Screen::NotAccepted)];
        };
        let Some(announced) = SizeClass::parse(&p.parcel.size) else {
            return vec![Action::Show(Screen::NotAccepted)];
        };
        let fits = size.and_then(SizeClass::parse).map_or(announced, |s| s.max(announced));
        let (accessible, refrigerated) = (p.accessible, p.refrigerated);
        // As the server chooses: the smallest that fits, then the fewest features, then the
        // lowest number.
        let chosen = self
            .free()
            .filter_map(|c| {
                Some((SizeClass::parse(&c.size)?, c.accessible, c.refrigerated, c.compartment))
            })
            .filter(|(s, a, r, _)| *s >= fits && (*a || !accessible) && (*r || !refrigerated))
            .min()
            .and_then(|(.., n)| CompartmentNumber::new(n).ok());
        let Some(compartment) = chosen else {
            return vec![Action::Show(Screen::NotAccepted)];
        };
        let n = compartment.get();
        let what = OfflineWhat::Deposited {
            courier: courier.to_owned(),
            parcel: parcel.to_owned(),
            compartment: n,
        };
        let (record, id) = self.offline_use(now, what);
        self.deposits.insert(
            parcel.to_owned(),
            OfflineDeposit {
                courier: courier.to_owned(),
                compartment: n,
                at_ms: now.as_millis(),
                confirmed: false,
                uses: vec![id.clone()],
            },
        );
        self.unlocked_at.insert(n, now.as_millis());
        vec![
            record,
            Action::Unlock { compartment, nonce: format!("{OFFLINE_NONCE}{id}") },
            Action::Show(Screen::Open(n)),
        ]
    }

    /// A courier confirms offline that a parcel they deposited here offline is in: only once,
    /// in time, and with its door's last reading shut (as the server requires online).
    fn confirm_offline(&mut self, now: Timestamp, courier: &str, parcel: &str) -> Vec<Action> {
        let open = self.deposits.get(parcel).filter(|d| {
            d.courier == courier
                && !d.confirmed
                && now.as_millis() < d.at_ms + CONFIRM_WITHIN_MS
                && self.doors.get(&d.compartment) == Some(&DoorReading::Closed)
        });
        if open.is_none() {
            return vec![Action::Show(Screen::NotAccepted)];
        }
        let what =
            OfflineWhat::Confirmed { courier: courier.to_owned(), parcel: parcel.to_owned() };
        let (record, id) = self.offline_use(now, what);
        if let Some(d) = self.deposits.get_mut(parcel) {
            d.confirmed = true;
            d.uses.push(id);
        }
        vec![record, Action::Show(Screen::Thanks)]
    }

    /// A QR code at the scanner: checked here first. A token that fails is refused at once,
    /// and still reported (under a request id nobody waits for) so the server audits the scan.
    fn scanned(&mut self, now: Timestamp, text: &str) -> Vec<Action> {
        // Anything longer than a token is cut to one character past it: still malformed,
        // never a large message.
        let token: String = text.chars().take(QR_TOKEN_TEXT_LEN + 1).collect();
        let checked = self.check_token(now, &token);
        if !self.ready() {
            return self.offline_token(now, checked);
        }
        match checked {
            Ok(checked) => {
                let remembered = (checked.code.to_string(), checked.expires_at.as_millis());
                let actions = self
                    .ask(|request_id| AgentMessage::QrPickup { request_id, token: token.clone() });
                if self.ready() {
                    self.scanning.insert(self.next_request - 1, remembered);
                }
                actions
            }
            Err(_) => {
                self.refuse_and_report(|request_id| AgentMessage::QrPickup { request_id, token })
            }
        }
    }

    /// A badge at the reader: checked here first against the site's list. A read that fails is
    /// refused at once and still reported (under a request id nobody waits for), so the server
    /// audits it and counts it against the kiosk's budget.
    fn badge(&mut self, now: Timestamp, number: &str, reader: ReaderKind) -> Vec<Action> {
        // A read longer than any badge is cut: still refused, never a large message.
        let number: String = number.chars().take(200).collect();
        let read = |number: String| BadgeRead { number, reader: reader.as_str().to_owned() };
        match self.check_badge(now, &number, reader) {
            Ok(_) => {
                self.ask(|request_id| AgentMessage::BadgeRead { request_id, badge: read(number) })
            }
            Err(_) => self.refuse_and_report(|request_id| AgentMessage::BadgeRead {
                request_id,
                badge: read(number),
            }),
        }
    }

    /// Checks a badge read offline: a badge number, from a reader trusted now, in the site's
    /// list as last synced.
    pub fn check_badge(
        &self,
        now: Timestamp,
        number: &str,
        reader: ReaderKind,
    ) -> Result<BadgeNumber, BadgeRefusal> {
        let number = BadgeNumber::parse(number).map_err(|_| BadgeRefusal::Malformed)?;
        if reader == ReaderKind::OsdpClear && self.commissioning_until.is_none_or(|u| now >= u) {
            return Err(BadgeRefusal::InsecureReader);
        }
        let (key, verifiers) = self.badges.as_ref().ok_or(BadgeRefusal::NoList)?;
        if !verifiers.contains(&badge_verifier(key, number.as_bytes())) {
            return Err(BadgeRefusal::Unknown);
        }
        Ok(number)
    }

    /// Takes the site's badge list as synced; a list that cannot be read leaves no badge known
    /// (fail closed).
    fn take_badges(&mut self, list: &BadgeList) {
        let decode32 =
            |s: &str| -> Option<[u8; 32]> { BASE64.decode(s.as_bytes()).ok()?.try_into().ok() };
        self.badges = decode32(&list.key).and_then(|key| {
            let verifiers = list.verifiers.iter().map(|v| decode32(v)).collect::<Option<_>>()?;
            Some((key, verifiers))
        });
    }

    /// Checks a scanned QR token offline: signature, bank, compartment, expiry, and that it
    /// has not opened here before.
    pub fn check_token(&self, now: Timestamp, text: &str) -> Result<PickupToken, TokenRefusal> {
        let scanned = ScannedToken::decode(text).map_err(|_| TokenRefusal::Malformed)?;
        self.identity
            .command_key
            .verify(QR_TOKEN_DOMAIN, scanned.signed_bytes(), scanned.signature())
            .map_err(|_| TokenRefusal::BadSignature)?;
        let token = scanned.token;
        if token.bank.as_str() != self.identity.bank {
            return Err(TokenRefusal::OtherBank);
        }
        if self.welcomed && !self.compartments.contains(&token.compartment.get()) {
            return Err(TokenRefusal::UnknownCompartment);
        }
        if now >= token.expires_at {
            return Err(TokenRefusal::Expired);
        }
        if self.used_tokens.contains_key(token.code.as_str()) {
            return Err(TokenRefusal::Replay);
        }
        Ok(token)
    }

    fn server(&mut self, now: Timestamp, message: ServerMessage) -> Vec<Action> {
        match message {
            ServerMessage::Badges(list) => {
                self.take_badges(&list);
                Vec::new()
            }
            ServerMessage::OfflineList(list) => self.take_list(now, list),
            ServerMessage::OfflineAck { id } => {
                if self.pending.remove(&id).is_some() {
                    vec![self.record(now, Entry::Acknowledged { id })]
                } else {
                    Vec::new()
                }
            }
            ServerMessage::SensorAck { counter } => self.reading_acknowledged(now, counter),
            ServerMessage::Policy(sent) => {
                if self.welcomed {
                    self.take_policy(now, sent)
                } else {
                    Vec::new()
                }
            }
            // The daemon stores a renewed certificate; it decides nothing about doors.
            ServerMessage::Renewed { .. } => Vec::new(),
            ServerMessage::Welcome {
                device,
                bank,
                compartments,
                presence_key,
                locked_down,
                ..
            } => {
                self.out_of_service = false;
                self.welcome(now, &device, &bank, compartments, presence_key, locked_down)
            }
            ServerMessage::Lockdown { on } => {
                if self.welcomed {
                    self.lockdown(now, on)
                } else {
                    Vec::new()
                }
            }
            ServerMessage::Pickup { request_id, answer } => self.answered(request_id, &answer),
            ServerMessage::Courier { request_id, answer } => {
                if !self.waiting.remove(&request_id) {
                    return Vec::new();
                }
                let screen = match answer {
                    CourierAnswer::Work { deposits, returns, free } => {
                        Screen::CourierWork { deposits, returns, free }
                    }
                    CourierAnswer::Opening { compartment } => Screen::Open(compartment),
                    CourierAnswer::Done => Screen::Thanks,
                    CourierAnswer::Refused => Screen::NotAccepted,
                };
                vec![Action::Show(screen)]
            }
            ServerMessage::Open(signed) => match self.check(now, &signed) {
                Ok(compartment) => {
                    let nonce = signed.command.nonce;
                    let expires_at_ms = signed.command.expires_at_ms;
                    self.executed.insert(nonce.clone(), expires_at_ms);
                    // Whatever was in the compartment is being taken out or put in: none of
                    // its codes may open it offline again before the next list says so.
                    if let Some(held) = &mut self.offline {
                        held.codes.retain(|c| c.compartment != compartment.get());
                        held.free.retain(|c| c.compartment != compartment.get());
                    }
                    // Journaled first: after a power cut the nonce is still known, and the
                    // command is never executed twice.
                    let record = self.record(
                        now,
                        Entry::Unlock {
                            nonce: nonce.clone(),
                            compartment: compartment.get(),
                            expires_at_ms,
                        },
                    );
                    self.unlocked_at.insert(compartment.get(), now.as_millis());
                    vec![record, Action::Unlock { compartment, nonce }]
                }
                Err(refusal) => vec![Action::Send(AgentMessage::CommandResult {
                    nonce: signed.command.nonce.chars().take(64).collect(),
                    outcome: CommandOutcome::Refused { reason: refusal.as_str().into() },
                })],
            },
            ServerMessage::Goodbye { .. } => self.forget_what_the_server_gave(),
        }
    }

    /// Takes the server's list of codes (once welcomed): kept on disk when its codes change,
    /// and hourly for its deadline.
    fn take_list(&mut self, now: Timestamp, list: OfflineList) -> Vec<Action> {
        if !self.welcomed {
            return Vec::new();
        }
        let held = HeldCodes::take(&list);
        // A deposit the server has taken in shows in this list (its compartment no longer
        // free, its parcel no longer expected), unless it is still to be confirmed here.
        let pending = &self.pending;
        self.deposits.retain(|_, d| {
            let settled = d.uses.iter().all(|id| !pending.contains_key(id));
            let done = d.confirmed || now.as_millis() >= d.at_ms + CONFIRM_WITHIN_MS;
            !(settled && done)
        });
        // Saved when the codes change, and hourly for the deadline: a restart while
        // the server is unreachable finds a list at most an hour shorter.
        let same = |h: &HeldCodes, o: &HeldCodes| {
            h.key == o.key
                && h.codes == o.codes
                && h.couriers == o.couriers
                && h.expected == o.expected
                && h.free == o.free
        };
        let changed = match (&held, &self.offline) {
            (Some(new), Some(old)) => !same(new, old),
            (new, _) => new.is_some(),
        };
        self.offline = held;
        let due = list.valid_until_ms.saturating_sub(self.saved_until_ms) >= SAVE_EVERY_MS;
        if self.offline.is_some() && (changed || due) {
            self.saved_until_ms = list.valid_until_ms;
            return vec![Action::Save(Some(list))];
        }
        Vec::new()
    }

    /// The server's answer to a pickup the kiosk asked about.
    fn answered(&mut self, request_id: u64, answer: &PickupAnswer) -> Vec<Action> {
        let scanned = self.scanning.remove(&request_id);
        if !self.waiting.remove(&request_id) {
            return Vec::new();
        }
        match answer {
            PickupAnswer::Accepted { compartment } => {
                if let Some((code, expires)) = scanned {
                    self.used_tokens.insert(code, expires);
                }
                vec![Action::Show(Screen::Open(*compartment))]
            }
            PickupAnswer::Refused => vec![Action::Show(Screen::NotAccepted)],
            PickupAnswer::Paused => vec![Action::Show(Screen::CodesPaused)],
        }
    }

    /// Decides whether an open command may be executed.
    pub fn check(
        &self,
        now: Timestamp,
        signed: &SignedOpenCommand,
    ) -> Result<CompartmentNumber, Refusal> {
        let command = &signed.command;
        let signature =
            BASE64.decode(signed.signature.as_bytes()).map_err(|_| Refusal::BadSignature)?;
        self.identity
            .command_key
            .verify(OPEN_COMMAND_DOMAIN, &command.signing_bytes(), &signature)
            .map_err(|_| Refusal::BadSignature)?;
        if command.device != self.identity.device {
            return Err(Refusal::OtherDevice);
        }
        if command.bank != self.identity.bank {
            return Err(Refusal::OtherBank);
        }
        if !self.welcomed {
            return Err(Refusal::NotReady);
        }
        let compartment =
            CompartmentNumber::new(command.compartment).map_err(|_| Refusal::UnknownCompartment)?;
        if !self.compartments.contains(&compartment.get()) {
            return Err(Refusal::UnknownCompartment);
        }
        if now.as_millis() >= command.expires_at_ms {
            return Err(Refusal::Expired);
        }
        if self.executed.contains_key(&command.nonce) {
            return Err(Refusal::Replay);
        }
        if self.journal_failed {
            return Err(Refusal::JournalFailed);
        }
        if self.locked() {
            return Err(Refusal::LockedDown);
        }
        Ok(compartment)
    }
}

/// The sensor settings and lockdown rules of a policy as sent; an error for one that cannot be
/// read whole.
fn policy(sent: &BankPolicy) -> Result<(SensorSettings, Vec<LockdownRule>), String> {
    let rules =
        sent.sensors.rules.iter().map(|r| (r.kind.clone(), r.threshold, r.window_ms, r.quiet_ms));
    let sensors = SensorSettings::from_wire(rules, sent.sensors.door_left_open_after_secs)?;
    let lockdown = sent
        .lockdown
        .iter()
        .map(|r| LockdownRule::parse(&r.kind, &r.min_severity, &r.scope))
        .collect::<Result<_, _>>()?;
    Ok((sensors, lockdown))
}

/// Where an offline use falls in the order they happened: by time, then by journal counter
/// (its id begins with it).
fn use_order(used: &OfflineUse) -> (i64, u64) {
    let counter = used.id.split('-').next().and_then(|c| c.parse().ok()).unwrap_or(0);
    (used.at_ms, counter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_crypto::Rng;
    use custody_crypto::sign::SigningKey;
    use custody_proto::device::{OfflineCode, OpenCommand};
    use proptest::prelude::*;

    const NOW: Timestamp = Timestamp::from_millis(1_893_456_000_000);

    struct Fixture {
        key: SigningKey,
        core: AgentCore,
    }

    fn fixture() -> Fixture {
        let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
        let core = welcomed(&key);
        Fixture { key, core }
    }

    /// A connected core that the server has welcomed, trusting `key`.
    fn welcomed(key: &SigningKey) -> AgentCore {
        let identity = Identity {
            device: "dev_a".into(),
            bank: "bnk_a".into(),
            command_key: key.public_key(),
        };
        let mut core = AgentCore::new(identity);
        core.handle(NOW, Event::Connected);
        core.handle(NOW, welcome(false));
        core
    }

    fn command(compartment: u16, nonce: &str) -> OpenCommand {
        OpenCommand {
            device: "dev_a".into(),
            bank: "bnk_a".into(),
            compartment,
            nonce: nonce.into(),
            issued_at_ms: NOW.as_millis(),
            expires_at_ms: NOW.as_millis() + 30_000,
            purpose: "pickup".into(),
        }
    }

    fn sign(key: &SigningKey, command: OpenCommand) -> SignedOpenCommand {
        let signature = BASE64.encode(&key.sign(OPEN_COMMAND_DOMAIN, &command.signing_bytes()));
        SignedOpenCommand { command, signature }
    }

    fn open(core: &mut AgentCore, at: Timestamp, signed: SignedOpenCommand) -> Vec<Action> {
        core.handle(at, Event::Server(ServerMessage::Open(signed)))
    }

    fn refused(actions: &[Action]) -> Option<String> {
        match actions {
            [
                Action::Send(AgentMessage::CommandResult {
                    outcome: CommandOutcome::Refused { reason },
                    ..
                }),
            ] => Some(reason.clone()),
            _ => None,
        }
    }

    #[test]
    fn a_valid_command_unlocks_once() {
        let mut f = fixture();
        let signed = sign(&f.key, command(2, "n1"));
        let actions = open(&mut f.core, NOW, signed.clone());
        assert_eq!(
            actions,
            vec![
                Action::Record(Record {
                    counter: 1,
                    at_ms: NOW.as_millis(),
                    entry: Entry::Unlock {
                        nonce: "n1".into(),
                        compartment: 2,
                        expires_at_ms: NOW.as_millis() + 30_000
                    }
                }),
                Action::Unlock {
                    compartment: CompartmentNumber::new(2).unwrap(),
                    nonce: "n1".into()
                }
            ],
            "journaled before the board is told"
        );
        assert_eq!(refused(&open(&mut f.core, NOW, signed)).as_deref(), Some("replay"));
    }

    /// Every way a command can be wrong, and the refusal it gets.
    #[test]
    fn refusal_table() {
        let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
        let (other, _) = SigningKey::generate(&Rng::new()).unwrap();
        let key = &key;
        let cases: Vec<(&str, SignedOpenCommand, Timestamp)> = vec![
            ("bad_signature", sign(&other, command(1, "a")), NOW),
            (
                "bad_signature",
                SignedOpenCommand { signature: "not base64!".into(), ..sign(key, command(1, "b")) },
                NOW,
            ),
            (
                "bad_signature",
                SignedOpenCommand { command: command(3, "c"), ..sign(key, command(1, "c")) },
                NOW,
            ),
            (
                "other_device",
                sign(key, OpenCommand { device: "dev_b".into(), ..command(1, "d") }),
                NOW,
            ),
            ("other_bank", sign(key, OpenCommand { bank: "bnk_b".into(), ..command(1, "e") }), NOW),
            ("unknown_compartment", sign(key, command(0, "f")), NOW),
            ("unknown_compartment", sign(key, command(9, "g")), NOW),
            ("expired", sign(key, command(1, "h")), NOW.plus(std::time::Duration::from_secs(30))),
        ];
        for (want, signed, at) in cases {
            let mut core = welcomed(key);
            let actions = core.handle(at, Event::Server(ServerMessage::Open(signed.clone())));
            assert_eq!(refused(&actions).as_deref(), Some(want), "{signed:?}");
        }
    }

    #[test]
    fn nothing_opens_before_the_welcome_or_after_a_goodbye() {
        let mut f = fixture();
        f.core.handle(NOW, Event::Server(ServerMessage::Goodbye { reason: "revoked".into() }));
        assert_eq!(
            refused(&open(&mut f.core, NOW, sign(&f.key, command(1, "x")))).as_deref(),
            Some("not_ready")
        );
        let mut f = fixture();
        f.core.handle(NOW, Event::Disconnected);
        f.core.handle(NOW, Event::Connected);
        assert_eq!(
            refused(&open(&mut f.core, NOW, sign(&f.key, command(1, "y")))).as_deref(),
            Some("not_ready")
        );
    }

    #[test]
    fn a_welcome_for_another_device_is_ignored() {
        let mut f = fixture();
        f.core.handle(NOW, Event::Disconnected);
        f.core.handle(NOW, Event::Connected);
        let shown = f.core.handle(
            NOW,
            Event::Server(ServerMessage::Welcome {
                protocol: 1,
                device: "dev_z".into(),
                bank: "bnk_a".into(),
                compartments: vec![1],
                server_time_ms: 0,
                presence_key: PresenceKey("a2V5".into()),
                locked_down: false,
            }),
        );
        assert!(!f.core.ready());
        assert_eq!(shown, vec![Action::Presence(None)], "no presence code from a stranger");
    }

    #[test]
    fn the_kiosk_says_when_typed_codes_are_paused() {
        let mut f = fixture();
        let actions = f.core.handle(NOW, Event::CodeEntered("1 00000 00000".into()));
        let Some(Action::Send(AgentMessage::PickupAttempt { request_id, .. })) =
            actions.get(1).cloned()
        else {
            panic!("{actions:?}")
        };
        let paused = ServerMessage::Pickup { request_id, answer: PickupAnswer::Paused };
        assert_eq!(
            f.core.handle(NOW, Event::Server(paused)),
            vec![Action::Show(Screen::CodesPaused)]
        );
    }

    #[test]
    fn the_presence_code_is_shown_only_while_welcomed() {
        let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
        let mut core = AgentCore::new(Identity {
            device: "dev_a".into(),
            bank: "bnk_a".into(),
            command_key: key.public_key(),
        });
        core.handle(NOW, Event::Connected);
        let welcome = ServerMessage::Welcome {
            protocol: 1,
            device: "dev_a".into(),
            bank: "bnk_a".into(),
            compartments: vec![1],
            server_time_ms: 0,
            presence_key: PresenceKey("a2V5".into()),
            locked_down: false,
        };
        let shown = core.handle(NOW, Event::Server(welcome));
        assert_eq!(shown, vec![Action::Presence(Some(PresenceKey("a2V5".into())))]);
        assert_eq!(core.handle(NOW, Event::Disconnected), vec![Action::Presence(None)]);
        let goodbye = ServerMessage::Goodbye { reason: "revoked".into() };
        assert_eq!(
            core.handle(NOW, Event::Server(goodbye)),
            vec![Action::Presence(None), Action::Save(None)]
        );
    }

    #[test]
    fn kiosk_codes_go_to_the_server_and_answers_come_back() {
        let mut f = fixture();
        let actions = f.core.handle(NOW, Event::CodeEntered("1234 5678".into()));
        let Some(Action::Send(AgentMessage::PickupAttempt { request_id, .. })) =
            actions.get(1).cloned()
        else {
            panic!("{actions:?}")
        };
        assert_eq!(actions[0], Action::Show(Screen::Checking));
        let shown = f.core.handle(
            NOW,
            Event::Server(ServerMessage::Pickup { request_id, answer: PickupAnswer::Refused }),
        );
        assert_eq!(shown, vec![Action::Show(Screen::NotAccepted)]);
        // An answer nobody asked for is dropped.
        assert!(
            f.core
                .handle(
                    NOW,
                    Event::Server(ServerMessage::Pickup {
                        request_id: 99,
                        answer: PickupAnswer::Accepted { compartment: 1 }
                    })
                )
                .is_empty()
        );
        f.core.handle(NOW, Event::Disconnected);
        assert_eq!(
            f.core.handle(NOW, Event::CodeEntered("1".into())),
            vec![Action::Show(Screen::Offline)]
        );
    }

    #[test]
    fn a_courier_asks_the_server_and_the_kiosk_shows_the_answer() {
        let mut f = fixture();
        let credential = CourierCredential::Code { code: "1234 5678 9012".into() };
        let event = Event::Courier { credential, action: CourierAction::Visit };
        let actions = f.core.handle(NOW, event.clone());
        let Some(Action::Send(AgentMessage::Courier { request_id, action, .. })) =
            actions.get(1).cloned()
        else {
            panic!("{actions:?}")
        };
        assert_eq!(action, CourierAction::Visit);
        let parcel =
            KioskParcel { id: "prc_a".into(), tracking_ref: "1Z".into(), size: "small".into() };
        let free = vec![FreeCompartments { size: "small".into(), count: 2 }];
        let work = CourierAnswer::Work {
            deposits: vec![parcel.clone()],
            returns: Vec::new(),
            free: free.clone(),
        };
        let shown =
            f.core.handle(NOW, Event::Server(ServerMessage::Courier { request_id, answer: work }));
        assert_eq!(
            shown,
            vec![Action::Show(Screen::CourierWork {
                deposits: vec![parcel],
                returns: Vec::new(),
                free
            })]
        );
        // Answered once: a second answer to the same request is dropped, and an opening
        // announced in it shows nothing (only a signed command opens a door).
        let again = CourierAnswer::Opening { compartment: 1 };
        assert!(
            f.core
                .handle(NOW, Event::Server(ServerMessage::Courier { request_id, answer: again }))
                .is_empty()
        );
        f.core.handle(NOW, Event::Disconnected);
        assert_eq!(f.core.handle(NOW, event), vec![Action::Show(Screen::Offline)]);
    }

    #[test]
    fn door_reports_carry_a_monotonic_counter() {
        let mut f = fixture();
        let counters: Vec<u64> = (0..3)
            .map(|_| {
                match f
                    .core
                    .handle(NOW, Event::Door { compartment: 1, reading: DoorReading::Closed })
                    .as_slice()
                {
                    [
                        Action::Record(Record {
                            counter: journaled,
                            entry: Entry::Door { .. },
                            ..
                        }),
                        Action::Send(AgentMessage::DoorReport { counter, .. }),
                    ] if journaled == counter => *counter,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(counters, vec![1, 2, 3]);
    }

    mod sensors {
        use super::*;

        fn reported(actions: &[Action]) -> Vec<(String, Option<u16>)> {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Send(AgentMessage::Sensor { kind, compartment, .. }) => {
                        Some((kind.clone(), *compartment))
                    }
                    _ => None,
                })
                .collect()
        }

        fn door(f: &mut Fixture, at: Timestamp, n: u16, reading: DoorReading) -> Vec<Action> {
            f.core.handle(at, Event::Door { compartment: n, reading })
        }

        #[test]
        fn a_reading_that_counts_is_journaled_then_reported_and_others_are_not() {
            let mut f = fixture();
            let pry = Event::Sensor { kind: AlertKind::Pry, compartment: Some(2) };
            let first = f.core.handle(NOW, pry.clone());
            let [
                Action::Record(Record {
                    counter,
                    entry: Entry::Sensor { alert, compartment, locks: false },
                    ..
                }),
                Action::Send(AgentMessage::Sensor { counter: sent, at_ms, .. }),
            ] = first.as_slice()
            else {
                panic!("{first:?}")
            };
            assert_eq!(
                (alert.as_str(), *compartment, counter, *at_ms),
                ("pry", Some(2), sent, NOW.as_millis())
            );
            assert!(f.core.handle(NOW, pry).is_empty(), "debounced");
            // One impact is a slammed door; three in ten seconds are a blow.
            let impact = Event::Sensor { kind: AlertKind::Impact, compartment: None };
            assert!(f.core.handle(NOW, impact.clone()).is_empty());
            assert!(f.core.handle(NOW, impact.clone()).is_empty());
            assert_eq!(reported(&f.core.handle(NOW, impact)), [("impact".to_owned(), None)]);
            // The server's own kinds never come from here.
            let claimed = Event::Sensor { kind: AlertKind::AuditIntegrity, compartment: None };
            assert!(f.core.handle(NOW, claimed).is_empty());
            // Offline too: it is sent after the next welcome.
            f.core.handle(NOW, Event::Disconnected);
            let drill = Event::Sensor { kind: AlertKind::Drill, compartment: Some(1) };
            assert_eq!(reported(&f.core.handle(NOW, drill)), [("drill".to_owned(), Some(1))]);
        }

        /// A policy with the site's rule for pry (bank scope) and a bank that counts every
        /// impact and allows doors a minute open.
        fn pry_locks() -> BankPolicy {
            BankPolicy {
                sensors: custody_proto::api::SensorSettingsView {
                    rules: vec![custody_proto::api::SensorRuleView {
                        kind: "impact".into(),
                        threshold: 1,
                        window_ms: 1_000,
                        quiet_ms: 1_000,
                    }],
                    door_left_open_after_secs: 60,
                },
                lockdown: vec![custody_proto::api::LockdownRuleView {
                    kind: "pry".into(),
                    min_severity: "high".into(),
                    scope: "bank".into(),
                }],
            }
        }

        fn counters(actions: &[Action]) -> Vec<u64> {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Send(AgentMessage::Sensor { counter, .. }) => Some(*counter),
                    _ => None,
                })
                .collect()
        }

        fn policy_records(actions: &[Action]) -> usize {
            actions
                .iter()
                .filter(|a| matches!(a, Action::Record(Record { entry: Entry::Policy { .. }, .. })))
                .count()
        }

        #[test]
        fn the_banks_policy_is_journaled_when_it_changes_and_a_bad_one_changes_nothing() {
            let mut f = fixture();
            let sent = Event::Server(ServerMessage::Policy(pry_locks()));
            assert_eq!(policy_records(&f.core.handle(NOW, sent.clone())), 1);
            assert_eq!(policy_records(&f.core.handle(NOW, sent)), 0, "the same again");
            // The bank's own rule: one impact counts here.
            let impact = Event::Sensor { kind: AlertKind::Impact, compartment: None };
            assert_eq!(reported(&f.core.handle(NOW, impact)), [("impact".to_owned(), None)]);
            // A policy that cannot be read whole leaves the last one in force.
            let mut bad = pry_locks();
            bad.lockdown[0].scope = "world".into();
            bad.sensors.rules.clear();
            let later = NOW.plus(std::time::Duration::from_secs(2));
            assert!(f.core.handle(later, Event::Server(ServerMessage::Policy(bad))).is_empty());
            let impact = Event::Sensor { kind: AlertKind::Impact, compartment: Some(1) };
            assert_eq!(reported(&f.core.handle(later, impact)), [("impact".to_owned(), Some(1))]);
            // Before a welcome, nothing the link says is taken.
            let mut g = fixture();
            g.core.handle(NOW, Event::Disconnected);
            g.core.handle(NOW, Event::Connected);
            let early = g.core.handle(NOW, Event::Server(ServerMessage::Policy(pry_locks())));
            assert!(early.is_empty());
        }

        #[test]
        fn a_reading_a_rule_matches_locks_the_bank_down_until_the_server_has_it() {
            let mut f = fixture();
            f.core.handle(NOW, Event::Server(ServerMessage::Policy(pry_locks())));
            f.core.handle(NOW, Event::Disconnected);
            // Offline: a drill is not the rule's kind; a pry is, and locks at once.
            let drill =
                f.core.handle(NOW, Event::Sensor { kind: AlertKind::Drill, compartment: None });
            assert!(!drill.contains(&Action::Interlock(true)) && !f.core.interlocked());
            let pry =
                f.core.handle(NOW, Event::Sensor { kind: AlertKind::Pry, compartment: Some(2) });
            assert!(matches!(
                pry.as_slice(),
                [
                    Action::Record(Record { entry: Entry::Sensor { locks: true, .. }, .. }),
                    Action::Interlock(true),
                    Action::Send(AgentMessage::Sensor { .. })
                ]
            ));
            let pry_counter = counters(&pry)[0];
            assert!(matches!(
                f.core.handle(NOW, Event::CodeEntered("2 12345 67890".into())).as_slice(),
                [Action::Show(Screen::NotAccepted)]
            ));
            // Back online, the server's "not locked down" does not lift it: it has not seen
            // the pry yet. Both readings go again, in the order they were made.
            f.core.handle(NOW, Event::Connected);
            let back = f.core.handle(NOW, welcome(false));
            assert_eq!(counters(&back), [pry_counter - 1, pry_counter]);
            assert!(!back.contains(&Action::Interlock(false)) && f.core.interlocked());
            assert_eq!(
                refused(&open(&mut f.core, NOW, sign(&f.key, command(1, "n-pry")))).as_deref(),
                Some("locked_down")
            );
            // The drill acknowledged changes nothing; the server locks down by the same rule,
            // then acknowledges the pry: still locked, now by the server's word.
            let ack = |counter| Event::Server(ServerMessage::SensorAck { counter });
            assert!(!f.core.handle(NOW, ack(pry_counter - 1)).contains(&Action::Interlock(false)));
            f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: true }));
            let taken = f.core.handle(NOW, ack(pry_counter));
            assert!(matches!(
                taken.as_slice(),
                [Action::Record(Record { entry: Entry::SensorAck { .. }, .. })]
            ));
            assert!(f.core.interlocked());
            assert!(f.core.handle(NOW, ack(pry_counter)).is_empty(), "acknowledged once");
            // An admin lifts it: the server's word holds.
            let lifted = f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: false }));
            assert!(lifted.contains(&Action::Interlock(false)) && !f.core.interlocked());
            // Acknowledged readings are not sent again.
            f.core.handle(NOW, Event::Disconnected);
            f.core.handle(NOW, Event::Connected);
            assert!(counters(&f.core.handle(NOW, welcome(false))).is_empty());
        }

        #[test]
        fn a_lockdown_the_agent_engaged_holds_across_a_restart() {
            let mut f = fixture();
            let mut restored = Restored::default();
            let pry = Event::Sensor { kind: AlertKind::Pry, compartment: None };
            for action in f
                .core
                .handle(NOW, Event::Server(ServerMessage::Policy(pry_locks())))
                .into_iter()
                .chain(f.core.handle(NOW, pry))
            {
                if let Action::Record(record) = action {
                    restored.apply(&record);
                }
            }
            let mut g = fixture();
            g.core = welcomed(&g.key).restore(restored);
            assert!(g.core.interlocked(), "locked before the server says anything");
            let back = g.core.handle(NOW, welcome(false));
            assert_eq!(reported(&back), [("pry".to_owned(), None)], "sent again");
            // The restored policy holds: one impact counts, as the bank's rule says.
            let later = NOW.plus(std::time::Duration::from_mins(5));
            let impact = Event::Sensor { kind: AlertKind::Impact, compartment: None };
            assert_eq!(reported(&g.core.handle(later, impact)).len(), 1);
            let counter = counters(&back)[0];
            let acked = g.core.handle(NOW, Event::Server(ServerMessage::SensorAck { counter }));
            assert!(acked.contains(&Action::Interlock(false)) && !g.core.interlocked());
        }

        #[test]
        fn a_door_open_past_the_banks_time_is_reported_once_per_opening() {
            let mut f = fixture();
            let left = vec![("door_left_open".to_owned(), Some(2))];
            let at = |secs| NOW.plus(std::time::Duration::from_secs(secs));
            open(&mut f.core, NOW, sign(&f.key, command(2, "n-left")));
            door(&mut f, NOW, 2, DoorReading::Open);
            // The default: three minutes.
            assert!(reported(&f.core.handle(at(179), Event::Tick)).is_empty());
            assert_eq!(reported(&f.core.handle(at(180), Event::Tick)), left);
            assert!(reported(&f.core.handle(at(900), Event::Tick)).is_empty(), "once");
            // Shut and opened again (forced, this time): a new opening, a new report.
            door(&mut f, at(901), 2, DoorReading::Closed);
            door(&mut f, at(902), 2, DoorReading::Open);
            assert_eq!(reported(&f.core.handle(at(1082), Event::Tick)), left);
            // The bank's own time, and an unknown reading changes nothing.
            f.core.handle(at(1083), Event::Server(ServerMessage::Policy(pry_locks())));
            door(&mut f, at(1083), 3, DoorReading::Open);
            door(&mut f, at(1100), 3, DoorReading::Unknown);
            let three = f.core.handle(at(1143), Event::Tick);
            assert_eq!(reported(&three), [("door_left_open".to_owned(), Some(3))]);
            // Across a restart: the opening's time and its report come from the journal.
            let mut restored = Restored::default();
            let mut g = fixture();
            for action in door(&mut g, NOW, 1, DoorReading::Open)
                .into_iter()
                .chain(door(&mut g, NOW, 3, DoorReading::Open))
                .chain(g.core.handle(at(180), Event::Tick))
            {
                if let Action::Record(record) = action {
                    restored.apply(&record);
                }
            }
            let mut h = fixture();
            h.core = welcomed(&h.key).restore(restored);
            assert!(reported(&h.core.handle(at(400), Event::Tick)).is_empty(), "reported before");
            door(&mut h, at(401), 1, DoorReading::Closed);
            door(&mut h, at(402), 3, DoorReading::Closed);
            assert!(reported(&h.core.handle(at(900), Event::Tick)).is_empty(), "all shut");
        }

        #[test]
        fn a_door_that_opens_without_an_unlock_was_forced() {
            let mut f = fixture();
            let forced = vec![("door_forced".to_owned(), Some(1))];
            // Shut, then open with no unlock: forced. A door never read counts as shut.
            assert!(reported(&door(&mut f, NOW, 1, DoorReading::Closed)).is_empty());
            assert_eq!(reported(&door(&mut f, NOW, 1, DoorReading::Open)), forced);
            assert_eq!(
                reported(&door(&mut f, NOW, 3, DoorReading::Open)),
                [("door_forced".to_owned(), Some(3))]
            );
            // Opened after its unlock: fine, once.
            open(&mut f.core, NOW, sign(&f.key, command(2, "n-door")));
            assert!(reported(&door(&mut f, NOW, 2, DoorReading::Open)).is_empty());
            door(&mut f, NOW, 2, DoorReading::Closed);
            let again = NOW.plus(std::time::Duration::from_mins(2));
            let twice = reported(&door(&mut f, again, 2, DoorReading::Open));
            assert_eq!(twice, [("door_forced".to_owned(), Some(2))]);
            // An unlock long ago allows nothing now; an unknown reading says nothing.
            open(&mut f.core, NOW, sign(&f.key, command(4, "n-late")));
            let stale = NOW.plus(std::time::Duration::from_mins(11));
            let late = reported(&door(&mut f, stale, 4, DoorReading::Open));
            assert_eq!(late, [("door_forced".to_owned(), Some(4))]);
            door(&mut f, stale, 5, DoorReading::Unknown);
            assert!(reported(&door(&mut f, stale, 5, DoorReading::Open)).is_empty());
        }

        #[test]
        fn a_door_opened_while_the_agent_was_down_is_caught_at_restart() {
            let mut f = fixture();
            let mut restored = Restored::default();
            for action in door(&mut f, NOW, 1, DoorReading::Closed)
                .into_iter()
                .chain(door(&mut f, NOW, 2, DoorReading::Closed))
                .chain(open(&mut f.core, NOW, sign(&f.key, command(2, "n-r"))))
                .chain(door(&mut f, NOW, 2, DoorReading::Open))
            {
                if let Action::Record(record) = action {
                    restored.apply(&record);
                }
            }
            let mut g = fixture();
            g.core = welcomed(&g.key).restore(restored);
            let later = NOW.plus(std::time::Duration::from_mins(1));
            assert_eq!(
                reported(&door(&mut g, later, 1, DoorReading::Open)),
                [("door_forced".to_owned(), Some(1))]
            );
            assert!(reported(&door(&mut g, later, 2, DoorReading::Open)).is_empty(), "open before");
        }

        #[test]
        fn an_unlock_cut_short_by_a_restart_still_allows_its_opening() {
            let mut f = fixture();
            let mut restored = Restored::default();
            for action in door(&mut f, NOW, 2, DoorReading::Closed).into_iter().chain(open(
                &mut f.core,
                NOW,
                sign(&f.key, command(2, "n-cut")),
            )) {
                if let Action::Record(record) = action {
                    restored.apply(&record);
                }
            }
            let mut g = fixture();
            g.core = welcomed(&g.key).restore(restored);
            let later = NOW.plus(std::time::Duration::from_mins(1));
            assert!(reported(&door(&mut g, later, 2, DoorReading::Open)).is_empty());
        }
    }

    fn welcome(locked_down: bool) -> Event {
        Event::Server(ServerMessage::Welcome {
            protocol: 1,
            device: "dev_a".into(),
            bank: "bnk_a".into(),
            compartments: vec![1, 2, 3],
            server_time_ms: NOW.as_millis(),
            presence_key: PresenceKey("a2V5".into()),
            locked_down,
        })
    }

    fn lockdown_records(actions: &[Action]) -> Vec<bool> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Record(Record { entry: Entry::Lockdown { on }, .. }) => Some(*on),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_locked_down_bank_opens_nothing_until_the_lockdown_is_lifted() {
        let mut f = fixture();
        f.core.handle(NOW, Event::Disconnected);
        f.core.handle(NOW, Event::Connected);
        let actions = f.core.handle(NOW, welcome(true));
        assert_eq!(lockdown_records(&actions), [true], "journaled");
        assert!(actions.contains(&Action::Interlock(true)));
        assert!(f.core.interlocked());
        assert_eq!(
            refused(&open(&mut f.core, NOW, sign(&f.key, command(1, "a")))).as_deref(),
            Some("locked_down")
        );
        assert_eq!(
            f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: true })),
            [],
            "no change, nothing journaled"
        );
        let lifted = f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: false }));
        assert_eq!(lockdown_records(&lifted), [false]);
        assert!(lifted.contains(&Action::Interlock(false)));
        assert!(matches!(
            open(&mut f.core, NOW, sign(&f.key, command(1, "b"))).as_slice(),
            [Action::Record(_), Action::Unlock { .. }]
        ));
        // Engaged after the welcome too.
        let engaged = f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: true }));
        assert!(engaged.contains(&Action::Interlock(true)));
        assert_eq!(
            refused(&open(&mut f.core, NOW, sign(&f.key, command(2, "c")))).as_deref(),
            Some("locked_down")
        );
    }

    #[test]
    fn a_restarted_core_never_executes_a_begun_command_again_and_stays_locked_down() {
        let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
        let identity = Identity {
            device: "dev_a".into(),
            bank: "bnk_a".into(),
            command_key: key.public_key(),
        };
        let restored = Restored {
            counter: 41,
            executed: [("n1".to_owned(), NOW.as_millis() + 30_000)].into(),
            locked_down: true,
            ..Restored::default()
        };
        let mut core = AgentCore::new(identity).restore(restored);
        assert!(core.interlocked(), "locked down before the server says anything");
        core.handle(NOW, Event::Connected);
        core.handle(NOW, welcome(true));
        assert_eq!(
            refused(&open(&mut core, NOW, sign(&key, command(1, "n2")))).as_deref(),
            Some("locked_down")
        );
        let lifted = core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: false }));
        assert!(matches!(lifted.first(), Some(Action::Record(Record { counter: 42, .. }))));
        assert_eq!(
            refused(&open(&mut core, NOW, sign(&key, command(1, "n1")))).as_deref(),
            Some("replay"),
            "begun before the power cut: never again"
        );
    }

    #[test]
    fn once_the_journal_fails_nothing_opens() {
        let mut f = fixture();
        assert_eq!(f.core.handle(NOW, Event::JournalFailed), [Action::Interlock(true)]);
        assert_eq!(
            refused(&open(&mut f.core, NOW, sign(&f.key, command(1, "a")))).as_deref(),
            Some("journal_failed")
        );
        f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: true }));
        let lifted = f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: false }));
        assert!(lifted.contains(&Action::Interlock(true)), "a lift does not undo a failed journal");
    }

    /// What can happen to the agent, in any order.
    #[derive(Debug, Clone)]
    enum Step {
        Command {
            compartment: u16,
            nonce: u8,
            late: bool,
        },
        Lockdown(bool),
        Reconnect {
            locked_down: bool,
        },
        Door(u16),
        JournalFailed,
        /// The link drops.
        Cut,
        /// The server sends a list with a code for each of compartments 1 to 3.
        List,
        /// Compartment `n`'s code is typed (or a wrong one).
        Typed {
            compartment: u16,
            right: bool,
        },
    }

    /// The list of [`Step::List`]: compartment `n`'s code is `n` repeated ten times.
    fn offline_list() -> Event {
        let key = [5; 32];
        let codes = (1..=3_u16)
            .map(|n| OfflineCode {
                id: format!("cod_{n}"),
                compartment: n,
                verifier: BASE64.encode(&offline_code_verifier(
                    &key,
                    n,
                    n.to_string().repeat(10).as_bytes(),
                )),
                expires_at_ms: NOW.as_millis() + 86_400_000,
            })
            .collect();
        Event::Server(ServerMessage::OfflineList(OfflineList {
            couriers: Vec::new(),
            expected: Vec::new(),
            free: Vec::new(),
            key: BASE64.encode(&key),
            issued_at_ms: NOW.as_millis(),
            valid_until_ms: NOW.as_millis() + 86_400_000,
            codes,
        }))
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Cut),
            Just(Step::List),
            (1_u16..4, any::<bool>())
                .prop_map(|(compartment, right)| Step::Typed { compartment, right }),
            (0_u16..5, 0_u8..6, any::<bool>())
                .prop_map(|(compartment, nonce, late)| Step::Command { compartment, nonce, late }),
            any::<bool>().prop_map(Step::Lockdown),
            any::<bool>().prop_map(|locked_down| Step::Reconnect { locked_down }),
            (1_u16..4).prop_map(Step::Door),
            Just(Step::JournalFailed),
        ]
    }

    proptest! {
        /// Whatever happens: every unlock follows the journal record of its own command; no
        /// nonce is unlocked twice; nothing unlocks while locked down or after the journal
        /// failed; journal counters go up by one. Offline, every unlock follows the record of
        /// its own use, and no code opens twice.
        #[test]
        fn every_unlock_is_journaled_first_and_none_while_interlocked(steps in proptest::collection::vec(step(), 1..40)) {
            let mut f = fixture();
            let mut unlocked = BTreeSet::new();
            let mut codes_opened = BTreeSet::new();
            let mut counter = 0;
            let mut interlocked = false;
            for s in steps {
                let at = NOW;
                let actions = match s {
                    Step::Command { compartment, nonce, late } => {
                        let at = if late { NOW.plus(std::time::Duration::from_secs(31)) } else { NOW };
                        open(&mut f.core, at, sign(&f.key, command(compartment, &format!("n{nonce}"))))
                    }
                    Step::Lockdown(on) => f.core.handle(at, Event::Server(ServerMessage::Lockdown { on })),
                    Step::Reconnect { locked_down } => {
                        f.core.handle(at, Event::Disconnected);
                        f.core.handle(at, Event::Connected);
                        f.core.handle(at, welcome(locked_down))
                    }
                    Step::Door(n) => f.core.handle(at, Event::Door { compartment: n, reading: DoorReading::Closed }),
                    Step::JournalFailed => f.core.handle(at, Event::JournalFailed),
                    Step::Cut => f.core.handle(at, Event::Disconnected),
                    Step::List => f.core.handle(at, offline_list()),
                    Step::Typed { compartment, right } => {
                        let digits = if right { compartment.to_string().repeat(10) } else { "0".repeat(10) };
                        f.core.handle(at, Event::CodeEntered(format!("{compartment} {digits}")))
                    }
                };
                let mut last_record = None;
                for action in &actions {
                    match action {
                        Action::Record(r) => {
                            prop_assert_eq!(r.counter, counter + 1);
                            counter = r.counter;
                            last_record = Some(r.entry.clone());
                        }
                        Action::Interlock(on) => interlocked = *on,
                        Action::Unlock { compartment, nonce } => {
                            prop_assert!(!interlocked && !f.core.interlocked());
                            let journaled = match &last_record {
                                Some(Entry::Unlock { nonce: n, compartment: c, .. }) => n == nonce && *c == compartment.get(),
                                Some(Entry::Offline { used: OfflineUse { id, what: OfflineWhat::Opened { code, compartment: c, .. }, .. } }) => {
                                    prop_assert!(codes_opened.insert(code.clone()), "{} opened twice", code);
                                    *nonce == format!("{OFFLINE_NONCE}{id}") && *c == compartment.get()
                                }
                                _ => false,
                            };
                            prop_assert!(journaled, "{:?}", actions);
                            prop_assert!(unlocked.insert(nonce.clone()), "{} twice", nonce);
                        }
                        _ => {}
                    }
                }
                prop_assert_eq!(interlocked, f.core.interlocked());
            }
        }
    }

    /// Found by the property test: a nonce is forgotten once its command has expired, so a
    /// clock set back afterwards must not make the command valid again.
    #[test]
    fn a_clock_set_back_does_not_revive_a_forgotten_command() {
        let mut f = fixture();
        let signed = sign(&f.key, command(1, "n"));
        assert_eq!(open(&mut f.core, NOW, signed.clone()).len(), 2);
        let later = NOW.plus(std::time::Duration::from_secs(31));
        f.core.handle(later, Event::Door { compartment: 1, reading: DoorReading::Closed });
        assert_eq!(refused(&open(&mut f.core, NOW, signed)).as_deref(), Some("expired"));
    }

    #[test]
    fn nonces_are_forgotten_only_after_their_command_expired() {
        let mut f = fixture();
        open(&mut f.core, NOW, sign(&f.key, command(1, "n")));
        let later = NOW.plus(std::time::Duration::from_secs(29));
        assert_eq!(
            refused(&open(&mut f.core, later, sign(&f.key, command(1, "n")))).as_deref(),
            Some("replay")
        );
    }

    mod offline {
        use super::*;
        const KEY: [u8; 32] = [5; 32];
        /// Compartment 2's code.
        const TYPED: &str = "2 01234 56789";
        const DAY_MS: i64 = 86_400_000;

        fn listed(id: &str, compartment: u16, digits: &str, expires_at_ms: i64) -> OfflineCode {
            OfflineCode {
                id: id.into(),
                compartment,
                verifier: BASE64.encode(&offline_code_verifier(
                    &KEY,
                    compartment,
                    digits.as_bytes(),
                )),
                expires_at_ms,
            }
        }

        fn list(codes: Vec<OfflineCode>) -> Event {
            Event::Server(ServerMessage::OfflineList(OfflineList {
                couriers: Vec::new(),
                expected: Vec::new(),
                free: Vec::new(),
                key: BASE64.encode(&KEY),
                issued_at_ms: NOW.as_millis(),
                valid_until_ms: NOW.as_millis() + 2 * DAY_MS,
                codes,
            }))
        }

        /// A welcomed core holding compartment 2's code (and 3's, expiring in a minute), with a
        /// list good for two days, then cut off from the server.
        fn cut_off(f: &mut Fixture) {
            let code_id = custody_core::CodeId::from_random([3; 16]);
            f.core.handle(
                NOW,
                list(vec![
                    listed(code_id.as_str(), 2, "0123456789", NOW.as_millis() + 2 * DAY_MS),
                    listed("cod_soon", 3, "1111111111", NOW.as_millis() + 60_000),
                ]),
            );
            f.core.handle(NOW, Event::Disconnected);
        }

        fn typed(f: &mut Fixture, at: Timestamp, code: &str) -> Vec<Action> {
            f.core.handle(at, Event::CodeEntered(code.into()))
        }

        fn shown(actions: &[Action]) -> Option<&Screen> {
            actions.iter().find_map(|a| match a {
                Action::Show(s) => Some(s),
                _ => None,
            })
        }

        fn uses(actions: &[Action]) -> Vec<OfflineUse> {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Send(AgentMessage::Offline(u)) => Some(u.clone()),
                    _ => None,
                })
                .collect()
        }

        #[test]
        fn a_listed_code_opens_once_offline_and_is_reported_until_acknowledged() {
            let mut f = fixture();
            cut_off(&mut f);
            let opened = typed(&mut f, NOW, TYPED);
            let [
                Action::Record(Record { entry: Entry::Offline { used }, .. }),
                Action::Unlock { compartment, nonce },
                Action::Show(Screen::Open(2)),
            ] = opened.as_slice()
            else {
                panic!("journaled, then unlocked, then shown: {opened:?}")
            };
            assert_eq!(compartment.get(), 2);
            assert_eq!(nonce, &format!("offline-{}", used.id));
            assert!(
                matches!(&used.what, OfflineWhat::Opened { compartment: 2, method, .. } if method == "code")
            );
            // The board's answer is journaled and goes nowhere else.
            let answered =
                f.core.handle(NOW, Event::Unlocked { nonce: nonce.clone(), result: Ok(()) });
            assert!(matches!(answered.as_slice(), [Action::Record(_)]), "{answered:?}");
            // The same code again: refused, and that is journaled too.
            let again = typed(&mut f, NOW, TYPED);
            assert_eq!(shown(&again), Some(&Screen::NotAccepted));
            assert!(matches!(
                &again[0],
                Action::Record(Record {
                    entry: Entry::Offline {
                        used: OfflineUse { what: OfflineWhat::Refused { .. }, .. }
                    },
                    ..
                })
            ));
            // Back online: both are reported, after every welcome until acknowledged.
            f.core.handle(NOW, Event::Connected);
            let reported = uses(&f.core.handle(NOW, welcome(false)));
            assert_eq!(reported.len(), 2);
            assert_eq!(reported[0], used.clone());
            let acked = f
                .core
                .handle(NOW, Event::Server(ServerMessage::OfflineAck { id: used.id.clone() }));
            assert!(matches!(
                acked.as_slice(),
                [Action::Record(Record { entry: Entry::Acknowledged { .. }, .. })]
            ));
            let twice = f
                .core
                .handle(NOW, Event::Server(ServerMessage::OfflineAck { id: used.id.clone() }));
            assert!(twice.is_empty(), "an acknowledgement is journaled once");
            f.core.handle(NOW, Event::Disconnected);
            f.core.handle(NOW, Event::Connected);
            let left = uses(&f.core.handle(NOW, welcome(false)));
            assert_eq!(left.len(), 1);
            assert!(matches!(left[0].what, OfflineWhat::Refused { .. }));
        }

        /// Something that happens to a core before a code is typed offline.
        type Before = fn(&mut Fixture);

        fn nothing(_: &mut Fixture) {}

        /// Back online for `step`, then cut off again.
        fn online(f: &mut Fixture, step: impl FnOnce(&mut Fixture)) {
            f.core.handle(NOW, Event::Connected);
            f.core.handle(NOW, welcome(false));
            step(f);
            f.core.handle(NOW, Event::Disconnected);
        }

        fn locked_down(f: &mut Fixture) {
            online(f, |f| {
                f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: true }));
            });
        }

        fn journal_failed(f: &mut Fixture) {
            f.core.handle(NOW, Event::JournalFailed);
        }

        fn opened_online(f: &mut Fixture) {
            online(f, |f| {
                let signed = sign(&f.key, command(2, "n1"));
                f.core.handle(NOW, Event::Server(ServerMessage::Open(signed)));
            });
        }

        fn revoked(f: &mut Fixture) {
            online(f, |f| {
                f.core.handle(NOW, list(Vec::new()));
            });
        }

        fn unreadable_list(f: &mut Fixture) {
            online(f, |f| {
                let list = OfflineList {
                    couriers: Vec::new(),
                    expected: Vec::new(),
                    free: Vec::new(),
                    key: "short".into(),
                    issued_at_ms: NOW.as_millis(),
                    valid_until_ms: NOW.as_millis() + DAY_MS,
                    codes: Vec::new(),
                };
                f.core.handle(NOW, Event::Server(ServerMessage::OfflineList(list)));
            });
        }

        /// Everything that keeps a code from opening offline, and what the kiosk says.
        #[test]
        fn what_offline_refuses() {
            let later = |ms: i64| Timestamp::from_millis(NOW.as_millis() + ms);
            let cases: [(&str, Before, &str, Timestamp, Screen); 11] = [
                ("a wrong code", nothing, "2 01234 56788", NOW, Screen::NotAccepted),
                ("another locker's", nothing, "1 01234 56789", NOW, Screen::NotAccepted),
                ("the first format", nothing, "01234567", NOW, Screen::NotAccepted),
                ("not a code", nothing, "hello", NOW, Screen::NotAccepted),
                ("expired", nothing, "3 11111 11111", later(60_000), Screen::NotAccepted),
                ("past the deadline", nothing, TYPED, later(2 * DAY_MS), Screen::Offline),
                ("locked down", locked_down, TYPED, NOW, Screen::NotAccepted),
                ("the journal failed", journal_failed, TYPED, NOW, Screen::NotAccepted),
                ("opened online since", opened_online, TYPED, NOW, Screen::NotAccepted),
                ("revoked since", revoked, TYPED, NOW, Screen::NotAccepted),
                ("an unreadable list", unreadable_list, TYPED, NOW, Screen::Offline),
            ];
            for (name, before, code, at, want) in cases {
                let mut f = fixture();
                cut_off(&mut f);
                before(&mut f);
                let actions = typed(&mut f, at, code);
                assert_eq!(shown(&actions), Some(&want), "{name}: {actions:?}");
                assert!(!actions.iter().any(|a| matches!(a, Action::Unlock { .. })), "{name}");
            }
            // And the one that opens, for contrast.
            let mut f = fixture();
            cut_off(&mut f);
            assert_eq!(shown(&typed(&mut f, NOW, TYPED)), Some(&Screen::Open(2)));
        }

        #[test]
        fn the_list_is_saved_when_it_changes_and_hourly_and_taken_up_after_a_restart() {
            let mut f = fixture();
            let code = listed("cod_a", 2, "0123456789", NOW.as_millis() + 2 * DAY_MS);
            let sync = |f: &mut Fixture, codes: Vec<OfflineCode>, until: i64| {
                let list = OfflineList {
                    couriers: Vec::new(),
                    expected: Vec::new(),
                    free: Vec::new(),
                    key: BASE64.encode(&KEY),
                    issued_at_ms: NOW.as_millis(),
                    valid_until_ms: until,
                    codes,
                };
                f.core.handle(NOW, Event::Server(ServerMessage::OfflineList(list)))
            };
            let day = NOW.as_millis() + DAY_MS;
            let first = sync(&mut f, vec![code.clone()], day);
            let [Action::Save(Some(saved))] = first.as_slice() else { panic!("{first:?}") };
            let saved = saved.clone();
            assert!(sync(&mut f, vec![code.clone()], day + 60_000).is_empty(), "a minute on");
            assert_eq!(sync(&mut f, vec![code.clone()], day + SAVE_EVERY_MS).len(), 1, "an hour");
            assert_eq!(sync(&mut f, Vec::new(), day + SAVE_EVERY_MS).len(), 1, "codes changed");
            // Refused by the server: nothing is kept.
            let bye = ServerMessage::Goodbye { reason: "revoked".into() };
            assert!(f.core.handle(NOW, Event::Server(bye)).contains(&Action::Save(None)));

            // A restart while the server is unreachable takes up the saved list.
            let g = fixture();
            let identity = g.core.identity.clone();
            let mut restarted = AgentCore::new(identity).saved_list(&saved);
            assert_eq!(restarted.offline_codes(NOW), Some(1));
            let opened = restarted.handle(NOW, Event::CodeEntered(TYPED.into()));
            assert!(opened.contains(&Action::Show(Screen::Open(2))), "{opened:?}");
            let deadline = Timestamp::from_millis(day);
            assert_eq!(restarted.offline_codes(deadline), None, "past its deadline");
        }

        /// DESIGN.md §4 invariant 12: told at connecting that its identity is refused, the agent
        /// drops its presence key, badges and offline list (and the saved list) at once, and
        /// the kiosk says it is out of service until a welcome.
        #[test]
        fn an_identity_the_server_refuses_keeps_nothing_and_is_out_of_service() {
            let mut f = fixture();
            cut_off(&mut f);
            assert_eq!(f.core.offline_codes(NOW), Some(2));
            assert!(typed(&mut f, NOW, TYPED).contains(&Action::Show(Screen::Open(2))));
            let refused = f.core.handle(NOW, Event::IdentityRefused);
            assert_eq!(refused, vec![Action::Presence(None), Action::Save(None)]);
            assert_eq!(f.core.offline_codes(NOW), None);
            assert!(f.core.out_of_service());
            for input in [
                Event::CodeEntered(TYPED.into()),
                Event::QrScanned("CUSTODY1:x".into()),
                Event::BadgeRead { number: "0A0B0C0D0E0F".into(), reader: ReaderKind::OsdpSecure },
            ] {
                assert_eq!(f.core.handle(NOW, input), vec![Action::Show(Screen::OutOfService)]);
            }
        }

        #[test]
        fn with_no_list_the_kiosk_says_it_cannot_check() {
            let mut f = fixture();
            f.core.handle(NOW, Event::Disconnected);
            assert_eq!(typed(&mut f, NOW, TYPED), vec![Action::Show(Screen::Offline)]);
        }

        #[test]
        fn wrong_codes_offline_spend_a_daily_budget_kept_across_restarts() {
            let mut f = fixture();
            cut_off(&mut f);
            let mut journal = Vec::new();
            for _ in 0..OFFLINE_PICKUP_DAY.max_failures {
                let actions = typed(&mut f, NOW, "2 99999 99999");
                assert_eq!(shown(&actions), Some(&Screen::NotAccepted));
                journal.extend(actions.into_iter().filter_map(|a| match a {
                    Action::Record(r) => Some(r),
                    _ => None,
                }));
            }
            // Spent: even the right code is not checked today.
            assert_eq!(typed(&mut f, NOW, TYPED), vec![Action::Show(Screen::CodesPaused)]);
            // A restart does not refill it: the journal holds the refusals.
            let mut restored = Restored::default();
            for r in &journal {
                restored.apply(r);
            }
            let mut g = fixture();
            g.core = welcomed(&g.key).restore(restored);
            cut_off(&mut g);
            assert_eq!(typed(&mut g, NOW, TYPED), vec![Action::Show(Screen::CodesPaused)]);
            // The next day's budget is fresh.
            let tomorrow = OFFLINE_PICKUP_DAY.window_end(NOW);
            assert_eq!(shown(&typed(&mut g, tomorrow, TYPED)), Some(&Screen::Open(2)));
        }

        #[test]
        fn a_code_spent_offline_stays_spent_across_a_restart_and_a_stale_list() {
            let mut f = fixture();
            cut_off(&mut f);
            let opened = typed(&mut f, NOW, TYPED);
            let Action::Record(record) = &opened[0] else { panic!("{opened:?}") };
            let mut restored = Restored::default();
            restored.apply(record);
            let mut g = fixture();
            g.core = welcomed(&g.key).restore(restored);
            // The server's list still has it (the use not reconciled yet).
            cut_off(&mut g);
            assert_eq!(shown(&typed(&mut g, NOW, TYPED)), Some(&Screen::NotAccepted));
            // And the use is still to be reported.
            g.core.handle(NOW, Event::Connected);
            assert_eq!(uses(&g.core.handle(NOW, welcome(false))).len(), 2);
        }

        mod courier {
            use super::*;

            /// Today's code of the courier in the list.
            const TODAY: &str = "1234 5678 9012";
            /// Tomorrow's.
            const TOMORROW: &str = "2109 8765 4321";

            fn verifier(day: i64, typed: &str) -> String {
                let digits = typed.replace(' ', "");
                BASE64.encode(&offline_courier_verifier(&KEY, day, digits.as_bytes()).unwrap())
            }

            fn parcel(id: &str, size: &str, accessible: bool) -> OfflineParcel {
                OfflineParcel {
                    parcel: KioskParcel {
                        id: id.into(),
                        tracking_ref: format!("1Z-{id}"),
                        size: size.into(),
                    },
                    carrier: "car_a".into(),
                    accessible,
                    refrigerated: false,
                }
            }

            fn free(compartment: u16, size: &str, accessible: bool) -> OfflineCompartment {
                OfflineCompartment {
                    compartment,
                    size: size.into(),
                    accessible,
                    refrigerated: false,
                }
            }

            /// A welcomed core holding a list with one courier of carrier `car_a` (today's and
            /// tomorrow's codes), three of its parcels and one of another carrier's, and four
            /// free compartments; then cut off from the server.
            fn cut_off(f: &mut Fixture) {
                let today = NOW.as_millis().div_euclid(DAY_MS);
                let courier = |day, typed| OfflineCourier {
                    courier: "per_courier".into(),
                    carrier: "car_a".into(),
                    day,
                    verifier: verifier(day, typed),
                };
                let mut other = parcel("prc_other", "small", false);
                other.carrier = "car_b".into();
                f.core.handle(
                    NOW,
                    Event::Server(ServerMessage::OfflineList(OfflineList {
                        key: BASE64.encode(&KEY),
                        issued_at_ms: NOW.as_millis(),
                        valid_until_ms: NOW.as_millis() + 2 * DAY_MS,
                        codes: Vec::new(),
                        couriers: vec![courier(today, TODAY), courier(today + 1, TOMORROW)],
                        expected: vec![
                            parcel("prc_small", "small", false),
                            parcel("prc_medium", "medium", false),
                            parcel("prc_access", "small", true),
                            other,
                        ],
                        free: vec![
                            free(4, "large", false),
                            free(2, "medium", false),
                            free(3, "small", true),
                            free(1, "small", false),
                        ],
                    })),
                );
                f.core.handle(NOW, Event::Disconnected);
            }

            fn courier(
                f: &mut Fixture,
                at: Timestamp,
                code: &str,
                action: CourierAction,
            ) -> Vec<Action> {
                let credential = CourierCredential::Code { code: code.into() };
                f.core.handle(at, Event::Courier { credential, action })
            }

            fn deposit(f: &mut Fixture, parcel: &str, size: Option<&str>) -> Vec<Action> {
                let action =
                    CourierAction::Deposit { parcel: parcel.into(), size: size.map(Into::into) };
                courier(f, NOW, TODAY, action)
            }

            fn confirm(f: &mut Fixture, at: Timestamp, parcel: &str) -> Vec<Action> {
                courier(f, at, TODAY, CourierAction::Confirm { parcel: parcel.into() })
            }

            fn opened(actions: &[Action]) -> Option<u16> {
                actions.iter().find_map(|a| match a {
                    Action::Unlock { compartment, .. } => Some(compartment.get()),
                    _ => None,
                })
            }

            fn shut(f: &mut Fixture, compartment: u16) {
                f.core.handle(NOW, Event::Door { compartment, reading: DoorReading::Closed });
            }

            #[test]
            fn a_courier_s_code_shows_their_work_from_the_list() {
                let mut f = fixture();
                cut_off(&mut f);
                let shown_now = courier(&mut f, NOW, TODAY, CourierAction::Visit);
                let [Action::Show(Screen::CourierWork { deposits, returns, free })] =
                    shown_now.as_slice()
                else {
                    panic!("{shown_now:?}")
                };
                let ids: Vec<&str> = deposits.iter().map(|p| p.id.as_str()).collect();
                assert_eq!(ids, ["prc_small", "prc_medium", "prc_access"], "only their carrier's");
                assert!(returns.is_empty(), "taking parcels back needs the server");
                let sizes: Vec<(&str, u32)> =
                    free.iter().map(|c| (c.size.as_str(), c.count)).collect();
                assert_eq!(sizes, [("small", 2), ("medium", 1), ("large", 1)]);
                // Tomorrow's code is tomorrow's only.
                let early = courier(&mut f, NOW, TOMORROW, CourierAction::Visit);
                assert_eq!(shown(&early), Some(&Screen::NotAccepted));
                let tomorrow = NOW.plus(std::time::Duration::from_hours(24));
                let next_day = courier(&mut f, tomorrow, TOMORROW, CourierAction::Visit);
                assert!(matches!(shown(&next_day), Some(Screen::CourierWork { .. })));
            }

            #[test]
            fn a_deposit_opens_the_smallest_free_compartment_that_fits_once() {
                let mut f = fixture();
                cut_off(&mut f);
                let small = deposit(&mut f, "prc_small", None);
                let [
                    Action::Record(Record { entry: Entry::Offline { used }, .. }),
                    Action::Unlock { compartment, nonce },
                    Action::Show(Screen::Open(1)),
                ] = small.as_slice()
                else {
                    panic!("journaled, then unlocked, then shown: {small:?}")
                };
                assert_eq!(compartment.get(), 1, "small, and not the accessible one");
                assert_eq!(nonce, &format!("offline-{}", used.id));
                assert_eq!(
                    used.what,
                    OfflineWhat::Deposited {
                        courier: "per_courier".into(),
                        parcel: "prc_small".into(),
                        compartment: 1,
                    }
                );
                // Neither the parcel nor its compartment is offered again.
                assert_eq!(shown(&deposit(&mut f, "prc_small", None)), Some(&Screen::NotAccepted));
                // The accessible parcel takes the accessible compartment; a larger size chosen
                // takes a larger one; another carrier's parcel is not theirs to deposit.
                assert_eq!(opened(&deposit(&mut f, "prc_access", None)), Some(3));
                assert_eq!(opened(&deposit(&mut f, "prc_medium", Some("large"))), Some(4));
                assert_eq!(shown(&deposit(&mut f, "prc_other", None)), Some(&Screen::NotAccepted));
                let work = courier(&mut f, NOW, TODAY, CourierAction::Visit);
                let Some(Screen::CourierWork { deposits, free, .. }) = shown(&work) else {
                    panic!("{work:?}")
                };
                assert!(deposits.is_empty());
                assert_eq!(free, &[FreeCompartments { size: "medium".into(), count: 1 }]);
            }

            #[test]
            fn nothing_fits_nothing_opens() {
                let mut f = fixture();
                cut_off(&mut f);
                assert_eq!(opened(&deposit(&mut f, "prc_medium", Some("extra_large"))), None);
                // A smaller size than announced is no help.
                assert_eq!(opened(&deposit(&mut f, "prc_medium", Some("small"))), Some(2));
            }

            #[test]
            fn a_deposit_is_confirmed_once_its_door_is_shut_and_reported_in_order() {
                let mut f = fixture();
                cut_off(&mut f);
                let opening = deposit(&mut f, "prc_small", None);
                assert_eq!(opened(&opening), Some(1));
                // No reading of that door yet, then the door open: not yet.
                assert_eq!(shown(&confirm(&mut f, NOW, "prc_small")), Some(&Screen::NotAccepted));
                let door = Event::Door { compartment: 1, reading: DoorReading::Open };
                f.core.handle(NOW, door);
                assert_eq!(shown(&confirm(&mut f, NOW, "prc_small")), Some(&Screen::NotAccepted));
                shut(&mut f, 1);
                let later = NOW.plus(std::time::Duration::from_mins(2));
                let done = confirm(&mut f, later, "prc_small");
                let [
                    Action::Record(Record { entry: Entry::Offline { used }, .. }),
                    Action::Show(Screen::Thanks),
                ] = done.as_slice()
                else {
                    panic!("{done:?}")
                };
                assert!(
                    matches!(&used.what, OfflineWhat::Confirmed { parcel, .. } if parcel == "prc_small")
                );
                assert_eq!(shown(&confirm(&mut f, later, "prc_small")), Some(&Screen::NotAccepted));
                // Back online: the deposit is reported before its confirmation.
                f.core.handle(later, Event::Connected);
                let reported = uses(&f.core.handle(later, welcome(false)));
                let kinds: Vec<bool> = reported
                    .iter()
                    .map(|u| matches!(u.what, OfflineWhat::Deposited { .. }))
                    .collect();
                assert_eq!(kinds, [true, false]);
            }

            #[test]
            fn a_confirmation_comes_in_time_from_the_courier_who_deposited() {
                let mut f = fixture();
                cut_off(&mut f);
                deposit(&mut f, "prc_small", None);
                shut(&mut f, 1);
                let late = NOW.plus(std::time::Duration::from_mins(10));
                assert_eq!(shown(&confirm(&mut f, late, "prc_small")), Some(&Screen::NotAccepted));
                assert_eq!(shown(&confirm(&mut f, NOW, "prc_medium")), Some(&Screen::NotAccepted));
            }

            #[test]
            fn what_a_courier_cannot_do_offline() {
                let mut f = fixture();
                cut_off(&mut f);
                let back = CourierAction::Return { parcel: "prc_small".into() };
                assert_eq!(shown(&courier(&mut f, NOW, TODAY, back)), Some(&Screen::Offline));
                let badge = CourierCredential::Badge {
                    badge: BadgeRead { number: "00ff00ff".into(), reader: "osdp_secure".into() },
                };
                let read = f.core.handle(
                    NOW,
                    Event::Courier { credential: badge, action: CourierAction::Visit },
                );
                assert_eq!(shown(&read), Some(&Screen::Offline));
                // A wrong code is refused, journaled, and spends the offline budget that wrong
                // pickup codes spend.
                for _ in 0..OFFLINE_PICKUP_DAY.max_failures {
                    let wrong = courier(&mut f, NOW, "0000 0000 0000", CourierAction::Visit);
                    assert_eq!(shown(&wrong), Some(&Screen::NotAccepted));
                    assert!(matches!(
                        &wrong[0],
                        Action::Record(Record { entry: Entry::Offline { used: OfflineUse { what: OfflineWhat::Refused { method }, .. } }, .. }) if method == "courier"
                    ));
                }
                let paused = courier(&mut f, NOW, TODAY, CourierAction::Visit);
                assert_eq!(shown(&paused), Some(&Screen::CodesPaused));
                // Locked down, nothing opens.
                let mut g = fixture();
                cut_off(&mut g);
                g.core.handle(NOW, Event::Connected);
                g.core.handle(NOW, welcome(true));
                g.core.handle(NOW, Event::Disconnected);
                assert_eq!(shown(&deposit(&mut g, "prc_small", None)), Some(&Screen::NotAccepted));
                assert_eq!(opened(&deposit(&mut g, "prc_small", None)), None);
            }

            #[test]
            fn a_compartment_opened_online_is_not_offered_offline() {
                let mut f = fixture();
                cut_off(&mut f);
                online(&mut f, |f| {
                    let signed = sign(&f.key, command(1, "n1"));
                    open(&mut f.core, NOW, signed);
                });
                assert_eq!(opened(&deposit(&mut f, "prc_small", None)), Some(3), "1 went online");
            }

            #[test]
            fn offline_deposits_survive_a_restart_until_the_server_has_them() {
                let mut f = fixture();
                cut_off(&mut f);
                let mut restored = Restored::default();
                for action in deposit(&mut f, "prc_small", None) {
                    if let Action::Record(record) = action {
                        restored.apply(&record);
                    }
                }
                let mut g = fixture();
                g.core = welcomed(&g.key).restore(restored);
                // The server's list, not reconciled yet, still offers both.
                cut_off(&mut g);
                assert_eq!(opened(&deposit(&mut g, "prc_small", None)), None);
                assert_eq!(opened(&deposit(&mut g, "prc_access", None)), Some(3));
                // Once the server has the first and a list follows, it is the list's to say.
                g.core.handle(NOW, Event::Connected);
                let reported = uses(&g.core.handle(NOW, welcome(false)));
                for used in reported {
                    g.core.handle(NOW, Event::Server(ServerMessage::OfflineAck { id: used.id }));
                }
                let later = NOW.plus(std::time::Duration::from_mins(10));
                let relisted = Event::Server(ServerMessage::OfflineList(OfflineList {
                    key: BASE64.encode(&KEY),
                    issued_at_ms: later.as_millis(),
                    valid_until_ms: later.as_millis() + DAY_MS,
                    codes: Vec::new(),
                    couriers: Vec::new(),
                    expected: Vec::new(),
                    free: vec![free(1, "small", false)],
                }));
                g.core.handle(later, relisted);
                assert!(g.core.deposits.is_empty(), "{:?}", g.core.deposits);
            }
        }
    }

    mod qr {
        use super::*;
        use custody_core::token::PickupToken;
        use custody_core::{BankId, CodeId, ParcelId};

        fn bank() -> BankId {
            BankId::from_random([1; 16])
        }

        /// A welcomed core of a bank with a real id (tokens carry ids in binary).
        fn kiosk(key: &SigningKey, connected: bool) -> AgentCore {
            let identity = Identity {
                device: "dev_a".into(),
                bank: bank().to_string(),
                command_key: key.public_key(),
            };
            let mut core = AgentCore::new(identity);
            if connected {
                core.handle(NOW, Event::Connected);
                core.handle(
                    NOW,
                    Event::Server(ServerMessage::Welcome {
                        protocol: 1,
                        device: "dev_a".into(),
                        bank: bank().to_string(),
                        compartments: vec![1, 2, 3],
                        server_time_ms: NOW.as_millis(),
                        presence_key: PresenceKey("a2V5".into()),
                        locked_down: false,
                    }),
                );
            }
            core
        }

        fn token(compartment: u16) -> PickupToken {
            PickupToken {
                bank: bank(),
                compartment: CompartmentNumber::new(compartment).unwrap(),
                parcel: ParcelId::from_random([2; 16]),
                code: CodeId::from_random([3; 16]),
                expires_at: NOW.plus(std::time::Duration::from_mins(10)),
            }
        }

        fn signed(key: &SigningKey, t: &PickupToken) -> String {
            t.encode(&key.sign(QR_TOKEN_DOMAIN, &t.signed_bytes()))
        }

        #[test]
        fn a_token_is_checked_offline() {
            let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
            let (stranger, _) = SigningKey::generate(&Rng::new()).unwrap();
            let core = kiosk(&key, false);
            let good = token(2);
            let other_bank = PickupToken { bank: BankId::from_random([9; 16]), ..token(2) };
            // An open command's signature over the same bytes, under its own domain.
            let wrong_domain = good.encode(&key.sign(OPEN_COMMAND_DOMAIN, &good.signed_bytes()));
            let mut flipped = signed(&key, &good).into_bytes();
            let last = flipped.len() - 2;
            flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
            let flipped = String::from_utf8(flipped).unwrap();
            let cases = [
                (signed(&key, &good), NOW, Ok(())),
                (signed(&key, &good), good.expires_at, Err(TokenRefusal::Expired)),
                (signed(&stranger, &good), NOW, Err(TokenRefusal::BadSignature)),
                (wrong_domain, NOW, Err(TokenRefusal::BadSignature)),
                (flipped, NOW, Err(TokenRefusal::BadSignature)),
                (signed(&key, &other_bank), NOW, Err(TokenRefusal::OtherBank)),
                ("CQ1:HELLO".into(), NOW, Err(TokenRefusal::Malformed)),
                (String::new(), NOW, Err(TokenRefusal::Malformed)),
            ];
            for (text, at, want) in cases {
                assert_eq!(core.check_token(at, &text).map(|_| ()), want, "{text}");
            }
            // Once welcomed the kiosk knows its compartments.
            let core = kiosk(&key, true);
            assert_eq!(
                core.check_token(NOW, &signed(&key, &token(7))).map(|_| ()),
                Err(TokenRefusal::UnknownCompartment)
            );
        }

        #[test]
        fn a_good_token_asks_the_server_and_then_works_no_more() {
            let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
            let mut core = kiosk(&key, true);
            let text = signed(&key, &token(2));
            let asked = core.handle(NOW, Event::QrScanned(text.clone()));
            let Some(Action::Send(AgentMessage::QrPickup { request_id, token })) = asked.get(1)
            else {
                panic!("{asked:?}")
            };
            assert_eq!((asked[0].clone(), token), (Action::Show(Screen::Checking), &text));
            let answer = PickupAnswer::Accepted { compartment: 2 };
            let shown = core.handle(
                NOW,
                Event::Server(ServerMessage::Pickup { request_id: *request_id, answer }),
            );
            assert_eq!(shown, vec![Action::Show(Screen::Open(2))]);
            // The same token again is refused here, and still reported for the audit log.
            let again = core.handle(NOW, Event::QrScanned(text.clone()));
            assert_eq!(again[0], Action::Show(Screen::NotAccepted));
            let Some(Action::Send(AgentMessage::QrPickup { request_id, .. })) = again.get(1) else {
                panic!("{again:?}")
            };
            assert_eq!(core.check_token(NOW, &text).map(|_| ()), Err(TokenRefusal::Replay));
            // The server's refusal of the report changes nothing on the screen.
            let answer = PickupAnswer::Refused;
            let late = core.handle(
                NOW,
                Event::Server(ServerMessage::Pickup { request_id: *request_id, answer }),
            );
            assert!(late.is_empty());
        }

        #[test]
        fn a_refused_token_can_be_scanned_again() {
            // The server said no (a lockdown, say): the kiosk keeps no mark, so the same token
            // works once the reason is gone.
            let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
            let mut core = kiosk(&key, true);
            let text = signed(&key, &token(2));
            let asked = core.handle(NOW, Event::QrScanned(text.clone()));
            let Some(Action::Send(AgentMessage::QrPickup { request_id, .. })) = asked.get(1) else {
                panic!("{asked:?}")
            };
            let answer = PickupAnswer::Refused;
            core.handle(
                NOW,
                Event::Server(ServerMessage::Pickup { request_id: *request_id, answer }),
            );
            assert!(core.check_token(NOW, &text).is_ok());
        }

        #[test]
        fn offline_a_good_token_waits_and_a_bad_one_is_refused() {
            let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
            let mut core = kiosk(&key, false);
            let good = core.handle(NOW, Event::QrScanned(signed(&key, &token(2))));
            assert_eq!(good, vec![Action::Show(Screen::Offline)]);
            let bad = core.handle(NOW, Event::QrScanned("CQ1:FORGED".into()));
            assert_eq!(bad, vec![Action::Show(Screen::NotAccepted)]);
        }

        #[test]
        fn offline_a_token_opens_only_if_its_code_is_listed() {
            let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
            let mut core = kiosk(&key, true);
            let listed = token(2);
            let day = 86_400_000;
            let list = OfflineList {
                couriers: Vec::new(),
                expected: Vec::new(),
                free: Vec::new(),
                key: BASE64.encode(&[5; 32]),
                issued_at_ms: NOW.as_millis(),
                valid_until_ms: NOW.as_millis() + day,
                codes: vec![OfflineCode {
                    id: listed.code.as_str().into(),
                    compartment: 2,
                    verifier: BASE64.encode(&[0; 32]),
                    expires_at_ms: NOW.as_millis() + day,
                }],
            };
            core.handle(NOW, Event::Server(ServerMessage::OfflineList(list)));
            core.handle(NOW, Event::Disconnected);
            let unlisted = PickupToken { code: CodeId::from_random([4; 16]), ..token(2) };
            let refused = core.handle(NOW, Event::QrScanned(signed(&key, &unlisted)));
            assert_eq!(refused.last(), Some(&Action::Show(Screen::NotAccepted)));
            let opened = core.handle(NOW, Event::QrScanned(signed(&key, &listed)));
            assert!(
                matches!(
                    opened.as_slice(),
                    [
                        Action::Record(Record { entry: Entry::Offline { used: OfflineUse { what: OfflineWhat::Opened { method, compartment: 2, .. }, .. } }, .. }),
                        Action::Unlock { .. },
                        Action::Show(Screen::Open(2)),
                    ] if method == "qr"
                ),
                "{opened:?}"
            );
            let again = core.handle(NOW, Event::QrScanned(signed(&key, &listed)));
            assert_eq!(again.last(), Some(&Action::Show(Screen::NotAccepted)));
        }

        proptest! {
            /// Whatever the scanner reads, the kiosk asks the server about it only if it is a
            /// token signed for this bank; nothing else is ever awaited.
            #[test]
            fn only_genuine_tokens_are_awaited(text in ".{0,300}") {
                let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
                let mut core = kiosk(&key, true);
                let actions = core.handle(NOW, Event::QrScanned(text));
                prop_assert_eq!(&actions[0], &Action::Show(Screen::NotAccepted));
                for action in &actions {
                    if let Action::Send(AgentMessage::QrPickup { token, .. }) = action {
                        prop_assert!(token.chars().count() <= QR_TOKEN_TEXT_LEN + 1);
                    }
                }
            }
        }
    }

    proptest! {
        /// Whatever a (possibly hostile) server sends, the core never unlocks a compartment the
        /// bank does not have, never compartment 0, and never without a valid signature.
        #[test]
        fn hostile_commands_never_unlock(compartment in any::<u16>(), nonce in "[a-z0-9]{0,8}", device in "dev_[ab]", bank in "bnk_[ab]", dt in -60_000i64..60_000, forge in any::<bool>()) {
            let mut f = fixture();
            let cmd = OpenCommand { device: device.clone(), bank: bank.clone(), expires_at_ms: NOW.as_millis() + dt, ..command(compartment, &nonce) };
            let signed = if forge {
                let (other, _) = SigningKey::generate(&Rng::new()).unwrap();
                sign(&other, cmd)
            } else {
                sign(&f.key, cmd)
            };
            for action in open(&mut f.core, NOW, signed) {
                if let Action::Unlock { compartment: c, .. } = action {
                    prop_assert!(!forge && device == "dev_a" && bank == "bnk_a" && dt > 0);
                    prop_assert!((1..=3).contains(&c.get()));
                }
            }
        }
    }

    mod badges {
        use super::*;

        const ANNS: &str = "04A2B3C4D5E6F7";
        const KEY: [u8; 32] = [9; 32];

        fn synced(core: &mut AgentCore, numbers: &[&str]) {
            let verifiers = numbers
                .iter()
                .map(|n| {
                    let n = BadgeNumber::parse(n).unwrap();
                    BASE64.encode(&badge_verifier(&KEY, n.as_bytes()))
                })
                .collect();
            let list = BadgeList { key: BASE64.encode(&KEY), verifiers };
            assert!(core.handle(NOW, Event::Server(ServerMessage::Badges(list))).is_empty());
        }

        fn read(core: &mut AgentCore, at: Timestamp, reader: ReaderKind) -> Vec<Action> {
            core.handle(at, Event::BadgeRead { number: ANNS.into(), reader })
        }

        #[test]
        fn a_read_is_checked_against_the_synced_list() {
            let mut f = fixture();
            let check =
                |core: &AgentCore, number: &str, reader| core.check_badge(NOW, number, reader);
            assert_eq!(check(&f.core, ANNS, ReaderKind::OsdpSecure), Err(BadgeRefusal::NoList));
            synced(&mut f.core, &[ANNS]);
            assert!(check(&f.core, ANNS, ReaderKind::OsdpSecure).is_ok());
            assert!(check(&f.core, "04:a2:b3:c4:d5:e6:f7", ReaderKind::Keyboard).is_ok());
            assert!(check(&f.core, ANNS, ReaderKind::Wiegand).is_ok());
            assert_eq!(
                check(&f.core, "04A2B3C4D5E6F8", ReaderKind::OsdpSecure),
                Err(BadgeRefusal::Unknown)
            );
            assert_eq!(
                check(&f.core, "04A2B3", ReaderKind::OsdpSecure),
                Err(BadgeRefusal::Malformed)
            );
            assert_eq!(
                check(&f.core, ANNS, ReaderKind::OsdpClear),
                Err(BadgeRefusal::InsecureReader),
                "no commissioning window: OSDP in the clear is refused"
            );
            // A revocation reaches the kiosk with the next list.
            synced(&mut f.core, &["04A2B3C4D5E6F8"]);
            assert_eq!(check(&f.core, ANNS, ReaderKind::OsdpSecure), Err(BadgeRefusal::Unknown));
            // A list that cannot be read leaves no badge known.
            let garbled = BadgeList { key: "not base64".into(), verifiers: Vec::new() };
            f.core.handle(NOW, Event::Server(ServerMessage::Badges(garbled)));
            assert_eq!(
                check(&f.core, "04A2B3C4D5E6F8", ReaderKind::OsdpSecure),
                Err(BadgeRefusal::NoList)
            );
        }

        #[test]
        fn osdp_in_the_clear_only_while_commissioning() {
            let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
            let until = NOW.plus(custody_core::time::hours(1));
            let mut core = welcomed(&key).commissioning_until(Some(until));
            synced(&mut core, &[ANNS]);
            assert!(core.check_badge(NOW, ANNS, ReaderKind::OsdpClear).is_ok());
            assert_eq!(
                core.check_badge(until, ANNS, ReaderKind::OsdpClear),
                Err(BadgeRefusal::InsecureReader)
            );
            assert!(core.check_badge(until, ANNS, ReaderKind::OsdpSecure).is_ok());
        }

        #[test]
        fn a_known_badge_asks_the_server_and_any_other_is_refused_but_reported() {
            let mut f = fixture();
            synced(&mut f.core, &[ANNS]);
            let asked = read(&mut f.core, NOW, ReaderKind::OsdpSecure);
            let [
                Action::Show(Screen::Checking),
                Action::Send(AgentMessage::BadgeRead { request_id, badge }),
            ] = asked.as_slice()
            else {
                panic!("{asked:?}")
            };
            assert_eq!((badge.number.as_str(), badge.reader.as_str()), (ANNS, "osdp_secure"));
            let answer = PickupAnswer::Accepted { compartment: 2 };
            let shown = f.core.handle(
                NOW,
                Event::Server(ServerMessage::Pickup { request_id: *request_id, answer }),
            );
            assert_eq!(shown, vec![Action::Show(Screen::Open(2))]);

            // Refused here at once, and still sent so the server audits and counts it.
            let refused = read(&mut f.core, NOW, ReaderKind::OsdpClear);
            assert!(matches!(
                refused.as_slice(),
                [Action::Show(Screen::NotAccepted), Action::Send(AgentMessage::BadgeRead { .. })]
            ));
            // A courier's badge that fails here is not sent as a courier's question.
            let credential = CourierCredential::Badge {
                badge: BadgeRead { number: "04A2B3C4D5E6F8".into(), reader: "osdp_secure".into() },
            };
            assert_eq!(
                f.core.handle(NOW, Event::Courier { credential, action: CourierAction::Visit }),
                vec![Action::Show(Screen::NotAccepted)]
            );
            // A revoked device forgets the list; offline, nothing is asked.
            f.core.handle(NOW, Event::Server(ServerMessage::Goodbye { reason: "revoked".into() }));
            assert_eq!(
                f.core.check_badge(NOW, ANNS, ReaderKind::OsdpSecure),
                Err(BadgeRefusal::NoList)
            );
            assert_eq!(
                read(&mut f.core, NOW, ReaderKind::OsdpSecure),
                vec![Action::Show(Screen::NotAccepted)]
            );
        }

        proptest! {
            #[test]
            fn reads_of_any_shape_are_never_asked_about_unless_listed(number in ".{0,300}", kind in 0usize..4) {
                let mut f = fixture();
                synced(&mut f.core, &[ANNS]);
                let reader = ReaderKind::ALL[kind];
                let actions = f.core.handle(NOW, Event::BadgeRead { number: number.clone(), reader });
                let asked = actions.iter().any(|a| matches!(a, Action::Show(Screen::Checking)));
                let listed = BadgeNumber::parse(&number).is_ok_and(|n| n.to_hex() == ANNS);
                prop_assert_eq!(asked, listed && reader != ReaderKind::OsdpClear);
            }
        }
    }
}
