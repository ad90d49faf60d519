//! Each site's retention of personal data.

use axum::extract::{Path, State};
use custody_core::SiteId;
use custody_core::site::Retention;
use custody_proto::api::RetentionView;

use super::{ApiResult, Json, parse_id};
use crate::ServerState;
use crate::extract::{Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};

fn view(r: &Retention) -> RetentionView {
    RetentionView {
        parcel_days: r.parcel_days,
        session_days: r.session_days,
        delivery_days: r.delivery_days,
        evidence_days: r.evidence_days,
    }
}

/// A site's retention.
pub async fn retention(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<RetentionView> {
    let site: SiteId = parse_id(&id, "site")?;
    Ok(Json(view(&state.app.retention(reader.caller(), &site).await?)))
}

/// Set a site's retention.
pub async fn set_retention(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<RetentionView>,
) -> ApiResult<RetentionView> {
    let site: SiteId = parse_id(&id, "site")?;
    let asked = Retention {
        parcel_days: body.parcel_days,
        session_days: body.session_days,
        delivery_days: body.delivery_days,
        evidence_days: body.evidence_days,
    };
    Ok(Json(view(&state.app.set_retention(staff.caller(), &site, asked).await?)))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Staff, StaffRead};
    table
        .get(
            "/api/v1/sites/{id}/retention",
            StaffRead,
            Doc::json(
                "How long the site keeps personal data once it has served its purpose",
                200,
                "RetentionView",
            ),
            retention,
        )
        .post(
            "/api/v1/sites/{id}/retention",
            Staff,
            Doc::json(
                "Set how long the site keeps personal data (needs a step-up); the sweeper \
                 enforces it",
                200,
                "RetentionView",
            )
            .taking("RetentionView"),
            set_retention,
        )
}
