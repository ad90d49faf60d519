//! `custody bench`: figures measured on this machine, each beside the raw limit it is held
//! against, measured in the same run. One file per benchmark; `measure` holds what they share.

mod alerts;
mod audit;
mod keys;
mod kiosk;
mod measure;
mod sign_in;

use std::process::ExitCode;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// The audit log on SQLite: durable appends per second and acknowledgement latency with
    /// group commit, beside the raw batched insert rate of the same rows; full verification
    /// time; inclusion proof size and offline verification time of one exported entry.
    Audit(audit::AuditArgs),
    /// Pickup codes that fail at the kiosk: the time to each answer by kind of failure
    /// (malformed, unknown, used, revoked, expired) through the real use case on a durable
    /// SQLite store, and whether the kinds can be told apart, beside one bare durable commit.
    Kiosk(kiosk::KioskArgs),
    /// Password sign-ins that fail: the time to each answer for a real account with a wrong
    /// password and for an unknown address, through the real use case, and whether the two can
    /// be told apart, beside one bare Argon2 verification.
    SignIn(sign_in::SignInArgs),
    /// Tamper alerts: the time from a reading at a bank's agent to the site's webhook and to
    /// its syslog receiver, under bursts of alerts, beside one bare webhook POST, one bare
    /// syslog message and one bare durable commit.
    Alerts(alerts::AlertsArgs),
    /// Personal data at rest: a signed-in request opening its person (key unwrapped, address
    /// and name opened) beside a bare AES-256-GCM seal of the same bytes; a key rotation over
    /// many subjects beside the bare re-wrapping of keys in memory.
    Keys(keys::KeysArgs),
}

/// Runs one benchmark.
pub(crate) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Audit(args) => Box::pin(audit::run(&args)).await,
        Command::Kiosk(args) => Box::pin(kiosk::run(&args)).await,
        Command::SignIn(args) => Box::pin(sign_in::run(&args)).await,
        Command::Alerts(args) => Box::pin(alerts::run(&args)).await,
        Command::Keys(args) => Box::pin(keys::run(&args)).await,
    }
}
