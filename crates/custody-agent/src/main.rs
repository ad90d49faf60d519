//! `custody-agent`: the agent of one locker bank, on its own. It links the agent and nothing of
//! the server: no database driver, no use cases, no portal, so it fits a bank's controller.
#![allow(clippy::print_stderr, reason = "a command-line tool reports a failure to start on stderr")]

use std::process::ExitCode;

use clap::Parser;

/// Custody agent: drives one locker bank's locks, sensors, badge reader and kiosk, and keeps
/// its link to the server.
#[derive(Debug, Parser)]
#[command(name = "custody-agent", version)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "CUSTODY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: custody_agent::cli::Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    // The agent's key, certificate and journal are its owner's alone, whatever the umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(custody_agent::cli::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
