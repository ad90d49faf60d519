//! Personal-data breaches: declared, read with their clocks, their notices drafted, and each
//! step in answering them recorded.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use custody_app::breaches::{Breach, NewBreach};
use custody_core::breach::BreachStep;
use custody_core::{BreachId, SiteId};
use custody_proto::api::{
    BreachDeadlinesView, BreachNoticeView, BreachNoticesView, BreachStepRequest, BreachStepView,
    BreachView, DeclareBreachRequest,
};

use super::{ApiResult, Json, parse_id, time_in};
use crate::error::ApiError;
use crate::extract::{Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ServerState, views};

/// A breach as the API shows it.
pub(crate) fn breach_view(b: &Breach) -> BreachView {
    BreachView {
        id: b.id.to_string(),
        site: b.site.to_string(),
        bank: b.bank.as_ref().map(ToString::to_string),
        alert: b.alert.as_ref().map(ToString::to_string),
        summary: b.summary.clone(),
        window_from: views::rfc3339(b.window_from),
        window_to: views::rfc3339(b.window_to),
        discovered_at: views::rfc3339(b.discovered_at),
        declared_at: views::rfc3339(b.declared_at),
        declared_by: b.declared_by.to_string(),
        affected: b.affected,
        deadlines: BreachDeadlinesView {
            authority: views::rfc3339(b.deadlines.authority),
            individuals: views::rfc3339(b.deadlines.individuals),
            hhs: views::rfc3339(b.deadlines.hhs),
            media: b.deadlines.media.map(views::rfc3339),
        },
        steps: b
            .steps
            .iter()
            .map(|(step, at, by)| BreachStepView {
                step: step.to_string(),
                at: views::rfc3339(*at),
                by: by.to_string(),
            })
            .collect(),
    }
}

fn required(text: &str, field: &str) -> Result<custody_core::Timestamp, ApiError> {
    time_in(Some(text), field)?
        .ok_or_else(|| custody_app::AppError::Invalid(format!("{field}: required")).into())
}

/// Declare a breach.
pub async fn declare(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Json(body): Json<DeclareBreachRequest>,
) -> Result<(StatusCode, Json<BreachView>), ApiError> {
    let new = NewBreach {
        site: parse_id(&body.site, "site")?,
        bank: body.bank.as_deref().map(|b| parse_id(b, "bank")).transpose()?,
        alert: body.alert.as_deref().map(|a| parse_id(a, "alert")).transpose()?,
        summary: body.summary,
        window_from: required(&body.window_from, "window_from")?,
        window_to: required(&body.window_to, "window_to")?,
        discovered_at: required(&body.discovered_at, "discovered_at")?,
    };
    let breach = state.app.declare_breach(staff.caller(), new).await?;
    Ok((StatusCode::CREATED, Json(breach_view(&breach))))
}

/// A breach with its clocks.
pub async fn breach(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<BreachView> {
    let id: BreachId = parse_id(&id, "breach")?;
    Ok(Json(breach_view(&state.app.breach(reader.caller(), &id).await?)))
}

/// A site's breaches, newest first.
pub async fn site_breaches(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<Vec<BreachView>> {
    let site: SiteId = parse_id(&id, "site")?;
    let all = state.app.breaches_at(reader.caller(), &site).await?;
    Ok(Json(all.iter().map(breach_view).collect()))
}

/// The notices a breach calls for, drafted.
pub async fn notices(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<BreachNoticesView> {
    let id: BreachId = parse_id(&id, "breach")?;
    let drafts = state.app.breach_notices(staff.caller(), &id).await?;
    Ok(Json(BreachNoticesView {
        authority: drafts.authority,
        individuals: drafts
            .individuals
            .into_iter()
            .map(|n| BreachNoticeView {
                person: n.person.to_string(),
                email: n.email,
                text: n.text,
            })
            .collect(),
    }))
}

/// Record a step in answering a breach.
pub async fn step(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<BreachStepRequest>,
) -> ApiResult<BreachView> {
    let id: BreachId = parse_id(&id, "breach")?;
    let step = BreachStep::parse(&body.step).ok_or_else(|| {
        custody_app::AppError::Invalid(
            "step: authority_notified, individuals_notified, hhs_notified, media_notified or closed"
                .into(),
        )
    })?;
    Ok(Json(breach_view(&state.app.record_breach_step(staff.caller(), &id, step).await?)))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Staff, StaffRead};
    table
        .post(
            "/api/v1/breaches",
            Staff,
            Doc::json(
                "Declare a personal-data breach (needs a step-up): the people the audit log \
                 shows at the site in its window are the ones reached, and the GDPR and HIPAA \
                 clocks start from its discovery",
                201,
                "BreachView",
            )
            .taking("DeclareBreachRequest"),
            declare,
        )
        .get(
            "/api/v1/breaches/{id}",
            StaffRead,
            Doc::json("A breach with its deadlines and the steps taken", 200, "BreachView"),
            breach,
        )
        .get(
            "/api/v1/sites/{id}/breaches",
            StaffRead,
            Doc::list("A site's breaches, newest first", "BreachView"),
            site_breaches,
        )
        .post(
            "/api/v1/breaches/{id}/notices",
            Staff,
            Doc::json(
                "Draft a breach's notices, to the authority and to each person reached (needs a \
                 step-up; audited)",
                200,
                "BreachNoticesView",
            ),
            notices,
        )
        .post(
            "/api/v1/breaches/{id}/steps",
            Staff,
            Doc::json(
                "Record a step in answering a breach, once (needs a step-up; closing needs the \
                 notices first)",
                200,
                "BreachView",
            )
            .taking("BreachStepRequest"),
            step,
        )
}
