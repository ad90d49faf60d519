//! Opening a compartment remotely, with a reason.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use custody_app::remote_opens::OpenOrAsk;
use custody_core::CompartmentId;
use custody_proto::api::{OpeningView, ReasonRequest};

use super::approvals::pending;
use super::{Json, deliver, parse_id};
use crate::extract::Staff;
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

/// Staff open a compartment remotely, with a reason; past the remote-open budget, a request
/// another member of staff approves (202).
pub async fn remote_open(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<ReasonRequest>,
) -> Result<Response, ApiError> {
    let id: CompartmentId = parse_id(&id, "compartment")?;
    match state.app.remote_open(staff.caller(), &id, &body.reason).await? {
        OpenOrAsk::Opened(opening) => {
            let command_delivered = deliver(&state, &opening.command);
            Ok(Json(OpeningView {
                compartment: views::compartment(&opening.compartment),
                parcel: None,
                command_delivered,
            })
            .into_response())
        }
        OpenOrAsk::Pending(request) => Ok(pending(&request)),
    }
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::Staff;
    table.post(
        "/api/v1/compartments/{id}/open",
        Staff,
        Doc::json(
            "Open a compartment remotely, with a reason (needs a step-up); past the \
                 remote-open budget it answers 202 with a request another member of staff \
                 approves",
            200,
            "OpeningView",
        )
        .taking("ReasonRequest")
        .or_pending()
        .opening(),
        remote_open,
    )
}
