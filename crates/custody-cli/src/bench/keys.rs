//! `custody bench keys`: what keeping personal data sealed costs. A signed-in request opens its
//! person (their data key unwrapped, address and name opened), timed through the real use case
//! beside the bare AES-256-GCM work of the same bytes; and a key rotation re-wraps many
//! subjects' keys through the real use case, beside the bare re-wrapping of keys in memory.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use custody_app::Caller;
use custody_core::PersonId;
use custody_crypto::kek::{KekRing, SubjectKey};
use custody_crypto::seal::Sealer;
use custody_crypto::{MasterKey, Purpose, Rng};
use custody_store::WrappedKeyRow;
use futures_util::FutureExt as _;

use super::measure::{app_on_manual_clock, bar, per_second, percentile, stopwatch};

/// `custody bench keys`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    /// Signed-in people whose requests are timed (each account takes a password hash).
    #[arg(long, default_value_t = 50)]
    people: u64,
    /// Requests timed per person.
    #[arg(long, default_value_t = 20)]
    requests: u64,
    /// Subjects whose keys one rotation re-wraps.
    #[arg(long, default_value_t = 1_000_000)]
    subjects: u64,
    /// Print one JSON object of the figures instead of a report.
    #[arg(long)]
    json: bool,
}

/// Microseconds, for reports.
fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The time of each of `n` runs of `work`, sorted.
fn timed(n: u64, mut work: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    for _ in 0..n {
        let started = stopwatch();
        work()?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok(times)
}

/// Signed-in requests through the use case (`App::session`: the session and its person read
/// with the person's wrapped key, the key unwrapped, address and name opened), sorted.
async fn requests(app: &custody_app::App, args: &KeysArgs) -> anyhow::Result<Vec<Duration>> {
    use custody_app::people::NewPerson;
    use custody_app::sessions::Client;
    let op = Caller::Operator;
    let org = app.create_org(&op, "Bench Living").await?.id;
    let site = app.create_site(&op, &org, "Bench House", "Europe/Berlin", None).await?.id;
    let progress = bar(args.people * (2 + args.requests), "requests", args.json);
    let mut times = Vec::new();
    for n in 0..args.people {
        let person = NewPerson {
            org: org.clone(),
            email: format!("resident{n}@bench.example"),
            name: format!("Bench Resident {n}"),
            role: custody_core::person::Role::Resident,
            site: Some(site.clone()),
            carrier: None,
            password: Some(zeroize::Zeroizing::new("a long bench password".into())),
            reason: None,
        };
        let email = app.create_person(&op, person).await?.email;
        progress.inc(1);
        let client = Client::new(format!("10.{}.{}.1", n / 250, n % 250), "bench");
        let password = zeroize::Zeroizing::new("a long bench password".into());
        let session = app.login(email.as_str(), password, &client).await?;
        progress.inc(1);
        for _ in 0..args.requests {
            let started = stopwatch();
            let info = app.session(&session.token).await?;
            times.push(started.elapsed());
            anyhow::ensure!(info.person.email == email, "the request opened someone else");
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    times.sort_unstable();
    Ok(times)
}

/// Stores `n` subjects' keys wrapped under the data directory's current KEK, 10,000 to a unit.
async fn store_subject_keys(
    app: &custody_app::App,
    keks: &Arc<KekRing>,
    (n, now): (u64, custody_core::Timestamp),
    json: bool,
) -> anyhow::Result<()> {
    let rng = Rng::new();
    let progress = bar(n, "subjects", json);
    let mut left = n;
    while left > 0 {
        let chunk = left.min(10_000);
        let mut rows = Vec::new();
        for _ in 0..chunk {
            let subject = PersonId::from_random(rng.bytes()?);
            let wrapped = SubjectKey::generate(&rng)?.wrap(keks, subject.as_str())?;
            rows.push((subject, WrappedKeyRow { kek: wrapped.kek, wrapped: wrapped.bytes }));
        }
        app.store()
            .write(move |tx| {
                async move {
                    for (subject, row) in &rows {
                        tx.insert_subject_key(subject, row, now).await?;
                    }
                    Ok::<_, custody_store::StoreError>(())
                }
                .boxed()
            })
            .await?;
        left -= chunk;
        progress.inc(chunk);
    }
    progress.finish_and_clear();
    Ok(())
}

pub(super) async fn run(args: &KeysArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.people >= 1 && args.requests >= 1, "need --people and --requests");
    let rng = Rng::new();
    let (tmp, app, clock) = app_on_manual_clock(&rng).await?;
    let data = tmp.path().join("data");
    let request = requests(&app, args).await?;

    // The same bytes, bare: one AES-256-GCM seal of an address and a name; and the opening a
    // request does (a data key unwrapped under the KEK, address and name opened), alone.
    let (email, name) = (b"resident17@bench.example".as_slice(), b"Bench Resident 17".as_slice());
    let bare_key = Sealer::new(&MasterKey::generate(&rng)?, Purpose::Outbox)?;
    let iterations = args.people * args.requests;
    let bare = timed(iterations, || {
        bare_key.seal(b"ctx", email)?;
        bare_key.seal(b"ctx", name)?;
        Ok(())
    })?;
    let keks = Arc::new(custody_app::setup::DataDir::new(&data).keks()?);
    let subject = SubjectKey::generate(&rng)?;
    let wrapped = subject.wrap(&keks, "per_bench")?;
    let sealer = subject.sealer()?;
    let (sealed_email, sealed_name) = (sealer.seal(b"email", email)?, sealer.seal(b"name", name)?);
    let opening = timed(iterations, || {
        let key = SubjectKey::unwrap(&keks, "per_bench", &wrapped)?.sealer()?;
        key.open(b"email", &sealed_email)?;
        key.open(b"name", &sealed_name)?;
        Ok(())
    })?;

    // A rotation: as many subjects' keys as asked, a new KEK, every key re-wrapped under it
    // through the use case (500 to a unit of work); beside the bare re-wrapping in memory.
    let now = custody_core::Clock::now(&clock);
    store_subject_keys(&app, &keks, (args.subjects, now), args.json).await?;
    custody_app::setup::DataDir::new(&data).rotate_kek(custody_app::setup::KekHome::File, &rng)?;
    let (rotating, _, _) =
        crate::serve::app_for(&data, None, Arc::new(clock.clone())).await.context("restart")?;
    let progress = bar(args.subjects, "re-wrapped", args.json);
    let started = stopwatch();
    let moved = rotating
        .rewrap_subject_keys(&Caller::Operator, 500, |m, _| progress.set_position(m))
        .await?;
    let rotation = started.elapsed();
    progress.finish_and_clear();
    let new_ring = custody_app::setup::DataDir::new(&data).keks()?;
    let sample = args.subjects.min(100_000);
    let started = stopwatch();
    for _ in 0..sample {
        new_ring.rewrap(b"per_bench", &wrapped)?;
    }
    let bare_rewrap = started.elapsed();

    let p = |t: &[Duration], q| us(percentile(t, q));
    let figures = serde_json::json!({
        "backend": "sqlite",
        "request_p50_us": p(&request, 0.5),
        "request_p99_us": p(&request, 0.99),
        "opening_p50_us": p(&opening, 0.5),
        "bare_seal_same_bytes_p50_us": p(&bare, 0.5),
        "subjects": args.subjects,
        "rotation_s": rotation.as_secs_f64(),
        "rotation_keys_per_s": per_second(moved, rotation),
        "bare_rewrap_keys_per_s": per_second(sample, bare_rewrap),
    });
    if args.json {
        println!("{figures}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("Personal data at rest (SQLite, WAL, synchronous=FULL)");
    println!(
        "  signed-in request (session and person read, key unwrapped, address and name opened): \
         p50 {:.1} µs, p99 {:.1} µs ({} requests)",
        p(&request, 0.5),
        p(&request, 0.99),
        request.len()
    );
    println!(
        "    of which the opening alone (unwrap + two AES-256-GCM opens): p50 {:.2} µs",
        p(&opening, 0.5)
    );
    println!(
        "    raw limit: a bare AES-256-GCM seal of the same bytes (address and name): p50 {:.2} µs",
        p(&bare, 0.5)
    );
    println!(
        "  rotation of {} subjects' keys: {:.1} s, {:.0} keys/s (moved {moved})",
        args.subjects,
        rotation.as_secs_f64(),
        per_second(moved, rotation)
    );
    println!(
        "    raw limit: re-wrapping in memory alone (unwrap + wrap): {:.0} keys/s",
        per_second(sample, bare_rewrap)
    );
    Ok(ExitCode::SUCCESS)
}
