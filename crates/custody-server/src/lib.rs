//! The Custody server: the HTTPS API and admin portal, the device gateway, the outbox worker
//! and the housekeeping sweeper.
//!
//! **Architecture Invariant:** the server holds no business rules. Handlers prove who is calling
//! with a capability extractor, call one use case of `custody-app`, and translate the answer.
//!
//! **Architecture Invariant:** every route is registered through [`routes::Routes`] with its
//! access class; the route × role test walks that table.

pub mod api;
pub mod config;
pub mod egress;
pub mod error;
pub mod extract;
pub mod fanout;
pub mod gateway;
mod headers;
pub mod listen;
pub mod openapi;
pub mod outbox;
pub mod portal;
mod qr;
pub mod refusals;
pub mod routes;
pub mod ship;
pub mod sign_in_links;
pub mod sms;
pub mod syslog;
mod views;
pub mod workers;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use custody_app::App;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::limit::RequestBodyLimitLayer;

pub use error::ApiError;
pub use gateway::DeviceHub;
pub use listen::RequestClient;

use routes::{RouteInfo, Routes};

/// Largest request body accepted, checked before reading (ASVS 5.2.1).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What handlers share.
#[derive(Clone)]
pub struct ServerState {
    /// The use cases.
    pub app: App,
    /// Connected agents.
    pub hub: DeviceHub,
    /// The Prometheus registry, when metrics are recorded in this process.
    pub metrics: Option<PrometheusHandle>,
    /// The scraper's bearer token.
    pub metrics_token: Arc<str>,
    /// Proxies whose `X-Forwarded-For` entries are believed.
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
    /// Private hosts the operator lets site admins point alert webhooks at.
    pub allowed_hosts: egress::Allowed,
    /// Refusals at the edges (device handshakes, the egress guard), counted for the log.
    pub refusals: refusals::Refusals,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState").field("app", &self.app).finish_non_exhaustive()
    }
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok();
            // 1 when every primitive runs on AWS-LC's FIPS module in FIPS mode.
            metrics::gauge!("custody_fips_mode").set(if custody_crypto::fips::active() {
                1.0
            } else {
                0.0
            });
            handle
        })
        .clone()
}

/// The public server's routes: each concept registers its own, beside its handlers.
fn table() -> Routes<ServerState> {
    let concepts: [fn(Routes<ServerState>) -> Routes<ServerState>; 32] = [
        api::health::routes,
        api::sessions::routes,
        sign_in_links::routes,
        api::factors::routes,
        api::passkeys::routes,
        api::fanout::routes,
        api::couriers::routes,
        api::parcels::routes,
        api::audit::routes,
        api::qr::routes,
        api::presence::routes,
        api::unaddressed::routes,
        api::remote_opens::routes,
        api::bulk::routes,
        api::lockdown::routes,
        api::sensors::routes,
        api::retention::routes,
        api::breaches::routes,
        api::alerts::routes,
        api::incident::routes,
        api::devices::routes,
        api::sites::routes,
        api::compartments::routes,
        api::people::routes,
        api::carriers::routes,
        api::api_keys::routes,
        api::badges::routes,
        api::approvals::routes,
        portal::routes,
        portal::alerts::routes,
        portal::breaches::routes,
        portal::account::routes,
    ];
    concepts.into_iter().fold(Routes::new(), |table, add| add(table))
}

/// Every route of the public server with its access class.
pub fn routes_table() -> Vec<RouteInfo> {
    table().finish().1
}

async fn not_found() -> ApiError {
    ApiError::new(http::StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Counts requests and their latency per route and status, with bounded labels (route
/// patterns, never ids).
async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    #[allow(clippy::disallowed_methods, reason = "the metrics adapter measures real latency")]
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("custody_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("custody_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Gives errors produced below the handlers (body limit, method not allowed) the API's JSON
/// error shape, so every 4xx is machine-readable.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    match response.status() {
        http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            response.status(),
            "payload_too_large",
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
        .into_response(),
        http::StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            response.status(),
            "method_not_allowed",
            "this route does not take that method",
        )
        .into_response(),
        _ => response,
    }
}

/// The public router: API, portal, health, metrics.
pub fn router(state: ServerState) -> Router {
    let (api, _) = table().finish();
    let router = api
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(record))
        .with_state(state);
    headers::secure(router)
}

/// The device gateway's router.
pub fn gateway_router(state: ServerState) -> Router {
    Router::new()
        .route("/v1/link", axum::routing::get(gateway::link))
        .fallback(|| async { not_found().await.into_response() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTPS API and portal listen.
    pub public: SocketAddr,
    /// Where the device gateway listens.
    pub gateway: SocketAddr,
    /// Shared state (the app and the device hub).
    pub state: ServerState,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops serving.
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// TLS material and addresses for [`start`].
#[derive(Debug, Clone)]
pub struct Listen {
    /// Public HTTPS address.
    pub public: SocketAddr,
    /// Device gateway address.
    pub gateway: SocketAddr,
    /// Server certificate chain, PEM.
    pub cert_pem: String,
    /// Server key, PEM.
    pub key_pem: String,
    /// Reverse proxies in front of the public listener, whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// Starts both listeners and the background workers.
pub async fn start(
    app: App,
    listen: Listen,
    metrics_token: Arc<str>,
    workers: workers::Workers,
) -> std::io::Result<Running> {
    use custody_crypto::tls::{ClientAuth, server_config};
    let state = ServerState {
        app: app.clone(),
        hub: DeviceHub::default(),
        metrics: metrics_handle(),
        metrics_token,
        trusted_proxies: listen.trusted_proxies.clone().into(),
        allowed_hosts: workers
            .alerts
            .as_ref()
            .map(|s| s.webhooks.allowed().clone())
            .unwrap_or_default(),
        refusals: refusals::Refusals::new(app.clone()),
    };
    app.set_presence(Arc::new(state.hub.clone()));
    let public_tls = server_config(
        &listen.cert_pem,
        &listen.key_pem,
        &ClientAuth::None,
        &[b"h2", b"http/1.1"],
        app.clock(),
    )
    .map_err(std::io::Error::other)?;
    let gateway_tls = server_config(
        &listen.cert_pem,
        &listen.key_pem,
        &ClientAuth::Required { ca_pem: app.ca_pem().to_owned(), revoked: state.hub.revoked() },
        &[b"http/1.1"],
        app.clock(),
    )
    .map_err(std::io::Error::other)?;
    let public_listener = TcpListener::bind(listen.public).await?;
    let gateway_listener = TcpListener::bind(listen.gateway).await?;
    let (public, gateway) = (public_listener.local_addr()?, gateway_listener.local_addr()?);
    state.hub.refresh_revocations(&app).await;
    let refresher = state.clone();
    let mut tasks = vec![
        listen::serve(public_listener, public_tls, router(state.clone()), None),
        listen::serve(
            gateway_listener,
            gateway_tls,
            gateway_router(state.clone()),
            Some(state.refusals.clone()),
        ),
        // Revocations made elsewhere (the `custody` command, another server) reach this
        // server's handshake and live links within a minute.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REVOCATIONS_EVERY);
            loop {
                every.tick().await;
                refresher.hub.refresh_revocations(&refresher.app).await;
            }
        }),
    ];
    tasks.extend(workers.spawn(app, &state.hub, &state.refusals));
    tracing::info!(%public, %gateway, "serving");
    Ok(Running { public, gateway, state, tasks })
}

/// How often the revoked device certificates are read again.
pub const REVOCATIONS_EVERY: Duration = Duration::from_mins(1);

/// How often the sweeper expires parcels, releases stale reservations and retries
/// notifications.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);
