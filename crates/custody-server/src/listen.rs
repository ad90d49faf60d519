//! TLS listeners: the public HTTPS port and the device gateway.
//!
//! Both accept TLS 1.3 only (configurations from `custody_crypto::tls`). The gateway requires a
//! client certificate issued by the internal CA at the handshake and hands the verified
//! certificate's facts to the router; the public port asks for none. Each connection is served
//! by hyper with HTTP/1.1 and HTTP/2 (and upgrades, for WebSockets).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::request::Parts;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::extract::{Peer, PeerCertificate};
use crate::refusals::{Edge, Refusals};

/// Handshakes that take longer than this are dropped, so idle half-open connections cannot pile
/// up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's address: the TCP peer, unless the peer is one of the `trusted` proxies, in
/// which case the rightmost `X-Forwarded-For` entry that is not a trusted proxy. Entries an
/// untrusted peer sends are ignored, so nobody picks their own address by sending the header;
/// an entry that is not an address ends the walk at the last trusted hop.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &[IpAddr],
) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    // Several headers are one list, in order.
    let hops: Vec<&str> =
        forwarded_for.into_iter().flat_map(|h| h.split(',')).map(str::trim).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => client = ip,
            Ok(ip) => return ip,
            Err(_) => return client,
        }
    }
    client
}

/// Where the request comes from: the network address throttles count against (see
/// [`client_address`]), and the browser's name for itself.
#[derive(Debug, Clone)]
pub struct RequestClient(pub custody_app::sessions::Client);

impl<S> FromRequestParts<S> for RequestClient
where
    crate::ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = crate::ServerState::from_ref(state);
        let addr = parts.extensions.get::<Peer>().map_or_else(
            || "unknown".to_owned(),
            |p| {
                let forwarded =
                    parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
                client_address(p.0.ip(), forwarded, &state.trusted_proxies).to_string()
            },
        );
        let agent =
            parts.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let device = crate::extract::cookie(parts, crate::extract::DEVICE_COOKIE);
        Ok(Self(custody_app::sessions::Client::new(addr, agent).with_device(device)))
    }
}

/// Serves `router` over TLS on `listener` until the returned task is aborted. With `devices`,
/// it is the device gateway: a connection without a client certificate goes no further, and
/// every handshake refused is counted there for the audit log.
pub fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    devices: Option<Refusals>,
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
            let (acceptor, router, devices) = (acceptor.clone(), router.clone(), devices.clone());
            tokio::spawn(async move {
                let refused = |reason: &'static str| {
                    if let Some(refusals) = &devices {
                        refusals.refused(Edge::Device, reason, peer.ip().to_string(), None);
                    }
                };
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            refused(crate::refusals::handshake_reason(&e));
                            return;
                        }
                        Err(_) => {
                            refused("handshake_timeout");
                            return;
                        }
                    };
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|der| custody_crypto::pki::certificate_info(der).ok());
                if devices.is_some() && certificate.is_none() {
                    refused("no_certificate");
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_addresses_count_only_through_trusted_proxies() {
        let proxy = ip("10.0.0.5");
        let inner = ip("10.0.0.6");
        let trusted = [proxy, inner];
        let client = ip("203.0.113.7");
        // Straight from the client: its own claims are ignored.
        assert_eq!(client_address(client, ["198.51.100.1"], &trusted), client);
        // Through the proxy: the entry it appended.
        assert_eq!(client_address(proxy, ["203.0.113.7"], &trusted), client);
        // A client that forges a first entry gets the one the proxy appended.
        assert_eq!(client_address(proxy, ["198.51.100.1, 203.0.113.7"], &trusted), client);
        // Two trusted hops, split over two headers.
        assert_eq!(
            client_address(proxy, ["198.51.100.1, 203.0.113.7", "10.0.0.6"], &trusted),
            client
        );
        // Garbage where the client should be: the last trusted hop, not a guess.
        assert_eq!(client_address(proxy, ["not-an-ip"], &trusted), proxy);
        assert_eq!(client_address(proxy, [], &trusted), proxy);
        // IPv6 too.
        assert_eq!(client_address(proxy, ["2001:db8::1"], &trusted), ip("2001:db8::1"));
    }
}
