//! The device gateway: one WebSocket per agent over mutually authenticated TLS 1.3.
//!
//! The TLS accept loop (see [`crate::listen`]) has already required a client certificate issued
//! by the internal CA; [`DeviceCaller`] then checks that the device is enrolled, unrevoked and
//! presents the key it enrolled with; a revoked certificate is refused at the handshake
//! already ([`DeviceHub::revoked`]). One connection per bank is kept: a newer identity of the
//! bank (a re-enrolment) ends the older one's link, but one identity has one live link
//! (DESIGN.md §4 invariant 12). A second connection with the identity of a link still heard
//! within [`SILENT_AFTER`] is refused, whatever its address (NAT hides many hosts behind one),
//! before it is told anything: audited and raised as a conflict. Revoking a certificate ends
//! its live link.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use custody_app::alerts::AlertAt;
use custody_app::couriers::CourierAt;
use custody_app::parcels::PickupOutcome;
use custody_app::{AppError, Caller};
use custody_core::alert::AlertKind;
use custody_core::policy::Principal;
use custody_core::{BankId, DeviceId, Timestamp};
use custody_crypto::tls::Revoked;
use custody_proto::device::{
    AgentMessage, CourierAction, CourierAnswer, CourierCredential, FreeCompartments, HealthReport,
    KioskParcel, MAX_FRAME_BYTES, PROTOCOL_VERSION, PickupAnswer, ServerMessage, SignedOpenCommand,
};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Notify, mpsc};

use crate::ServerState;
use crate::extract::Peer;
use crate::extract::{DeviceCaller, PeerCertificate};

/// How often a connected agent is sent its site's badge list again, besides at once after
/// every change through the API: the deadline for a revocation made anywhere else.
pub const BADGE_SYNC_EVERY: std::time::Duration = std::time::Duration::from_mins(5);

/// How often a connected agent is sent its bank's offline list (and at once when a code is
/// drawn or retired), so its deadline stays a day away while the bank is online.
pub const OFFLINE_SYNC_EVERY: std::time::Duration = std::time::Duration::from_mins(1);

/// No answer to a kiosk's question (a code, a QR token, a badge, a courier) leaves the server
/// sooner than this after the question arrived. Every kind of failure does the same work
/// already, but not to the microsecond (`custody bench kiosk` measures it, and a used code's
/// check reads a little more); holding each answer to this floor leaves nothing to time
/// unless the server is so loaded that the load itself is all an attacker would measure.
pub const KIOSK_ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(100);

/// Messages queued for one agent before the server stops waiting for it.
const OUTBOX_DEPTH: usize = 64;

struct Link {
    id: u64,
    device: DeviceId,
    /// Its certificate's serial, to end the link when the certificate is revoked.
    serial: String,
    /// Where it connected from.
    peer: std::net::IpAddr,
    sender: mpsc::Sender<ServerMessage>,
    /// Ends the link (revocation, or a newer link of the bank).
    close: Arc<Notify>,
    /// The bank's codes changed: send the offline list again.
    codes: Arc<Notify>,
    /// The bank's sensor settings or its site's lockdown rules changed: send its policy again.
    policy: Arc<Notify>,
    /// The agent's last health report, and when it came.
    health: Option<(Timestamp, HealthReport)>,
    /// When the last frame came from the agent.
    last_heard: Timestamp,
}

/// A bank whose agent should be connected and is not.
#[derive(Debug, Clone, Copy)]
struct Gone {
    /// Since when (the last frame heard, or when the hub first missed it).
    since: Timestamp,
    /// Whether `device_offline` was raised for this outage.
    raised: bool,
}

/// How long an agent may go unheard before its link is taken for dead and its bank raises
/// `device_offline`: three of its one-minute health reports missed.
pub const SILENT_AFTER: std::time::Duration = std::time::Duration::from_mins(3);

/// How often the hub looks for agents gone quiet ([`DeviceHub::watch_heartbeats`]).
pub const HEARTBEATS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The connected agents, by bank, and the certificates the gateway refuses.
#[derive(Clone, Default)]
pub struct DeviceHub {
    links: Arc<Mutex<HashMap<BankId, Link>>>,
    /// Banks whose agents are missing. Locked after `links` when both are.
    gone: Arc<Mutex<HashMap<BankId, Gone>>>,
    next: Arc<AtomicU64>,
    revoked: Revoked,
}

impl std::fmt::Debug for DeviceHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceHub").finish_non_exhaustive()
    }
}

impl DeviceHub {
    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<BankId, Link>> {
        // A panic while holding this lock cannot leave the map half-updated (each operation is
        // one insert or remove), so a poisoned lock is still consistent.
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gone(&self) -> std::sync::MutexGuard<'_, HashMap<BankId, Gone>> {
        self.gone.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the bank's agent is connected.
    pub fn is_online(&self, bank: &BankId) -> bool {
        self.links().get(bank).is_some_and(|l| !l.sender.is_closed())
    }

    /// The last health report of `device`, the bank's connected agent, and when it came.
    pub fn health(&self, bank: &BankId, device: &DeviceId) -> Option<(Timestamp, HealthReport)> {
        self.links().get(bank).filter(|l| l.device == *device).and_then(|l| l.health.clone())
    }

    fn set_health(&self, bank: &BankId, id: u64, at: Timestamp, report: HealthReport) {
        if let Some(link) = self.links().get_mut(bank).filter(|l| l.id == id) {
            link.health = Some((at, report));
        }
    }

    /// Whether `device` is the bank's connected agent.
    pub fn is_connected(&self, bank: &BankId, device: &DeviceId) -> bool {
        self.links().get(bank).is_some_and(|l| l.device == *device && !l.sender.is_closed())
    }

    /// Queues a message for the bank's agent; `false` when it is not connected or not keeping up.
    pub fn send(&self, bank: &BankId, message: ServerMessage) -> bool {
        self.links().get(bank).is_some_and(|l| l.sender.try_send(message).is_ok())
    }

    /// Banks with a connected agent.
    pub fn online_banks(&self) -> usize {
        self.links().values().filter(|l| !l.sender.is_closed()).count()
    }

    /// The revoked certificates, shared with the gateway's handshake.
    pub fn revoked(&self) -> Revoked {
        self.revoked.clone()
    }

    /// Reads the revoked certificates again and ends every link whose certificate is among
    /// them: called after a revocation or an enrolment (which revokes the bank's older
    /// identity), and every minute for changes made elsewhere.
    pub async fn refresh_revocations(&self, app: &custody_app::App) {
        match app.revoked_device_serials().await {
            Ok(serials) => {
                self.revoked.replace(serials);
                for link in self.links().values() {
                    if self.revoked.contains(&link.serial) {
                        tracing::info!(device = %link.device, "certificate revoked; its link is ended");
                        link.close.notify_one();
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read revoked device certificates"),
        }
    }

    /// Registers a new link of `bank`, ending the older one, unless the older one has the same
    /// identity and is alive: open, and heard from within [`SILENT_AFTER`] of `now`. Then the
    /// newcomer is refused, and the established link's address returned.
    fn register(&self, bank: BankId, link: Link, now: Timestamp) -> Result<u64, std::net::IpAddr> {
        let mut links = self.links();
        if let Some(old) = links.get(&bank)
            && old.device == link.device
            && !old.sender.is_closed()
            && now.minus(SILENT_AFTER) < old.last_heard
        {
            return Err(old.peer);
        }
        let id = link.id;
        let device = link.device.clone();
        if let Some(old) = links.insert(bank, link) {
            old.close.notify_one();
            tracing::info!(old = %old.device, new = %device, "bank reconnected; the older link is closed");
        }
        Ok(id)
    }

    /// Whether `id` is the bank's link in charge: the only one told anything.
    fn in_charge(&self, bank: &BankId, id: u64) -> bool {
        self.links().get(bank).is_some_and(|l| l.id == id)
    }

    fn unregister(&self, bank: &BankId, id: u64, now: Timestamp) {
        let mut links = self.links();
        if links.get(bank).is_some_and(|l| l.id == id) {
            links.remove(bank);
            self.gone().insert(bank.clone(), Gone { since: now, raised: false });
        }
    }

    /// The bank's agent is connected: whether `device_offline` was raised while it was gone.
    fn arrived(&self, bank: &BankId) -> bool {
        self.gone().remove(bank).is_some_and(|g| g.raised)
    }

    fn heard(&self, bank: &BankId, id: u64, now: Timestamp) {
        if let Some(link) = self.links().get_mut(bank).filter(|l| l.id == id) {
            link.last_heard = now;
        }
    }

    /// Looks for agents gone quiet: a link unheard for [`SILENT_AFTER`] is ended (a cable cut
    /// beyond the building closes nothing), and a bank with an enrolled device whose agent has
    /// been missing that long raises `device_offline`, once per outage. Run every
    /// [`HEARTBEATS_EVERY`]; a bank already missing when the server started counts from the
    /// first look.
    pub async fn watch_heartbeats(&self, app: &custody_app::App) {
        let now = app.now();
        {
            let mut links = self.links();
            let silent: Vec<BankId> = links
                .iter()
                .filter(|(_, l)| now.since(l.last_heard) >= SILENT_AFTER)
                .map(|(bank, _)| bank.clone())
                .collect();
            for bank in silent {
                if let Some(link) = links.remove(&bank) {
                    tracing::warn!(device = %link.device, %bank, "agent silent; its link is ended");
                    link.close.notify_one();
                    self.gone().insert(bank, Gone { since: link.last_heard, raised: false });
                }
            }
        }
        let banks = match app.enrolled_banks().await {
            Ok(banks) => banks,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the banks whose agents should be connected");
                return;
            }
        };
        let mut due = Vec::new();
        {
            let links = self.links();
            let mut gone = self.gone();
            gone.retain(|bank, _| banks.iter().any(|(b, _)| b == bank));
            for (bank, site) in &banks {
                if links.contains_key(bank) {
                    continue;
                }
                let missing =
                    gone.entry(bank.clone()).or_insert(Gone { since: now, raised: false });
                if !missing.raised && now.since(missing.since) >= SILENT_AFTER {
                    missing.raised = true;
                    due.push((bank.clone(), site.clone()));
                }
            }
        }
        for (bank, site) in due {
            tracing::warn!(%bank, "agent missing; raising device_offline");
            let place = AlertAt { site, bank: Some(bank.clone()), compartment: None };
            if let Err(e) = app.raise_alert(AlertKind::DeviceOffline, place).await {
                tracing::error!(error = %e, %bank, "could not raise device_offline; trying again");
                if let Some(missing) = self.gone().get_mut(&bank) {
                    missing.raised = false;
                }
            }
        }
    }
}

impl custody_app::Presence for DeviceHub {
    fn is_online(&self, bank: &BankId) -> bool {
        DeviceHub::is_online(self, bank)
    }

    fn codes_changed(&self, bank: &BankId) {
        if let Some(link) = self.links().get(bank) {
            link.codes.notify_one();
        }
    }

    fn policy_changed(&self, bank: &BankId) {
        if let Some(link) = self.links().get(bank) {
            link.policy.notify_one();
        }
    }

    fn lockdown_changed(&self, bank: &BankId, on: bool) {
        if self.is_online(bank) && !self.send(bank, ServerMessage::Lockdown { on }) {
            tracing::warn!(%bank, "an agent missed a lockdown change; it hears it at the next resync");
        }
    }
}

/// `GET /v1/link`: upgrade to the device link.
pub async fn link(
    State(state): State<ServerState>,
    DeviceCaller(caller): DeviceCaller,
    Extension(Peer(peer)): Extension<Peer>,
    Extension(PeerCertificate(certificate)): Extension<PeerCertificate>,
    ws: WebSocketUpgrade,
) -> Response {
    let serial = certificate.serial_hex;
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| run(state, caller, peer.ip(), serial, socket))
}

async fn run(
    state: ServerState,
    caller: Caller,
    peer: std::net::IpAddr,
    serial: String,
    socket: WebSocket,
) {
    let Caller::Principal(Principal::Device { device, bank, .. }) = caller.clone() else { return };
    if let Err(e) = state.app.device_connected(&caller).await {
        tracing::error!(error = %e, %device, "could not record device connection");
        return;
    }
    let (sender, queue) = mpsc::channel(OUTBOX_DEPTH);
    let link = Link {
        id: state.hub.next.fetch_add(1, Ordering::Relaxed),
        device: device.clone(),
        serial,
        peer,
        sender: sender.clone(),
        close: Arc::default(),
        codes: Arc::default(),
        policy: Arc::default(),
        health: None,
        last_heard: state.app.now(),
    };
    let (close, codes, policy) = (link.close.clone(), link.codes.clone(), link.policy.clone());
    let (sink, mut stream) = socket.split();
    let link_id = match state.hub.register(bank.clone(), link, state.app.now()) {
        Ok(id) => id,
        Err(first) => return refused_second_link(&state, &caller, first, peer, sink).await,
    };
    arrived(&state, &caller).await;
    let writer = tokio::spawn(write_link(sink, queue));
    tracing::info!(%device, %bank, "device connected");
    let mut resync =
        tokio::time::interval_at(tokio::time::Instant::now() + BADGE_SYNC_EVERY, BADGE_SYNC_EVERY);
    let mut offline_sync = tokio::time::interval_at(
        tokio::time::Instant::now() + OFFLINE_SYNC_EVERY,
        OFFLINE_SYNC_EVERY,
    );
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = close.notified() => {
                let goodbye = ServerMessage::Goodbye { reason: "link ended by the server".into() };
                let _ = sender.send(goodbye).await;
                break;
            }
            _ = resync.tick() => {
                // Changes made elsewhere (the `custody` command, another server) reach the
                // kiosk within this period at the latest.
                if !resync_all(&state, &caller, &bank, &sender).await {
                    break;
                }
                continue;
            }
            () = policy.notified() => {
                if !send_policy(&state, &bank, &sender).await {
                    break;
                }
                continue;
            }
            // The list's sync deadline moves on with every sync, and codes that expired or
            // were used elsewhere leave it.
            () = offline_due(&codes, &mut offline_sync) => {
                if !send_offline_list(&state, &bank, &sender).await {
                    break;
                }
                continue;
            }
        };
        let Some(frame) = frame else { break };
        // Nothing reaches a link that is no longer the bank's link in charge.
        if !state.hub.in_charge(&bank, link_id) {
            break;
        }
        state.hub.heard(&bank, link_id, state.app.now());
        let text = match frame {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let message = match serde_json::from_str::<AgentMessage>(&text) {
            Ok(m) => m,
            Err(e) => {
                // The frame may hold a typed code: log the error, never the frame.
                tracing::warn!(%device, error = ?e.classify(), "unreadable device message");
                continue;
            }
        };
        if let AgentMessage::Health(report) = message {
            if report.boards.iter().any(|b| !b.answering) || report.interlocked {
                tracing::warn!(%device, ?report, "agent reports trouble");
            }
            state.hub.set_health(&bank, link_id, state.app.now(), report);
            continue;
        }
        if !handle(&state, &caller, &bank, &sender, message).await {
            break;
        }
    }
    state.hub.unregister(&bank, link_id, state.app.now());
    drop(sender);
    writer.abort();
    tracing::info!(%device, %bank, "device disconnected");
}

/// Sends what is queued for the agent, in order, until the link ends.
async fn write_link(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<ServerMessage>,
) {
    while let Some(message) = queue.recv().await {
        let Ok(text) = serde_json::to_string(&message) else { continue };
        if sink.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

/// A second link with the identity of a live one: a copied key or certificate, or a host
/// behind the same address. The established link stays in charge; the conflict is audited and
/// raised, and the newcomer is told nothing but goodbye.
async fn refused_second_link(
    state: &ServerState,
    caller: &Caller,
    first: std::net::IpAddr,
    second: std::net::IpAddr,
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
) {
    let Caller::Principal(Principal::Device { device, .. }) = caller else { return };
    tracing::error!(%device, %first, %second, "one device identity connected twice; the newcomer is refused");
    if let Err(e) = state.app.device_conflict(caller, &first.to_string(), &second.to_string()).await
    {
        tracing::error!(error = %e, "could not record a device conflict");
    }
    let goodbye =
        ServerMessage::Goodbye { reason: "this device's identity is connected already".into() };
    if let Ok(text) = serde_json::to_string(&goodbye) {
        let _ = sink.send(Message::Text(text.into())).await;
    }
    let _ = sink.close().await;
}

/// A link registered: an agent back from an outage that raised `device_offline` says so on the
/// alert.
async fn arrived(state: &ServerState, caller: &Caller) {
    let Caller::Principal(Principal::Device { bank, site, .. }) = caller else { return };
    if state.hub.arrived(bank)
        && let Err(e) = state.app.device_back(site, bank).await
    {
        tracing::error!(error = %e, %bank, "could not note an agent back online");
    }
}

/// Handles one agent message; `false` ends the link.
async fn handle(
    state: &ServerState,
    caller: &Caller,
    bank: &BankId,
    sender: &mpsc::Sender<ServerMessage>,
    message: AgentMessage,
) -> bool {
    // When the question arrived: kiosk answers are held to `KIOSK_ANSWER_FLOOR` from here.
    let received = tokio::time::Instant::now();
    match message {
        AgentMessage::Hello { protocol, agent_version } => {
            welcome(state, caller, bank, sender, protocol, &agent_version).await
        }
        AgentMessage::Offline(used) => {
            let id = used.id.clone();
            match state.app.reconcile_offline(caller, used).await {
                Ok(()) => sender.send(ServerMessage::OfflineAck { id }).await.is_ok(),
                Err(e) => {
                    // Not acknowledged: the agent sends it again after its next welcome.
                    tracing::error!(error = %e, "an offline use was not recorded");
                    true
                }
            }
        }
        AgentMessage::BadgeRead { request_id, badge } => {
            let outcome = state.app.redeem_badge(caller, &badge.number, &badge.reader).await;
            answer_pickup(sender, request_id, outcome, received).await
        }
        AgentMessage::PickupAttempt { request_id, code } => {
            let code = zeroize::Zeroizing::new(code);
            let outcome = state.app.redeem_code(caller, &code).await;
            answer_pickup(sender, request_id, outcome, received).await
        }
        AgentMessage::QrPickup { request_id, token } => {
            let token = zeroize::Zeroizing::new(token);
            let outcome = state.app.redeem_qr(caller, &token).await;
            answer_pickup(sender, request_id, outcome, received).await
        }
        AgentMessage::Courier { request_id, credential, action } => {
            let (answer, command) = courier(state, caller, &credential, action).await;
            tokio::time::sleep_until(received + KIOSK_ANSWER_FLOOR).await;
            if sender.send(ServerMessage::Courier { request_id, answer }).await.is_err() {
                return false;
            }
            match command {
                Some(c) => sender.send(ServerMessage::Open(c)).await.is_ok(),
                None => true,
            }
        }
        AgentMessage::DoorReport { compartment, door, counter } => {
            if let Err(e) = state.app.door_report(caller, compartment, door).await {
                tracing::warn!(error = %e, compartment, counter, "door report not recorded");
            }
            true
        }
        AgentMessage::Sensor { kind, compartment, at_ms, counter } => {
            let raised = match AlertKind::parse(&kind) {
                Some(kind) => {
                    let at = Timestamp::from_millis(at_ms);
                    state.app.sensor_reading(caller, kind, compartment, at, counter).await
                }
                None => Err(AppError::Invalid("unknown alert kind".into())),
            };
            let taken = match raised {
                Ok(_) => true,
                Err(e) => {
                    // A reading that cannot be recorded is an operator's business: it may be
                    // the one that mattered.
                    let kind: String = kind.chars().take(32).collect();
                    tracing::error!(error = %e, %kind, counter, "a sensor reading was not recorded");
                    // One the server will never take (a kind or compartment it does not know)
                    // is acknowledged all the same: sent again it would be refused again.
                    matches!(e, AppError::Invalid(_) | AppError::Forbidden)
                }
            };
            // Any lockdown the reading engaged was queued before this, so the agent hears it
            // before it lets go of its own.
            !taken || sender.send(ServerMessage::SensorAck { counter }).await.is_ok()
        }
        // Kept by the link loop, which knows which link it came over.
        AgentMessage::Health(_) => true,
        AgentMessage::Renew { csr_pem } => match state.app.renew_device(caller, &csr_pem).await {
            Ok(certificate_pem) => {
                sender.send(ServerMessage::Renewed { certificate_pem }).await.is_ok()
            }
            Err(e) => {
                tracing::warn!(error = %e, "a device's certificate was not renewed");
                true
            }
        },
        AgentMessage::CommandResult { nonce, outcome } => {
            if let Err(e) = state.app.command_result(caller, &nonce, &outcome).await {
                tracing::warn!(error = %e, "command result not recorded");
            }
            true
        }
    }
}

/// Answers an agent's hello: its welcome, then its site's badges, its bank's offline list and
/// its policy; `false` ends the link.
async fn welcome(
    state: &ServerState,
    caller: &Caller,
    bank: &BankId,
    sender: &mpsc::Sender<ServerMessage>,
    protocol: u32,
    agent_version: &str,
) -> bool {
    if protocol != PROTOCOL_VERSION {
        let _ = sender
            .send(ServerMessage::Goodbye {
                reason: format!(
                    "protocol {protocol} not supported; server speaks {PROTOCOL_VERSION}"
                ),
            })
            .await;
        return false;
    }
    let compartments = match state.app.bank_compartment_numbers(bank).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot list compartments for a device");
            return false;
        }
    };
    let Caller::Principal(Principal::Device { device, .. }) = caller else { return false };
    let presence_key = match state.app.presence_key(bank) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "cannot derive a bank's presence key");
            return false;
        }
    };
    let locked_down = match state.app.is_locked_down(bank).await {
        Ok(on) => on,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a bank's lockdown for its device");
            return false;
        }
    };
    tracing::info!(%device, agent_version = %agent_version.chars().take(32).collect::<String>(), "hello");
    let welcome = ServerMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        device: device.to_string(),
        bank: bank.to_string(),
        compartments,
        server_time_ms: state.app.now().as_millis(),
        presence_key,
        locked_down,
    };
    if sender.send(welcome).await.is_err() {
        return false;
    }
    send_badges(state, caller, sender).await
        && send_offline_list(state, bank, sender).await
        && send_policy(state, bank, sender).await
}

/// Sends the bank's policy (its sensor settings and its site's lockdown rules) to its agent;
/// `false` ends the link.
async fn send_policy(
    state: &ServerState,
    bank: &BankId,
    sender: &mpsc::Sender<ServerMessage>,
) -> bool {
    match state.app.bank_policy(bank).await {
        Ok(policy) => {
            sender.send(ServerMessage::Policy(crate::views::bank_policy(&policy))).await.is_ok()
        }
        Err(e) => {
            // The agent keeps the last policy it had, and the server applies the rules to
            // every reading it receives.
            tracing::error!(error = %e, "cannot read a bank's policy for its device");
            true
        }
    }
}

/// Sends the site's badge list to a newly welcomed agent; `false` ends the link.
async fn send_badges(
    state: &ServerState,
    caller: &Caller,
    sender: &mpsc::Sender<ServerMessage>,
) -> bool {
    let Caller::Principal(Principal::Device { site, .. }) = caller else { return false };
    match state.app.badge_list(site).await {
        Ok(list) => sender.send(ServerMessage::Badges(list)).await.is_ok(),
        Err(e) => {
            // Without its list the kiosk refuses every badge: it fails closed, and the next
            // change to the site's badges sends the list again.
            tracing::error!(error = %e, "cannot list a site's badges for a device");
            true
        }
    }
}

/// Sends the site's badges, the bank's lockdown and its policy again; `false` ends the link.
async fn resync_all(
    state: &ServerState,
    caller: &Caller,
    bank: &BankId,
    sender: &mpsc::Sender<ServerMessage>,
) -> bool {
    send_badges(state, caller, sender).await
        && send_lockdown(state, bank, sender).await
        && send_policy(state, bank, sender).await
}

/// Resolves when the bank's offline list is due: its codes changed, or a minute passed.
async fn offline_due(codes: &Notify, every: &mut tokio::time::Interval) {
    tokio::select! {
        () = codes.notified() => {}
        _ = every.tick() => {}
    }
}

/// Sends the bank's offline list to its agent; `false` ends the link.
async fn send_offline_list(
    state: &ServerState,
    bank: &BankId,
    sender: &mpsc::Sender<ServerMessage>,
) -> bool {
    match state.app.offline_list(bank).await {
        Ok(list) => sender.send(ServerMessage::OfflineList(list)).await.is_ok(),
        Err(e) => {
            // The agent keeps its last list until that list's deadline, then opens nothing
            // offline: it fails closed.
            tracing::error!(error = %e, "cannot list a bank's codes for its device");
            true
        }
    }
}

/// Tells an agent whether its bank is locked down; `false` ends the link.
async fn send_lockdown(
    state: &ServerState,
    bank: &BankId,
    sender: &mpsc::Sender<ServerMessage>,
) -> bool {
    match state.app.is_locked_down(bank).await {
        Ok(on) => sender.send(ServerMessage::Lockdown { on }).await.is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a bank's lockdown for its device");
            true
        }
    }
}

/// Sends the site's badge list to every connected agent of the site: called once a change to
/// its badges commits, so a revoked badge stops working at the kiosks within a round trip.
pub async fn sync_badges(state: &ServerState, site: &custody_core::SiteId) {
    let list = match state.app.badge_list(site).await {
        Ok(list) => list,
        Err(e) => {
            tracing::error!(error = %e, "cannot list a site's badges to sync its agents");
            return;
        }
    };
    match state.app.site_banks(site).await {
        Ok(banks) => {
            for bank in banks {
                if state.hub.is_online(&bank.id)
                    && !state.hub.send(&bank.id, ServerMessage::Badges(list.clone()))
                {
                    // The server still checks every read; the kiosk catches up at its next
                    // change or reconnection.
                    tracing::warn!(bank = %bank.id, "an agent missed a badge sync");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot list a site's banks to sync its agents"),
    }
}

/// Answers a pickup at the kiosk, then sends the open command if there is one. Every failure,
/// whatever it was, is the one refusal (the reason is in the audit log).
async fn answer_pickup(
    sender: &mpsc::Sender<ServerMessage>,
    request_id: u64,
    outcome: Result<PickupOutcome, AppError>,
    received: tokio::time::Instant,
) -> bool {
    let (answer, command) = match outcome {
        Ok(PickupOutcome::Accepted { compartment, command }) => {
            (PickupAnswer::Accepted { compartment: compartment.get() }, Some(command))
        }
        Ok(PickupOutcome::Refused) => (PickupAnswer::Refused, None),
        Ok(PickupOutcome::Paused) => (PickupAnswer::Paused, None),
        Err(e) => {
            tracing::error!(error = %e, "pickup attempt failed");
            (PickupAnswer::Refused, None)
        }
    };
    tokio::time::sleep_until(received + KIOSK_ANSWER_FLOOR).await;
    if sender.send(ServerMessage::Pickup { request_id, answer }).await.is_err() {
        return false;
    }
    match command {
        Some(c) => sender.send(ServerMessage::Open(c)).await.is_ok(),
        None => true,
    }
}

fn kiosk_parcel(p: &custody_app::parcels::Parcel) -> KioskParcel {
    KioskParcel {
        id: p.id.to_string(),
        // Dropped once the recipient was erased: the kiosk shows the parcel without it.
        tracking_ref: p.tracking_ref.as_ref().map(|t| t.as_str().to_owned()).unwrap_or_default(),
        size: p.size.as_str().to_owned(),
    }
}

/// A courier at the kiosk: the answer, and the open command to send after it. Every failure,
/// whatever it was, is the one refusal (the reason is in the audit log).
async fn courier(
    state: &ServerState,
    caller: &Caller,
    credential: &CourierCredential,
    action: CourierAction,
) -> (CourierAnswer, Option<SignedOpenCommand>) {
    let code = match credential {
        CourierCredential::Code { code } => CourierAt::Code(code),
        CourierCredential::Badge { badge } => {
            CourierAt::Badge { number: &badge.number, reader: &badge.reader }
        }
    };
    let parcel = |id: &str| id.parse::<custody_core::ParcelId>().ok();
    // A size the kiosk sent that is none of ours refuses the request.
    let sized = |size: Option<String>| match size {
        Some(s) => custody_core::compartment::SizeClass::parse(&s).map(Some).ok_or(()),
        None => Ok(None),
    };
    let app = &state.app;
    let outcome = match action {
        CourierAction::Visit => app.courier_visit(caller, code).await.map(|v| {
            v.map(|v| {
                let answer = CourierAnswer::Work {
                    deposits: v.deposits.iter().map(kiosk_parcel).collect(),
                    returns: v.returns.iter().map(kiosk_parcel).collect(),
                    free: v
                        .free
                        .iter()
                        .map(|(size, count)| FreeCompartments {
                            size: size.as_str().to_owned(),
                            count: *count,
                        })
                        .collect(),
                };
                (answer, None)
            })
        }),
        CourierAction::Deposit { parcel: id, size } => match (parcel(&id), sized(size)) {
            (Some(id), Ok(size)) => app.courier_deposit(caller, code, &id, size).await.map(|d| {
                d.map(|d| {
                    let compartment = d.compartment.number.get();
                    (CourierAnswer::Opening { compartment }, Some(d.command))
                })
            }),
            _ => Ok(None),
        },
        CourierAction::Confirm { parcel: id } => match parcel(&id) {
            Some(id) => app
                .courier_confirm(caller, code, &id)
                .await
                .map(|p| p.map(|_| (CourierAnswer::Done, None))),
            None => Ok(None),
        },
        CourierAction::Return { parcel: id } => match parcel(&id) {
            Some(id) => app.courier_return(caller, code, &id).await.map(|r| {
                r.map(|(_, o)| {
                    let compartment = o.compartment.number.get();
                    (CourierAnswer::Opening { compartment }, Some(o.command))
                })
            }),
            None => Ok(None),
        },
    };
    match outcome {
        Ok(Some(answer)) => answer,
        Ok(None) => (CourierAnswer::Refused, None),
        Err(e) => {
            tracing::info!(code = e.code(), "courier request refused");
            (CourierAnswer::Refused, None)
        }
    }
}
