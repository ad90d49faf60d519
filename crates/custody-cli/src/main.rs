//! `custody`: set up, run and operate a Custody installation.
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are the --help text people read, not rustdoc"
)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool talks on stdout and stderr"
)]

mod admin;
mod audit;
mod bench;
mod demo;
mod init;
mod progress;
mod receivers;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use custody_store::Store;

/// The version, and the cryptographic module this build runs on.
#[cfg(feature = "fips")]
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (FIPS build: AWS-LC FIPS module 4.x, FIPS 140-3 validation pending)"
);
#[cfg(not(feature = "fips"))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (AWS-LC; not a FIPS build)");

/// Custody: smart parcel lockers with a chain of custody anyone can check.
#[derive(Debug, Parser)]
#[command(name = "custody", version = VERSION, propagate_version = true)]
struct Cli {
    /// Directory holding keys, certificates, configuration and the SQLite database.
    #[arg(long, global = true, env = "CUSTODY_DATA_DIR", default_value = "custody-data")]
    data_dir: PathBuf,
    /// Database URL (`sqlite://PATH` or `postgres://…`); default: SQLite in the data directory.
    #[arg(long, global = true, env = "CUSTODY_DATABASE_URL")]
    database_url: Option<String>,
    /// Log format.
    #[arg(long, global = true, env = "CUSTODY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the data directory: keys (0600), internal CA, server certificate, configuration.
    Init(init::Args),
    /// Run the server: HTTPS API and portal, device gateway, notifications, housekeeping.
    Serve,
    /// Run or enrol the agent of one locker bank.
    #[command(subcommand)]
    Agent(custody_agent::cli::Command),
    /// Manage organisations, sites, banks, compartments, carriers and people.
    #[command(subcommand)]
    Admin(admin::Command),
    /// Run a complete site on this machine: a server and three simulated banks.
    Demo(demo::Args),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Measure this machine: figures beside the raw limits they are held against.
    #[command(subcommand)]
    Bench(bench::Command),
}

/// Opens the store the global flags select.
pub(crate) async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<Store> {
    let url = if let Some(url) = database_url {
        url.to_owned()
    } else {
        // The database holds personal data: its directory and file are the owner's alone,
        // and SQLite gives its -wal and -shm files the database file's permissions.
        custody_crypto::private_files::create_dir(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let file = data_dir.join(custody_store::SQLITE_FILE);
        custody_crypto::private_files::touch(&file)
            .with_context(|| format!("creating {}", file.display()))?;
        custody_store::sqlite_url_in(data_dir)
    };
    Store::open(&url)
        .await
        .with_context(|| "opening the database (check --database-url or CUSTODY_DATABASE_URL)")
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn main() -> ExitCode {
    // Whatever this process creates (the database, mail queued to files, checkpoints, an
    // agent's journal) is its owner's alone, on every path, whatever the shell's umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    // A FIPS build runs nothing unless its module is in FIPS mode.
    if let Err(e) = custody_crypto::fips::check() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    // A benchmark's report is its output; the servers it starts speak up only when wrong.
    let level = if matches!(cli.command, Command::Bench(_)) { "warn" } else { "info" };
    init_logging(cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (data, url) = (cli.data_dir.as_path(), cli.database_url.as_deref());
        match cli.command {
            Command::Init(args) => init::run(data, &args),
            Command::Serve => Box::pin(serve::run(data, url)).await,
            Command::Agent(cmd) => custody_agent::cli::run(cmd).await,
            Command::Admin(cmd) => Box::pin(admin::run(data, url, cmd)).await,
            Command::Demo(args) => demo::run(data, url, args).await,
            Command::Audit(cmd) => Box::pin(audit::run(data, url, cmd)).await,
            Command::Bench(cmd) => Box::pin(bench::run(cmd)).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
