//! `custody audit`.

use std::path::Path;
use std::process::ExitCode;

use custody_app::audit::{Verdict, verify_store};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Recompute the whole audit log from its entries and compare it with the stored tree.
    ///
    /// Exit status: 0 intact, 1 tampered or damaged (the first bad entry is named), 2 could not
    /// check.
    Verify {
        /// An export file to verify offline (needs --key); without it, the database is verified.
        file: Option<std::path::PathBuf>,
        /// A signed checkpoint the log must contain (a file written by the server to its
        /// checkpoint directory and kept off the machine). Default: the newest one in
        /// DATA_DIR/checkpoints, when there is one.
        #[arg(long)]
        checkpoint: Option<std::path::PathBuf>,
        /// The checkpoint verifier key, or a file holding it. Default: DATA_DIR/keys/checkpoint.vkey.
        #[arg(long)]
        key: Option<String>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Export entries with inclusion proofs and the signed checkpoint, verifiable offline with
    /// `custody audit verify FILE --key KEY`.
    Export {
        /// Where to write.
        #[arg(long)]
        out: std::path::PathBuf,
        /// `jsonl` (JSON Lines) or `csv` (for spreadsheets; cells are safe from formulas).
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Only entries about this parcel.
        #[arg(long)]
        parcel: Option<String>,
        /// Only entries about this compartment.
        #[arg(long)]
        compartment: Option<String>,
        /// Only entries at this site.
        #[arg(long)]
        site: Option<String>,
        /// Only entries by this actor (a person's, API key's or device's id, or `operator`).
        #[arg(long)]
        person: Option<String>,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
    },
}

pub(crate) fn time(s: &str, flag: &str) -> anyhow::Result<custody_core::Timestamp> {
    let t = ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            anyhow::anyhow!("--{flag}: expected RFC 3339, such as 2026-11-21T08:00:00Z")
        })?;
    Ok(custody_core::Timestamp::from_millis(i64::try_from(t.unix_timestamp_nanos() / 1_000_000)?))
}

async fn export(data: &Path, url: Option<&str>, command: Command) -> anyhow::Result<ExitCode> {
    let Command::Export { out, format, parcel, compartment, site, person, since, until } = command
    else {
        return Ok(ExitCode::FAILURE);
    };
    anyhow::ensure!(format == "jsonl" || format == "csv", "--format must be jsonl or csv");
    let filter = custody_store::AuditFilter {
        parcel: parcel
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--parcel: {e}"))?,
        compartment: compartment
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--compartment: {e}"))?,
        site: site
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--site: {e}"))?,
        actor: person,
        since: since.as_deref().map(|s| time(s, "since")).transpose()?,
        until: until.as_deref().map(|s| time(s, "until")).transpose()?,
    };
    let (app, _, _) =
        crate::serve::app_for(data, url, std::sync::Arc::new(custody_crypto::SystemClock)).await?;
    // Reasons are free text that may name people: the file is its owner's alone.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = std::io::BufWriter::new(
        options.open(&out).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?,
    );
    let csv = format == "csv";
    if csv {
        std::io::Write::write_all(&mut file, b"index,at,actor_kind,actor_id,action,site,bank,compartment,parcel,outcome,reason,sealed_subject,entry,proof,checkpoint\r\n")?;
    }
    let mut note = String::new();
    let summary = app
        .export_audit(&filter, |line| {
            use custody_audit::export::{Line, csv_cell};
            if !csv {
                let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
                text.push('\n');
                return std::io::Write::write_all(&mut file, text.as_bytes());
            }
            match line {
                Line::Checkpoint { note: n } => {
                    note.clone_from(n);
                    Ok(())
                }
                // Only an incident's bundle has one, and it is JSON Lines.
                Line::Incident(_) => Ok(()),
                Line::Entry(e) => {
                    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
                    let cells = [
                        e.index.to_string(),
                        e.at.clone(),
                        e.actor_kind.clone(),
                        opt(&e.actor_id),
                        e.action.clone(),
                        opt(&e.site),
                        opt(&e.bank),
                        opt(&e.compartment),
                        opt(&e.parcel),
                        e.outcome.clone(),
                        opt(&e.reason),
                        opt(&e.sealed_subject),
                        e.entry.clone(),
                        e.proof.join(";"),
                        note.clone(),
                    ];
                    let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
                    std::io::Write::write_all(
                        &mut file,
                        format!("{}\r\n", row.join(",")).as_bytes(),
                    )
                }
            }
        })
        .await?;
    std::io::Write::flush(&mut file)?;
    println!(
        "exported {} entries to {}, proved against the checkpoint of {} entries",
        summary.entries,
        out.display(),
        summary.checkpoint_size
    );
    Ok(ExitCode::SUCCESS)
}

/// Verifies an export file offline.
fn verify_file(file: &Path, key: Option<&str>) -> anyhow::Result<ExitCode> {
    let Some(key) = key else {
        eprintln!(
            "error: verifying an export needs --key (the checkpoint verifier key, or a file holding it)"
        );
        return Ok(ExitCode::from(2));
    };
    let key = if Path::new(key).exists() { std::fs::read_to_string(key)? } else { key.to_owned() };
    let verifier = match custody_audit::checkpoint::NoteVerifier::parse(&key) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: --key: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let text = std::fs::read_to_string(file)?;
    match custody_audit::export::verify_export(&text, &verifier) {
        Ok(v) => {
            println!(
                "intact: {} entries, each proved in the signed checkpoint of {} entries",
                v.entries, v.checkpoint.size
            );
            if let Some(i) = v.incident {
                println!(
                    "incident {}: {} {} alert, {}; its timeline of {} events is what the log \
                     records",
                    i.id,
                    i.severity,
                    i.kind.replace('_', " "),
                    i.state,
                    i.timeline.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("TAMPERED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The trusted checkpoint, verified against the key.
fn trusted(
    data: &Path,
    checkpoint: Option<std::path::PathBuf>,
    key: Option<String>,
) -> anyhow::Result<Option<custody_audit::checkpoint::Checkpoint>> {
    let Some(file) = checkpoint
        .or_else(|| custody_app::audit::newest_checkpoint_file(&data.join("checkpoints")))
    else {
        return Ok(None);
    };
    let key = match key {
        Some(k) if Path::new(&k).exists() => std::fs::read_to_string(&k)?,
        Some(k) => k,
        None => std::fs::read_to_string(data.join("keys/checkpoint.vkey")).map_err(|e| {
            anyhow::anyhow!(
                "no --key given and {}: {e}",
                data.join("keys/checkpoint.vkey").display()
            )
        })?,
    };
    let verifier = custody_audit::checkpoint::NoteVerifier::parse(&key)?;
    let note = std::fs::read_to_string(&file)?;
    let checkpoint = verifier
        .open_checkpoint(&note, verifier.name())
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok(Some(checkpoint))
}

pub(crate) async fn run(
    data: &Path,
    url: Option<&str>,
    command: Command,
) -> anyhow::Result<ExitCode> {
    let (file, checkpoint, key, quiet) = match command {
        Command::Verify { file, checkpoint, key, quiet } => (file, checkpoint, key, quiet),
        export_command @ Command::Export { .. } => {
            return Box::pin(export(data, url, export_command)).await;
        }
    };
    if let Some(file) = file {
        return verify_file(&file, key.as_deref());
    }
    let trusted = match trusted(data, checkpoint, key) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    // Verifying needs the database only, not the keys, and changes nothing: an auditor can run
    // it on a copy.
    let url = if let Some(u) = url {
        u.to_owned()
    } else {
        let file = data.join("custody.db");
        anyhow::ensure!(
            file.exists(),
            "no database at {}; pass --data-dir or --database-url",
            file.display()
        );
        custody_store::sqlite_read_only_url_in(data)
    };
    let store = match custody_store::Store::open_read_only(&url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open the database: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} entries ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let verdict = verify_store(&store, trusted.as_ref(), |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    match verdict {
        Ok(Verdict::Intact { size, root }) => {
            println!("intact: {size} entries, root {}", data_encoding::HEXLOWER.encode(&root));
            match &trusted {
                Some(c) => println!("contains the signed checkpoint of {} entries", c.size),
                None => println!(
                    "no signed checkpoint given: a rollback to an older, consistent copy cannot be ruled out"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Verdict::Tampered(t)) => {
            println!("TAMPERED: {t}");
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("error: cannot read the audit log: {e}");
            Ok(ExitCode::from(2))
        }
    }
}
