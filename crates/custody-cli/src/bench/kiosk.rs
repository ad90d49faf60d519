//! `custody bench kiosk`: failed pickup codes at the kiosk, timed by kind, and whether the
//! kinds can be told apart.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use custody_app::parcels::PickupOutcome;
use custody_app::{App, Caller};
use custody_core::{ManualClock, ParcelId, SiteId};
use custody_crypto::Rng;
use custody_proto::device::DoorReading;
use futures_util::FutureExt as _;

use super::measure::{
    app_on_manual_clock, bar, bench_bank, ks_statistic, ms, percentile, raw_commits, shuffle,
    stopwatch,
};

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
    let der = custody_crypto::pki::first_cert_der(&enrolment.certificate_pem)?;
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

/// `custody bench kiosk`: every kind of failed entry, interleaved in random order so that
/// drift in the machine falls on all alike, each timed from the kiosk's question to the use
/// case's answer (the state read, the budgets spent, the audit entry durable).
pub(super) async fn run(args: &KioskArgs) -> anyhow::Result<ExitCode> {
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
