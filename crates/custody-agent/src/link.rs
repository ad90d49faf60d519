//! The device link's transport: TLS 1.3 with the device's client certificate, the server's key
//! pinned, and a WebSocket on top.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Where and how to connect.
#[derive(Clone)]
pub struct LinkConfig {
    /// Gateway address, `host:port`.
    pub gateway: String,
    /// Name the server's certificate must carry.
    pub server_name: String,
    /// TLS 1.3, client certificate, pinned server key.
    pub tls: Arc<rustls::ClientConfig>,
    /// The local address to connect from (a device with several networks), or any.
    pub local_address: Option<std::net::IpAddr>,
    /// How long the server may stay silent before the link is taken for dead: a cable cut
    /// beyond the building closes nothing, so the agent pings and counts the silence itself
    /// ([`SILENT_AFTER`] unless a test shortens it). Connecting gives up after it too.
    pub silent_after: std::time::Duration,
}

/// How long the server may stay silent before the agent takes the link for dead and works
/// offline: three pings, ten seconds apart, unanswered.
pub const SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("gateway", &self.gateway)
            .field("server_name", &self.server_name)
            .field("local_address", &self.local_address)
            .field("silent_after", &self.silent_after)
            .finish_non_exhaustive()
    }
}

/// An open link.
pub type Link = WebSocketStream<TlsStream<TcpStream>>;

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// TCP or TLS failed (refused, unreachable, certificate or pin rejected).
    #[error("connection: {0}")]
    Connect(#[from] std::io::Error),
    /// The server name is not a valid DNS name or address.
    #[error("invalid server name")]
    ServerName,
    /// The WebSocket handshake failed (the gateway refused the device).
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}

impl LinkError {
    /// Whether the server refused this device's identity itself, rather than being out of
    /// reach: its certificate revoked at the handshake, or the device unknown at the upgrade
    /// (superseded by a renewal or a re-enrolment, or no longer enrolled).
    pub fn identity_refused(&self) -> bool {
        fn revoked(e: &std::io::Error) -> bool {
            matches!(
                e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
                Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked))
            )
        }
        match self {
            Self::Connect(e) | Self::WebSocket(tokio_tungstenite::tungstenite::Error::Io(e)) => {
                revoked(e)
            }
            Self::WebSocket(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                response.status() == 401
            }
            _ => false,
        }
    }
}

/// Connects and upgrades to the device link, giving up after `config.silent_after`.
pub async fn connect(config: &LinkConfig) -> Result<Link, LinkError> {
    tokio::time::timeout(config.silent_after, connect_now(config)).await.map_err(|_| {
        LinkError::Connect(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer from the gateway",
        ))
    })?
}

async fn connect_now(config: &LinkConfig) -> Result<Link, LinkError> {
    let tcp = match config.local_address {
        None => TcpStream::connect(&config.gateway).await?,
        Some(local) => {
            let remote = tokio::net::lookup_host(&config.gateway)
                .await?
                .find(|a| a.is_ipv4() == local.is_ipv4())
                .ok_or_else(|| {
                    std::io::Error::other("no gateway address of the local address's family")
                })?;
            let socket = if local.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(std::net::SocketAddr::new(local, 0))?;
            socket.connect(remote).await?
        }
    };
    let name =
        ServerName::try_from(config.server_name.clone()).map_err(|_| LinkError::ServerName)?;
    let tls = TlsConnector::from(config.tls.clone()).connect(name, tcp).await?;
    let mut ws_config = WebSocketConfig::default();
    ws_config.max_message_size = Some(custody_proto::device::MAX_FRAME_BYTES);
    ws_config.max_frame_size = Some(custody_proto::device::MAX_FRAME_BYTES);
    let url = format!("wss://{}/v1/link", config.gateway);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(ws_config)).await?;
    Ok(ws)
}
