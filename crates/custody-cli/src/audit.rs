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
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

pub(crate) async fn run(
    data: &Path,
    url: Option<&str>,
    command: Command,
) -> anyhow::Result<ExitCode> {
    let Command::Verify { quiet } = command;
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
    let verdict = verify_store(&store, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    match verdict {
        Ok(Verdict::Intact { size, root }) => {
            println!("intact: {size} entries, root {}", data_encoding::HEXLOWER.encode(&root));
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
