//! A bank's compartments.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use custody_app::compartments::CompartmentSpec;
use custody_core::BankId;
use custody_proto::api::CreateCompartmentsRequest;

use super::{Json, parse_id, size};
use crate::extract::Staff;
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

/// Add compartments to a bank.
pub async fn create_compartments(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<CreateCompartmentsRequest>,
) -> Result<(StatusCode, Json<Vec<custody_proto::api::CompartmentView>>), ApiError> {
    let bank: BankId = parse_id(&id, "bank")?;
    if body.compartments.is_empty() || body.compartments.len() > 999 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "send between 1 and 999 compartments",
        ));
    }
    let specs = body
        .compartments
        .iter()
        .map(|c| {
            Ok(CompartmentSpec {
                number: c.number,
                size: size(&c.size)?,
                accessible: c.accessible,
                refrigerated: c.refrigerated,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let rows = state.app.add_compartments(staff.caller(), &bank, &specs).await?;
    Ok((StatusCode::CREATED, Json(rows.iter().map(views::compartment).collect())))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::Staff;
    table.post(
        "/api/v1/banks/{id}/compartments",
        Staff,
        Doc::list("Add compartments", "CompartmentView").taking("CreateCompartmentsRequest"),
        create_compartments,
    )
}
