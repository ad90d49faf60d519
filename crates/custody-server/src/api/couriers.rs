//! Couriers' daily kiosk codes.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Json;
use crate::extract::PersonSession;
use crate::routes::{Access, Doc, Routes};
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

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::Person;
    table.get(
        "/api/v1/me/courier-code",
        Person,
        Doc::json("A courier's kiosk code for today (couriers only)", 200, "CourierCodeView"),
        courier_code,
    )
}
