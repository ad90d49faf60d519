//! The kiosk: the page the bank's touch screen shows, served by the agent itself on loopback, so
//! it loads and answers while the server is unreachable.
//!
//! One page (`kiosk/index.html`, with its script and style; nothing from anywhere else) and a
//! small JSON API behind it that asks the running agent what the physical keypad would:
//! - `GET /api/state`: whether the locker is online, and the presence code to show;
//! - `POST /api/code` `{"code"}`: a pickup code;
//! - `POST /api/scan` `{"text"}`: what the QR scanner typed;
//! - `POST /api/courier` `{"code", "action", "parcel"?, "size"?}`: a courier's visit, deposit
//!   (by size), confirmation or return.
//!
//! Each answer is the screen the agent decided on, with its sentence from [`Screen::message`].
//! The listener takes loopback addresses only, and every request must name a loopback host,
//! so a page elsewhere cannot reach it through a rebound name.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use custody_proto::device::{CourierAction, FreeCompartments, KioskParcel};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::core::Screen;
use crate::daemon::AgentHandle;

const PAGE: &str = include_str!("../kiosk/index.html");
const SCRIPT: &str = include_str!("../kiosk/kiosk.js");
const STYLE: &str = include_str!("../kiosk/kiosk.css");
/// Requests larger than this are refused before they are read.
const BODY_LIMIT: usize = 4 * 1024;

/// Why the kiosk page cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum KioskError {
    /// Not a loopback address.
    #[error(
        "the kiosk page is served on loopback only (the touch screen's browser runs on the \
         controller); {0} is not a loopback address"
    )]
    NotLoopback(SocketAddr),
    /// The address is taken or not ours.
    #[error("cannot listen on {address} for the kiosk page: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// The kiosk page, being served.
#[derive(Debug)]
pub struct Kiosk {
    /// Where it listens.
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Kiosk {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the kiosk page of `agent` on `address` (loopback; port 0 picks one).
pub async fn serve(agent: Arc<AgentHandle>, address: SocketAddr) -> Result<Kiosk, KioskError> {
    if !address.ip().is_loopback() {
        return Err(KioskError::NotLoopback(address));
    }
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| KioskError::Listen { address, source })?;
    let address = listener.local_addr().map_err(|source| KioskError::Listen { address, source })?;
    let router = axum::Router::new()
        .route("/", get(|| async { page(PAGE, "text/html; charset=utf-8") }))
        .route("/kiosk.js", get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/kiosk.css", get(|| async { page(STYLE, "text/css; charset=utf-8") }))
        .route("/api/state", get(state))
        .route("/api/code", post(code))
        .route("/api/scan", post(scan))
        .route("/api/courier", post(courier))
        .layer(axum::middleware::from_fn(loopback_only))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(agent);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the kiosk page stopped");
        }
    });
    tracing::info!(%address, "kiosk page served");
    Ok(Kiosk { address, task })
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Refuses a request whose `Host` is not a loopback name or address.
async fn loopback_only(request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }
    });
    let loopback = name == "localhost"
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback { next.run(request).await } else { StatusCode::MISDIRECTED_REQUEST.into_response() }
}

/// What the kiosk shows.
#[derive(Debug, Serialize)]
struct ScreenView {
    /// `open`, `not_accepted`, `offline`, `paused`, `work`, `thanks` or `checking`.
    kind: &'static str,
    /// The sentence to show.
    message: String,
    /// The compartment that opened.
    compartment: Option<u16>,
    /// A courier's parcels to deposit.
    deposits: Vec<KioskParcel>,
    /// A courier's parcels to take back.
    returns: Vec<KioskParcel>,
    /// Free compartments by size.
    free: Vec<FreeCompartments>,
}

fn view(screen: Option<Screen>) -> Json<ScreenView> {
    let screen = screen.unwrap_or(Screen::Offline);
    let message = screen.message();
    let mut view = ScreenView {
        kind: "checking",
        message,
        compartment: None,
        deposits: Vec::new(),
        returns: Vec::new(),
        free: Vec::new(),
    };
    view.kind = match screen {
        Screen::Checking => "checking",
        Screen::Open(n) => {
            view.compartment = Some(n);
            "open"
        }
        Screen::NotAccepted => "not_accepted",
        Screen::Offline => "offline",
        Screen::CodesPaused => "paused",
        Screen::CourierWork { deposits, returns, free } => {
            (view.deposits, view.returns, view.free) = (deposits, returns, free);
            "work"
        }
        Screen::Thanks => "thanks",
        Screen::OutOfService => "out_of_service",
    };
    Json(view)
}

#[derive(Debug, Serialize)]
struct StateView {
    online: bool,
    /// The server refused this device's identity: the kiosk says the locker is out of service.
    out_of_service: bool,
    /// Whether pickup codes can be checked here while the server is unreachable.
    checks_offline: bool,
    /// The code a resident types into the app to open from the phone.
    presence: Option<String>,
}

async fn state(State(agent): State<Arc<AgentHandle>>) -> Json<StateView> {
    Json(StateView {
        online: agent.is_ready(),
        out_of_service: agent.is_out_of_service(),
        checks_offline: agent.offline_codes().is_some(),
        presence: agent.presence_code().map(|c| c.as_str().to_owned()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

async fn code(
    State(agent): State<Arc<AgentHandle>>,
    Json(body): Json<CodeBody>,
) -> Json<ScreenView> {
    let code = zeroize::Zeroizing::new(body.code);
    view(agent.try_code(&code).await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    text: String,
}

async fn scan(
    State(agent): State<Arc<AgentHandle>>,
    Json(body): Json<ScanBody>,
) -> Json<ScreenView> {
    view(agent.scan(body.text.trim()).await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CourierBody {
    code: String,
    action: String,
    parcel: Option<String>,
    size: Option<String>,
}

async fn courier(
    State(agent): State<Arc<AgentHandle>>,
    Json(body): Json<CourierBody>,
) -> Result<Json<ScreenView>, StatusCode> {
    let code = zeroize::Zeroizing::new(body.code);
    let parcel = || body.parcel.clone().ok_or(StatusCode::UNPROCESSABLE_ENTITY);
    let action = match body.action.as_str() {
        "visit" => CourierAction::Visit,
        "deposit" => CourierAction::Deposit { parcel: parcel()?, size: body.size.clone() },
        "confirm" => CourierAction::Confirm { parcel: parcel()? },
        "return" => CourierAction::Return { parcel: parcel()? },
        _ => return Err(StatusCode::UNPROCESSABLE_ENTITY),
    };
    Ok(view(agent.courier(&code, action).await))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_screen_has_a_kind_and_a_sentence() {
        for screen in [
            Screen::Checking,
            Screen::Open(3),
            Screen::NotAccepted,
            Screen::Offline,
            Screen::CodesPaused,
            Screen::CourierWork { deposits: vec![], returns: vec![], free: vec![] },
            Screen::Thanks,
        ] {
            let Json(v) = view(Some(screen.clone()));
            assert!(!v.message.is_empty(), "{screen:?}");
            assert_eq!(v.compartment, matches!(screen, Screen::Open(_)).then_some(3));
        }
        assert_eq!(view(None).0.kind, "offline", "no answer is shown as offline");
    }
}
