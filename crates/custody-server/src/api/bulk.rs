//! Opening several compartments of a bank at once.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use custody_app::remote_opens::OpenOrAsk;
use custody_core::BankId;
use custody_proto::api::OpeningView;

use super::approvals::pending;
use super::{Json, deliver, parse_id};
use crate::extract::Staff;
use crate::{ApiError, ServerState, views};

/// Staff open several compartments of a bank at once, with a reason: at once up to three,
/// beyond that a request another member of staff approves.
pub async fn bulk_open(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<custody_proto::api::BulkOpenRequest>,
) -> Result<Response, ApiError> {
    let bank: BankId = parse_id(&id, "bank")?;
    match state.app.bulk_open(staff.caller(), &bank, &body.compartments, &body.reason).await? {
        OpenOrAsk::Opened(openings) => {
            let views = openings
                .iter()
                .map(|o| OpeningView {
                    compartment: views::compartment(&o.compartment),
                    parcel: None,
                    command_delivered: deliver(&state, &o.command),
                })
                .collect::<Vec<_>>();
            Ok(Json(views).into_response())
        }
        OpenOrAsk::Pending(request) => Ok(pending(&request)),
    }
}
