//! Carriers.

use axum::extract::State;
use axum::http::StatusCode;
use custody_proto::api::{CarrierView, CreateCarrierRequest};

use super::Json;
use crate::extract::Staff;
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState};

/// Register a carrier.
pub async fn create_carrier(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Json(body): Json<CreateCarrierRequest>,
) -> Result<(StatusCode, Json<CarrierView>), ApiError> {
    let c = state.app.create_carrier(staff.caller(), &staff.person().org, &body.name).await?;
    Ok((StatusCode::CREATED, Json(CarrierView { id: c.id.to_string(), name: c.name.to_string() })))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::Staff;
    table.post(
        "/api/v1/carriers",
        Staff,
        Doc::json("Register a carrier", 201, "CarrierView").taking("CreateCarrierRequest"),
        create_carrier,
    )
}
