//! Second factors over the API: proving one in a session (sign-in's second step, or a
//! step-up), setting up an authenticator app, recovery codes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_app::AppError;
use custody_app::factors::{Proof, Proven};
use custody_proto::api::{
    FactorRequest, FactorsView, RecoveryCodesView, TotpConfirmRequest, TotpEnrolmentView,
};
use zeroize::Zeroizing;

use super::{ApiResult, Json};
use crate::api::sessions::signed_in;
use crate::extract::{AnySession, PersonSession};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, RequestClient, ServerState};

/// The answer to a proven factor: the rotated session's cookies and view.
pub(crate) fn rotated(state: &ServerState, proven: &Proven) -> Response {
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

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{AnySession, Person};
    table
        .post(
            "/api/v1/sessions/current/factor",
            AnySession,
            Doc::json(
                "Prove a second factor (sign-in's second step, or a step-up); rotates the cookie",
                200,
                "SessionView",
            )
            .taking("FactorRequest")
            .throttled(),
            prove_factor,
        )
        .get(
            "/api/v1/me/factors",
            AnySession,
            Doc::json("The second factors the signed-in person holds", 200, "FactorsView"),
            factors,
        )
        .post(
            "/api/v1/me/totp",
            AnySession,
            Doc::json(
                "Begin setting up an authenticator app (a step-up when a factor is held)",
                201,
                "TotpEnrolmentView",
            ),
            begin_totp,
        )
        .post(
            "/api/v1/me/totp/confirm",
            AnySession,
            Doc::json(
                "Confirm the app with its first code; rotates the cookie, may issue recovery codes",
                200,
                "SessionView",
            )
            .taking("TotpConfirmRequest"),
            confirm_totp,
        )
        .delete(
            "/api/v1/me/totp",
            Person,
            Doc::plain("Remove the authenticator app (needs a step-up)").answering(204),
            remove_totp,
        )
        .post(
            "/api/v1/me/recovery-codes",
            Person,
            Doc::json("Replace the recovery codes (needs a step-up)", 201, "RecoveryCodesView"),
            recovery_codes,
        )
}
