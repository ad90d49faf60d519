//! `custody bench sign-in`: failed password sign-ins, timed for a real account and an unknown
//! address, and whether the two can be told apart.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use custody_app::{App, Caller};
use custody_core::ManualClock;
use custody_crypto::Rng;

use super::measure::{app_on_manual_clock, bar, ks_statistic, ms, percentile, shuffle, stopwatch};

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

pub(super) async fn run(args: &SignInArgs) -> anyhow::Result<ExitCode> {
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
