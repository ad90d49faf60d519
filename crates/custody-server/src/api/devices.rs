//! Banks' devices: enrolment tokens, enrolment, health and revocation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use custody_core::BankId;
use custody_proto::api::{EnrolmentTokenView, ReasonRequest};
use custody_proto::device::{EnrolRequest, EnrolResponse};

use super::{ApiResult, Json, parse_id};
use crate::extract::{Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

fn device_view(
    state: &ServerState,
    d: &custody_app::devices::Device,
) -> custody_proto::api::DeviceView {
    let connected = d.revoked_at.is_none() && state.hub.is_connected(&d.bank, &d.id);
    let health = state.hub.health(&d.bank, &d.id).filter(|_| connected).map(|(at, report)| {
        custody_proto::api::DeviceHealthView {
            at: views::rfc3339(at),
            boards: report
                .boards
                .iter()
                .map(|b| custody_proto::api::BoardHealthView {
                    address: b.address,
                    answering: b.answering,
                })
                .collect(),
            round_trip_ms: report.round_trip_ms,
            reconnects: report.reconnects,
            interlocked: report.interlocked,
        }
    });
    custody_proto::api::DeviceView {
        id: d.id.to_string(),
        bank: d.bank.to_string(),
        cert_serial: d.cert_serial.clone(),
        enrolled_at: views::rfc3339(d.enrolled_at),
        cert_expires_at: views::rfc3339(d.cert_expires_at),
        revoked_at: d.revoked_at.map(views::rfc3339),
        last_seen_at: d.last_seen_at.map(views::rfc3339),
        connected,
        health,
    }
}

/// The bank's agent identities, newest first.
pub async fn bank_devices(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<Vec<custody_proto::api::DeviceView>> {
    let bank: BankId = parse_id(&id, "bank")?;
    let devices = state.app.devices(reader.caller(), &bank).await?;
    Ok(Json(devices.iter().map(|d| device_view(&state, d)).collect()))
}

/// Revoke an agent's identity, with a reason: refused at its next handshake, its link ended now.
pub async fn revoke_device(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<ReasonRequest>,
) -> ApiResult<custody_proto::api::DeviceView> {
    let device: custody_core::DeviceId = parse_id(&id, "device")?;
    let row = state.app.revoke_device(staff.caller(), &device, &body.reason).await?;
    state.hub.refresh_revocations(&state.app).await;
    Ok(Json(device_view(&state, &row)))
}

/// Issue a single-use enrolment token for a bank's agent.
pub async fn create_enrolment_token(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<EnrolmentTokenView>), ApiError> {
    let bank: BankId = parse_id(&id, "bank")?;
    let token = state.app.create_enrolment_token(staff.caller(), &bank).await?;
    Ok((StatusCode::CREATED, Json(EnrolmentTokenView { token: token.to_string() })))
}

/// Enrol an agent with a single-use token and a CSR.
pub async fn enrol(
    State(state): State<ServerState>,
    Json(body): Json<EnrolRequest>,
) -> Result<(StatusCode, Json<EnrolResponse>), ApiError> {
    let e = state.app.enrol(&body.token, &body.csr_pem).await?;
    // The bank's older identity was revoked with this enrolment: its handshake and live link end.
    state.hub.refresh_revocations(&state.app).await;
    Ok((
        StatusCode::CREATED,
        Json(EnrolResponse {
            device: e.device.id.to_string(),
            bank: e.device.bank.to_string(),
            certificate_pem: e.certificate_pem,
            ca_pem: state.app.ca_pem().to_owned(),
            command_key: state.app.command_public_key().to_string(),
            gateway: state.app.config().gateway_address.clone(),
        }),
    ))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Public, Staff, StaffRead};
    table
        .get(
            "/api/v1/banks/{id}/devices",
            StaffRead,
            Doc::list("The bank's agent identities, newest first", "DeviceView"),
            bank_devices,
        )
        .post(
            "/api/v1/devices/{id}/revoke",
            Staff,
            Doc::json(
                "Revoke an agent's identity (needs a step-up and a reason): its certificate is \
                 refused at the handshake and its live link ends",
                200,
                "DeviceView",
            )
            .taking("ReasonRequest"),
            revoke_device,
        )
        .post(
            "/api/v1/banks/{id}/enrolment-tokens",
            Staff,
            Doc::json("Issue a single-use enrolment token", 201, "EnrolmentTokenView"),
            create_enrolment_token,
        )
        .post(
            "/api/v1/devices/enrol",
            Public,
            Doc::json("Enrol an agent with a single-use token and a CSR", 201, "EnrolResponse")
                .taking("EnrolRequest"),
            enrol,
        )
}
