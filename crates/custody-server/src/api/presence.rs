//! Opening one's own compartment from the app, standing at the bank.

use axum::extract::{Path, State};
use custody_core::ParcelId;
use custody_proto::api::{AppOpenRequest, AppOpenView};
use zeroize::Zeroizing;

use super::{ApiResult, Json, deliver, parse_id};
use crate::ServerState;
use crate::extract::PersonSession;

/// The recipient opens their compartment from the app with the code the kiosk shows.
pub async fn open_from_app(
    State(state): State<ServerState>,
    session: PersonSession,
    Path(id): Path<String>,
    Json(body): Json<AppOpenRequest>,
) -> ApiResult<AppOpenView> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    let presence = Zeroizing::new(body.presence_code);
    let opening = state.app.open_from_app(session.caller(), &id, &presence).await?;
    Ok(Json(AppOpenView {
        compartment: opening.compartment.get(),
        command_delivered: deliver(&state, &opening.command),
    }))
}
