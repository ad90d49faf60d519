//! Alerts: a site's list, one with its timeline, and taking, noting and resolving them.

use axum::extract::{Path, Query, State};
use custody_core::{AlertId, SiteId};
use custody_proto::api::{AlertDetailView, AlertEventView, AlertView, NoteRequest, ReasonRequest};
use serde::Deserialize;

use super::{ApiResult, Json, parse_id};
use crate::extract::{Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ServerState, views};

fn alert_view(a: &custody_app::alerts::Alert) -> AlertView {
    AlertView {
        id: a.id.to_string(),
        site: a.site.to_string(),
        bank: a.bank.as_ref().map(ToString::to_string),
        compartment: a.compartment,
        kind: a.kind.as_str().to_owned(),
        severity: a.severity.as_str().to_owned(),
        state: a.state.as_str().to_owned(),
        owner: a.owner.as_ref().map(ToString::to_string),
        readings: a.readings,
        raised_at: views::rfc3339(a.raised_at),
        updated_at: views::rfc3339(a.updated_at),
    }
}

/// Which of a site's alerts to list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    live: Option<bool>,
}

/// A site's alerts, newest first.
pub async fn site_alerts(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
    query: Result<Query<AlertQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<AlertView>> {
    let Query(q) = query?;
    let site: SiteId = parse_id(&id, "site")?;
    let rows = state.app.alerts(reader.caller(), &site, q.live.unwrap_or(false)).await?;
    Ok(Json(rows.iter().map(alert_view).collect()))
}

/// An alert with its timeline.
pub async fn alert(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<AlertDetailView> {
    let id: AlertId = parse_id(&id, "alert")?;
    let found = state.app.alert(reader.caller(), &id).await?;
    Ok(Json(AlertDetailView {
        alert: alert_view(&found.alert),
        timeline: found
            .timeline
            .iter()
            .map(|e| AlertEventView {
                seq: e.seq,
                at: views::rfc3339(e.at),
                actor: e.actor.clone(),
                what: e.what.clone(),
                note: e.note.clone(),
            })
            .collect(),
    }))
}

/// Take an alert.
pub async fn acknowledge_alert(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<AlertView> {
    let id: AlertId = parse_id(&id, "alert")?;
    Ok(Json(alert_view(&state.app.acknowledge_alert(staff.caller(), &id).await?)))
}

/// Add a note to an alert's timeline.
pub async fn note_alert(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<NoteRequest>,
) -> ApiResult<AlertView> {
    let id: AlertId = parse_id(&id, "alert")?;
    Ok(Json(alert_view(&state.app.note_alert(staff.caller(), &id, &body.note).await?)))
}

/// Resolve an alert, with what it was.
pub async fn resolve_alert(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<ReasonRequest>,
) -> ApiResult<AlertView> {
    let id: AlertId = parse_id(&id, "alert")?;
    Ok(Json(alert_view(&state.app.resolve_alert(staff.caller(), &id, &body.reason).await?)))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Staff, StaffRead};
    table
        .get(
            "/api/v1/sites/{id}/alerts",
            StaffRead,
            Doc::list(
                "The site's alerts, newest first (`?live=true`: only those not resolved)",
                "AlertView",
            ),
            site_alerts,
        )
        .get(
            "/api/v1/alerts/{id}",
            StaffRead,
            Doc::json("An alert with its timeline", 200, "AlertDetailView"),
            alert,
        )
        .post(
            "/api/v1/alerts/{id}/acknowledge",
            Staff,
            Doc::json("Take an alert: it is yours from now on", 200, "AlertView"),
            acknowledge_alert,
        )
        .post(
            "/api/v1/alerts/{id}/notes",
            Staff,
            Doc::json("Add a note to an alert's timeline", 200, "AlertView").taking("NoteRequest"),
            note_alert,
        )
        .post(
            "/api/v1/alerts/{id}/resolve",
            Staff,
            Doc::json("Resolve an alert, saying what it was", 200, "AlertView")
                .taking("ReasonRequest"),
            resolve_alert,
        )
}
