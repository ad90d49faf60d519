//! Sites and their banks.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use custody_core::SiteId;
use custody_proto::api::{BankView, CreateBankRequest, CreateSiteRequest, SiteView};

use super::{ApiResult, Json, parse_id};
use crate::extract::{Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

/// Sites the caller may see.
pub async fn sites(
    State(state): State<ServerState>,
    StaffRead(staff): StaffRead,
) -> ApiResult<Vec<SiteView>> {
    let rows = state.app.sites_for(staff.caller()).await?;
    Ok(Json(rows.iter().map(views::site).collect()))
}

/// One site with its banks and compartments.
pub async fn site(
    State(state): State<ServerState>,
    StaffRead(staff): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<SiteView> {
    let id: SiteId = parse_id(&id, "site")?;
    let (site, banks) = state.app.site_overview(staff.caller(), &id).await?;
    let mut view = views::site(&site);
    view.banks = banks
        .iter()
        .map(|(b, cs)| BankView {
            id: b.id.to_string(),
            name: b.name.to_string(),
            online: state.hub.is_online(&b.id),
            compartments: cs.iter().map(views::compartment).collect(),
        })
        .collect();
    Ok(Json(view))
}

/// Create a site.
pub async fn create_site(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Json(body): Json<CreateSiteRequest>,
) -> Result<(StatusCode, Json<SiteView>), ApiError> {
    let window = body.pickup_window_hours.map(|h| Duration::from_secs(h.saturating_mul(3600)));
    let s = state
        .app
        .create_site(staff.caller(), &staff.person().org, &body.name, &body.time_zone, window)
        .await?;
    Ok((StatusCode::CREATED, Json(views::site(&s))))
}

/// Create a bank.
pub async fn create_bank(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<CreateBankRequest>,
) -> Result<(StatusCode, Json<BankView>), ApiError> {
    let site: SiteId = parse_id(&id, "site")?;
    let b = state.app.create_bank(staff.caller(), &site, &body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(BankView {
            id: b.id.to_string(),
            name: b.name.to_string(),
            online: false,
            compartments: Vec::new(),
        }),
    ))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Staff, StaffRead};
    table
        .get(
            "/api/v1/sites",
            StaffRead,
            Doc::list("Sites in the caller's scope", "SiteView"),
            sites,
        )
        .post(
            "/api/v1/sites",
            Staff,
            Doc::json("Create a site", 201, "SiteView").taking("CreateSiteRequest"),
            create_site,
        )
        .get(
            "/api/v1/sites/{id}",
            StaffRead,
            Doc::json("A site with its banks and compartments", 200, "SiteView"),
            site,
        )
        .post(
            "/api/v1/sites/{id}/banks",
            Staff,
            Doc::json("Create a bank", 201, "BankView").taking("CreateBankRequest"),
            create_bank,
        )
}
