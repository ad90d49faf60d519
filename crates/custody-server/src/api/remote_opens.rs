//! Opening a compartment remotely, with a reason.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use custody_app::remote_opens::OpenOrAsk;
use custody_core::CompartmentId;
use custody_proto::api::{OpeningView, ReasonRequest};

use super::approvals::pending;
use super::{Json, deliver, parse_id};
use crate::extract::Staff;
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
