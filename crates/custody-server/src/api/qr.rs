//! QR pickup tokens for the recipient's app.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use custody_core::ParcelId;
use custody_proto::api::PickupQrView;

use super::{Json, parse_id};
use crate::extract::PersonSession;
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

/// A fresh QR pickup token for the recipient's own parcel.
pub async fn pickup_qr(
    State(state): State<ServerState>,
    session: PersonSession,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    let shown = state.app.pickup_qr(session.caller(), &id).await?;
    let view = PickupQrView { token: shown.text, expires_at: views::rfc3339(shown.expires_at) };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(view)).into_response())
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::Person;
    table.get(
        "/api/v1/parcels/{id}/pickup-qr",
        Person,
        Doc::json(
            "A QR pickup token for the recipient's own parcel, valid for 10 minutes (the \
                 recipient only)",
            200,
            "PickupQrView",
        ),
        pickup_qr,
    )
}
