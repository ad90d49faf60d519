//! `custody serve`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use custody_app::setup::DataDir;
use custody_app::{App, AppConfig};
use custody_crypto::SystemClock;
use custody_server::config::Config;
use custody_server::workers::Workers;
use custody_server::{Listen, start};

/// Loads the configuration and keys, opens the store and assembles the application, sealing
/// first what an earlier version stored in clear.
pub(crate) async fn app_for(
    data: &Path,
    url: Option<&str>,
    clock: Arc<dyn custody_core::Clock>,
) -> anyhow::Result<(App, Config, DataDir)> {
    // Boxed: opening and sealing make a large future, and every command awaits this one.
    Box::pin(assemble(data, url, clock)).await
}

async fn assemble(
    data: &Path,
    url: Option<&str>,
    clock: Arc<dyn custody_core::Clock>,
) -> anyhow::Result<(App, Config, DataDir)> {
    let dir = DataDir::new(data);
    if !dir.is_initialised() {
        anyhow::bail!(
            "{} is not initialised; run `custody --data-dir {} init` first",
            data.display(),
            data.display()
        );
    }
    let config = Config::load(&dir.config_path())?;
    config.validate()?;
    let keys = dir.load_keys()?;
    let store = crate::open_store(data, url).await?;
    let app_config = AppConfig {
        public_url: config.server.public_url.clone(),
        gateway_address: config.server.gateway_address.clone(),
        notification_channel: config.notifications.channel.clone(),
        lockdown_lift_needs_approval: config.security.lockdown_lift_approval,
        remote_opens: config.security.remote_opens(),
        ..AppConfig::default()
    };
    let app = App::new(store, clock, keys, app_config)?;
    seal_in_place(&app).await?;
    Ok((app, config, dir))
}

/// Seals what an earlier version stored in clear before anything else runs, with progress.
/// Nothing to do (the usual case) costs one count.
async fn seal_in_place(app: &App) -> anyhow::Result<()> {
    let bar = crate::progress::bar("sealing {bar:40} {pos}/{len} rows ({eta} left)");
    let sealed = app
        .seal_personal_data(500, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await
        .context("sealing personal data stored in clear by an earlier version")?;
    bar.finish_and_clear();
    if sealed > 0 {
        eprintln!(
            "sealed {sealed} rows of personal data an earlier version stored in clear (names, \
             addresses, phone numbers, badge hints, tracking numbers, notes on alerts)"
        );
    }
    Ok(())
}

pub(crate) async fn run(data: &Path, url: Option<&str>) -> anyhow::Result<ExitCode> {
    let (app, config, dir) = app_for(data, url, Arc::new(SystemClock)).await?;
    let (cert_pem, key_pem) = dir.server_tls()?;
    let workers = Workers {
        transport: Some(config.transport(data)?),
        sweep: true,
        poll: None,
        checkpoints: Some(dir.checkpoint_dir()),
        sinks: config.checkpoint_sinks()?,
        alerts: Some(config.alert_senders(data)?),
        heartbeats: true,
    };
    let listen = Listen {
        public: config.server.listen,
        gateway: config.server.gateway_listen,
        cert_pem,
        key_pem,
        trusted_proxies: config.server.trusted_proxies.clone(),
    };
    let running = start(app, listen, Arc::from(dir.metrics_token()?), workers)
        .await
        .context("starting the listeners")?;
    println!(
        "Custody is serving https://{} (portal at {}/portal) and the device gateway on {}",
        running.public, config.server.public_url, running.gateway
    );
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    println!("Stopping.");
    Ok(ExitCode::SUCCESS)
}
