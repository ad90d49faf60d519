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
}

/// The newest checkpoint file in `dir` (names sort by size).
pub(crate) fn newest_checkpoint(dir: &Path) -> Option<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "checkpoint"))
        .collect();
    files.sort();
    files.pop()
}

/// The trusted checkpoint, verified against the key.
fn trusted(
    data: &Path,
    checkpoint: Option<std::path::PathBuf>,
    key: Option<String>,
) -> anyhow::Result<Option<custody_audit::checkpoint::Checkpoint>> {
    let Some(file) = checkpoint.or_else(|| newest_checkpoint(&data.join("checkpoints"))) else {
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
    let Command::Verify { checkpoint, key, quiet } = command;
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
