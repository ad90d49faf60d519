//! `custody bench`: figures measured on this machine, each beside the raw limit it is held
//! against, measured in the same run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use custody_app::parcels::PickupOutcome;
use custody_app::{App, Caller};
use custody_audit::export::{ExportedEntry, Line, verify_export};
use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Target};
use custody_core::{BankId, CompartmentId, ManualClock, ParcelId, PersonId, SiteId, Timestamp};
use custody_crypto::{Rng, SystemClock};
use custody_proto::device::DoorReading;
use custody_store::{Store, StoreError};
use futures_util::FutureExt as _;
use indicatif::{ProgressBar, ProgressStyle};

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// The audit log on SQLite: durable appends per second and acknowledgement latency with
    /// group commit, beside the raw batched insert rate of the same rows; full verification
    /// time; inclusion proof size and offline verification time of one exported entry.
    Audit(AuditArgs),
    /// Pickup codes that fail at the kiosk: the time to each answer by kind of failure
    /// (malformed, unknown, used, revoked, expired) through the real use case on a durable
    /// SQLite store, and whether the kinds can be told apart, beside one bare durable commit.
    Kiosk(KioskArgs),
    /// Password sign-ins that fail: the time to each answer for a real account with a wrong
    /// password and for an unknown address, through the real use case, and whether the two can
    /// be told apart, beside one bare Argon2 verification.
    SignIn(SignInArgs),
    /// Tamper alerts: the time from a reading at a bank's agent to the site's webhook and to
    /// its syslog receiver, under bursts of alerts, beside one bare webhook POST, one bare
    /// syslog message and one bare durable commit.
    Alerts(crate::bench_alerts::AlertsArgs),
}

/// `custody bench sign-in`.
#[derive(Debug, clap::Args)]
pub(crate) struct SignInArgs {
    /// Sign-ins of each kind (as many accounts are made first, each taking a password hash).
    #[arg(long, default_value_t = 200)]
    attempts: u64,
    /// Print one JSON object of the figures instead of a report.
    #[arg(long)]
    json: bool,
}

/// `custody bench kiosk`.
#[derive(Debug, clap::Args)]
pub(crate) struct KioskArgs {
    /// Attempts of each kind of failure.
    #[arg(long, default_value_t = 300)]
    attempts: u64,
    /// Print one JSON object of the figures instead of a report.
    #[arg(long)]
    json: bool,
}

/// `custody bench audit`.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// Entries appended, one unit of work each, by the concurrent writers.
    #[arg(long, default_value_t = 100_000)]
    appends: u64,
    /// Concurrent writers (callers waiting on the store at once). Each waits for its entry to
    /// be durable before it appends the next, so N writers can never offer more than N entries
    /// per commit: too few measure the callers, not the log.
    #[arg(long, default_value_t = 256)]
    writers: u64,
    /// Size of the log built for the verification measurement (10,000,000 for the target).
    #[arg(long, default_value_t = 1_000_000)]
    verify_entries: u64,
    /// Print one JSON object of the figures instead of a report.
    #[arg(long)]
    json: bool,
}

pub(crate) fn stopwatch() -> Instant {
    #[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
    Instant::now()
}

/// Ids derived from a number: entries as large as real ones, without randomness.
fn id_bytes(i: u64, kind: u8) -> [u8; 16] {
    let mut b = [kind; 16];
    b[..8].copy_from_slice(&i.to_be_bytes());
    b
}

/// A realistic entry: a failed pickup attempt by a person at a compartment, every target set.
fn event(i: u64) -> AuditEvent {
    AuditEvent::failure(
        Timestamp::from_millis(1_795_000_000_000 + i64::try_from(i).unwrap_or(i64::MAX)),
        Actor {
            kind: ActorKind::Person,
            id: Some(PersonId::from_random(id_bytes(i % 5000, 1)).to_string()),
        },
        AuditAction::PickupAttempt,
        Target {
            site: Some(SiteId::from_random(id_bytes(1, 2))),
            bank: Some(BankId::from_random(id_bytes(i % 40, 3))),
            compartment: Some(CompartmentId::from_random(id_bytes(i % 1200, 4))),
            parcel: Some(ParcelId::from_random(id_bytes(i, 5))),
        },
    )
    .because("wrong_code")
}

pub(crate) fn bar(len: u64, what: &str, json: bool) -> ProgressBar {
    let bar = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what:<12} {{bar:40}} {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a list of at most millions"
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or(Duration::ZERO)
}

#[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn per_second(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Appends `n` entries from `first`, `per_unit` to a unit of work.
async fn fill(
    store: &Store,
    first: u64,
    n: u64,
    per_unit: u64,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut i = first;
    while i < first + n {
        let end = (i + per_unit).min(first + n);
        let events: Vec<AuditEvent> = (i..end).map(event).collect();
        store
            .write(move |tx| {
                async move {
                    for e in &events {
                        tx.append_audit(e)?;
                    }
                    Ok::<_, StoreError>(())
                }
                .boxed()
            })
            .await?;
        bar.inc(end - i);
        i = end;
    }
    Ok(())
}

/// Durable appends with group commit: every writer waits for its own entry to be durable.
/// Returns how many were appended, each one's acknowledgement latency (sorted), and the time.
async fn appends(
    store: &Store,
    args: &AuditArgs,
) -> anyhow::Result<(u64, Vec<Duration>, Duration)> {
    let per_writer = args.appends / args.writers;
    let appended = per_writer * args.writers;
    let progress = bar(appended, "appending", args.json);
    let started = stopwatch();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let (store, progress) = (store.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(usize::try_from(per_writer).unwrap_or(0));
            for k in 0..per_writer {
                let e = event(w * per_writer + k);
                let t = stopwatch();
                store
                    .write(move |tx| {
                        async move {
                            tx.append_audit(&e)?;
                            Ok::<_, StoreError>(())
                        }
                        .boxed()
                    })
                    .await?;
                latencies.push(t.elapsed());
                progress.inc(1);
            }
            Ok::<_, StoreError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    latencies.sort_unstable();
    Ok((appended, latencies, elapsed))
}

/// The bare-table limit: the first `n` entries' bytes and leaf hashes again, batched into a
/// table of nothing else in a fresh database. Returns the time and the mean entry size.
async fn raw_limit(
    store: &Store,
    n: u64,
    path: &std::path::Path,
) -> anyhow::Result<(Duration, usize)> {
    let mut rows = Vec::new();
    while (rows.len() as u64) < n {
        let from = rows.len() as u64;
        let batch = store
            .read(move |tx| async move { tx.audit_leaves(from, 10_000).await }.boxed())
            .await?;
        anyhow::ensure!(!batch.is_empty(), "the log holds fewer entries than were appended");
        rows.extend(batch.into_iter().map(|s| (s.entry().encode(), s.leaf_hash)));
    }
    let entry_bytes = rows.iter().map(|(e, _)| e.len()).sum::<usize>() / rows.len().max(1);
    Ok((custody_store::bench::raw_sqlite_inserts(path, &rows).await?, entry_bytes))
}

/// Grows the log to `size` entries, lets it come to rest, and times a full verification of
/// it (what `custody audit verify` and the server's self-check do).
async fn verification(store: &Store, from: u64, size: u64, json: bool) -> anyhow::Result<Duration> {
    let progress = bar(size, "building", json);
    progress.set_position(from);
    fill(store, from, size - from, 1000, &progress).await?;
    progress.finish_and_clear();
    custody_store::bench::settle(store).await?;
    let progress = bar(size, "verifying", json);
    let started = stopwatch();
    let verdict =
        custody_app::audit::verify_store(store, None, |done, _| progress.set_position(done))
            .await?;
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    match verdict {
        custody_app::audit::Verdict::Intact { size: verified, .. } if verified == size => {
            Ok(elapsed)
        }
        other => anyhow::bail!("the benchmark's own log did not verify: {other:?}"),
    }
}

/// Exports the middle entry with its proof and times verifying it offline, as an auditor
/// would: checkpoint signature, entry bytes, readable fields, proof. Returns the proof's
/// length in hashes, the export line's size and the mean time of one verification.
async fn one_exported_entry(app: &App) -> anyhow::Result<(usize, usize, Duration)> {
    let (checkpoint, note) = app.current_checkpoint().await?;
    let index = checkpoint.size / 2;
    let stored =
        app.store().read(move |tx| async move { tx.audit_leaves(index, 1).await }.boxed()).await?;
    let stored = stored.first().context("the middle entry")?;
    let entry = stored.entry();
    let proof = app.inclusion_proof(index, checkpoint.size).await?;
    let line = serde_json::to_string(&Line::Entry(Box::new(ExportedEntry::new(&entry, &proof))))?;
    let text = format!("{}\n{line}\n", serde_json::to_string(&Line::Checkpoint { note })?);
    let verifier = app.checkpoint_verifier()?;
    let rounds = 2000_u32;
    let started = stopwatch();
    for _ in 0..rounds {
        verify_export(std::hint::black_box(&text), &verifier)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok((proof.len(), line.len(), started.elapsed() / rounds))
}

pub(crate) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let args = match command {
        Command::Audit(args) => args,
        Command::Kiosk(args) => return Box::pin(kiosk(&args)).await,
        Command::SignIn(args) => return Box::pin(sign_in(&args)).await,
        Command::Alerts(args) => return Box::pin(crate::bench_alerts::run(&args)).await,
    };
    anyhow::ensure!(
        args.writers > 0 && args.appends >= args.writers,
        "need --appends >= --writers > 0"
    );
    anyhow::ensure!(args.verify_entries >= args.appends, "need --verify-entries >= --appends");
    let tmp = tempfile::Builder::new().prefix("custody-bench-").tempdir()?;
    let data = tmp.path().join("data");
    custody_app::setup::DataDir::new(&data).init(
        &["localhost".into()],
        None,
        &SystemClock,
        &Rng::new(),
    )?;
    let (app, _, _) = crate::serve::app_for(&data, None, Arc::new(SystemClock)).await?;
    let store = app.store().clone();

    let (appended, latencies, append_time) = appends(&store, &args).await?;
    let (bare_time, entry_bytes) = raw_limit(&store, appended, &tmp.path().join("bare.db")).await?;
    let raw_time =
        custody_store::bench::raw_log_inserts(&store, appended, &tmp.path().join("raw.db")).await?;
    let verify_time = verification(&store, appended, args.verify_entries, args.json).await?;
    let (proof_hashes, line_bytes, offline) = one_exported_entry(&app).await?;

    let append_rate = per_second(appended, append_time);
    let raw_rate = per_second(appended, raw_time);
    let bare_rate = per_second(appended, bare_time);
    let verify_rate = per_second(args.verify_entries, verify_time);
    let (p50, p99, max) = (
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    let offline_us = offline.as_secs_f64() * 1e6;
    if args.json {
        let figures = serde_json::json!({
            "backend": "sqlite",
            "writers": args.writers,
            "appends": appended,
            "entry_bytes_mean": entry_bytes,
            "append_entries_per_s": append_rate.round(),
            "ack_latency_ms": { "p50": p50, "p99": p99, "max": max },
            "raw_sqlite_batch": custody_store::bench::RAW_BATCH,
            "raw_log_inserts_per_s": raw_rate.round(),
            "append_to_raw_ratio": append_rate / raw_rate,
            "bare_table_inserts_per_s": bare_rate.round(),
            "append_to_bare_table_ratio": append_rate / bare_rate,
            "verify_entries": args.verify_entries,
            "verify_s": verify_time.as_secs_f64(),
            "verify_entries_per_s": verify_rate.round(),
            "verify_10m_projected_s": 1e7 / verify_rate,
            "proof_hashes": proof_hashes,
            "proof_bytes": proof_hashes * 32,
            "export_line_bytes": line_bytes,
            "offline_verify_one_entry_us": offline_us,
        });
        println!("{figures}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("Audit log benchmark (SQLite, WAL, synchronous=FULL)");
    println!(
        "  group-commit appends  {appended} entries ({entry_bytes} B each) from {} writers: {append_rate:.0} entries/s",
        args.writers
    );
    println!("  acknowledgement       p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
    println!(
        "  raw limit             the same rows, {} entries per transaction into the same schema: {raw_rate:.0} entries/s (appends reach {:.0}% of it)",
        custody_store::bench::RAW_BATCH,
        append_rate / raw_rate * 100.0
    );
    println!(
        "  bare table            entry bytes and leaf hash only, {} per transaction: {bare_rate:.0} rows/s (appends reach {:.0}% of it)",
        custody_store::bench::RAW_BATCH,
        append_rate / bare_rate * 100.0
    );
    println!(
        "  full verification     {} entries in {:.2} s ({verify_rate:.0} entries/s; 10 million ≈ {:.0} s)",
        args.verify_entries,
        verify_time.as_secs_f64(),
        1e7 / verify_rate
    );
    println!(
        "  one exported entry    proof of {proof_hashes} hashes ({} B) in a {line_bytes} B line; offline verify {offline_us:.0} µs",
        proof_hashes * 32
    );
    println!(
        "  targets               ≥ 5,000 entries/s and ≥ 50% of raw, p99 ≤ 50 ms; 10 million verified < 10 s; offline verify < 1 ms"
    );
    Ok(ExitCode::SUCCESS)
}

/// The bench's organisation, site and bank, with `compartments` small compartments numbered
/// from 1.
pub(crate) async fn bench_bank(
    app: &App,
    compartments: u16,
) -> anyhow::Result<(custody_core::OrgId, SiteId, BankId)> {
    use custody_app::compartments::CompartmentSpec;
    use custody_core::compartment::SizeClass;
    let op = Caller::Operator;
    let org = app.create_org(&op, "Bench Living").await?.id;
    let site = app.create_site(&op, &org, "Bench House", "Europe/Berlin", None).await?.id;
    let bank = app.create_bank(&op, &site, "Lobby").await?.id;
    let specs: Vec<CompartmentSpec> = (1..=compartments)
        .map(|number| CompartmentSpec {
            number,
            size: SizeClass::Small,
            accessible: false,
            refrigerated: false,
        })
        .collect();
    app.add_compartments(&op, &bank, &specs).await?;
    Ok((org, site, bank))
}

/// The kinds of failed pickup entry whose answers must look alike (DESIGN.md §4 invariant 5),
/// each with an entry that produces it.
const FAILURE_KINDS: [&str; 5] = ["malformed", "unknown", "used", "revoked", "expired"];

/// A site with one bank and a kiosk, and an entry of every failure kind. The clock is the
/// bench's own, so it can skip the throttle windows between attempts.
async fn kiosk_site(
    app: &App,
    clock: &ManualClock,
) -> anyhow::Result<(Caller, SiteId, Vec<String>)> {
    use custody_app::parcels::ParcelSpec;
    use custody_app::people::NewPerson;
    use custody_core::compartment::SizeClass;
    let op = Caller::Operator;
    let (org, site, bank) = bench_bank(app, 6).await?;
    let carrier_id = app.create_carrier(&op, &org, "Parcelco").await?.id;
    let key = app
        .issue_api_key(&op, &carrier_id, std::slice::from_ref(&site), "depot", "the bench")
        .await?
        .token;
    let carrier = app.authenticate_api_key(&key).await?;
    let resident = NewPerson {
        org: org.clone(),
        email: "ann@bench.example".into(),
        name: "Ann Resident".into(),
        role: custody_core::person::Role::Resident,
        site: Some(site.clone()),
        carrier: None,
        password: None,
        reason: None,
    };
    let ann = app.create_person(&op, resident).await?;
    let token = app.create_enrolment_token(&op, &bank).await?;
    let device_key = custody_crypto::pki::DeviceKey::generate()?;
    let enrolment = app.enrol(&token, &device_key.csr("agent")?).await?;
    let der = custody_crypto::tls::first_cert_der(&enrolment.certificate_pem)?;
    let device = app.authenticate_device(&custody_crypto::pki::certificate_info(&der)?).await?;

    // Delivers a parcel to Ann and returns it with the code her message carries.
    let deliver = |n: u16| {
        let (app, carrier, site, bank, device, carrier_id) = (
            app.clone(),
            carrier.clone(),
            site.clone(),
            bank.clone(),
            device.clone(),
            carrier_id.clone(),
        );
        async move {
            let spec = ParcelSpec {
                site,
                carrier: carrier_id,
                recipient_email: "ann@bench.example".into(),
                tracking_ref: format!("BENCH-{n}"),
                size: SizeClass::Small,
                accessible: false,
                refrigerated: false,
            };
            let parcel = app.expect_parcel(&carrier, spec).await?.id;
            let deposit = app.start_deposit(&carrier, &parcel, &bank).await?;
            let door = deposit.compartment.number.get();
            app.door_report(&device, door, DoorReading::Open).await?;
            app.door_report(&device, door, DoorReading::Closed).await?;
            app.confirm_deposit(&carrier, &parcel).await?;
            app.notify(&parcel).await?;
            let code = sent_code(&app, &parcel).await?;
            anyhow::Ok((parcel, code))
        }
    };
    // Expired: its window passes before the others are delivered (and no sweep revokes it).
    let (_, expired) = deliver(1).await?;
    clock.advance(custody_core::time::days(8));
    // Used: picked up with its code.
    let (_, used) = deliver(2).await?;
    anyhow::ensure!(
        matches!(app.redeem_code(&device, &used).await?, PickupOutcome::Accepted { .. }),
        "the bench's pickup did not open"
    );
    // Revoked: replaced by a code sent again.
    let (parcel, revoked) = deliver(3).await?;
    app.resend_code(&Caller::Principal(custody_app::people::principal_of(&ann, None)), &parcel)
        .await?;
    // Unknown: the shape of a code, in no record. Malformed: not the shape of one.
    let entries = vec!["12 3".to_owned(), "5 00000 00000".to_owned(), used, revoked, expired];
    Ok((device, site, entries))
}

/// The pickup code in the last message queued for `parcel`.
async fn sent_code(app: &App, parcel: &ParcelId) -> anyhow::Result<String> {
    let id = parcel.clone();
    let rows = app
        .store()
        .read(move |tx| async move { tx.messages_for_parcel(&id).await }.boxed())
        .await?;
    let last = rows.last().cloned().context("no message for the parcel")?;
    let message = app.open_message(&last.into())?;
    message
        .body
        .lines()
        .find_map(|l| l.strip_prefix("Your pickup code: "))
        .map(str::to_owned)
        .context("no code in the message")
}

/// Fisher–Yates, from the system CSPRNG.
fn shuffle<T>(items: &mut [T], rng: &Rng) -> anyhow::Result<()> {
    for i in (1..items.len()).rev() {
        let j = usize::try_from(rng.below(u32::try_from(i + 1)?)?)?;
        items.swap(i, j);
    }
    Ok(())
}

/// The two-sample Kolmogorov–Smirnov statistic: the largest gap between the samples'
/// cumulative distributions. Both sorted.
fn ks_statistic(left: &[Duration], right: &[Duration]) -> f64 {
    let (mut in_left, mut in_right, mut gap) = (0, 0, 0.0_f64);
    #[allow(clippy::cast_precision_loss, reason = "sample sizes far below 2^52")]
    let (left_len, right_len) = (left.len() as f64, right.len() as f64);
    while let (Some(x), Some(y)) = (left.get(in_left), right.get(in_right)) {
        if x <= y {
            in_left += 1;
        } else {
            in_right += 1;
        }
        #[allow(clippy::cast_precision_loss, reason = "sample sizes far below 2^52")]
        let here = (in_left as f64 / left_len - in_right as f64 / right_len).abs();
        gap = gap.max(here);
    }
    gap
}

/// Times `args.attempts` entries of every kind, one kind after another in a fresh random order
/// each round; each kind's times come back sorted. The first round checks that each entry is
/// audited as the kind it stands for.
async fn kiosk_attempts(
    app: &App,
    clock: &ManualClock,
    device: &Caller,
    site: &SiteId,
    entries: &[String],
    args: &KioskArgs,
    rng: &Rng,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    use custody_core::throttle::KIOSK_PICKUP;
    let kinds = FAILURE_KINDS.len();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds];
    let progress = bar(args.attempts * kinds as u64, "attempts", args.json);
    for round in 0..args.attempts {
        let mut order: Vec<usize> = (0..kinds).collect();
        shuffle(&mut order, rng)?;
        for kind in order {
            // A kiosk window apart, and a day between rounds: no budget is ever spent, so
            // every attempt is checked.
            clock.advance(KIOSK_PICKUP.window);
            let entry = entries.get(kind).context("an entry for every kind")?;
            let started = stopwatch();
            let outcome = app.redeem_code(device, entry).await?;
            let took = started.elapsed();
            anyhow::ensure!(matches!(outcome, PickupOutcome::Refused), "an entry opened");
            if round == 0 {
                let site = site.clone();
                let last = app
                    .store()
                    .read(move |tx| async move { tx.audit_for_site(&site, 1).await }.boxed())
                    .await?;
                let reason = last.first().and_then(|r| r.event.reason.clone()).unwrap_or_default();
                let want = format!("code_{}", FAILURE_KINDS.get(kind).copied().unwrap_or_default());
                anyhow::ensure!(reason == want, "a {want} entry was audited as {reason}");
            }
            times.get_mut(kind).context("a sample for every kind")?.push(took);
            progress.inc(1);
        }
        clock.advance(custody_core::time::days(1));
    }
    progress.finish_and_clear();
    for t in &mut times {
        t.sort();
    }
    Ok(times)
}

/// The raw limit: one row committed durably to a fresh SQLite file, nothing else; 50 times,
/// sorted.
pub(crate) async fn raw_commits(dir: &std::path::Path) -> anyhow::Result<Vec<Duration>> {
    let mut raw = Vec::new();
    for i in 0..50 {
        let row = (vec![0u8; 300], vec![0u8; 32]);
        raw.push(
            custody_store::bench::raw_sqlite_inserts(&dir.join(format!("raw-{i}.db")), &[row])
                .await?,
        );
    }
    raw.sort();
    Ok(raw)
}

/// `custody bench kiosk`: every kind of failed entry, interleaved in random order so that
/// drift in the machine falls on all alike, each timed from the kiosk's question to the use
/// case's answer (the state read, the budgets spent, the audit entry durable).
/// A throw-away data directory and an application on it, on a clock the bench moves on itself
/// (to skip throttle windows), starting at the wall clock's time.
async fn app_on_manual_clock(rng: &Rng) -> anyhow::Result<(tempfile::TempDir, App, ManualClock)> {
    let tmp = tempfile::Builder::new().prefix("custody-bench-").tempdir()?;
    let data = tmp.path().join("data");
    custody_app::setup::DataDir::new(&data).init(&["localhost".into()], None, &SystemClock, rng)?;
    let clock = ManualClock::new(custody_core::Clock::now(&SystemClock));
    let (app, _, _) = crate::serve::app_for(&data, None, Arc::new(clock.clone())).await?;
    Ok((tmp, app, clock))
}

async fn kiosk(args: &KioskArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.attempts >= 10, "need --attempts of at least 10");
    let rng = Rng::new();
    let (tmp, app, clock) = app_on_manual_clock(&rng).await?;
    let (device, site, entries) = kiosk_site(&app, &clock).await?;

    let times = kiosk_attempts(&app, &clock, &device, &site, &entries, args, &rng).await?;
    let raw = raw_commits(tmp.path()).await?;

    let mut worst_ks = 0.0_f64;
    for (i, a) in times.iter().enumerate() {
        for b in times.iter().skip(i + 1) {
            worst_ks = worst_ks.max(ks_statistic(a, b));
        }
    }
    // Critical value of the two-sample test at the 1% level for equal sample sizes n:
    // 1.628 × sqrt(2 / n).
    #[allow(clippy::cast_precision_loss, reason = "sample sizes far below 2^52")]
    let critical = 1.628 * (2.0 / args.attempts as f64).sqrt();
    let medians: Vec<f64> = times.iter().map(|t| ms(percentile(t, 0.5))).collect();
    let spread = medians.iter().copied().fold(f64::MIN, f64::max)
        - medians.iter().copied().fold(f64::MAX, f64::min);
    let raw_p50 = ms(percentile(&raw, 0.5));
    // The gateway holds every kiosk answer to a floor; only an attempt slower than it could
    // show its kind in its timing.
    let floor = custody_server::gateway::KIOSK_ANSWER_FLOOR;
    let over_floor = times.iter().flatten().filter(|t| **t > floor).count();
    let slowest = ms(times.iter().filter_map(|t| t.last()).max().copied().unwrap_or_default());
    if args.json {
        let per_kind: serde_json::Map<String, serde_json::Value> = FAILURE_KINDS
            .iter()
            .zip(&times)
            .map(|(kind, t)| {
                let figures = serde_json::json!({
                    "p50_ms": ms(percentile(t, 0.5)),
                    "p90_ms": ms(percentile(t, 0.9)),
                    "p99_ms": ms(percentile(t, 0.99)),
                });
                ((*kind).to_owned(), figures)
            })
            .collect();
        let figures = serde_json::json!({
            "backend": "sqlite",
            "attempts_per_kind": args.attempts,
            "kinds": per_kind,
            "median_spread_ms": spread,
            "ks_worst_pair": worst_ks,
            "ks_critical_1pct": critical,
            "indistinguishable_at_1pct": worst_ks < critical,
            "answer_floor_ms": ms(floor),
            "attempts_over_floor": over_floor,
            "slowest_attempt_ms": slowest,
            "raw_durable_commit_p50_ms": raw_p50,
        });
        println!("{figures}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Failed pickup codes at the kiosk (SQLite, WAL, synchronous=FULL), {} of each kind",
        args.attempts
    );
    for (kind, t) in FAILURE_KINDS.iter().zip(&times) {
        println!(
            "  {kind:<10} p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.9)),
            ms(percentile(t, 0.99))
        );
    }
    println!("  medians differ by at most {spread:.3} ms");
    println!(
        "  Kolmogorov–Smirnov, worst pair of kinds (the use case alone): D = {worst_ks:.3} against {critical:.3} at 1% ({})",
        if worst_ks < critical { "indistinguishable" } else { "distinguishable" }
    );
    println!(
        "  at the kiosk          answers held to {:.0} ms after the question; slowest attempt {slowest:.2} ms, {over_floor} of {} over the floor",
        ms(floor),
        times.iter().map(Vec::len).sum::<usize>()
    );
    println!(
        "  raw limit             one row committed durably to a bare SQLite file: p50 {raw_p50:.2} ms"
    );
    Ok(ExitCode::SUCCESS)
}

/// Times `args.attempts` failed sign-ins of each kind, a real account with a wrong password and
/// an unknown address, in a fresh random order per account; both come back sorted. Each attempt
/// comes from an address of its own, and the clock moves a window on between accounts, so no
/// budget is ever spent and every attempt does the whole work.
async fn sign_in_attempts(
    app: &App,
    clock: &ManualClock,
    args: &SignInArgs,
    rng: &Rng,
) -> anyhow::Result<[Vec<Duration>; 2]> {
    use custody_app::people::NewPerson;
    use custody_app::sessions::Client;
    let op = Caller::Operator;
    let org = app.create_org(&op, "Bench Living").await?.id;
    let site = app.create_site(&op, &org, "Bench House", "Europe/Berlin", None).await?.id;
    let progress = bar(args.attempts * 3, "accounts made, then sign-ins", args.json);
    let mut emails = Vec::new();
    for n in 0..args.attempts {
        let person = NewPerson {
            org: org.clone(),
            email: format!("resident{n}@bench.example"),
            name: "Bench Resident".into(),
            role: custody_core::person::Role::Resident,
            site: Some(site.clone()),
            carrier: None,
            password: Some(zeroize::Zeroizing::new("a long bench password".into())),
            reason: None,
        };
        emails.push(app.create_person(&op, person).await?.email.as_str().to_owned());
        progress.inc(1);
    }
    let mut times = [Vec::new(), Vec::new()];
    for (n, email) in emails.iter().enumerate() {
        clock.advance(custody_core::throttle::GLOBAL_LOGIN.window);
        let mut order = [0_usize, 1];
        shuffle(&mut order, rng)?;
        for kind in order {
            let address =
                if kind == 0 { email.clone() } else { format!("nobody{n}@bench.example") };
            let client = Client::new(format!("10.{}.{}.{kind}", n / 250, n % 250), "bench");
            let started = stopwatch();
            let answer = app
                .login(&address, zeroize::Zeroizing::new("a wrong password".into()), &client)
                .await;
            let took = started.elapsed();
            let code = answer.err().map(|e| e.code());
            anyhow::ensure!(
                code == Some("authentication_failed"),
                "a sign-in was not refused as a wrong password: {code:?}"
            );
            times.get_mut(kind).context("two kinds")?.push(took);
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    for t in &mut times {
        t.sort_unstable();
    }
    Ok(times)
}

async fn sign_in(args: &SignInArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.attempts >= 10, "need --attempts of at least 10");
    let rng = Rng::new();
    let (_tmp, app, clock) = app_on_manual_clock(&rng).await?;
    let [known, unknown] = sign_in_attempts(&app, &clock, args, &rng).await?;

    // The raw limit: Argon2 alone, as many times, on a blocking thread as the use case runs it.
    let hasher = custody_crypto::password::PasswordHasher::new(&rng)?;
    let phc = hasher.hash(&rng, "a long bench password")?;
    let mut raw = Vec::new();
    for _ in 0..args.attempts {
        let (hasher, phc) = (hasher.clone(), phc.clone());
        let started = stopwatch();
        tokio::task::spawn_blocking(move || hasher.verify("a wrong password", Some(&phc))).await?;
        raw.push(started.elapsed());
    }
    raw.sort_unstable();

    let ks = ks_statistic(&known, &unknown);
    #[allow(clippy::cast_precision_loss, reason = "sample sizes far below 2^52")]
    let critical = 1.628 * (2.0 / args.attempts as f64).sqrt();
    let figures =
        |t: &[Duration]| (ms(percentile(t, 0.5)), ms(percentile(t, 0.9)), ms(percentile(t, 0.99)));
    let (k, u, r) = (figures(&known), figures(&unknown), figures(&raw));
    if args.json {
        let kind = |(p50, p90, p99): (f64, f64, f64)| serde_json::json!({ "p50_ms": p50, "p90_ms": p90, "p99_ms": p99 });
        let figures = serde_json::json!({
            "backend": "sqlite",
            "attempts_per_kind": args.attempts,
            "real_account_wrong_password": kind(k),
            "unknown_address": kind(u),
            "ks": ks,
            "ks_critical_1pct": critical,
            "indistinguishable_at_1pct": ks < critical,
            "raw_argon2_verify": kind(r),
        });
        println!("{figures}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Failed password sign-ins (SQLite, WAL, synchronous=FULL), {} of each kind",
        args.attempts
    );
    for (what, (p50, p90, p99)) in [("real account", k), ("unknown", u)] {
        println!("  {what:<13} p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms");
    }
    println!(
        "  Kolmogorov–Smirnov: D = {ks:.3} against {critical:.3} at 1% ({})",
        if ks < critical { "indistinguishable" } else { "distinguishable" }
    );
    println!(
        "  raw limit     one Argon2id verification (m = 19 MiB, t = 2) alone: p50 {:.2} ms, p99 {:.2} ms",
        r.0, r.2
    );
    Ok(ExitCode::SUCCESS)
}
