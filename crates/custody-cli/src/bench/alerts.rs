//! `custody bench alerts`: how long a tamper reading takes from a bank's agent to a site's
//! webhook and to its syslog receiver, under bursts of alerts, beside the bare cost of each
//! delivery and of one durable commit, measured in the same run.
//!
//! Everything is the real path: the agent (on simulated doors) journals the reading and sends
//! it over the mutually authenticated TLS device link; the server takes it, raises the alert
//! and queues its notifications in one unit of work on SQLite; the alert worker sends them
//! through the egress guard (webhooks signed, syslog over TLS) to receivers on loopback.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use custody_app::Caller;
use custody_app::fanout::NewEndpoint;
use custody_core::alert::{AlertKind, Channel, Severity};
use custody_crypto::{Rng, SystemClock};
use custody_server::Listen;
use custody_server::workers::Workers;

use super::measure::{bar, bench_bank, ms, percentile, raw_commits, stopwatch};
use crate::receivers::{Arrival, Receivers};

/// `custody bench alerts`.
#[derive(Debug, clap::Args)]
pub(crate) struct AlertsArgs {
    /// Readings in each burst, each at a compartment of its own (so each is an alert of its
    /// own), sent by the agent as fast as it takes them.
    #[arg(long, default_value_t = 50)]
    burst: u16,
    /// Bursts, each of another sensor kind (at most 6).
    #[arg(long, default_value_t = 4)]
    bursts: usize,
    /// Bare deliveries of each kind timed for the raw limit.
    #[arg(long, default_value_t = 50)]
    raw: u32,
    /// Print one JSON object of the figures instead of a report.
    #[arg(long)]
    json: bool,
}

/// The kinds the bursts read, in order: each raises alerts of its own at every compartment.
const KINDS: [AlertKind; 6] = [
    AlertKind::Pry,
    AlertKind::Drill,
    AlertKind::EnclosureOpen,
    AlertKind::ReaderTamper,
    AlertKind::OverrideKey,
    AlertKind::PowerLoss,
];

/// How long a burst's notifications may take before the run is called failed.
const PATIENCE: Duration = Duration::from_mins(2);

/// A server on a throw-away SQLite installation with the alert worker running, a bank of
/// `compartments` with an enrolled agent connected over TLS, and the receivers added as the
/// site's endpoints.
struct Rig {
    _tmp: tempfile::TempDir,
    _running: custody_server::Running,
    agent: custody_agent::daemon::AgentHandle,
    receivers: Receivers,
}

async fn rig(compartments: u16) -> anyhow::Result<Rig> {
    let rng = Rng::new();
    let tmp = tempfile::Builder::new().prefix("custody-bench-").tempdir()?;
    let data = tmp.path().join("data");
    let dir = custody_app::setup::DataDir::new(&data);
    dir.init(&["localhost".into(), "127.0.0.1".into()], None, &SystemClock, &rng)?;
    let clock: Arc<dyn custody_core::Clock> = Arc::new(SystemClock);
    let (app, _, _) = crate::serve::app_for(&data, None, clock.clone()).await?;
    let receivers = Receivers::start().await?;
    let workers = Workers {
        transport: None,
        sweep: false,
        poll: None,
        checkpoints: None,
        sinks: Vec::new(),
        alerts: Some(receivers.senders()?),
        heartbeats: false,
    };
    let (cert_pem, key_pem) = dir.server_tls()?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listen =
        Listen { public: any, gateway: any, cert_pem, key_pem, trusted_proxies: Vec::new() };
    let running =
        custody_server::start(app.clone(), listen, Arc::from(dir.metrics_token()?), workers)
            .await?;

    let op = Caller::Operator;
    let (_, site, bank) = bench_bank(&app, compartments).await?;
    for (channel, target) in [
        (Channel::Webhook, receivers.webhook_url.clone()),
        (Channel::Syslog, receivers.syslog_target.clone()),
    ] {
        let new = NewEndpoint { channel, target, min_severity: Severity::Low };
        if let Some(secret) = app.add_alert_endpoint(&op, &site, new).await?.secret {
            receivers.set_secret(&secret)?;
        }
    }

    let token = app.create_enrolment_token(&op, &bank).await?;
    let agent_dir = tmp.path().join("agent");
    let target = custody_agent::enrol::EnrolTarget {
        server_url: format!("https://localhost:{}", running.public.port()),
        server_ca_pem: dir.server_ca_pem()?,
        server_pin: data_encoding::HEXLOWER
            .encode(&custody_crypto::pki::spki_pin_of_pem(&dir.server_tls()?.0)?),
    };
    custody_agent::enrol::enrol(&agent_dir, &target, &token, clock.clone()).await?;
    let gateway = format!("localhost:{}", running.gateway.port());
    let setup = custody_agent::enrol::load(&agent_dir, Some(&gateway), clock.clone())?;
    let (doors, sensors) = custody_agent::hardware::SimulatedBank::new(1..=compartments);
    let agent = custody_agent::daemon::spawn(setup, Arc::new(doors), sensors, clock).await?;
    tokio::time::timeout(Duration::from_secs(20), agent.wait_ready())
        .await
        .context("the bench's agent did not connect")?;
    Ok(Rig { _tmp: tmp, _running: running, agent, receivers })
}

/// One burst: a reading of `kind` at every compartment, then every notification it makes;
/// the time from each reading to its webhook and to its syslog event.
async fn burst(
    rig: &mut Rig,
    kind: AlertKind,
    compartments: u16,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut sent = BTreeMap::new();
    for n in 1..=compartments {
        sent.insert(n, stopwatch());
        rig.agent.sensor(kind, Some(n)).await;
    }
    let (mut webhooks, mut syslog) = (Vec::new(), Vec::new());
    let wanted = usize::from(compartments);
    while webhooks.len() < wanted || syslog.len() < wanted {
        let arrival = tokio::time::timeout(PATIENCE, rig.receivers.arrivals.recv())
            .await
            .with_context(|| {
                format!(
                    "{kind}: {} of {wanted} webhooks and {} of {wanted} syslog events after {} s",
                    webhooks.len(),
                    syslog.len(),
                    PATIENCE.as_secs()
                )
            })?
            .context("the receivers stopped")?;
        let Arrival { channel, kind: got, compartment, at, authentic, .. } = arrival;
        if got != kind.as_str() {
            continue;
        }
        anyhow::ensure!(authentic, "a {channel} delivery that is not authentic");
        let started = compartment.and_then(|n| sent.get(&n)).context("an unknown compartment")?;
        let took = at.saturating_duration_since(*started);
        if channel == "webhook" {
            webhooks.push(took);
            progress.inc(1);
        } else {
            syslog.push(took);
        }
    }
    Ok((webhooks, syslog))
}

/// The bare cost of one delivery of each kind with the server's own senders, to the same
/// receivers: a signed webhook POST, and a syslog message on a fresh TLS connection.
async fn raw_deliveries(rig: &Rig, times: u32) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let senders = rig.receivers.senders()?;
    let secret = rig.receivers.secret().context("the webhook endpoint's secret")?;
    let body =
        br#"{"type":"alert.raised","data":{"id":"alr_bench","kind":"bench","compartment":1}}"#;
    let (mut webhooks, mut syslog) = (Vec::new(), Vec::new());
    for i in 0..times {
        let id = format!("msg_bench_{i}");
        let timestamp = custody_core::Clock::now(&SystemClock).as_millis() / 1000;
        let signature = secret.sign(&id, timestamp, body);
        let headers = [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        let started = stopwatch();
        senders
            .webhooks
            .post(&rig.receivers.webhook_url, &headers, body.to_vec())
            .await
            .map_err(anyhow::Error::msg)?;
        webhooks.push(started.elapsed());
        let started = stopwatch();
        let message =
            "<109>1 - localhost custody - alert - CEF:0|Custody|Custody|0|bench|bench|3|cn1=1";
        senders
            .syslog
            .send(&rig.receivers.syslog_target, message)
            .await
            .map_err(anyhow::Error::msg)?;
        syslog.push(started.elapsed());
    }
    webhooks.sort_unstable();
    syslog.sort_unstable();
    Ok((webhooks, syslog))
}

pub(crate) async fn run(args: &AlertsArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=200).contains(&args.burst), "--burst must be 1 to 200");
    anyhow::ensure!((1..=KINDS.len()).contains(&args.bursts), "--bursts must be 1 to 6");
    anyhow::ensure!(args.raw >= 1, "--raw must be at least 1");
    let mut rig = Box::pin(rig(args.burst)).await?;
    let kinds = KINDS.get(..args.bursts).unwrap_or(&KINDS);
    let total = u64::from(args.burst) * kinds.len() as u64;
    let progress = bar(total, "alerts", args.json);
    let (mut webhooks, mut syslog) = (Vec::new(), Vec::new());
    for &kind in kinds {
        let (w, s) = burst(&mut rig, kind, args.burst, &progress).await?;
        webhooks.extend(w);
        syslog.extend(s);
    }
    progress.finish_and_clear();
    webhooks.sort_unstable();
    syslog.sort_unstable();
    let (raw_webhook, raw_syslog) = raw_deliveries(&rig, args.raw).await?;
    let commit_dir = tempfile::Builder::new().prefix("custody-bench-").tempdir()?;
    let commits = raw_commits(commit_dir.path()).await?;

    let figures = |t: &[Duration]| {
        (
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.9)),
            ms(percentile(t, 0.99)),
            ms(t.last().copied().unwrap_or_default()),
        )
    };
    let (w, s) = (figures(&webhooks), figures(&syslog));
    let (rw, rs, rc) = (figures(&raw_webhook), figures(&raw_syslog), figures(&commits));
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    if args.json {
        let kind = |(p50, p90, p99, max): (f64, f64, f64, f64)| serde_json::json!({ "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max });
        let figures = serde_json::json!({
            "backend": "sqlite",
            "bursts": names,
            "readings_per_burst": args.burst,
            "reading_to_webhook": kind(w),
            "reading_to_syslog": kind(s),
            "raw_webhook_post": kind(rw),
            "raw_syslog_message": kind(rs),
            "raw_durable_commit": kind(rc),
        });
        println!("{figures}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Alerts from a reading at the agent to the receivers (SQLite, WAL, synchronous=FULL; TLS \
         device link; receivers on loopback)"
    );
    println!(
        "  {} bursts of {} readings ({}), each reading an alert of its own",
        kinds.len(),
        args.burst,
        names.join(", ")
    );
    for (what, (p50, p90, p99, max)) in [("to webhook", w), ("to syslog", s)] {
        println!("  {what:<11} p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
    }
    println!("  raw limit, each alone, {} times:", args.raw);
    for (what, (p50, _, p99, _)) in [
        ("one signed webhook POST", rw),
        ("one syslog message on a new TLS connection", rs),
        ("one durable SQLite commit", rc),
    ] {
        println!("    {what:<44} p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
    Ok(ExitCode::SUCCESS)
}
