//! Opening several compartments of a bank at once.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use custody_app::remote_opens::OpenOrAsk;
use custody_core::BankId;
use custody_proto::api::OpeningView;

use super::approvals::pending;
use super::{Json, deliver, parse_id};
use crate::extract::Staff;
use crate::routes::{Access, Doc, Routes};
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

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::Staff;
    table.post(
        "/api/v1/banks/{id}/bulk-open",
        Staff,
        Doc::list(
            "Open several compartments at once (needs a step-up); more than three, or past \
                 the remote-open budget, answer 202 with a request another member of staff \
                 approves",
            "OpeningView",
        )
        .taking("BulkOpenRequest")
        .or_pending()
        .opening(),
        bulk_open,
    )
}
