//! Delivering residents' queued messages (`custody_app::outbox`).
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
            for cert in custody_crypto::pki::certs_from_pem(pem)
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
