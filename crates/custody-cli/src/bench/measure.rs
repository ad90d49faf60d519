//! What the benchmarks share: timing, percentiles, progress, the raw commit they are held
//! against, and the site they measure on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_app::{App, Caller};
use custody_core::{BankId, ManualClock, SiteId};
use custody_crypto::{Rng, SystemClock};
use indicatif::{ProgressBar, ProgressStyle};

/// Now, on the monotonic clock, for timing what a benchmark measures.
pub(super) fn stopwatch() -> Instant {
    #[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
    Instant::now()
}

/// A progress bar on standard error, hidden when the figures are printed as JSON or nobody
/// watches.
pub(super) fn bar(len: u64, what: &str, json: bool) -> ProgressBar {
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

/// The `p` quantile (0 to 1) of sorted durations, nearest rank.
pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
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

/// A rate.
#[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
pub(super) fn per_second(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Milliseconds, for reports.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The bench's organisation, site and bank, with `compartments` small compartments numbered
/// from 1.
pub(super) async fn bench_bank(
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

/// The raw limit: one row committed durably to a fresh SQLite file, nothing else; 50 times,
/// sorted.
pub(super) async fn raw_commits(dir: &std::path::Path) -> anyhow::Result<Vec<Duration>> {
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

/// A throw-away data directory and an application on it, on a clock the bench moves on itself
/// (to skip throttle windows), starting at the wall clock's time.
pub(super) async fn app_on_manual_clock(
    rng: &Rng,
) -> anyhow::Result<(tempfile::TempDir, App, ManualClock)> {
    let tmp = tempfile::Builder::new().prefix("custody-bench-").tempdir()?;
    let data = tmp.path().join("data");
    custody_app::setup::DataDir::new(&data).init(&["localhost".into()], None, &SystemClock, rng)?;
    let clock = ManualClock::new(custody_core::Clock::now(&SystemClock));
    let (app, _, _) = crate::serve::app_for(&data, None, Arc::new(clock.clone())).await?;
    Ok((tmp, app, clock))
}

/// Fisher–Yates, from the system CSPRNG.
pub(super) fn shuffle<T>(items: &mut [T], rng: &Rng) -> anyhow::Result<()> {
    for i in (1..items.len()).rev() {
        let j = usize::try_from(rng.below(u32::try_from(i + 1)?)?)?;
        items.swap(i, j);
    }
    Ok(())
}

/// The two-sample Kolmogorov–Smirnov statistic: the largest gap between the samples'
/// cumulative distributions. Both sorted.
pub(super) fn ks_statistic(left: &[Duration], right: &[Duration]) -> f64 {
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
