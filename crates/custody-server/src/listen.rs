//! TLS listeners: the public HTTPS port and the device gateway.
//!
//! Both accept TLS 1.3 only (configurations from `custody_crypto::tls`). The gateway requires a
//! client certificate issued by the internal CA at the handshake and hands the verified
//! certificate's facts to the router; the public port asks for none. Each connection is served
//! by hyper with HTTP/1.1 and HTTP/2 (and upgrades, for WebSockets).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::extract::PeerCertificate;

/// Handshakes that take longer than this are dropped, so idle half-open connections cannot pile
/// up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TCP peer of a request's connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Where the request comes from: the network address throttles count against, and the
/// browser's name for itself. Forwarded headers are not trusted: the direct peer is the client
/// until trusted proxies are configured.
#[derive(Debug, Clone)]
pub struct RequestClient(pub custody_app::auth::Client);

impl<S: Send + Sync> FromRequestParts<S> for RequestClient {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<Peer>()
            .map_or_else(|| "unknown".to_owned(), |p| p.0.ip().to_string());
        let agent =
            parts.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        Ok(Self(custody_app::auth::Client::new(addr, agent)))
    }
}

/// Serves `router` over TLS on `listener` until the returned task is aborted.
pub fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    require_client_cert: bool,
) -> JoinHandle<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|der| custody_crypto::pki::certificate_info(der).ok());
                if require_client_cert && certificate.is_none() {
                    return;
                }
                let service = hyper::service::service_fn(
                    move |mut request: Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(Peer(peer));
                        if let Some(cert) = &certificate {
                            request.extensions_mut().insert(PeerCertificate(cert.clone()));
                        }
                        router.clone().oneshot(request.map(axum::body::Body::new))
                    },
                );
                let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    })
}
