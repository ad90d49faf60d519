//! Parcels: announce, deposit, confirm, cancel, return, retrieve, read, and codes sent again.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_app::Caller;
use custody_app::parcels::ParcelSpec;
use custody_app::remote_opens::OpenOrAsk;
use custody_core::policy::Principal;
use custody_core::{BankId, CarrierId, ParcelId, SiteId};
use custody_proto::api::{
    DepositRequest, DepositView, ExpectParcelRequest, OpeningView, ParcelHistory, ParcelView,
    ReasonRequest,
};
use serde::Deserialize;

use super::approvals::pending;
use super::{ApiResult, Json, deliver, parse_id, size};
use crate::extract::{CarrierCaller, PersonSession, Signed, Staff};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

/// Filters for the parcel list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParcelQuery {
    site: Option<String>,
    limit: Option<u32>,
}

/// Parcels the caller may see.
pub async fn parcels(
    State(state): State<ServerState>,
    Signed(caller): Signed,
    query: Result<Query<ParcelQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<ParcelView>> {
    let Query(q) = query?;
    let site: Option<SiteId> = q.site.as_deref().map(|s| parse_id(s, "site")).transpose()?;
    let rows = state.app.visible_parcels(&caller, site.as_ref(), q.limit.unwrap_or(100)).await?;
    Ok(Json(rows.iter().map(|p| views::parcel(&caller, p)).collect()))
}

/// One parcel.
pub async fn parcel(
    State(state): State<ServerState>,
    Signed(caller): Signed,
    Path(id): Path<String>,
) -> ApiResult<ParcelView> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    Ok(Json(views::parcel(&caller, &state.app.parcel(&caller, &id).await?)))
}

/// One parcel's chain of custody.
pub async fn parcel_history(
    State(state): State<ServerState>,
    Signed(caller): Signed,
    Path(id): Path<String>,
) -> ApiResult<ParcelHistory> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    let (p, events) = state.app.parcel_history(&caller, &id).await?;
    Ok(Json(ParcelHistory {
        parcel: views::parcel(&caller, &p),
        events: events.iter().map(|(row, said)| views::event(row, said)).collect(),
    }))
}

fn carrier_of(caller: &Caller) -> Result<CarrierId, ApiError> {
    match caller {
        Caller::Principal(Principal::CarrierKey { carrier, .. }) => Ok(carrier.clone()),
        Caller::Principal(Principal::Person { standing, .. }) => {
            standing.carrier.clone().ok_or_else(ApiError::forbidden)
        }
        _ => Err(ApiError::forbidden()),
    }
}

/// A carrier announces a parcel.
pub async fn expect_parcel(
    State(state): State<ServerState>,
    CarrierCaller(caller): CarrierCaller,
    Json(body): Json<ExpectParcelRequest>,
) -> Result<(StatusCode, Json<ParcelView>), ApiError> {
    let spec = ParcelSpec {
        site: parse_id(&body.site, "site")?,
        carrier: carrier_of(&caller)?,
        recipient_email: body.recipient_email,
        tracking_ref: body.tracking_ref,
        size: size(&body.size)?,
        accessible: body.accessible,
        refrigerated: body.refrigerated,
    };
    let p = state.app.expect_parcel(&caller, spec).await?;
    Ok((StatusCode::CREATED, Json(views::parcel(&caller, &p))))
}

/// Start a deposit: reserve a compartment and open it.
pub async fn start_deposit(
    State(state): State<ServerState>,
    CarrierCaller(caller): CarrierCaller,
    Path(id): Path<String>,
    Json(body): Json<DepositRequest>,
) -> ApiResult<DepositView> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    let bank: BankId = parse_id(&body.bank, "bank")?;
    let size = body.size.as_deref().map(size).transpose()?;
    let d = state.app.start_deposit_sized(&caller, &id, &bank, size).await?;
    let command_delivered = deliver(&state, &d.command);
    Ok(Json(DepositView {
        parcel: views::parcel(&caller, &d.parcel),
        compartment: views::compartment(&d.compartment),
        command_delivered,
    }))
}

/// Confirm a deposit after the door closed; the recipient is notified.
pub async fn confirm_deposit(
    State(state): State<ServerState>,
    CarrierCaller(caller): CarrierCaller,
    Path(id): Path<String>,
) -> ApiResult<ParcelView> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    let p = state.app.confirm_and_notify(&caller, &id).await?;
    Ok(Json(views::parcel(&caller, &p)))
}

/// Abandon a deposit under way.
pub async fn cancel_deposit(
    State(state): State<ServerState>,
    CarrierCaller(caller): CarrierCaller,
    Path(id): Path<String>,
) -> ApiResult<ParcelView> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    Ok(Json(views::parcel(&caller, &state.app.cancel_deposit(&caller, &id).await?)))
}

/// The carrier takes an expired parcel back.
pub async fn return_to_carrier(
    State(state): State<ServerState>,
    CarrierCaller(caller): CarrierCaller,
    Path(id): Path<String>,
) -> ApiResult<OpeningView> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    let (p, opening) = state.app.return_to_carrier(&caller, &id).await?;
    let command_delivered = deliver(&state, &opening.command);
    Ok(Json(OpeningView {
        compartment: views::compartment(&opening.compartment),
        parcel: Some(views::parcel(&caller, &p)),
        command_delivered,
    }))
}

/// Staff take a parcel out, with a reason; past the remote-open budget, a request another
/// member of staff approves (202).
pub async fn retrieve(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<ReasonRequest>,
) -> Result<Response, ApiError> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    match state.app.retrieve(staff.caller(), &id, &body.reason).await? {
        OpenOrAsk::Opened((p, opening)) => {
            let command_delivered = deliver(&state, &opening.command);
            Ok(Json(OpeningView {
                compartment: views::compartment(&opening.compartment),
                parcel: Some(views::parcel(staff.caller(), &p)),
                command_delivered,
            })
            .into_response())
        }
        OpenOrAsk::Pending(request) => Ok(pending(&request)),
    }
}

/// Send the recipient a new pickup code.
pub async fn resend_code(
    State(state): State<ServerState>,
    session: PersonSession,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    state.app.resend_code(session.caller(), &id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Carrier, Person, Signed, Staff};
    table
        .get(
            "/api/v1/parcels",
            Signed,
            Doc::list("Parcels the caller may see (staff: ?site=)", "ParcelView"),
            parcels,
        )
        .post(
            "/api/v1/parcels",
            Carrier,
            Doc::json("Announce a parcel", 201, "ParcelView").taking("ExpectParcelRequest"),
            expect_parcel,
        )
        .get("/api/v1/parcels/{id}", Signed, Doc::json("A parcel", 200, "ParcelView"), parcel)
        .get(
            "/api/v1/parcels/{id}/history",
            Signed,
            Doc::json("A parcel's chain of custody", 200, "ParcelHistory"),
            parcel_history,
        )
        .post(
            "/api/v1/parcels/{id}/resend-code",
            Person,
            Doc::plain(
                "Send the recipient a new pickup code, retiring the old one (the recipient or \
                 staff; 3 a day per parcel, 10 per recipient): 202",
            )
            .throttled(),
            resend_code,
        )
        .post(
            "/api/v1/parcels/{id}/deposit",
            Carrier,
            Doc::json("Reserve a compartment and open it", 200, "DepositView")
                .taking("DepositRequest")
                .opening(),
            start_deposit,
        )
        .post(
            "/api/v1/parcels/{id}/deposit/confirm",
            Carrier,
            Doc::json(
                "Confirm a deposit after the door closed; notifies the recipient",
                200,
                "ParcelView",
            ),
            confirm_deposit,
        )
        .post(
            "/api/v1/parcels/{id}/deposit/cancel",
            Carrier,
            Doc::json("Abandon a deposit under way", 200, "ParcelView"),
            cancel_deposit,
        )
        .post(
            "/api/v1/parcels/{id}/return",
            Carrier,
            Doc::json("Take an expired parcel back", 200, "OpeningView").opening(),
            return_to_carrier,
        )
        .post(
            "/api/v1/parcels/{id}/retrieve",
            Staff,
            Doc::json(
                "Take a parcel out, with a reason; past the remote-open budget it answers 202 \
                 with a request another member of staff approves",
                200,
                "OpeningView",
            )
            .taking("ReasonRequest")
            .or_pending()
            .opening(),
            retrieve,
        )
}
