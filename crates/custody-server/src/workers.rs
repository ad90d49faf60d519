//! The server's background workers (`Workers`): delivering residents' messages (`outbox`),
//! alerts' notifications (`fanout`), the housekeeping sweep, the audit log's checkpoints and
//! self-check, the edge-refusal counter's windows, and the watch on the agents' heartbeats.

use std::path::PathBuf;
use std::time::Duration;

use custody_app::App;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::outbox::{SmtpSecurity, SmtpSettings, Transport, deliver_due};

/// One housekeeping pass: expire parcels, release lapsed reservations, retry notifications,
/// escalate alerts left unacknowledged, forget counted remote opens past every window, and
/// drop personal data past its site's retention.
pub async fn sweep(app: &App) -> Result<(), custody_app::AppError> {
    let expired = app.expire_due().await?;
    let released = app.release_stale_reservations().await?;
    let notified = app.notify_pending().await?;
    let escalated = app.escalate_due().await?;
    let pruned = app.prune_remote_opens().await?;
    if expired + released + notified + escalated > 0 || pruned > 0 {
        tracing::info!(expired, released, notified, escalated, pruned, "sweep");
    }
    let kept = app.apply_retention().await?;
    if !kept.is_empty() {
        tracing::info!(
            parcels = kept.parcels,
            sessions = kept.sessions,
            messages = kept.messages,
            alert_deliveries = kept.alert_deliveries,
            "retention"
        );
    }
    Ok(())
}

/// Signs a checkpoint if the log grew and writes it to `dir` as `<size>.checkpoint`, where an
/// operator's shipping (rsync, a log forwarder, a backup) takes it off the machine. Returns the
/// size checkpointed.
pub async fn checkpoint_once(
    app: &App,
    dir: &std::path::Path,
) -> Result<Option<u64>, custody_app::AppError> {
    let Some(signed) = app.checkpoint().await? else { return Ok(None) };
    let size = signed.checkpoint.size;
    let (dir, note) = (dir.to_owned(), signed.note);
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{size:020}.checkpoint"));
        let mut file = std::fs::File::create(&path)?;
        std::io::Write::write_all(&mut file, note.as_bytes())?;
        file.sync_all()
    })
    .await
    .map_err(|e| custody_app::AppError::Invalid(e.to_string()))?
    .map_err(|e| custody_app::AppError::Invalid(format!("writing the checkpoint: {e}")))?;
    Ok(Some(size))
}

/// How often the log is checkpointed while it grows (DESIGN.md §3: at least once a second).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How often the server re-verifies its whole audit log. Each check reads every entry once;
/// at the measured verification rate a 10-million-entry log takes under twenty seconds.
pub const SELF_CHECK_EVERY: Duration = Duration::from_mins(10);

/// One periodic self-check: verifies the log against the newest checkpoint signed (shipped to
/// `dir` or stored) and raises an audit-integrity alert when something is wrong. The same
/// finding is raised once, not at every check; `last` remembers it. Returns the finding.
pub async fn self_check_once(
    app: &App,
    dir: &std::path::Path,
    last: &mut Option<String>,
) -> Result<Option<String>, custody_app::AppError> {
    let finding = app.self_check(Some(dir)).await?;
    metrics::gauge!("custody_audit_intact").set(if finding.is_some() { 0.0 } else { 1.0 });
    if let Some(problem) = &finding
        && last.as_ref() != Some(problem)
    {
        app.raise_integrity_alert(problem).await?;
    }
    last.clone_from(&finding);
    Ok(finding)
}

/// How often alerts' outbox is looked at though no alert changed here: retries falling due,
/// and alerts raised through another server.
pub const ALERTS_POLL: Duration = Duration::from_secs(1);

/// Which background workers to run.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    /// Deliver notifications with this transport.
    pub transport: Option<Transport>,
    /// Run the housekeeping sweep.
    pub sweep: bool,
    /// How often the outbox is polled.
    pub poll: Option<Duration>,
    /// Sign checkpoints into this directory.
    pub checkpoints: Option<PathBuf>,
    /// Also send each new checkpoint to these sinks.
    pub sinks: Vec<crate::ship::Sink>,
    /// Send alerts' notifications with these.
    pub alerts: Option<crate::fanout::Senders>,
    /// Watch the agents' heartbeats: end silent links, and raise `device_offline` for banks
    /// whose agents stay away ([`crate::gateway::DeviceHub::watch_heartbeats`]).
    pub heartbeats: bool,
}

impl Workers {
    /// Spawns the configured workers.
    pub fn spawn(
        self,
        app: App,
        hub: &crate::gateway::DeviceHub,
        refusals: &crate::refusals::Refusals,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        // The count of refusals at the edges is recorded as each window ends.
        let counted = refusals.clone();
        tasks.push(tokio::spawn(async move {
            // The first window ends a whole window after start: an interval's first tick is
            // at once, and would end it after the first refusal, so that the next one counted
            // as new again.
            let window = crate::refusals::WINDOW;
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + window, window);
            loop {
                every.tick().await;
                counted.flush().await;
            }
        }));
        if let Some(mut senders) = self.alerts {
            senders.refusals = Some(refusals.clone());
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                // A new alert's notifications are committed with it; the worker goes at once
                // rather than at the next tick.
                let mut changes = app.alert_changes();
                let (mut tick, mut open) = (tokio::time::interval(ALERTS_POLL), true);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        heard = changes.recv(), if open => {
                            open = !matches!(heard, Err(RecvError::Closed));
                        }
                    }
                    if let Err(e) = crate::fanout::deliver_alerts(&app, &senders).await {
                        tracing::error!(error = %e, "alert notification pass failed");
                    }
                }
            }));
        }
        if self.heartbeats {
            let (app, hub) = (app.clone(), hub.clone());
            tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(crate::gateway::HEARTBEATS_EVERY);
                loop {
                    every.tick().await;
                    hub.watch_heartbeats(&app).await;
                }
            }));
        }
        if let Some(transport) = self.transport {
            if let Transport::Smtp(SmtpSettings {
                security: SmtpSecurity::DangerPlaintext,
                host,
                ..
            }) = &transport
            {
                tracing::warn!(%host, "SMTP without TLS (danger_plaintext): use only with a relay on this machine");
            }
            let (app, every) = (app.clone(), self.poll.unwrap_or(Duration::from_secs(2)));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Err(e) = deliver_due(&app, &transport).await {
                        tracing::error!(error = %e, "outbox pass failed");
                    }
                }
            }));
        }
        if let Some(dir) = self.checkpoints {
            let (checkpointer, checkpoint_dir, sinks) = (app.clone(), dir.clone(), self.sinks);
            tasks.push(tokio::spawn(async move {
                let (app, dir) = (checkpointer, checkpoint_dir);
                let mut shipped = vec![0; sinks.len()];
                let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
                loop {
                    tick.tick().await;
                    if let Err(e) = checkpoint_once(&app, &dir).await {
                        tracing::error!(error = %e, "checkpoint failed");
                    }
                    if let Err(e) = crate::ship::ship_latest(&app, &sinks, &mut shipped).await {
                        tracing::error!(error = %e, "shipping checkpoints failed");
                    }
                }
            }));
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(SELF_CHECK_EVERY);
                let mut last = None;
                loop {
                    tick.tick().await;
                    if let Err(e) = self_check_once(&app, &dir, &mut last).await {
                        tracing::error!(error = %e, "audit self-check could not run");
                    }
                }
            }));
        }
        if self.sweep {
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::SWEEP_EVERY);
                loop {
                    tick.tick().await;
                    if let Err(e) = sweep(&app).await {
                        tracing::error!(error = %e, "sweep failed");
                    }
                }
            }));
        }
        tasks
    }
}
