//! The signed-in person's own account over the API: the second-factor step, setting factors
//! up, and their sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_app::AppError;
use custody_app::factors::{Proof, Proven};
use custody_core::SessionId;
use custody_proto::api::{
    EndedView, FactorRequest, FactorsView, PasskeyAnswerRequest, PasskeyCeremonyView,
    RecoveryCodesView, SessionListItem, TotpConfirmRequest, TotpEnrolmentView,
};
use zeroize::Zeroizing;

use crate::api::Json;
use crate::api::sessions::signed_in;
use crate::extract::{AnySession, PersonSession};
use crate::{ApiError, RequestClient, ServerState, views};

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The answer to a proven factor: the rotated session's cookies and view.
fn rotated(state: &ServerState, proven: &Proven) -> Response {
    signed_in(state, &proven.session, proven.recovery_codes.as_deref())
}

/// Prove a second factor in the current session: sign-in's second step, or a step-up.
pub async fn prove_factor(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    AnySession(session): AnySession,
    Json(body): Json<FactorRequest>,
) -> Result<Response, ApiError> {
    let proof = match (body.totp, body.recovery_code) {
        (Some(code), None) => Proof::Totp(Zeroizing::new(code)),
        (None, Some(code)) => Proof::RecoveryCode(Zeroizing::new(code)),
        _ => {
            return Err(
                AppError::Invalid("give exactly one of `totp` and `recovery_code`".into()).into()
            );
        }
    };
    let proven =
        state.app.prove_second_factor(&session.token, &session.info, proof, &client).await?;
    Ok(rotated(&state, &proven))
}

/// The second factors the person holds.
pub async fn factors(
    State(state): State<ServerState>,
    AnySession(session): AnySession,
) -> ApiResult<FactorsView> {
    let f = state.app.factors(&session.info).await?;
    Ok(Json(FactorsView {
        totp: f.totp,
        totp_pending: f.totp_pending,
        recovery_codes_left: f.recovery_codes_left,
        passkeys: f.passkeys,
        second_factor_required: session.info.needs_second_factor(),
    }))
}

/// Begin setting up an authenticator app.
pub async fn begin_totp(
    State(state): State<ServerState>,
    AnySession(session): AnySession,
) -> Result<Response, ApiError> {
    let e = state.app.begin_totp(&session.info).await?;
    let view = TotpEnrolmentView {
        otpauth_uri: e.uri.as_str().to_owned(),
        secret: e.secret.as_str().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Confirm the app being set up with its first code.
pub async fn confirm_totp(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    AnySession(session): AnySession,
    Json(body): Json<TotpConfirmRequest>,
) -> Result<Response, ApiError> {
    let proven = state.app.confirm_totp(&session.token, &session.info, &body.code, &client).await?;
    Ok(rotated(&state, &proven))
}

/// Remove the authenticator app.
pub async fn remove_totp(
    State(state): State<ServerState>,
    session: PersonSession,
) -> Result<StatusCode, ApiError> {
    state.app.remove_totp(&session.info).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the recovery codes.
pub async fn recovery_codes(
    State(state): State<ServerState>,
    session: PersonSession,
) -> Result<Response, ApiError> {
    let codes = state.app.issue_recovery_codes(&session.info).await?;
    let view = RecoveryCodesView { codes: codes.iter().map(|c| c.as_str().to_owned()).collect() };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The person's live sessions.
pub async fn sessions(
    State(state): State<ServerState>,
    session: PersonSession,
) -> ApiResult<Vec<SessionListItem>> {
    let rows = state.app.sessions_of(&session.info).await?;
    Ok(Json(
        rows.iter()
            .map(|r| SessionListItem {
                id: r.id.to_string(),
                created_at: views::rfc3339(r.created_at),
                last_seen_at: views::rfc3339(r.last_seen_at),
                source: r.source.clone(),
                user_agent: r.user_agent.clone(),
                factor: r.factor.map(|(f, _)| f.as_str().to_owned()),
                current: r.id == session.info.id,
            })
            .collect(),
    ))
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

fn ceremony_view(c: custody_app::passkeys::PasskeyCeremony) -> Result<Response, ApiError> {
    let options = serde_json::from_str(&c.options)
        .map_err(|e| AppError::Invalid(format!("passkey options: {e}")))?;
    Ok(Json(PasskeyCeremonyView { ceremony: c.id, options }).into_response())
}

/// Begin registering a passkey (a step-up when a factor is held).
pub async fn begin_passkey(
    State(state): State<ServerState>,
    AnySession(session): AnySession,
) -> Result<Response, ApiError> {
    ceremony_view(state.app.begin_passkey(&session.info).await?)
}

/// Finish registering it with the browser's answer; the session is rotated.
pub async fn finish_passkey(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    AnySession(session): AnySession,
    Json(body): Json<PasskeyAnswerRequest>,
) -> Result<Response, ApiError> {
    let answer = body.credential.to_string();
    let proven = state
        .app
        .finish_passkey(&session.token, &session.info, &body.ceremony, &answer, &client)
        .await?;
    Ok(rotated(&state, &proven))
}

/// Begin signing in with a passkey alone.
pub async fn begin_passkey_sign_in(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
) -> Result<Response, ApiError> {
    ceremony_view(state.app.begin_passkey_sign_in(&client).await?)
}

/// Sign in with the browser's answer: a full session for the passkey's owner.
pub async fn passkey_sign_in(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    Json(body): Json<PasskeyAnswerRequest>,
) -> Result<Response, ApiError> {
    let answer = body.credential.to_string();
    let session = state.app.sign_in_with_passkey(&body.ceremony, &answer, &client).await?;
    Ok(signed_in(&state, &session, None))
}

/// Begin proving a passkey in the current session.
pub async fn begin_passkey_proof(
    State(state): State<ServerState>,
    AnySession(session): AnySession,
) -> Result<Response, ApiError> {
    ceremony_view(state.app.begin_passkey_proof(&session.info).await?)
}

/// Prove it with the browser's answer: sign-in's second step, or a step-up.
pub async fn prove_passkey(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    AnySession(session): AnySession,
    Json(body): Json<PasskeyAnswerRequest>,
) -> Result<Response, ApiError> {
    let answer = body.credential.to_string();
    let proven = state
        .app
        .prove_passkey(&session.token, &session.info, &body.ceremony, &answer, &client)
        .await?;
    Ok(rotated(&state, &proven))
}
