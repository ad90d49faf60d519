//! Opening one's own compartment from the app, standing at the bank.

use axum::extract::{Path, State};
use custody_core::ParcelId;
use custody_proto::api::{AppOpenRequest, AppOpenView};
use zeroize::Zeroizing;

use super::{ApiResult, Json, deliver, parse_id};
use crate::ServerState;
use crate::extract::PersonSession;
use crate::routes::{Access, Doc, Routes};

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

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::Person;
    table.post(
        "/api/v1/parcels/{id}/open",
        Person,
        Doc::json(
            "Open one's own compartment from the app, standing at the bank: with the code its \
                 kiosk shows now (the recipient only; wrong codes throttled per person)",
            200,
            "AppOpenView",
        )
        .taking("AppOpenRequest")
        .throttled()
        .opening(),
        open_from_app,
    )
}
