//! Signing in and out over the API, and the cookies a session and a browser carry.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custody_core::SessionId;
use custody_proto::api::{EndedView, LoginRequest, PersonView, SessionListItem, SessionView};
use zeroize::Zeroizing;

use super::{ApiResult, Json};
use crate::extract::{AnySession, DEVICE_COOKIE, PersonSession, SESSION_COOKIE};
use crate::routes::{Access, Doc, Routes};
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
    session: &custody_app::sessions::NewSession,
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
    session: &custody_app::sessions::NewSession,
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

/// The person's live sessions.
pub async fn sessions(
    State(state): State<ServerState>,
    session: PersonSession,
) -> ApiResult<Vec<SessionListItem>> {
    let rows = state.app.sessions_of(&session.info).await?;
    Ok(Json(rows.iter().map(|r| session_item(r, Some(&session.info.id))).collect()))
}

/// A session in a list; `current` when it is the one asking.
pub(crate) fn session_item(
    r: &custody_app::sessions::Session,
    current: Option<&SessionId>,
) -> SessionListItem {
    SessionListItem {
        id: r.id.to_string(),
        created_at: views::rfc3339(r.created_at),
        last_seen_at: views::rfc3339(r.last_seen_at),
        source: r.source.clone(),
        user_agent: r.user_agent.clone(),
        factor: r.factor.map(|(f, _)| f.as_str().to_owned()),
        current: current == Some(&r.id),
    }
}

/// End one of the person's sessions.
pub async fn end_session(
    State(state): State<ServerState>,
    session: PersonSession,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: SessionId = crate::api::parse_id(&id, "session")?;
    state.app.end_session(&session.info, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End every other session of the person.
pub async fn end_other_sessions(
    State(state): State<ServerState>,
    session: PersonSession,
) -> ApiResult<EndedView> {
    let ended = state.app.end_other_sessions(&session.info, &session.token).await?;
    Ok(Json(EndedView { ended }))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{AnySession, Person, Public};
    table
        .post(
            "/api/v1/sessions",
            Public,
            Doc::json("Sign in with a password; sets the session cookie", 200, "SessionView")
                .taking("LoginRequest")
                .throttled(),
            login,
        )
        .delete(
            "/api/v1/sessions/current",
            AnySession,
            Doc::plain("Sign out").answering(204),
            logout,
        )
        .get("/api/v1/me", Person, Doc::json("The signed-in person", 200, "PersonView"), me)
        .get(
            "/api/v1/sessions",
            Person,
            Doc::list("The signed-in person's sessions", "SessionListItem"),
            sessions,
        )
        .delete(
            "/api/v1/sessions/{id}",
            Person,
            Doc::plain("End one of them").answering(204),
            end_session,
        )
        .post(
            "/api/v1/sessions/end-others",
            Person,
            Doc::json("End every other session of the signed-in person", 200, "EndedView"),
            end_other_sessions,
        )
}
