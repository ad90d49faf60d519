//! Parcels nobody is named for yet (`custody_app::unaddressed`): the site's list, and naming
//! the resident.

use axum::extract::{Path, Query, State};
use custody_core::{ParcelId, SiteId};
use custody_proto::api::{AddressParcelRequest, ParcelView};
use serde::Deserialize;

use super::{ApiResult, Json, parse_id};
use crate::extract::{Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ServerState, views};

/// How many of the list to show.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
}

/// A site's parcels nobody is named for yet, still in its care, oldest first.
pub async fn list(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<ParcelView>> {
    let Query(q) = query?;
    let site: SiteId = parse_id(&id, "site")?;
    let caller = reader.caller();
    let rows = state.app.unaddressed_parcels(caller, &site, q.limit.unwrap_or(100)).await?;
    Ok(Json(rows.iter().map(|p| views::parcel(caller, p)).collect()))
}

/// Name the resident a parcel is for; one already in its compartment is notified at once.
pub async fn address(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<AddressParcelRequest>,
) -> ApiResult<ParcelView> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    let caller = staff.caller();
    let p = state.app.address_parcel(caller, &id, &body.email).await?;
    Ok(Json(views::parcel(caller, &p)))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Staff, StaffRead};
    table
        .post(
            "/api/v1/parcels/{id}/recipient",
            Staff,
            Doc::json(
                "Name the resident a parcel is for, when the carrier's address matched none; \
                 a parcel already in its compartment is notified at once",
                200,
                "ParcelView",
            )
            .taking("AddressParcelRequest"),
            address,
        )
        .get(
            "/api/v1/sites/{id}/unaddressed-parcels",
            StaffRead,
            Doc::list(
                "The site's parcels nobody is named for yet (the carrier's address matched no \
                 resident), still in its care, oldest first",
                "ParcelView",
            ),
            list,
        )
}
