//! Background workers: delivering queued notifications, the housekeeping sweep, the audit
//! log's checkpoints and self-check, alerts' notifications, and the watch on the agents'
//! heartbeats.
//!
//! Notifications are delivered from the durable outbox with retries and backoff (see
//! `custody_app::outbox`). Two transports exist: SMTP (TLS 1.3 by STARTTLS or implicit TLS,
//! plaintext only to a local relay under a `danger_` setting) and a file channel that writes
//! each message as an `.eml` file (for demos and air-gapped sites). Message contents are never
//! logged: they carry pickup codes.

use std::path::PathBuf;
use std::time::Duration;

use custody_app::App;
use custody_app::outbox::Message;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters, TlsVersion};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required (TLS 1.3).
    StartTls,
    /// TLS from the first byte (TLS 1.3), usually port 465.
    Tls,
    /// No encryption. Only for a relay on the same machine; logged loudly.
    DangerPlaintext,
}

/// Where and how to send e-mail.
#[derive(Clone)]
pub struct SmtpSettings {
    /// Relay host name.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Protection.
    pub security: SmtpSecurity,
    /// Sender, such as `Custody <lockers@example.org>`.
    pub from: String,
    /// Extra CA certificates (PEM) to trust for the relay, for private relays.
    pub ca_pem: Option<String>,
    /// Login, if the relay wants one.
    pub credentials: Option<(String, zeroize::Zeroizing<String>)>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

/// A way to deliver messages.
#[derive(Debug, Clone)]
pub enum Transport {
    /// One `.eml` file per message in this directory (created 0700, files 0600).
    File(PathBuf),
    /// An SMTP relay.
    Smtp(SmtpSettings),
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The message could not be built (bad address).
    #[error("message: {0}")]
    Message(String),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(String),
}

impl Transport {
    /// Sends one message.
    pub async fn send(&self, id: &str, message: &Message) -> Result<(), DeliveryError> {
        match self {
            Self::File(dir) => write_file(dir, id, message).await,
            Self::Smtp(s) => send_smtp(s, message).await,
        }
    }
}

fn build_email(from: &str, message: &Message) -> Result<lettre::Message, DeliveryError> {
    let from: Mailbox = from
        .parse()
        .map_err(|e: lettre::address::AddressError| DeliveryError::Message(e.to_string()))?;
    let to: Mailbox = message
        .to
        .parse()
        .map_err(|e: lettre::address::AddressError| DeliveryError::Message(e.to_string()))?;
    let builder = lettre::Message::builder().from(from).to(to).subject(message.subject.clone());
    let built = match &message.qr {
        None => builder
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(message.body.clone()),
        Some(qr) => builder.multipart(with_qr(&message.body, qr)?),
    };
    built.map_err(|e| DeliveryError::Message(e.to_string()))
}

/// Content id of the QR image inside the e-mail.
const QR_CONTENT_ID: &str = "pickup-qr";

/// The body as plain text, and as HTML with the QR code as an inline PNG image: readers that
/// show only text still have the typed code.
fn with_qr(body: &str, qr: &str) -> Result<MultiPart, DeliveryError> {
    let png = crate::qr::png(qr).map_err(DeliveryError::Message)?;
    let html = format!(
        "<!doctype html><html><body>\
         <pre style=\"font-family: sans-serif; white-space: pre-wrap\">{}</pre>\
         <p><img src=\"cid:{QR_CONTENT_ID}\" width=\"260\" height=\"260\" \
         alt=\"QR code that opens your locker once\"></p></body></html>",
        escape_html(body)
    );
    let image = lettre::message::Attachment::new_inline(QR_CONTENT_ID.to_owned()).body(
        png,
        lettre::message::header::ContentType::parse("image/png")
            .map_err(|e| DeliveryError::Message(e.to_string()))?,
    );
    Ok(MultiPart::alternative()
        .singlepart(SinglePart::plain(body.to_owned()))
        .multipart(MultiPart::related().singlepart(SinglePart::html(html)).singlepart(image)))
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn write_file(
    dir: &std::path::Path,
    id: &str,
    message: &Message,
) -> Result<(), DeliveryError> {
    let email = build_email("Custody <lockers@localhost>", message)?;
    let (dir, path) = (dir.to_owned(), dir.join(format!("{id}.eml")));
    let bytes = email.formatted();
    tokio::task::spawn_blocking(move || {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()
    })
    .await
    .map_err(|e| DeliveryError::Transport(e.to_string()))?
    .map_err(|e| DeliveryError::Transport(e.to_string()))
}

async fn send_smtp(s: &SmtpSettings, message: &Message) -> Result<(), DeliveryError> {
    let email = build_email(&s.from, message)?;
    let tls = || -> Result<TlsParameters, DeliveryError> {
        let mut params =
            TlsParameters::builder(s.host.clone()).set_min_tls_version(TlsVersion::Tlsv13);
        if let Some(pem) = &s.ca_pem {
            for cert in custody_crypto::tls::certs_from_pem(pem)
                .map_err(|e| DeliveryError::Transport(e.to_string()))?
            {
                let pem = format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    data_encoding::BASE64.encode(&cert)
                );
                params = params.add_root_certificate(
                    Certificate::from_pem(pem.as_bytes())
                        .map_err(|e| DeliveryError::Transport(e.to_string()))?,
                );
            }
        }
        params.build_rustls().map_err(|e| DeliveryError::Transport(e.to_string()))
    };
    let security = match s.security {
        SmtpSecurity::StartTls => Tls::Required(tls()?),
        SmtpSecurity::Tls => Tls::Wrapper(tls()?),
        SmtpSecurity::DangerPlaintext => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
        .port(s.port)
        .tls(security)
        .timeout(Some(Duration::from_secs(30)));
    if let Some((user, password)) = &s.credentials {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.clone(),
            password.to_string(),
        ));
    }
    builder
        .build()
        .send(email)
        .await
        .map(|_| ())
        .map_err(|e| DeliveryError::Transport(e.to_string()))
}

/// Delivers every due message once; returns how many were delivered.
pub async fn deliver_due(app: &App, transport: &Transport) -> Result<usize, custody_app::AppError> {
    let mut delivered = 0;
    loop {
        let batch = app.lease_messages(50).await?;
        if batch.is_empty() {
            return Ok(delivered);
        }
        for row in batch {
            let result = match app.open_message(&row) {
                Ok(message) => transport.send(row.id.as_str(), &message).await,
                Err(e) => Err(DeliveryError::Message(e.to_string())),
            };
            match result {
                Ok(()) => {
                    app.message_delivered(&row).await?;
                    delivered += 1;
                }
                Err(e) => {
                    tracing::warn!(message = %row.id, attempt = row.attempts + 1, error = %e, "delivery failed");
                    app.message_failed(&row, &e.to_string()).await?;
                }
            }
        }
    }
}

/// One housekeeping pass: expire parcels, release lapsed reservations, retry notifications,
/// escalate alerts left unacknowledged, forget counted remote opens past every window.
pub async fn sweep(app: &App) -> Result<(), custody_app::AppError> {
    let expired = app.expire_due().await?;
    let released = app.release_stale_reservations().await?;
    let notified = app.notify_pending().await?;
    let escalated = app.escalate_due().await?;
    let pruned = app.prune_remote_opens().await?;
    if expired + released + notified + escalated > 0 || pruned > 0 {
        tracing::info!(expired, released, notified, escalated, pruned, "sweep");
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
