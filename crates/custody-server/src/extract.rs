//! Capability extractors: a handler states in its signature what proof of identity it needs,
//! and cannot run without it (STYLE.md rule 9).
//!
//! - [`Signed`]: a signed-in person (session cookie) or a carrier's API key.
//! - [`PersonSession`]: a signed-in person, with the second factor their role needs proven.
//! - [`AnySession`]: a signed-in person, second factor proven or not: the second-factor step.
//! - [`StaffRead`]: an admin, super-admin or auditor.
//! - [`Staff`]: an admin or super-admin.
//! - [`CarrierCaller`]: a carrier's API key or a courier.
//! - [`DeviceCaller`]: an enrolled agent on the device gateway (from its client certificate).
//!
//! Requests made with the session cookie that change anything must carry the session's CSRF
//! token in `X-CSRF-Token` (ASVS 3.5.1); requests with an API key need none, since a browser
//! never adds that header on its own.

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use custody_app::people::Person;
use custody_app::sessions::SessionInfo;
use custody_app::{App, Caller};
use custody_core::person::Role;
use custody_core::policy::Principal;

use crate::ApiError;
use crate::ServerState;

/// Name of the session cookie. `__Host-` binds it to this host, path `/` and `Secure`.
pub const SESSION_COOKIE: &str = "__Host-custody-session";
/// Name of the device cookie: this browser completed a sign-in to an account before.
pub const DEVICE_COOKIE: &str = "__Host-custody-device";
/// Header carrying the CSRF token on state-changing requests made with the cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of cookie `name`, if present.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// A signed-in person, with the token of their session.
#[derive(Debug, Clone)]
pub struct PersonSession {
    /// The person and their caller identity.
    pub info: SessionInfo,
    /// The session token (for deriving the CSRF token).
    pub token: String,
}

impl PersonSession {
    /// The person.
    pub fn person(&self) -> &Person {
        &self.info.person
    }

    /// As a caller of the use cases.
    pub fn caller(&self) -> &Caller {
        &self.info.caller
    }
}

/// Checks the session cookie, and the CSRF header on unsafe methods.
async fn session_of(
    parts: &Parts,
    app: &App,
    check_csrf: bool,
) -> Result<Option<PersonSession>, ApiError> {
    let Some(token) = cookie(parts, SESSION_COOKIE) else { return Ok(None) };
    let info = app.session(token).await.map_err(|_| ApiError::unauthenticated())?;
    if check_csrf && !is_safe(&parts.method) {
        let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !app.csrf_ok(token, presented) {
            return Err(ApiError::new(
                http::StatusCode::FORBIDDEN,
                "csrf_failed",
                "missing or wrong X-CSRF-Token for a request made with the session cookie",
            ));
        }
    }
    Ok(Some(PersonSession { info, token: token.to_owned() }))
}

/// A complete session: one that still needs a second factor reaches nothing else (ASVS 6.3.3).
fn complete(session: PersonSession) -> Result<PersonSession, ApiError> {
    if session.info.needs_second_factor() {
        return Err(custody_app::AppError::SecondFactorRequired.into());
    }
    Ok(session)
}

impl<S> FromRequestParts<S> for PersonSession
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = ServerState::from_ref(state);
        complete(session_of(parts, &state.app, true).await?.ok_or_else(ApiError::unauthenticated)?)
    }
}

/// A signed-in person whose session may still need its second factor: for the routes of the
/// second-factor step (prove one, set one up) and signing out.
#[derive(Debug, Clone)]
pub struct AnySession(pub PersonSession);

impl<S> FromRequestParts<S> for AnySession
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = ServerState::from_ref(state);
        session_of(parts, &state.app, true).await?.ok_or_else(ApiError::unauthenticated).map(Self)
    }
}

impl<S> OptionalFromRequestParts<S> for AnySession
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, ApiError> {
        let state = ServerState::from_ref(state);
        // Pages check CSRF themselves (form field), so only the identity is read here.
        Ok(session_of(parts, &state.app, false).await.unwrap_or(None).map(Self))
    }
}

/// A signed-in person or a carrier's API key.
#[derive(Debug, Clone)]
pub struct Signed(pub Caller);

impl<S> FromRequestParts<S> for Signed
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = ServerState::from_ref(state);
        if let Some(token) = bearer(parts) {
            return state
                .app
                .authenticate_api_key(token)
                .await
                .map(Signed)
                .map_err(|_| ApiError::unauthenticated());
        }
        let session =
            session_of(parts, &state.app, true).await?.ok_or_else(ApiError::unauthenticated)?;
        Ok(Signed(complete(session)?.info.caller))
    }
}

fn role_of(caller: &Caller) -> Option<Role> {
    match caller {
        Caller::Principal(Principal::Person { standing, .. }) => Some(standing.role),
        _ => None,
    }
}

/// A signed-in person whose role is one of `roles`; `Forbidden` for any other role.
async fn person_in<S>(
    parts: &mut Parts,
    state: &S,
    roles: &[Role],
) -> Result<PersonSession, ApiError>
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    let s = <PersonSession as FromRequestParts<S>>::from_request_parts(parts, state).await?;
    match role_of(s.caller()) {
        Some(role) if roles.contains(&role) => Ok(s),
        _ => Err(ApiError::forbidden()),
    }
}

/// An admin, super-admin or auditor (read-only routes).
#[derive(Debug, Clone)]
pub struct StaffRead(pub PersonSession);

impl<S> FromRequestParts<S> for StaffRead
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        person_in(parts, state, &[Role::Admin, Role::SuperAdmin, Role::Auditor]).await.map(Self)
    }
}

/// An admin or super-admin.
#[derive(Debug, Clone)]
pub struct Staff(pub PersonSession);

impl<S> FromRequestParts<S> for Staff
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        person_in(parts, state, &[Role::Admin, Role::SuperAdmin]).await.map(Self)
    }
}

/// A carrier's API key or a courier's session.
#[derive(Debug, Clone)]
pub struct CarrierCaller(pub Caller);

impl<S> FromRequestParts<S> for CarrierCaller
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Signed(caller) = Signed::from_request_parts(parts, state).await?;
        match &caller {
            Caller::Principal(Principal::CarrierKey { .. }) => Ok(Self(caller)),
            c if role_of(c) == Some(Role::Courier) => Ok(Self(caller)),
            _ => Err(ApiError::forbidden()),
        }
    }
}

/// The TCP peer of a request's connection, put in the request by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// The verified client certificate of a device-gateway connection, put in the request by the
/// gateway's TLS accept loop.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub custody_crypto::pki::CertificateInfo);

/// An enrolled, unrevoked agent.
#[derive(Debug, Clone)]
pub struct DeviceCaller(pub Caller);

impl<S> FromRequestParts<S> for DeviceCaller
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = ServerState::from_ref(state);
        let cert =
            parts.extensions.get::<PeerCertificate>().ok_or_else(ApiError::unauthenticated)?;
        state.app.authenticate_device(&cert.0).await.map(DeviceCaller).map_err(|_| {
            // A certificate of the CA's that names no enrolled device (superseded, or its
            // device removed): refused on the record.
            let source = parts
                .extensions
                .get::<Peer>()
                .map_or_else(|| "unknown".to_owned(), |p| p.0.ip().to_string());
            state.refusals.refused(crate::refusals::Edge::Device, "unenrolled", source, None);
            ApiError::unauthenticated()
        })
    }
}
