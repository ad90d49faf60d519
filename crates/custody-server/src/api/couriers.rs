//! Couriers' daily kiosk codes.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Json;
use crate::extract::PersonSession;
use crate::{ApiError, ServerState, views};

/// Today's kiosk code of the signed-in courier.
pub async fn courier_code(
    State(state): State<ServerState>,
    session: PersonSession,
) -> Result<Response, ApiError> {
    let code = state.app.courier_code(session.caller()).await?;
    let view = custody_proto::api::CourierCodeView {
        code: code.code.as_str().to_owned(),
        valid_until: views::rfc3339(code.valid_until),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(view)).into_response())
}
