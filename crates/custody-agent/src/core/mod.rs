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
use custody_core::badge::ReaderKind;
use custody_core::compartment::CompartmentNumber;
use custody_crypto::sign::PublicKey;
use custody_proto::device::{
    AgentMessage, CommandOutcome, CourierAction, CourierAnswer, CourierCredential, DoorReading,
    OfflineList, OfflineUse, PROTOCOL_VERSION, PresenceKey, ServerMessage,
};

mod commands;
mod credentials;
mod offline;
mod screen;
mod tamper;

pub use commands::Refusal;
pub use credentials::{BadgeRefusal, TokenRefusal};
pub use screen::Screen;

use offline::{HeldCodes, use_order};
use tamper::policy;

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
}

#[cfg(test)]
mod tests;
