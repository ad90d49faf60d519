//! Requests a second person approves, and the 202 answer that makes one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_core::approval::ApprovalOutcome;

use super::{ApiResult, Json, deliver, parse_id};
use crate::extract::{PersonSession, Staff};
use crate::routes::{Access, Doc, Routes};
use crate::{ServerState, views};

/// A request waiting for a second person: `202 Accepted` with the request.
pub(crate) fn pending(request: &custody_app::approvals::Approval) -> Response {
    (StatusCode::ACCEPTED, Json(views::approval(request))).into_response()
}

/// Requests of the organisation waiting for a second person.
pub async fn approvals(
    State(state): State<ServerState>,
    Staff(staff): Staff,
) -> ApiResult<Vec<custody_proto::api::ApprovalView>> {
    let rows = state.app.pending_approvals(staff.caller()).await?;
    Ok(Json(rows.iter().map(views::approval).collect()))
}

async fn decide(
    state: &ServerState,
    staff: &PersonSession,
    id: &str,
    outcome: ApprovalOutcome,
) -> ApiResult<custody_proto::api::ApprovalView> {
    let id: custody_core::ApprovalId = parse_id(id, "approval")?;
    let decided = state.app.decide_approval(staff.caller(), &id, outcome).await?;
    // An approved bulk open ran: its commands go to the bank's agent now.
    for opening in &decided.openings {
        deliver(state, &opening.command);
    }
    Ok(Json(views::approval(&decided.request)))
}

/// Approve a request: it runs at once.
pub async fn approve(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<custody_proto::api::ApprovalView> {
    decide(&state, &staff, &id, ApprovalOutcome::Approved).await
}

/// Reject a request (or withdraw one's own).
pub async fn reject(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<custody_proto::api::ApprovalView> {
    decide(&state, &staff, &id, ApprovalOutcome::Rejected).await
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::Staff;
    table
        .get(
            "/api/v1/approvals",
            Staff,
            Doc::list("Requests waiting for a second person", "ApprovalView"),
            approvals,
        )
        .post(
            "/api/v1/approvals/{id}/approve",
            Staff,
            Doc::json(
                "Approve a request (needs a step-up; not one's own): it runs",
                200,
                "ApprovalView",
            )
            .opening(),
            approve,
        )
        .post(
            "/api/v1/approvals/{id}/reject",
            Staff,
            Doc::json("Reject a request, or withdraw one's own", 200, "ApprovalView"),
            reject,
        )
}
