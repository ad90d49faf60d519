//! Signing in and out over the API, and the cookies a session and a browser carry.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custody_proto::api::{LoginRequest, PersonView, SessionView};
use zeroize::Zeroizing;

use super::{ApiResult, Json};
use crate::extract::{AnySession, DEVICE_COOKIE, PersonSession, SESSION_COOKIE};
use crate::{ApiError, RequestClient, ServerState, views};

/// The `Set-Cookie` value that starts a session.
pub fn session_cookie(token: &str, max_age: Duration) -> HeaderValue {
    let v = format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""))
}

/// The `Set-Cookie` value of a device cookie, kept a year.
pub fn device_cookie(value: &str) -> HeaderValue {
    let v = format!(
        "{DEVICE_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=31536000"
    );
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""))
}

/// The cookies that start a session: the session's, and the device cookie when the sign-in
/// is complete.
pub fn sign_in_cookies(
    session: &custody_app::auth::NewSession,
    lifetime: Duration,
) -> axum::response::AppendHeaders<Vec<(header::HeaderName, HeaderValue)>> {
    let mut cookies = vec![(header::SET_COOKIE, session_cookie(&session.token, lifetime))];
    if let Some(device) = &session.device_cookie {
        cookies.push((header::SET_COOKIE, device_cookie(device)));
    }
    axum::response::AppendHeaders(cookies)
}

/// The answer to a sign-in (or a proven factor): the session's cookies and its view, with
/// new recovery codes when some were issued.
pub(crate) fn signed_in(
    state: &ServerState,
    session: &custody_app::auth::NewSession,
    recovery_codes: Option<&[Zeroizing<String>]>,
) -> Response {
    let view = SessionView {
        person: views::person(&session.person),
        csrf_token: state.app.csrf_token(&session.token),
        second_factor_required: session.needs_second_factor,
        recovery_codes: recovery_codes.map(|c| c.iter().map(|c| c.as_str().to_owned()).collect()),
    };
    let cookies = sign_in_cookies(session, state.app.config().session_absolute);
    (cookies, Json(view)).into_response()
}

/// The `Set-Cookie` value that ends one.
pub fn clear_session_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-custody-session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

/// Sign in.
pub async fn login(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    Json(body): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let password = Zeroizing::new(body.password);
    let session = state.app.login(&body.email, password, &client).await?;
    Ok(signed_in(&state, &session, None))
}

/// Sign out (also from a session still at the second-factor step).
pub async fn logout(
    State(state): State<ServerState>,
    AnySession(session): AnySession,
) -> Result<Response, ApiError> {
    state.app.logout(&session.token).await?;
    Ok(([(header::SET_COOKIE, clear_session_cookie())], StatusCode::NO_CONTENT).into_response())
}

/// Who am I.
pub async fn me(session: PersonSession) -> ApiResult<PersonView> {
    Ok(Json(views::person(session.person())))
}
