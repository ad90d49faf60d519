//! Badges: listed, registered one at a time or imported, revoked.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use custody_core::SiteId;
use custody_proto::api::{BadgeView, ImportBadgesRequest, RegisterBadgeRequest};

use super::{ApiResult, Json, parse_id};
use crate::extract::{Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

pub(crate) fn badge_view(b: &custody_app::badges::Badge) -> BadgeView {
    BadgeView {
        id: b.id.to_string(),
        site: b.site.to_string(),
        person: b.person.to_string(),
        hint: b.hint.clone(),
        created_at: views::rfc3339(b.created_at),
        revoked_at: b.revoked_at.map(views::rfc3339),
    }
}

/// A site's badges, revoked ones too.
pub async fn badges(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<Vec<BadgeView>> {
    let site: SiteId = parse_id(&id, "site")?;
    let rows = state.app.badges(reader.caller(), &site).await?;
    Ok(Json(rows.iter().map(badge_view).collect()))
}

/// Register a badge to a person of the site; the site's kiosks get it at once.
pub async fn register_badge(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<RegisterBadgeRequest>,
) -> Result<(StatusCode, Json<BadgeView>), ApiError> {
    let site: SiteId = parse_id(&id, "site")?;
    let spec = custody_app::badges::BadgeSpec { email: body.email, number: body.badge };
    let row = state.app.register_badge(staff.caller(), &site, spec).await?;
    crate::gateway::sync_badges(&state, &site).await;
    Ok((StatusCode::CREATED, Json(badge_view(&row))))
}

/// Register every badge of an access-control export, or none (422 listing the lines at fault).
pub async fn import_badges(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<ImportBadgesRequest>,
) -> Result<(StatusCode, Json<Vec<BadgeView>>), ApiError> {
    use custody_app::badges::Registration;
    let site: SiteId = parse_id(&id, "site")?;
    match state.app.import_badges(staff.caller(), &site, &body.csv).await {
        Ok(rows) => {
            crate::gateway::sync_badges(&state, &site).await;
            Ok((StatusCode::CREATED, Json(rows.iter().map(badge_view).collect())))
        }
        Err(Registration::Refused(e)) => Err(e.into()),
        Err(Registration::Problems(problems)) => {
            let shown = problems
                .iter()
                .take(20)
                .map(|p| format!("line {}: {}", p.line, p.problem))
                .collect::<Vec<_>>()
                .join("; ");
            let more = problems.len().saturating_sub(20);
            let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "badge_import",
                format!("nothing was imported: {shown}{more}"),
            ))
        }
    }
}

/// Revoke a badge; the site's kiosks refuse it from the sync that follows at once.
pub async fn revoke_badge(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<BadgeView> {
    let badge: custody_core::BadgeId = parse_id(&id, "badge")?;
    let row = state.app.revoke_badge(staff.caller(), &badge).await?;
    crate::gateway::sync_badges(&state, &row.site).await;
    Ok(Json(badge_view(&row)))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Staff, StaffRead};
    table
        .get(
            "/api/v1/sites/{id}/badges",
            StaffRead,
            Doc::list("The site's badges, revoked ones too (numbers never shown)", "BadgeView"),
            badges,
        )
        .post(
            "/api/v1/sites/{id}/badges",
            Staff,
            Doc::json("Register a badge to a person of the site", 201, "BadgeView")
                .taking("RegisterBadgeRequest"),
            register_badge,
        )
        .post(
            "/api/v1/sites/{id}/badges/import",
            Staff,
            Doc::list(
                "Register every badge of an access-control export (CSV), or none: 422 lists \
                 the lines at fault",
                "BadgeView",
            )
            .answering(201)
            .taking("ImportBadgesRequest"),
            import_badges,
        )
        .post(
            "/api/v1/badges/{id}/revoke",
            Staff,
            Doc::json(
                "Revoke a badge; the site's kiosks refuse it from the next sync",
                200,
                "BadgeView",
            ),
            revoke_badge,
        )
}
