//! Alert receivers on loopback, for the demo and `custody bench alerts`: a webhook endpoint over
//! HTTPS that checks each delivery's Standard Webhooks signature, and a syslog receiver taking
//! RFC 5425 frames over TLS. Both present a certificate from a CA of their own, which the
//! server's senders are told to trust as an operator's `[alerts] ca_file` would be, and both
//! are on hosts the operator allowed (`[alerts] allow_hosts`): loopback is refused otherwise.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context as _;
use axum::http::{HeaderMap, StatusCode};
use custody_core::Clock as _;
use custody_crypto::webhook::WebhookSecret;
use custody_crypto::{Rng, SystemClock};
use custody_server::egress::Allowed;
use custody_server::fanout::Senders;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One notification a receiver took.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    /// `webhook` or `syslog`.
    pub(crate) channel: &'static str,
    /// The alert's id.
    pub(crate) alert: String,
    /// Its kind.
    pub(crate) kind: String,
    /// Its compartment, if it has one.
    pub(crate) compartment: Option<u16>,
    /// When it arrived.
    pub(crate) at: Instant,
    /// A webhook's signature matched the endpoint's secret; a syslog frame came over TLS.
    pub(crate) authentic: bool,
}

/// The two receivers, running until dropped.
pub(crate) struct Receivers {
    /// The CA their certificates come from.
    pub(crate) ca_pem: String,
    /// Where webhooks go.
    pub(crate) webhook_url: String,
    /// Where syslog goes (`host:port`).
    pub(crate) syslog_target: String,
    /// The webhook endpoint's secret, once the server has made it.
    secret: Arc<OnceLock<WebhookSecret>>,
    /// What arrived, in order.
    pub(crate) arrivals: mpsc::UnboundedReceiver<Arrival>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn stopwatch() -> Instant {
    #[allow(clippy::disallowed_methods, reason = "receivers time arrivals for the benchmark")]
    Instant::now()
}

impl Receivers {
    /// Starts both on loopback, with a certificate for `localhost` valid for a year.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let (rng, now) = (Rng::new(), SystemClock.now());
        let year = custody_core::time::days(365);
        let ca =
            custody_crypto::pki::generate_ca("Custody alert receivers", rng.bytes()?, now, year)?;
        let authority = custody_crypto::pki::CertificateAuthority::load(&ca.cert_pem, &ca.key_pem)?;
        let cert = authority.issue_server(&["localhost".into()], rng.bytes()?, now, year)?;
        let tls = |alpn: &[&[u8]]| {
            custody_crypto::tls::server_config(
                &cert.cert_pem,
                &cert.key_pem,
                &custody_crypto::tls::ClientAuth::None,
                alpn,
                Arc::new(SystemClock),
            )
        };
        let (sent, arrivals) = mpsc::unbounded_channel();
        let secret = Arc::new(OnceLock::new());

        let hooks = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let webhook_url = format!("https://localhost:{}/hooks", hooks.local_addr()?.port());
        let (to, key) = (sent.clone(), secret.clone());
        let router = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (to, key) = (to.clone(), key.clone());
                async move { took_webhook(&to, &key, &headers, &body) }
            }),
        );
        let webhooks = custody_server::listen::serve(hooks, tls(&[b"http/1.1"])?, router, None);

        let syslog = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let syslog_target = format!("localhost:{}", syslog.local_addr()?.port());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls(&[])?));
        let frames = tokio::spawn(async move {
            while let Ok((tcp, _)) = syslog.accept().await {
                let (acceptor, to) = (acceptor.clone(), sent.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        read_frames(BufReader::new(stream), &to).await;
                    }
                });
            }
        });
        Ok(Self {
            ca_pem: ca.cert_pem,
            webhook_url,
            syslog_target,
            secret,
            arrivals,
            tasks: vec![webhooks, frames],
        })
    }

    /// The server's senders, trusting the receivers' CA and allowing loopback.
    pub(crate) fn senders(&self) -> anyhow::Result<Senders> {
        let allowed = Allowed::hosts(["localhost".to_owned(), "127.0.0.1".to_owned()]);
        Senders::new(&allowed, &self.ca_pem).map_err(anyhow::Error::msg)
    }

    /// The webhook endpoint's secret, once set.
    pub(crate) fn secret(&self) -> Option<&WebhookSecret> {
        self.secret.get()
    }

    /// The webhook endpoint's secret, as the server showed it once.
    pub(crate) fn set_secret(&self, text: &str) -> anyhow::Result<()> {
        let secret = WebhookSecret::parse(text).context("the endpoint's secret")?;
        let _ = self.secret.set(secret);
        Ok(())
    }
}

/// A webhook delivery: checked against the secret, recorded, answered 204.
fn took_webhook(
    to: &mpsc::UnboundedSender<Arrival>,
    secret: &OnceLock<WebhookSecret>,
    headers: &HeaderMap,
    body: &[u8],
) -> StatusCode {
    let at = stopwatch();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let timestamp = header("webhook-timestamp").parse::<i64>().unwrap_or_default();
    let authentic = secret.get().is_some_and(|s| {
        let expected = s.sign(header("webhook-id"), timestamp, body);
        header("webhook-signature")
            .split(' ')
            .any(|sig| custody_crypto::constant_time_eq(sig.as_bytes(), expected.as_bytes()))
    });
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let field = |name: &str| json.get("data").and_then(|d| d.get(name));
    let text = |name: &str| field(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let _ = to.send(Arrival {
        channel: "webhook",
        alert: text("id"),
        kind: text("kind"),
        compartment: field("compartment")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
        at,
        authentic,
    });
    if authentic { StatusCode::NO_CONTENT } else { StatusCode::UNAUTHORIZED }
}

/// RFC 5425 frames (`LEN SP MSG`) until the sender closes; each CEF event is recorded.
async fn read_frames(
    mut stream: BufReader<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    to: &mpsc::UnboundedSender<Arrival>,
) {
    loop {
        let mut length = Vec::new();
        match stream.read_until(b' ', &mut length).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Some(n) = std::str::from_utf8(&length)
            .ok()
            .and_then(|l| l.trim().parse::<usize>().ok())
            .filter(|n| *n <= 64 * 1024)
        else {
            return;
        };
        let mut message = vec![0; n];
        if stream.read_exact(&mut message).await.is_err() {
            return;
        }
        let at = stopwatch();
        let text = String::from_utf8_lossy(&message);
        let Some(cef) = text.split_once("CEF:0|").map(|(_, c)| c) else { continue };
        // Vendor|Product|Version|Signature id (the kind)|Name|Severity|Extensions.
        let fields: Vec<&str> = cef.splitn(7, '|').collect();
        let extension = |key: &str| {
            fields.get(6)?.split(' ').find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        };
        let _ = to.send(Arrival {
            channel: "syslog",
            alert: extension("externalId").unwrap_or_default().to_owned(),
            kind: fields.get(3).copied().unwrap_or_default().to_owned(),
            compartment: extension("cn1").and_then(|n| n.parse().ok()),
            at,
            authentic: true,
        });
    }
}
