//! QR pickup tokens for the recipient's app.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use custody_core::ParcelId;
use custody_proto::api::PickupQrView;

use super::{Json, parse_id};
use crate::extract::PersonSession;
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
