//! Passkeys over the API: registering one, signing in with one alone, proving one as a
//! second factor.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use custody_app::AppError;
use custody_proto::api::{PasskeyAnswerRequest, PasskeyCeremonyView};

use super::Json;
use super::factors::rotated;
use super::sessions::signed_in;
use crate::extract::AnySession;
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, RequestClient, ServerState};

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

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{AnySession, Public};
    table
        .post(
            "/api/v1/sessions/passkey/begin",
            Public,
            Doc::json("Begin signing in with a passkey alone", 200, "PasskeyCeremonyView")
                .throttled(),
            begin_passkey_sign_in,
        )
        .post(
            "/api/v1/sessions/passkey/finish",
            Public,
            Doc::json(
                "Sign in with the browser's answer; sets the session cookie",
                200,
                "SessionView",
            )
            .taking("PasskeyAnswerRequest")
            .throttled(),
            passkey_sign_in,
        )
        .post(
            "/api/v1/sessions/current/passkey/begin",
            AnySession,
            Doc::json("Begin proving a passkey in this session", 200, "PasskeyCeremonyView"),
            begin_passkey_proof,
        )
        .post(
            "/api/v1/sessions/current/passkey/finish",
            AnySession,
            Doc::json("Prove it with the browser's answer; rotates the cookie", 200, "SessionView")
                .taking("PasskeyAnswerRequest"),
            prove_passkey,
        )
        .post(
            "/api/v1/me/passkeys/begin",
            AnySession,
            Doc::json(
                "Begin registering a passkey (a step-up when a factor is held)",
                200,
                "PasskeyCeremonyView",
            ),
            begin_passkey,
        )
        .post(
            "/api/v1/me/passkeys/finish",
            AnySession,
            Doc::json(
                "Finish registering it; rotates the cookie, may issue recovery codes",
                200,
                "SessionView",
            )
            .taking("PasskeyAnswerRequest"),
            finish_passkey,
        )
}
