//! Locking a bank down and lifting it, and each site's lockdown rules.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_core::alert::LockdownRule;
use custody_core::{BankId, SiteId};
use custody_proto::api::{LockdownRuleView, LockdownView, ReasonRequest};

use super::{ApiResult, Json, parse_id};
use crate::extract::{Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

fn lockdown_view(
    bank: &BankId,
    lockdown: Option<&custody_app::lockdown::Lockdown>,
) -> LockdownView {
    LockdownView {
        bank: bank.to_string(),
        locked_down: lockdown.is_some(),
        engaged_at: lockdown.map(|l| views::rfc3339(l.engaged_at)),
        engaged_by: lockdown.map(|l| l.engaged_by.clone()),
    }
}

/// Whether a bank is locked down.
pub async fn lockdown(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<LockdownView> {
    let bank: BankId = parse_id(&id, "bank")?;
    let lockdown = state.app.lockdown(reader.caller(), &bank).await?;
    Ok(Json(lockdown_view(&bank, lockdown.as_ref())))
}

/// Lock a bank down, with a reason.
pub async fn engage_lockdown(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<ReasonRequest>,
) -> ApiResult<LockdownView> {
    let bank: BankId = parse_id(&id, "bank")?;
    let lockdown = state.app.engage_lockdown(staff.caller(), &bank, &body.reason).await?;
    Ok(Json(lockdown_view(&bank, Some(&lockdown))))
}

/// Lift a bank's lockdown: at once, or a request another member of staff approves (202).
pub async fn lift_lockdown(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<ReasonRequest>,
) -> Result<Response, ApiError> {
    let bank: BankId = parse_id(&id, "bank")?;
    match state.app.lift_lockdown(staff.caller(), &bank, &body.reason).await? {
        custody_app::lockdown::Lift::Lifted => Ok(Json(lockdown_view(&bank, None)).into_response()),
        custody_app::lockdown::Lift::Pending(request) => {
            Ok((StatusCode::ACCEPTED, Json(views::approval(&request))).into_response())
        }
    }
}

/// A site's lockdown rules.
pub async fn lockdown_rules(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<Vec<LockdownRuleView>> {
    let site: SiteId = parse_id(&id, "site")?;
    let rules = state.app.lockdown_rules(reader.caller(), &site).await?;
    Ok(Json(rules.into_iter().map(views::lockdown_rule).collect()))
}

/// Set a site's lockdown rule for a kind.
pub async fn set_lockdown_rule(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<LockdownRuleView>,
) -> ApiResult<Vec<LockdownRuleView>> {
    let site: SiteId = parse_id(&id, "site")?;
    let rule = LockdownRule::parse(&body.kind, &body.min_severity, &body.scope)
        .map_err(custody_app::AppError::Invalid)?;
    let rules = state.app.set_lockdown_rule(staff.caller(), &site, rule).await?;
    Ok(Json(rules.into_iter().map(views::lockdown_rule).collect()))
}

/// Remove a site's lockdown rule for a kind.
pub async fn remove_lockdown_rule(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path((id, kind)): Path<(String, String)>,
) -> ApiResult<Vec<LockdownRuleView>> {
    let site: SiteId = parse_id(&id, "site")?;
    let rules = state
        .app
        .remove_lockdown_rule(
            staff.caller(),
            &site,
            LockdownRule::parse_kind(&kind).map_err(custody_app::AppError::Invalid)?,
        )
        .await?;
    Ok(Json(rules.into_iter().map(views::lockdown_rule).collect()))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Staff, StaffRead};
    table
        .get(
            "/api/v1/banks/{id}/lockdown",
            StaffRead,
            Doc::json("Whether the bank is locked down", 200, "LockdownView"),
            lockdown,
        )
        .post(
            "/api/v1/banks/{id}/lockdown",
            Staff,
            Doc::json("Lock the bank down at once, with a reason", 200, "LockdownView")
                .taking("ReasonRequest"),
            engage_lockdown,
        )
        .post(
            "/api/v1/banks/{id}/lockdown/lift",
            Staff,
            Doc::json(
                "Lift the lockdown (needs a step-up and a reason); 202 with a request another \
                 member of staff approves, unless approvals are off",
                200,
                "LockdownView",
            )
            .taking("ReasonRequest")
            .or_pending(),
            lift_lockdown,
        )
        .get(
            "/api/v1/sites/{id}/lockdown-rules",
            StaffRead,
            Doc::list(
                "The site's lockdown rules: which new alerts lock down their bank or the site",
                "LockdownRuleView",
            ),
            lockdown_rules,
        )
        .post(
            "/api/v1/sites/{id}/lockdown-rules",
            Staff,
            Doc::list(
                "Set the site's rule for a kind (or `any`), replacing it",
                "LockdownRuleView",
            )
            .taking("LockdownRuleView"),
            set_lockdown_rule,
        )
        .delete(
            "/api/v1/sites/{id}/lockdown-rules/{kind}",
            Staff,
            Doc::list("Remove the site's rule for a kind (needs a step-up)", "LockdownRuleView"),
            remove_lockdown_rule,
        )
}
