//! Shipping signed checkpoints off the machine, so that a rollback or truncation of the
//! database is detectable against a copy it cannot reach.
//!
//! Besides the checkpoint files in `DATA_DIR/checkpoints` (for rsync, backups, a log
//! forwarder), the server sends each new checkpoint to the sinks configured in `[audit]`:
//!
//! - **syslog**: one RFC 5424 message per checkpoint, over TCP with octet-counting framing
//!   (RFC 6587 §3.4.1) or over UDP, facility `log audit`, severity `info`, app `custody`, message
//!   id `checkpoint`. The message is `size=<n> note=<base64 of the signed note>`: a signed note
//!   spans several lines, which syslog does not carry.
//! - **webhook**: an HTTP `POST` of `{"origin", "size", "note"}` as JSON; any 2xx is delivery.
//!   Redirects are not followed.
//!
//! Checkpoints are public and signed, so a sink needs no secrecy and the receiver can verify
//! what it got with the verifier key alone. Each sink gets the newest checkpoint; one that was
//! down gets the newest when it is back (a later checkpoint vouches for everything an earlier
//! one did), and is retried at every pass until then.

use std::time::Duration;

use custody_app::App;
use custody_core::Timestamp;
use data_encoding::BASE64;
use tokio::io::AsyncWriteExt as _;

/// How long one delivery may take before it counts as failed.
const SHIP_TIMEOUT: Duration = Duration::from_secs(5);

/// Syslog priority: facility 13 (log audit) × 8 + severity 6 (informational).
const SYSLOG_PRI: u8 = 13 * 8 + 6;

/// Where checkpoints go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// A syslog receiver over TCP (`tcp://host:port`).
    SyslogTcp(String),
    /// A syslog receiver over UDP (`udp://host:port`).
    SyslogUdp(String),
    /// An HTTP(S) endpoint, with the client that posts to it (built once: it holds the
    /// connection pool and the TLS configuration).
    Webhook(reqwest::Url, reqwest::Client),
}

impl Sink {
    /// Parses `tcp://host:port` or `udp://host:port` for syslog.
    pub fn syslog(spec: &str) -> Result<Self, String> {
        let (scheme, addr) = spec
            .split_once("://")
            .ok_or_else(|| format!("{spec:?}: expected tcp://host:port or udp://host:port"))?;
        let port_ok =
            addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("{spec:?}: expected host:port after {scheme}://"));
        }
        match scheme {
            "tcp" => Ok(Self::SyslogTcp(addr.to_owned())),
            "udp" => Ok(Self::SyslogUdp(addr.to_owned())),
            _ => Err(format!("{spec:?}: the scheme must be tcp or udp")),
        }
    }

    /// Parses an `https://` (or `http://`) URL for a webhook.
    pub fn webhook(spec: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(spec).map_err(|e| format!("{spec:?}: {e}"))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(format!("{spec:?}: expected an https:// URL"));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(SHIP_TIMEOUT)
            .build()
            .map_err(|e| format!("{spec:?}: {e}"))?;
        Ok(Self::Webhook(url, client))
    }

    /// How the sink is named in logs and metrics: no path or query, which may hold a token.
    pub fn label(&self) -> String {
        match self {
            Self::SyslogTcp(a) => format!("syslog+tcp://{a}"),
            Self::SyslogUdp(a) => format!("syslog+udp://{a}"),
            Self::Webhook(u, _) => {
                format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default())
            }
        }
    }

    /// Delivers one signed checkpoint.
    pub async fn ship(&self, at: Timestamp, size: u64, note: &str) -> Result<(), String> {
        let origin = note.lines().next().unwrap_or_default();
        match self {
            Self::SyslogTcp(addr) => {
                let message = syslog_message(at, origin, size, note);
                let deliver = async {
                    let mut stream = tokio::net::TcpStream::connect(addr).await?;
                    let frame = format!("{} {message}", message.len());
                    stream.write_all(frame.as_bytes()).await?;
                    stream.shutdown().await
                };
                tokio::time::timeout(SHIP_TIMEOUT, deliver)
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map_err(|e| e.to_string())
            }
            Self::SyslogUdp(addr) => {
                let message = syslog_message(at, origin, size, note);
                let deliver = async {
                    let socket = tokio::net::UdpSocket::bind(if addr.starts_with('[') {
                        "[::]:0"
                    } else {
                        "0.0.0.0:0"
                    })
                    .await?;
                    socket.send_to(message.as_bytes(), addr).await.map(|_| ())
                };
                tokio::time::timeout(SHIP_TIMEOUT, deliver)
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map_err(|e| e.to_string())
            }
            Self::Webhook(url, client) => {
                let body = serde_json::json!({ "origin": origin, "size": size, "note": note });
                let response =
                    client.post(url.clone()).json(&body).send().await.map_err(|e| e.to_string())?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("answered {}", response.status()))
                }
            }
        }
    }
}

/// The RFC 5424 message for a checkpoint of the log `origin` (`host/custody-audit`).
pub fn syslog_message(at: Timestamp, origin: &str, size: u64, note: &str) -> String {
    let host = origin.split('/').next().filter(|h| !h.is_empty()).unwrap_or("-");
    format!(
        "<{SYSLOG_PRI}>1 {} {host} custody - checkpoint - size={size} note={}",
        crate::views::rfc3339(at),
        BASE64.encode(note.as_bytes())
    )
}

/// The signed note in a syslog message from [`syslog_message`].
pub fn note_of_syslog_message(message: &str) -> Option<String> {
    let encoded = message.rsplit_once(" note=")?.1.trim_end();
    String::from_utf8(BASE64.decode(encoded.as_bytes()).ok()?).ok()
}

/// Ships the newest stored checkpoint to every sink that has not had it yet; `shipped` holds
/// the size each sink last took. A failure is logged and retried at the next pass.
pub async fn ship_latest(
    app: &App,
    sinks: &[Sink],
    shipped: &mut [u64],
) -> Result<(), custody_app::AppError> {
    let latest = app.latest_checkpoint().await?;
    let Some((size, note)) = latest else { return Ok(()) };
    for (sink, done) in sinks.iter().zip(shipped.iter_mut()) {
        if *done >= size {
            continue;
        }
        match sink.ship(app.now(), size, &note).await {
            Ok(()) => *done = size,
            Err(error) => {
                metrics::counter!("custody_checkpoint_ship_failures_total", "sink" => sink.label())
                    .increment(1);
                tracing::warn!(sink = %sink.label(), size, %error, "could not ship a checkpoint; retrying at the next pass");
            }
        }
    }
    Ok(())
}
