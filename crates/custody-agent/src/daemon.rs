//! The agent daemon: carries events into [`AgentCore`] and its actions out to the device link,
//! the lock board and the kiosk screen. It decides nothing itself.
//!
//! While the link is down the kiosk and sensors keep working: codes are answered "offline",
//! and messages for the server (door reports, command results) wait in a bounded backlog that
//! is sent first after reconnecting.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use custody_core::Clock;
use custody_core::alert::AlertKind;
use custody_core::badge::ReaderKind;
use custody_crypto::pki::DeviceKey;
use custody_crypto::totp::{TotpSeed, step_at};
use custody_proto::device::{
    AgentMessage, BadgeRead, BoardHealth, CourierAction, CourierCredential, HealthReport,
    OfflineList, ServerMessage,
};
use data_encoding::BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use zeroize::Zeroizing;

use crate::core::{Action, AgentCore, Event, Screen};
use crate::enrol::{AgentSetup, begin_renewal, finish_renewal, renewal_due};
use crate::hardware::{Interlock, LockBoard, SensorEvent};
use crate::journal::{Journal, JournalError, Restored};
use crate::link::{self, Link};

/// How often the agent reports its health (and times the link's round trip).
const HEALTH_EVERY: Duration = Duration::from_mins(1);
/// Messages kept for the server while offline; beyond this the oldest are dropped (and logged).
const BACKLOG: usize = 1024;
/// First and longest wait between connection attempts.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often the core is told that time passed ([`Event::Tick`]).
pub const TICK_EVERY: Duration = Duration::from_secs(5);
/// Liveness pings per allowed silence ([`crate::link::LinkConfig::silent_after`]).
const SILENT_TICKS: u32 = 3;

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    kiosk: mpsc::Sender<Asked>,
    presence: watch::Receiver<Option<Arc<TotpSeed>>>,
    clock: Arc<dyn Clock>,
    ready: watch::Receiver<bool>,
    offline: watch::Receiver<Option<usize>>,
    out_of_service: watch::Receiver<bool>,
    interlock: Interlock,
    task: JoinHandle<()>,
}

impl AgentHandle {
    /// Types a code on the kiosk keypad.
    pub async fn enter_code(&self, code: &str) {
        let _ = self.kiosk.send(Asked::unanswered(Event::CodeEntered(code.to_owned()))).await;
    }

    /// Types `code` and returns what the kiosk shows in answer (anything but "checking").
    pub async fn try_code(&self, code: &str) -> Option<Screen> {
        self.answer_to(Event::CodeEntered(code.to_owned())).await
    }

    /// Holds a QR code with `text` to the kiosk's scanner; returns what the kiosk shows.
    pub async fn scan(&self, text: &str) -> Option<Screen> {
        self.answer_to(Event::QrScanned(text.to_owned())).await
    }

    /// A courier types their `code` and chooses `action`; returns what the kiosk shows.
    pub async fn courier(&self, code: &str, action: CourierAction) -> Option<Screen> {
        let credential = CourierCredential::Code { code: code.to_owned() };
        self.answer_to(Event::Courier { credential, action }).await
    }

    /// A courier holds their badge to a reader of this `reader` kind and chooses `action`;
    /// returns what the kiosk shows.
    pub async fn courier_badge(
        &self,
        number: &str,
        reader: ReaderKind,
        action: CourierAction,
    ) -> Option<Screen> {
        let badge = BadgeRead { number: number.to_owned(), reader: reader.as_str().to_owned() };
        self.answer_to(Event::Courier { credential: CourierCredential::Badge { badge }, action })
            .await
    }

    /// A badge held to a reader of this `reader` kind; returns what the kiosk shows.
    pub async fn badge(&self, number: &str, reader: ReaderKind) -> Option<Screen> {
        self.answer_to(Event::BadgeRead { number: number.to_owned(), reader }).await
    }

    /// A tamper sensor's reading, from its input (or a simulator's): the core decides whether
    /// it counts, and journals and reports it if it does.
    pub async fn sensor(&self, kind: AlertKind, compartment: Option<u16>) {
        let _ = self.kiosk.send(Asked::unanswered(Event::Sensor { kind, compartment })).await;
    }

    /// Lets time pass for the core now, as the daemon's own tick does every
    /// [`TICK_EVERY`]: a door open past the bank's time is reported.
    pub async fn tick(&self) {
        let _ = self.kiosk.send(Asked::unanswered(Event::Tick)).await;
    }

    /// Where a badge reader's driver (on a thread of its own) sends what it reads.
    pub fn badge_reader(&self) -> BadgeReader {
        BadgeReader(self.kiosk.clone())
    }

    /// The answer to this input and to no other: of ten people typing one code at once, only
    /// the one whose question opened the door is told it is open. `None` when the agent
    /// stopped or the question went unanswered.
    async fn answer_to(&self, input: Event) -> Option<Screen> {
        let (answer, answered) = oneshot::channel();
        self.kiosk.send(Asked { event: input, answer: Some(answer) }).await.ok()?;
        answered.await.ok()
    }

    /// The presence code the kiosk shows now: six digits, new every 30 seconds, while the
    /// agent is connected and welcomed.
    pub fn presence_code(&self) -> Option<Zeroizing<String>> {
        let seed = self.presence.borrow().clone()?;
        Some(seed.code_at(step_at(self.clock.now().as_millis())))
    }

    /// Waits until the agent is connected and welcomed.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Whether the agent is connected and welcomed now.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// How many pickup codes the kiosk can check while the server is unreachable, or `None`
    /// without a list it may trust (never synced, or past its deadline).
    pub fn offline_codes(&self) -> Option<usize> {
        *self.offline.borrow()
    }

    /// Whether the server refused this device's identity (revoked, or no longer enrolled): the
    /// kiosk says the locker is out of service.
    pub fn is_out_of_service(&self) -> bool {
        *self.out_of_service.borrow()
    }

    /// Whether the hardware interlock is engaged (locked down, or the journal failed).
    pub fn is_interlocked(&self) -> bool {
        self.interlock.is_engaged()
    }

    /// Stops the agent.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// A reader driver's way into the agent: each read becomes an [`Event::BadgeRead`].
#[derive(Debug, Clone)]
pub struct BadgeReader(mpsc::Sender<Asked>);

impl BadgeReader {
    /// A badge was read (from a thread outside the runtime); `false` once the agent stopped.
    pub fn blocking_read(&self, number: String, reader: ReaderKind) -> bool {
        self.0.blocking_send(Asked::unanswered(Event::BadgeRead { number, reader })).is_ok()
    }
}

/// An input for the core, and where the answer to it (and only to it) goes.
#[derive(Debug)]
pub(crate) struct Asked {
    event: Event,
    answer: Option<oneshot::Sender<Screen>>,
}

impl Asked {
    fn unanswered(event: Event) -> Self {
        Self { event, answer: None }
    }
}

/// The request id a kiosk question goes to the server under.
fn question_id(message: &AgentMessage) -> Option<u64> {
    match message {
        AgentMessage::PickupAttempt { request_id, .. }
        | AgentMessage::QrPickup { request_id, .. }
        | AgentMessage::BadgeRead { request_id, .. }
        | AgentMessage::Courier { request_id, .. } => Some(*request_id),
        _ => None,
    }
}

/// The request id a server's message answers.
fn answer_id(message: &ServerMessage) -> Option<u64> {
    match message {
        ServerMessage::Pickup { request_id, .. } | ServerMessage::Courier { request_id, .. } => {
            Some(*request_id)
        }
        _ => None,
    }
}

/// What the kiosk is to show as the answer among `actions` (not "checking").
fn shown(actions: &[Action]) -> Option<Screen> {
    actions.iter().find_map(|a| match a {
        Action::Show(s) if *s != Screen::Checking => Some(s.clone()),
        _ => None,
    })
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the agent on the journal of its setup, taking up the state it records.
pub async fn spawn(
    setup: AgentSetup,
    board: Arc<dyn LockBoard>,
    sensors: mpsc::UnboundedReceiver<SensorEvent>,
    clock: Arc<dyn Clock>,
) -> Result<AgentHandle, JournalError> {
    let (journal, restored) = Journal::open(&setup.journal).await?;
    Ok(spawn_on(setup, journal, restored, board, sensors, clock))
}

/// Starts the agent on a journal already open, with the state it restored.
pub fn spawn_on(
    setup: AgentSetup,
    journal: Journal,
    mut restored: Restored,
    board: Arc<dyn LockBoard>,
    sensors: mpsc::UnboundedReceiver<SensorEvent>,
    clock: Arc<dyn Clock>,
) -> AgentHandle {
    let (kiosk, kiosk_rx) = mpsc::channel(16);
    let (ready_tx, ready) = watch::channel(false);
    let (presence_tx, presence) = watch::channel(None);
    restored.forget_expired(clock.now());
    let mut core = AgentCore::new(setup.identity.clone())
        .commissioning_until(setup.commissioning_until)
        .restore(restored);
    match load_list(&setup.dir) {
        Ok(Some(list)) => core = core.saved_list(&list),
        Ok(None) => {}
        // The kiosk waits for the server's next list; nothing opens that should not.
        Err(e) => {
            tracing::warn!(error = %e, "the saved list of codes cannot be read; it is ignored");
        }
    }
    let (offline_tx, offline) = watch::channel(core.offline_codes(clock.now()));
    let (out_of_service_tx, out_of_service) = watch::channel(false);
    let interlock = Interlock::default();
    interlock.set(core.interlocked());
    let daemon = Daemon {
        core,
        journal,
        interlock: interlock.clone(),
        renewal: None,
        sessions: 0,
        round_trip_ms: None,
        setup,
        board,
        clock: clock.clone(),
        asking: HashMap::new(),
        presence: presence_tx,
        ready: ready_tx,
        offline: offline_tx,
        out_of_service: out_of_service_tx,
        backlog: VecDeque::new(),
    };
    let task = tokio::spawn(daemon.run(kiosk_rx, sensors));
    AgentHandle { kiosk, presence, clock, ready, offline, out_of_service, interlock, task }
}

struct Daemon {
    core: AgentCore,
    journal: Journal,
    interlock: Interlock,
    /// The key made for a certificate renewal, until its certificate arrives.
    renewal: Option<DeviceKey>,
    /// Links established since start.
    sessions: u32,
    /// The link's last measured round trip.
    round_trip_ms: Option<u32>,
    setup: AgentSetup,
    board: Arc<dyn LockBoard>,
    clock: Arc<dyn Clock>,
    /// Who waits for the server's answer to each kiosk question in flight, by request id.
    asking: HashMap<u64, oneshot::Sender<Screen>>,
    presence: watch::Sender<Option<Arc<TotpSeed>>>,
    ready: watch::Sender<bool>,
    offline: watch::Sender<Option<usize>>,
    out_of_service: watch::Sender<bool>,
    backlog: VecDeque<AgentMessage>,
}

/// A local event, from the kiosk, a sensor, the lock board or the clock.
enum Local {
    Kiosk(Asked),
    Sensor(SensorEvent),
    Unlocked(String, Result<(), String>),
    Tick,
}

/// Where local events come from.
struct Inputs {
    kiosk: mpsc::Receiver<Asked>,
    sensors: mpsc::UnboundedReceiver<SensorEvent>,
    unlocked: mpsc::UnboundedReceiver<(String, Result<(), String>)>,
    ticks: tokio::time::Interval,
}

impl Inputs {
    async fn next(&mut self) -> Option<Local> {
        tokio::select! {
            Some(input) = self.kiosk.recv() => Some(Local::Kiosk(input)),
            Some(event) = self.sensors.recv() => Some(Local::Sensor(event)),
            Some((nonce, result)) = self.unlocked.recv() => Some(Local::Unlocked(nonce, result)),
            _ = self.ticks.tick() => Some(Local::Tick),
        }
    }
}

impl Daemon {
    async fn run(
        mut self,
        kiosk: mpsc::Receiver<Asked>,
        sensors: mpsc::UnboundedReceiver<SensorEvent>,
    ) {
        let (unlocked_tx, unlocked) = mpsc::unbounded_channel::<(String, Result<(), String>)>();
        let mut ticks = tokio::time::interval(TICK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut inputs = Inputs { kiosk, sensors, unlocked, ticks };
        let mut retry = RETRY_FIRST;
        loop {
            let config = self.setup.link.clone();
            let connecting = async move { link::connect(&config).await };
            tokio::pin!(connecting);
            let link = loop {
                tokio::select! {
                    result = &mut connecting => break result,
                    Some(local) = inputs.next() => self.local(local, None, &unlocked_tx).await,
                }
            };
            match link {
                Ok(mut link) => {
                    retry = RETRY_FIRST;
                    self.session(&mut link, &mut inputs, &unlocked_tx).await;
                    let _ = self.ready.send(false);
                    let actions = self.core.handle(self.clock.now(), Event::Disconnected);
                    // Questions in flight will get no answer: whoever asked is told so.
                    for (_, waiting) in self.asking.drain() {
                        let _ = waiting.send(Screen::Offline);
                    }
                    self.perform(actions, None, &unlocked_tx).await;
                    tracing::warn!("device link lost; reconnecting");
                }
                Err(e) if e.identity_refused() => {
                    // Revoked or no longer enrolled: nothing the server gave is kept, and the
                    // kiosk says the locker is out of service. The agent keeps trying, for an
                    // operator who fixes a mistake.
                    tracing::error!(error = %e, "the server refuses this device's identity; its lists are wiped");
                    let actions = self.core.handle(self.clock.now(), Event::IdentityRefused);
                    self.perform(actions, None, &unlocked_tx).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, gateway = %self.setup.link.gateway, "cannot reach the server");
                }
            }
            // Wait before the next attempt, still serving the kiosk and sensors.
            let mut wait = tokio::time::interval(retry);
            wait.tick().await;
            loop {
                tokio::select! {
                    _ = wait.tick() => break,
                    Some(local) = inputs.next() => self.local(local, None, &unlocked_tx).await,
                }
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    async fn session(
        &mut self,
        link: &mut Link,
        inputs: &mut Inputs,
        unlocked_tx: &mpsc::UnboundedSender<(String, Result<(), String>)>,
    ) {
        let hello = self.core.handle(self.clock.now(), Event::Connected);
        self.perform(hello, Some(link), unlocked_tx).await;
        while let Some(message) = self.backlog.pop_front() {
            if send(link, &message).await.is_err() {
                self.backlog.push_front(message);
                return;
            }
        }
        self.sessions += 1;
        // A renewal asked for over an earlier link got no answer: this link may ask again.
        self.renewal = None;
        let mut health = tokio::time::interval(HEALTH_EVERY);
        // A ping every third of the allowed silence; three ticks without a frame from the
        // server and the link is taken for dead (a cut beyond the building closes nothing).
        let mut liveness = tokio::time::interval(self.setup.link.silent_after / SILENT_TICKS);
        let mut silent_ticks = 0;
        loop {
            tokio::select! {
                _ = health.tick() => {
                    if !self.report_health(link).await {
                        return;
                    }
                }
                _ = liveness.tick() => {
                    silent_ticks += 1;
                    if silent_ticks > SILENT_TICKS {
                        tracing::warn!(silent_s = self.setup.link.silent_after.as_secs(), "the server went silent; working offline");
                        return;
                    }
                    let sent_at = self.clock.now().as_millis().to_be_bytes().to_vec();
                    if link.send(Message::Ping(sent_at.into())).await.is_err() {
                        return;
                    }
                }
                frame = link.next() => {
                    silent_ticks = 0;
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Pong(sent))) => {
                            self.pong(&sent);
                            continue;
                        }
                        Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                        Some(Ok(_)) => continue,
                    };
                    let Ok(message) = serde_json::from_str::<ServerMessage>(&text) else {
                        tracing::warn!("unreadable message from the server");
                        continue;
                    };
                    if let ServerMessage::Renewed { certificate_pem } = &message {
                        self.renewed(certificate_pem);
                    }
                    let answering = answer_id(&message);
                    let actions = self.core.handle(self.clock.now(), Event::Server(message));
                    if let Some(waiting) = answering.and_then(|id| self.asking.remove(&id))
                        && let Some(screen) = shown(&actions)
                    {
                        let _ = waiting.send(screen);
                    }
                    self.perform(actions, Some(link), unlocked_tx).await;
                    let _ = self.ready.send(self.core.ready());
                    if self.core.ready() && self.renewal.is_none()
                        && renewal_due(self.clock.now(), &self.setup.certificate)
                        && !self.renew(link).await
                    {
                        return;
                    }
                }
                Some(local) = inputs.next() => self.local(local, Some(link), unlocked_tx).await,
            }
        }
    }

    /// Sends a health report (its round trip timed by the last liveness ping); `false` when
    /// the link failed.
    async fn report_health(&mut self, link: &mut Link) -> bool {
        let report = HealthReport {
            boards: self
                .board
                .boards()
                .into_iter()
                .map(|b| BoardHealth { address: b.address, answering: b.answering })
                .collect(),
            round_trip_ms: self.round_trip_ms,
            reconnects: self.sessions.saturating_sub(1),
            interlocked: self.interlock.is_engaged(),
        };
        send(link, &AgentMessage::Health(report)).await.is_ok()
    }

    /// A pong to one of the liveness pings: the link's round trip.
    fn pong(&mut self, sent: &[u8]) {
        if let Ok(bytes) = <[u8; 8]>::try_from(sent) {
            let elapsed = self.clock.now().as_millis() - i64::from_be_bytes(bytes);
            self.round_trip_ms = u32::try_from(elapsed).ok();
        }
    }

    /// Asks for a new certificate, for a key made now; `false` when the link failed.
    async fn renew(&mut self, link: &mut Link) -> bool {
        match begin_renewal() {
            Ok((key, csr_pem)) => {
                self.renewal = Some(key);
                tracing::info!(
                    expires_ms = self.setup.certificate.not_after.as_millis(),
                    "renewing the device certificate"
                );
                send(link, &AgentMessage::Renew { csr_pem }).await.is_ok()
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot make a key to renew the device certificate");
                true
            }
        }
    }

    /// Stores a renewed certificate; the next connection uses it.
    fn renewed(&mut self, certificate_pem: &str) {
        let Some(key) = self.renewal.take() else {
            tracing::warn!("a certificate arrived that was not asked for; ignored");
            return;
        };
        match finish_renewal(&self.setup, &key, certificate_pem, self.clock.clone()) {
            Ok(setup) => {
                tracing::info!(
                    expires_ms = setup.certificate.not_after.as_millis(),
                    "device certificate renewed"
                );
                self.setup = setup;
            }
            Err(e) => tracing::error!(error = %e, "the renewed certificate was not stored"),
        }
    }

    async fn local(
        &mut self,
        local: Local,
        link: Option<&mut Link>,
        unlocked_tx: &mpsc::UnboundedSender<(String, Result<(), String>)>,
    ) {
        let (event, answer) = match local {
            Local::Kiosk(Asked { event, answer }) => (event, answer),
            Local::Sensor((compartment, reading)) => (Event::Door { compartment, reading }, None),
            Local::Unlocked(nonce, result) => (Event::Unlocked { nonce, result }, None),
            Local::Tick => (Event::Tick, None),
        };
        let actions = self.core.handle(self.clock.now(), event);
        if let Some(answer) = answer {
            self.route_answer(&actions, answer);
        }
        self.perform(actions, link, unlocked_tx).await;
    }

    /// Sends the answer to a kiosk input where it goes: now, when the core answered it on the
    /// spot, or when the server answers the question the core sent for it.
    fn route_answer(&mut self, actions: &[Action], answer: oneshot::Sender<Screen>) {
        let checking = actions.iter().any(|a| matches!(a, Action::Show(Screen::Checking)));
        let asked = actions.iter().find_map(|a| match a {
            Action::Send(message) => question_id(message),
            _ => None,
        });
        match (checking, asked) {
            (true, Some(id)) => {
                self.asking.insert(id, answer);
            }
            _ => {
                if let Some(screen) = shown(actions) {
                    let _ = answer.send(screen);
                }
            }
        }
    }

    async fn perform(
        &mut self,
        actions: Vec<Action>,
        mut link: Option<&mut Link>,
        unlocked_tx: &mpsc::UnboundedSender<(String, Result<(), String>)>,
    ) {
        let mut actions = VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Record(record) => {
                    if let Err(e) = self.journal.append(&record).await {
                        // Nothing after this may act as if it were recorded: the interlock
                        // stops every unlock before the core has even heard.
                        self.interlock.set(true);
                        tracing::error!(error = %e, "journal write failed; no door opens until it is fixed");
                        actions.extend(self.core.handle(self.clock.now(), Event::JournalFailed));
                    }
                }
                Action::Interlock(engaged) => self.interlock.set(engaged),
                Action::Send(message) => {
                    let sent = match link.as_deref_mut() {
                        Some(l) => send(l, &message).await.is_ok(),
                        None => false,
                    };
                    // A kiosk question is never kept for later: its answer would come when
                    // nobody is standing there, and a door would open for no one.
                    if !sent
                        && !matches!(
                            message,
                            AgentMessage::Hello { .. }
                                | AgentMessage::PickupAttempt { .. }
                                | AgentMessage::QrPickup { .. }
                                | AgentMessage::BadgeRead { .. }
                                | AgentMessage::Courier { .. }
                                // Sent again by the core after every welcome until acknowledged.
                                | AgentMessage::Offline(_)
                                | AgentMessage::Sensor { .. }
                        )
                    {
                        if self.backlog.len() == BACKLOG {
                            self.backlog.pop_front();
                            tracing::error!("offline backlog full; the oldest message was dropped");
                        }
                        self.backlog.push_back(message);
                    }
                }
                Action::Unlock { compartment, nonce } => {
                    // One unlock per command, never retried: the result goes back to the core.
                    let (board, tx) = (self.board.clone(), unlocked_tx.clone());
                    let interlock = self.interlock.clone();
                    tokio::spawn(async move {
                        let result =
                            board.unlock(compartment, interlock).await.map_err(|e| e.to_string());
                        let _ = tx.send((nonce, result));
                    });
                }
                // Each answer went to whoever asked (`route_answer`); the kiosk shows nothing
                // to anyone else.
                Action::Show(_) => {}
                Action::Presence(key) => {
                    let seed = key.and_then(|k| {
                        let bytes = BASE64.decode(k.0.as_bytes()).ok()?;
                        TotpSeed::from_bytes(&bytes).ok().map(Arc::new)
                    });
                    self.presence.send_replace(seed);
                }
                Action::Save(list) => {
                    if let Err(e) = save_list(&self.setup.dir, list.as_ref()).await {
                        tracing::warn!(error = %e, "the list of codes could not be saved");
                    }
                }
            }
        }
        self.offline.send_replace(self.core.offline_codes(self.clock.now()));
        self.out_of_service.send_replace(self.core.out_of_service());
    }
}

/// Where the last list of codes is kept across restarts.
const SAVED_LIST: &str = "offline.json";

/// The list saved before a restart, if there is one.
fn load_list(dir: &std::path::Path) -> std::io::Result<Option<OfflineList>> {
    match std::fs::read(dir.join(SAVED_LIST)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the saved list, readable by the agent alone, so a power cut leaves the old list
/// or the new one, never half of either; with `None`, removes it.
async fn save_list(dir: &std::path::Path, list: Option<&OfflineList>) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let (path, fresh) = (dir.join(SAVED_LIST), dir.join("offline.json.new"));
    let Some(list) = list else {
        return match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    };
    let json = serde_json::to_vec(list).map_err(std::io::Error::other)?;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&fresh)
        .await?;
    file.write_all(&json).await?;
    file.sync_all().await?;
    tokio::fs::rename(&fresh, &path).await
}

async fn send(link: &mut Link, message: &AgentMessage) -> Result<(), ()> {
    let text = serde_json::to_string(message).map_err(|_| ())?;
    link.send(Message::Text(text.into())).await.map_err(|_| ())
}
