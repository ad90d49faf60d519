//! `custody demo`: a complete site on this machine.
//!
//! A fresh data directory (keys, CA, certificates), a server on loopback with real TLS, three
//! locker banks whose agents enrol over HTTPS with single-use tokens and connect over mutual TLS
//! (each through a network cable the tour can pull), simulated doors behind emulated lock
//! boards, and e-mails written to the data directory's `outbox/`.
//! `--scenario tour` then tells the whole story through the real API and device link and exits
//! non-zero at the first step that misbehaves.

#![allow(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing by key yields Null rather than panicking, and the bank list always holds the three banks `start` made"
)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use custody_agent::daemon::AgentHandle;
use custody_agent::enrol::EnrolTarget;
use custody_agent::hardware::cable::NetworkCable;
use custody_agent::hardware::emulator::{ModbusEmulator, PtyPair, Rs485Emulator};
use custody_agent::hardware::{self, BoardDriver, Layout, SensorEvent, SimulatedBank, Timing};
use custody_agent::osdp::{MemoryBus, OsdpConfig, OsdpReader, SimulatedReader};
use custody_app::compartments::CompartmentSpec;
use custody_app::fanout::NewEndpoint;
use custody_app::people::NewPerson;
use custody_app::sessions::Client;
use custody_app::setup::DataDir;
use custody_app::{App, AppConfig, Caller};
use custody_core::alert::{Channel, Severity};
use custody_core::compartment::{DoorState, SizeClass};
use custody_core::person::Role;
use custody_core::time::duration_millis;
use custody_core::{BankId, CarrierId, Clock, OrgId, SiteId, Timestamp};
use custody_crypto::totp::{TotpSeed, step_at};
use custody_crypto::{Rng, SystemClock};
use custody_server::outbox::Transport;
use custody_server::workers::Workers;
use custody_server::{Listen, Running};

use crate::receivers::Receivers;
use data_encoding::BASE32_NOPAD;
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

mod tour;

/// The demo's password for every seeded person. Demo only: printed on the screen.
const DEMO_PASSWORD: &str = "custody-demo-password";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tell a story and exit instead of staying up.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// Portal and API address (port 0 picks a free port; the tour always does).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Device gateway address.
    #[arg(long, default_value = "127.0.0.1:8444")]
    gateway_listen: SocketAddr,
    /// Keep the demo's data directory (keys, database, e-mails) when it exits, to look at
    /// what it stored.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// Deposit, notify, wrong codes, pickup, QR code, app open, badges, courier, expiry,
    /// return, a bank offline and back, staff retrieval, remote open, the audit log.
    Tour,
}

/// Wall-clock time plus an offset the tour can move forward ("a week passes").
#[derive(Debug, Default)]
struct DemoClock(AtomicI64);

impl DemoClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(duration_millis(d), Ordering::SeqCst);
    }
}

impl Clock for DemoClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(
            SystemClock.now().as_millis().saturating_add(self.0.load(Ordering::SeqCst)),
        )
    }
}

fn free_port(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let listener = TcpListener::bind(addr).context("finding a free port")?;
    Ok(listener.local_addr()?)
}

struct Bank {
    id: BankId,
    name: &'static str,
    /// The doors, behind emulated lock boards that the agent's real driver talks to over a
    /// pseudo-terminal pair.
    doors: SimulatedBank,
    boards: EmulatedBoards,
    agent: Arc<AgentHandle>,
    /// The page its touch screen shows, served by the agent.
    kiosk: custody_agent::kiosk::Kiosk,
    /// Its network cable: the agent reaches the gateway through it, and the tour pulls it.
    cable: NetworkCable,
    /// The bank's badge reader on OSDP (the Lobby's): the agent's driver and a simulated
    /// reader, talking libosdp over an in-memory line with Secure Channel.
    reader: Option<(OsdpReader, SimulatedReader)>,
}

/// A bank's emulated boards (one kind or the other) and their line; dropping them ends both.
struct EmulatedBoards {
    line: PtyPair,
    rs485: Option<Rs485Emulator>,
    modbus: Option<ModbusEmulator>,
}

impl EmulatedBoards {
    /// The boards of an 8-compartment bank on a line of their own, and the agent's driver for
    /// them: RS-485 lock boards, or Modbus relay boards with `modbus`.
    async fn start(
        dir: &Path,
        doors: &SimulatedBank,
        modbus: bool,
    ) -> anyhow::Result<(Self, BoardDriver, tokio::sync::mpsc::UnboundedReceiver<SensorEvent>)>
    {
        std::fs::create_dir_all(dir)?;
        let line = PtyPair::spawn(dir).await?;
        let layout = Layout::parse("1:8")?;
        if modbus {
            let emulator = ModbusEmulator::open(&line.board, doors.clone(), layout.clone())?;
            let (driver, sensors) = hardware::modbus::open(
                &line.agent,
                hardware::modbus::BAUD,
                layout,
                Timing::default(),
            )?;
            Ok((Self { line, rs485: None, modbus: Some(emulator) }, driver, sensors))
        } else {
            let emulator = Rs485Emulator::open(&line.board, doors.clone(), layout.clone())?;
            let (driver, sensors) = hardware::rs485::open(&line.agent, layout, Timing::default())?;
            Ok((Self { line, rs485: Some(emulator), modbus: None }, driver, sensors))
        }
    }

    /// What the agent drives, and where.
    fn describe(&self) -> String {
        let kind = match (&self.rs485, &self.modbus) {
            (Some(_), _) => "an RS-485 lock board",
            (None, Some(_)) => "a Modbus RTU relay board",
            (None, None) => "no board",
        };
        format!("{kind} (emulated) on {}", self.line.agent.display())
    }
}

impl Bank {
    /// Someone opens the door of `n` (its latch released), the boards report it, and they close
    /// it again: waits until the server has heard both, as the door sensors are polled.
    async fn use_door(&self, app: &App, n: u16) -> anyhow::Result<()> {
        self.doors
            .open_door(n)
            .map_err(|e| anyhow::anyhow!("door {n} at the {}: {e}", self.name))?;
        let mut poll = Poll::new(&format!("the server to hear door {n} open"));
        loop {
            let rows = app.bank_overview(&self.id).await?;
            if rows.iter().any(|c| c.number.get() == n && c.door == DoorState::Open) {
                break;
            }
            poll.next().await?;
        }
        self.doors
            .close_door(n)
            .map_err(|e| anyhow::anyhow!("door {n} at the {}: {e}", self.name))?;
        door_shut(app, &self.id, n).await
    }
}

struct Demo {
    app: App,
    clock: Arc<DemoClock>,
    running: Running,
    site: SiteId,
    banks: Vec<Bank>,
    carrier_token: Zeroizing<String>,
    /// The staff's authenticator apps: e-mail, seed, and the step whose code was used last.
    authenticators: Vec<(&'static str, TotpSeed, std::sync::Mutex<u64>)>,
    outbox: PathBuf,
    /// The site's webhook and syslog receivers: alerts' notifications arrive there.
    receivers: tokio::sync::Mutex<Receivers>,
    data: DataDir,
    _temp: Option<tempfile::TempDir>,
}

/// The demo's staff whose role needs a second factor.
const STAFF_WITH_AUTHENTICATORS: [&str; 3] =
    ["admin@harbour.example", "ops@harbour.example", "root@harbour.example"];

/// Sets up an authenticator app for each of the demo's admins the way a person would:
/// password, begin, read the key, confirm with the app's first code.
async fn add_authenticators(
    app: &App,
    clock: &DemoClock,
) -> anyhow::Result<Vec<(&'static str, TotpSeed, std::sync::Mutex<u64>)>> {
    let client = Client::new("127.0.0.1", "custody demo");
    let mut out = Vec::new();
    for email in STAFF_WITH_AUTHENTICATORS {
        let session = app.login(email, Zeroizing::new(DEMO_PASSWORD.into()), &client).await?;
        let info = app.session(&session.token).await?;
        let enrolment = app.begin_totp(&info).await?;
        let seed = TotpSeed::from_bytes(&BASE32_NOPAD.decode(enrolment.secret.as_bytes())?)?;
        let step = step_at(clock.now().as_millis());
        let proven = app.confirm_totp(&session.token, &info, &seed.code_at(step), &client).await?;
        app.logout(&proven.session.token).await?;
        out.push((email, seed, std::sync::Mutex::new(step)));
    }
    Ok(out)
}

impl Demo {
    /// The code `email`'s authenticator app shows now. A code works once, so when this step's
    /// was used already the demo's clock moves on to the next step.
    fn authenticator_code(&self, email: &str) -> anyhow::Result<Zeroizing<String>> {
        let (_, seed, last) = self
            .authenticators
            .iter()
            .find(|(e, _, _)| *e == email)
            .with_context(|| format!("{email} has no authenticator app"))?;
        let mut last = last.lock().map_err(|_| anyhow::anyhow!("authenticator lock"))?;
        let mut step = step_at(self.clock.now().as_millis());
        if step <= *last {
            self.clock.advance(Duration::from_secs((*last + 1 - step) * 30));
            step = step_at(self.clock.now().as_millis());
        }
        *last = step;
        Ok(seed.code_at(step))
    }
}

fn compartments() -> Vec<CompartmentSpec> {
    let spec = |number, size, accessible, refrigerated| CompartmentSpec {
        number,
        size,
        accessible,
        refrigerated,
    };
    vec![
        spec(1, SizeClass::Small, false, false),
        spec(2, SizeClass::Small, false, false),
        spec(3, SizeClass::Small, true, false),
        spec(4, SizeClass::Medium, false, false),
        spec(5, SizeClass::Medium, false, false),
        spec(6, SizeClass::Medium, true, false),
        spec(7, SizeClass::Large, false, false),
        spec(8, SizeClass::ExtraLarge, false, true),
    ]
}

/// The demo's people, one of each role, all with the demo password.
async fn add_people(
    app: &App,
    org: &OrgId,
    site: &SiteId,
    carrier: &CarrierId,
) -> anyhow::Result<()> {
    let people = [
        ("root@harbour.example", "Sam Super", Role::SuperAdmin, None, None),
        ("admin@harbour.example", "Ada Admin", Role::Admin, Some(site.clone()), None),
        ("ops@harbour.example", "Olly Ops", Role::Admin, Some(site.clone()), None),
        ("audit@harbour.example", "Abe Auditor", Role::Auditor, None, None),
        ("carl@parcelco.example", "Carl Courier", Role::Courier, None, Some(carrier.clone())),
        ("ann@harbour.example", "Ann Resident", Role::Resident, Some(site.clone()), None),
        ("bob@harbour.example", "Bob Resident", Role::Resident, Some(site.clone()), None),
    ];
    for (email, name, role, site, carrier) in people {
        let new = NewPerson {
            org: org.clone(),
            email: email.into(),
            name: name.into(),
            role,
            site,
            carrier,
            password: Some(Zeroizing::new(DEMO_PASSWORD.into())),
            reason: None,
        };
        app.create_person(&Caller::Operator, new).await?;
    }
    Ok(())
}

async fn start(data_arg: &Path, url: Option<&str>, args: &Args) -> anyhow::Result<Demo> {
    // The demo never touches an existing installation: it makes a fresh data directory, inside
    // --data-dir when one is given explicitly, else in the system's temporary directory.
    let temp = match data_arg.to_str() {
        Some("custody-data") | None => tempfile::Builder::new().prefix("custody-demo-").tempdir(),
        Some(_) => {
            std::fs::create_dir_all(data_arg)
                .with_context(|| format!("creating {}", data_arg.display()))?;
            tempfile::Builder::new().prefix("custody-demo-").tempdir_in(data_arg)
        }
    }
    .context("creating the demo's data directory")?;
    let data = DataDir::new(temp.path());
    let clock = Arc::new(DemoClock::default());
    data.init(&["localhost".into(), "127.0.0.1".into()], None, clock.as_ref(), &Rng::new())?;
    let store = crate::open_store(temp.path(), url).await?;
    let empty = store.read(|tx| async move { tx.orgs().await }.boxed()).await?.is_empty();
    ensure!(empty, "the database already holds data; the demo needs an empty database");

    let scenario = args.scenario.is_some();
    let public =
        free_port(if scenario { SocketAddr::from(([127, 0, 0, 1], 0)) } else { args.listen })?;
    let gateway = free_port(if scenario {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        args.gateway_listen
    })?;
    let config = AppConfig {
        public_url: format!("https://localhost:{}", public.port()),
        gateway_address: format!("localhost:{}", gateway.port()),
        notification_channel: "file".into(),
        ..AppConfig::default()
    };
    let app = App::new(store, clock.clone(), data.load_keys()?, config)?;

    let op = Caller::Operator;
    let org = app.create_org(&op, "Harbour Living").await?.id;
    let site = app.create_site(&op, &org, "Harbour House", "Europe/Berlin", None).await?.id;
    let carrier = app.create_carrier(&op, &org, "Parcelco").await?.id;
    let carrier_token = app
        .issue_api_key(&op, &carrier, std::slice::from_ref(&site), "Parcelco depot", "the demo")
        .await?
        .token;
    add_people(&app, &org, &site, &carrier).await?;
    let authenticators = add_authenticators(&app, &clock).await?;

    let receivers = Receivers::start().await?;
    for (channel, target) in [
        (Channel::Webhook, receivers.webhook_url.clone()),
        (Channel::Syslog, receivers.syslog_target.clone()),
    ] {
        let new = NewEndpoint { channel, target, min_severity: Severity::High };
        if let Some(secret) = app.add_alert_endpoint(&op, &site, new).await?.secret {
            receivers.set_secret(&secret)?;
        }
    }

    let (cert_pem, key_pem) = data.server_tls()?;
    let outbox = temp.path().join("outbox");
    let workers = Workers {
        transport: Some(Transport::File(outbox.clone())),
        sweep: true,
        poll: Some(Duration::from_millis(200)),
        checkpoints: Some(data.checkpoint_dir()),
        sinks: Vec::new(),
        // The tour moves its clock on by days; banks it takes offline on purpose are not
        // alerts.
        heartbeats: false,
        alerts: Some(receivers.senders()?),
    };
    let running = custody_server::start(
        app.clone(),
        Listen { public, gateway, cert_pem, key_pem, trusted_proxies: Vec::new() },
        Arc::from(data.metrics_token()?),
        workers,
    )
    .await?;

    let target = EnrolTarget {
        server_url: format!("https://localhost:{}", public.port()),
        server_ca_pem: data.server_ca_pem()?,
        server_pin: data_encoding::HEXLOWER
            .encode(&custody_crypto::pki::spki_pin_of_pem(&data.server_tls()?.0)?),
    };
    let mut banks = Vec::new();
    for name in ["Lobby", "Garage", "Mail room"] {
        banks.push(start_bank(&app, &site, name, &target, gateway, temp.path(), &clock).await?);
    }
    Ok(Demo {
        app,
        clock,
        running,
        site,
        banks,
        carrier_token,
        authenticators,
        outbox,
        receivers: tokio::sync::Mutex::new(receivers),
        data,
        _temp: if args.keep {
            println!("  kept:        {} (not deleted on exit)", temp.keep().display());
            None
        } else {
            Some(temp)
        },
    })
}

/// Starts one bank of the demo site: its compartments, its agent (enrolled, on emulated lock
/// boards, behind a network cable), its kiosk page, and for the Lobby a badge reader.
async fn start_bank(
    app: &App,
    site: &SiteId,
    name: &'static str,
    target: &EnrolTarget,
    gateway: SocketAddr,
    root: &Path,
    clock: &Arc<DemoClock>,
) -> anyhow::Result<Bank> {
    let op = Caller::Operator;
    let bank = app.create_bank(&op, site, name).await?.id;
    app.add_compartments(&op, &bank, &compartments()).await?;
    let token = app.create_enrolment_token(&op, &bank).await?;
    let dir = root.join(format!("agent-{}", name.to_lowercase().replace(' ', "-")));
    custody_agent::enrol::enrol(&dir, target, &token, clock.clone())
        .await
        .with_context(|| format!("enrolling the agent of {name}"))?;
    let cable = NetworkCable::lay(SocketAddr::from(([127, 0, 0, 1], gateway.port()))).await?;
    let via = format!("localhost:{}", cable.address().port());
    let setup = custody_agent::enrol::load(&dir, Some(&via), clock.clone())?;
    let (doors, _) = SimulatedBank::new(1..=8);
    let (boards, driver, sensors) =
        EmulatedBoards::start(&dir.join("line"), &doors, name == "Mail room").await?;
    let agent =
        custody_agent::daemon::spawn(setup, Arc::new(driver), sensors, clock.clone()).await?;
    tokio::time::timeout(Duration::from_secs(20), agent.wait_ready())
        .await
        .with_context(|| format!("the agent of {name} did not connect"))?;
    let reader =
        if name == "Lobby" { Some(osdp_reader(&agent, clock.clone()).await?) } else { None };
    let agent = Arc::new(agent);
    let kiosk = custody_agent::kiosk::serve(agent.clone(), "127.0.0.1:0".parse()?).await?;
    Ok(Bank { id: bank, name, doors, boards, agent, kiosk, cable, reader })
}

pub(crate) async fn run(data: &Path, url: Option<&str>, args: Args) -> anyhow::Result<ExitCode> {
    let demo = start(data, url, &args).await?;
    let base = format!("https://localhost:{}", demo.running.public.port());
    println!(
        "Custody demo: site \"Harbour House\" with banks Lobby, Garage and Mail room (8 compartments each)."
    );
    for bank in &demo.banks {
        println!(
            "  {:<12} its agent drives {}; kiosk page http://{}/",
            format!("{}:", bank.name),
            bank.boards.describe(),
            bank.kiosk.address
        );
    }
    println!(
        "  portal:      {base}/portal   (certificate from the demo's own CA: {})",
        demo.data.root().join("tls/server-ca.pem").display()
    );
    println!("  API:         {base}/api/v1   (OpenAPI at {base}/api/v1/openapi.json)");
    println!("  sign in as:  admin@harbour.example, ops@harbour.example, root@harbour.example,");
    println!("               audit@harbour.example, ann@harbour.example, bob@harbour.example,");
    println!("               carl@parcelco.example");
    println!("  password:    {DEMO_PASSWORD}");
    println!("  second factor for admin@, ops@ and root@ (add the key to an authenticator app):");
    for (email, seed, _) in &demo.authenticators {
        println!("               {email}: {}", seed.base32().as_str());
    }
    println!(
        "               root@ is a super-admin: after the code, the portal asks for a passkey"
    );
    println!("  carrier key: {}", demo.carrier_token.as_str());
    println!("  e-mails:     {}", demo.outbox.display());
    {
        let receivers = demo.receivers.lock().await;
        println!(
            "  alerts:      high and critical to the webhook {} and syslog over TLS at {}",
            receivers.webhook_url, receivers.syslog_target
        );
    }
    println!("  database:    {}", demo.app.store().backend().as_str());
    match args.scenario {
        Some(Scenario::Tour) => match tour::tour(&demo).await {
            Ok(steps) => {
                println!("Tour complete: {steps} steps, every one as expected.");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("✘ {e:#}");
                Ok(ExitCode::FAILURE)
            }
        },
        None => {
            if args.keep {
                println!("Running. Press Ctrl-C to stop.");
            } else {
                println!(
                    "Running. Press Ctrl-C to stop (the demo's data directory is deleted on exit)."
                );
            }
            tokio::signal::ctrl_c().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Bounded waiting for effects that cross a socket: at most ten seconds, in 20 ms steps.
struct Poll {
    what: String,
    tick: tokio::time::Interval,
    left: u32,
}

impl Poll {
    fn new(what: &str) -> Self {
        Self {
            what: what.to_owned(),
            tick: tokio::time::interval(Duration::from_millis(20)),
            left: 500,
        }
    }

    async fn next(&mut self) -> anyhow::Result<()> {
        if self.left == 0 {
            bail!("timed out waiting for {}", self.what);
        }
        self.left -= 1;
        self.tick.tick().await;
        Ok(())
    }
}

/// A badge reader for `agent`: the agent's OSDP driver and a simulated reader sharing a fresh
/// Secure Channel key; returns once they talk over Secure Channel.
async fn osdp_reader(
    agent: &AgentHandle,
    clock: Arc<DemoClock>,
) -> anyhow::Result<(OsdpReader, SimulatedReader)> {
    let key: [u8; 16] = Rng::new().bytes()?;
    let bus = MemoryBus::default();
    let reader = SimulatedReader::start(Box::new(bus.reader()), 0, Some(key))?;
    let config = OsdpConfig {
        address: 0,
        baud_rate: 9600,
        scbk: Zeroizing::new(key),
        commissioning_until: None,
    };
    let panel = OsdpReader::start(Box::new(bus.panel()), &config, clock, agent.badge_reader())?;
    let mut poll = Poll::new("the Lobby's badge reader to come up over Secure Channel");
    while !(panel.status().secure && reader.is_secure()) {
        poll.next().await?;
    }
    Ok((panel, reader))
}

/// Waits until the server has heard that the door of compartment `n` is shut.
async fn door_shut(app: &App, bank: &BankId, n: u16) -> anyhow::Result<()> {
    let mut poll = Poll::new(&format!("the server to hear door {n} shut"));
    loop {
        let rows = app.bank_overview(bank).await?;
        if rows.iter().any(|c| c.number.get() == n && c.door == DoorState::Closed) {
            return Ok(());
        }
        poll.next().await?;
    }
}
