//! `custody init`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use custody_app::setup::{DataDir, SuppliedCertificate};
use custody_crypto::{Rng, SystemClock};
use custody_server::config::Config;

/// Options of `custody init`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Names and addresses the server certificate is valid for (repeat the flag).
    #[arg(long = "hostname", default_values_t = vec!["localhost".to_owned(), "127.0.0.1".to_owned()])]
    hostnames: Vec<String>,
    /// Use this certificate chain (PEM) instead of generating one; needs --tls-key and --tls-ca.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA that issued --tls-cert (PEM), for agents to trust.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub(crate) fn run(data: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let dir = DataDir::new(data);
    let supplied = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(c), Some(k), Some(a)) => {
            Some(SuppliedCertificate { cert_pem: read(c)?, key_pem: read(k)?, ca_pem: read(a)? })
        }
        _ => None,
    };
    let report = dir.init(&args.hostnames, supplied.as_ref(), &SystemClock, &Rng::new())?;
    let config_path = dir.config_path();
    if !config_path.exists() {
        std::fs::write(&config_path, Config::default().to_toml())
            .with_context(|| format!("writing {}", config_path.display()))?;
    }
    println!("Initialised {}", report.root.display());
    println!("  configuration:       {}", config_path.display());
    println!("  server key pin:      {}  (give agents this with --pin)", report.server_pin_hex);
    println!(
        "  server CA:           {}  (give agents this with --server-ca)",
        report.root.join("tls/server-ca.pem").display()
    );
    println!("  command key:         {}", report.command_key);
    println!("Next: custody --data-dir {} admin create-org \"Your organisation\"", data.display());
    Ok(ExitCode::SUCCESS)
}
