//! `custody bench audit`: the audit log's durable appends beside the raw insert rate, full
//! verification, and one exported entry's proof.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use custody_app::App;
use custody_audit::export::{ExportedEntry, Line, verify_export};
use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Target};
use custody_core::{BankId, CompartmentId, ParcelId, PersonId, SiteId, Timestamp};
use custody_crypto::{Rng, SystemClock};
use custody_store::{Store, StoreError};
use futures_util::FutureExt as _;
use indicatif::ProgressBar;

use super::measure::{bar, ms, per_second, percentile, stopwatch};

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

/// `custody bench audit`.
pub(super) async fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
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

    let (appended, latencies, append_time) = appends(&store, args).await?;
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
