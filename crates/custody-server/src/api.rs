//! The JSON API under `/api/v1`.

use std::str::FromStr;
use std::time::Duration;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custody_app::Caller;
use custody_app::admin::{CompartmentSpec, NewPerson};
use custody_app::approvals::RoleChange;
use custody_app::parcels::ParcelSpec;
use custody_app::remote_opens::OpenOrAsk;
use custody_core::alert::{Channel, LockdownRule, SensorSettings, Severity};
use custody_core::approval::ApprovalOutcome;
use custody_core::compartment::SizeClass;
use custody_core::person::Role;
use custody_core::policy::Principal;
use custody_core::{
    AlertId, BankId, CarrierId, CompartmentId, DeliveryId, EndpointId, ParcelId, SiteId,
};
use custody_proto::api::{
    AlertDeliveryView, AlertDetailView, AlertEndpointCreatedView, AlertEndpointView,
    AlertEventView, AlertSubscriptionView, AlertView, ApiKeyIssued, AppOpenRequest, AppOpenView,
    BadgeView, BankView, CarrierView, CreateApiKeyRequest, CreateBankRequest, CreateCarrierRequest,
    CreateCompartmentsRequest, CreatePersonRequest, CreateSiteRequest, DepositRequest, DepositView,
    EnrolmentTokenView, ExpectParcelRequest, ImportBadgesRequest, LockdownRuleView, LockdownView,
    LoginRequest, NewAlertEndpointRequest, NoteRequest, OpeningView, ParcelHistory, ParcelView,
    PersonView, PickupQrView, ReasonRequest, RegisterBadgeRequest, RoleChangeRequest,
    SensorSettingsView, SessionView, SiteView,
};
use custody_proto::device::{EnrolRequest, EnrolResponse, SignedOpenCommand};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::extract::{
    AnySession, CarrierCaller, DEVICE_COOKIE, PersonSession, SESSION_COOKIE, Signed, Staff,
    StaffRead,
};
use crate::{ApiError, RequestClient, ServerState, views};

pub mod unaddressed;

/// JSON body extractor whose rejections use the API's error format.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    axum::Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| Self(v))
            .map_err(ApiError::from)
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

pub(crate) fn parse_id<T: FromStr>(s: &str, what: &str) -> Result<T, ApiError> {
    T::from_str(s).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", format!("that is not a {what} id"))
    })
}

fn size(s: &str) -> Result<SizeClass, ApiError> {
    SizeClass::parse(s).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "size must be small, medium, large or extra_large",
        )
    })
}

/// Delivers a command to its bank's agent; whether it arrived goes into the answer.
/// Sends an open command to its bank's agent; whether it reached the link.
pub(crate) fn deliver(state: &ServerState, command: &SignedOpenCommand) -> bool {
    let Ok(bank) = BankId::parse(&command.command.bank) else { return false };
    state.hub.send(&bank, custody_proto::device::ServerMessage::Open(command.clone()))
}

// --- health ---------------------------------------------------------------------------------

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers.
pub async fn readyz(State(state): State<ServerState>) -> Response {
    match state.app.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

/// Prometheus metrics, for the scraper's bearer token.
pub async fn metrics(State(state): State<ServerState>, headers: HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = presented.is_some_and(|p| {
        custody_crypto::constant_time_eq(p.trim().as_bytes(), state.metrics_token.as_bytes())
    });
    if !ok {
        return ApiError::unauthenticated().into_response();
    }
    let body = state
        .metrics
        .as_ref()
        .map(metrics_exporter_prometheus::PrometheusHandle::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// The OpenAPI document.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::document()).into_response()
}

// --- sessions -------------------------------------------------------------------------------

/// The `Set-Cookie` value that starts a session.
pub fn session_cookie(token: &str, max_age: Duration) -> HeaderValue {
    let v = format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""))
}

/// The `Set-Cookie` value of a device cookie, kept a year.
pub fn device_cookie(value: &str) -> HeaderValue {
    let v = format!(
        "{DEVICE_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=31536000"
    );
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""))
}

/// The cookies that start a session: the session's, and the device cookie when the sign-in
/// is complete.
pub fn sign_in_cookies(
    session: &custody_app::auth::NewSession,
    lifetime: Duration,
) -> axum::response::AppendHeaders<Vec<(header::HeaderName, HeaderValue)>> {
    let mut cookies = vec![(header::SET_COOKIE, session_cookie(&session.token, lifetime))];
    if let Some(device) = &session.device_cookie {
        cookies.push((header::SET_COOKIE, device_cookie(device)));
    }
    axum::response::AppendHeaders(cookies)
}

/// The answer to a sign-in (or a proven factor): the session's cookies and its view, with
/// new recovery codes when some were issued.
pub(crate) fn signed_in(
    state: &ServerState,
    session: &custody_app::auth::NewSession,
    recovery_codes: Option<&[Zeroizing<String>]>,
) -> Response {
    let view = SessionView {
        person: views::person(&session.person),
        csrf_token: state.app.csrf_token(&session.token),
        second_factor_required: session.needs_second_factor,
        recovery_codes: recovery_codes.map(|c| c.iter().map(|c| c.as_str().to_owned()).collect()),
    };
    let cookies = sign_in_cookies(session, state.app.config().session_absolute);
    (cookies, Json(view)).into_response()
}

/// The `Set-Cookie` value that ends one.
pub fn clear_session_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-custody-session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

/// Sign in.
pub async fn login(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    Json(body): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    let password = Zeroizing::new(body.password);
    let session = state.app.login(&body.email, password, &client).await?;
    Ok(signed_in(&state, &session, None))
}

/// Sign out (also from a session still at the second-factor step).
pub async fn logout(
    State(state): State<ServerState>,
    AnySession(session): AnySession,
) -> Result<Response, ApiError> {
    state.app.logout(&session.token).await?;
    Ok(([(header::SET_COOKIE, clear_session_cookie())], StatusCode::NO_CONTENT).into_response())
}

/// Today's kiosk code of the signed-in courier.
pub async fn courier_code(
    State(state): State<ServerState>,
    session: PersonSession,
) -> Result<Response, ApiError> {
    let code = state.app.courier_code(session.caller()).await?;
    let view = custody_proto::api::CourierCodeView {
        code: code.code.as_str().to_owned(),
        valid_until: views::rfc3339(code.valid_until),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(view)).into_response())
}

/// Who am I.
pub async fn me(session: PersonSession) -> ApiResult<PersonView> {
    Ok(Json(views::person(session.person())))
}

// --- parcels --------------------------------------------------------------------------------

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

/// A request waiting for a second person: `202 Accepted` with the request.
fn pending(request: &custody_store::ApprovalRow) -> Response {
    (StatusCode::ACCEPTED, Json(views::approval(request))).into_response()
}

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

fn device_view(
    state: &ServerState,
    d: &custody_store::DeviceRow,
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

// --- alerts ---------------------------------------------------------------------------------

fn alert_view(a: &custody_store::AlertRow) -> AlertView {
    AlertView {
        id: a.id.to_string(),
        site: a.site.to_string(),
        bank: a.bank.as_ref().map(ToString::to_string),
        compartment: a.compartment,
        kind: a.kind.as_str().to_owned(),
        severity: a.severity.as_str().to_owned(),
        state: a.state.as_str().to_owned(),
        owner: a.owner.as_ref().map(ToString::to_string),
        readings: a.readings,
        raised_at: views::rfc3339(a.raised_at),
        updated_at: views::rfc3339(a.updated_at),
    }
}

/// Which of a site's alerts to list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    live: Option<bool>,
}

/// A site's alerts, newest first.
pub async fn site_alerts(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
    query: Result<Query<AlertQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<AlertView>> {
    let Query(q) = query?;
    let site: SiteId = parse_id(&id, "site")?;
    let rows = state.app.alerts(reader.caller(), &site, q.live.unwrap_or(false)).await?;
    Ok(Json(rows.iter().map(alert_view).collect()))
}

/// An alert with its timeline.
pub async fn alert(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<AlertDetailView> {
    let id: AlertId = parse_id(&id, "alert")?;
    let found = state.app.alert(reader.caller(), &id).await?;
    Ok(Json(AlertDetailView {
        alert: alert_view(&found.alert),
        timeline: found
            .timeline
            .iter()
            .map(|e| AlertEventView {
                seq: e.seq,
                at: views::rfc3339(e.at),
                actor: e.actor.clone(),
                what: e.what.clone(),
                note: e.note.clone(),
            })
            .collect(),
    }))
}

/// Take an alert.
pub async fn acknowledge_alert(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<AlertView> {
    let id: AlertId = parse_id(&id, "alert")?;
    Ok(Json(alert_view(&state.app.acknowledge_alert(staff.caller(), &id).await?)))
}

/// Add a note to an alert's timeline.
pub async fn note_alert(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<NoteRequest>,
) -> ApiResult<AlertView> {
    let id: AlertId = parse_id(&id, "alert")?;
    Ok(Json(alert_view(&state.app.note_alert(staff.caller(), &id, &body.note).await?)))
}

/// Resolve an alert, with what it was.
pub async fn resolve_alert(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<ReasonRequest>,
) -> ApiResult<AlertView> {
    let id: AlertId = parse_id(&id, "alert")?;
    Ok(Json(alert_view(&state.app.resolve_alert(staff.caller(), &id, &body.reason).await?)))
}

/// Appends one line of an export to `out`.
fn json_line(out: &mut Vec<u8>, line: &impl serde::Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line).map_err(std::io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

/// An incident's bundle: the alert, its timeline and the audit entries around it with their
/// proofs, after the checkpoint, one JSON line each; `custody audit verify` checks it offline.
pub async fn export_incident(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
    Json(body): Json<ReasonRequest>,
) -> Result<Response, ApiError> {
    let id: AlertId = parse_id(&id, "alert")?;
    let mut out = Vec::new();
    state
        .app
        .export_incident(reader.caller(), &id, &body.reason, |line| json_line(&mut out, line))
        .await?;
    let file = format!("attachment; filename=\"incident-{id}.jsonl\"");
    let disposition =
        HeaderValue::from_str(&file).unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        out,
    )
        .into_response())
}

fn endpoint_view(e: &custody_store::EndpointRow) -> AlertEndpointView {
    AlertEndpointView {
        id: e.id.to_string(),
        channel: e.channel.as_str().to_owned(),
        target: e.target.clone(),
        min_severity: e.min_severity.as_str().to_owned(),
        created_at: views::rfc3339(e.created_at),
    }
}

fn delivery_view(d: &custody_store::DeliveryRow) -> AlertDeliveryView {
    let state = match (d.delivered_at, d.dead_at) {
        (Some(_), _) => "delivered",
        (None, Some(_)) => "dead",
        (None, None) => "pending",
    };
    AlertDeliveryView {
        id: d.id.to_string(),
        alert: d.alert.to_string(),
        channel: d.channel.as_str().to_owned(),
        endpoint: d.endpoint.as_ref().map(ToString::to_string),
        event: d.event.clone(),
        state: state.to_owned(),
        attempts: d.attempts,
        last_error: d.last_error.clone(),
        created_at: views::rfc3339(d.created_at),
        next_attempt_at: (state == "pending").then(|| views::rfc3339(d.next_attempt_at)),
    }
}

/// A site's alert endpoints.
pub async fn alert_endpoints(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<Vec<AlertEndpointView>> {
    let site: SiteId = parse_id(&id, "site")?;
    let rows = state.app.alert_endpoints(reader.caller(), &site).await?;
    Ok(Json(rows.iter().map(endpoint_view).collect()))
}

/// Add an endpoint for a site's alerts: a webhook or a syslog receiver on a public address.
pub async fn add_alert_endpoint(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<NewAlertEndpointRequest>,
) -> Result<(StatusCode, Json<AlertEndpointCreatedView>), ApiError> {
    let site: SiteId = parse_id(&id, "site")?;
    let invalid = |m: String| ApiError::from(custody_app::AppError::Invalid(m));
    let min_severity = Severity::parse(&body.min_severity)
        .ok_or_else(|| invalid("min_severity: low, medium, high or critical".into()))?;
    let channel = Channel::parse(&body.channel)
        .filter(|c| matches!(c, Channel::Webhook | Channel::Syslog))
        .ok_or_else(|| invalid("channel: webhook or syslog".into()))?;
    let checked = match channel {
        Channel::Webhook => {
            crate::egress::check_url(&body.target, &state.allowed_hosts).map(|_| ())
        }
        _ => crate::syslog::check_target(&body.target, &state.allowed_hosts),
    };
    if let Err(e) = checked {
        // Refused on the record too, under the person who gave it.
        let reason = match e {
            crate::egress::Refused::Private(_) => "private_address",
            crate::egress::Refused::Url(_) => "bad_target",
        };
        let who = staff.caller().actor().id.unwrap_or_default();
        let site = Some(site.clone());
        state.refusals.refused(crate::refusals::Edge::Egress, reason, who, site);
        return Err(invalid(format!("target: {e}")));
    }
    let new = custody_app::notify::NewEndpoint { channel, target: body.target, min_severity };
    let added = state.app.add_alert_endpoint(staff.caller(), &site, new).await?;
    let view = AlertEndpointCreatedView {
        endpoint: endpoint_view(&added.endpoint),
        secret: added.secret.map(|s| s.to_string()),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

/// Remove an alert endpoint; the site's endpoints left.
pub async fn remove_alert_endpoint(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Vec<AlertEndpointView>> {
    let id: EndpointId = parse_id(&id, "alert endpoint")?;
    let rows = state.app.remove_alert_endpoint(staff.caller(), &id).await?;
    Ok(Json(rows.iter().map(endpoint_view).collect()))
}

/// Which of a site's notifications to list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    dead: Option<bool>,
}

/// A site's alert notifications, newest first (`?dead=true`: the dead-letter list).
pub async fn alert_deliveries(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<AlertDeliveryView>> {
    let Query(q) = query?;
    let site: SiteId = parse_id(&id, "site")?;
    let rows = state.app.alert_deliveries(reader.caller(), &site, q.dead.unwrap_or(false)).await?;
    Ok(Json(rows.iter().map(delivery_view).collect()))
}

/// Send a notification from the dead-letter list again.
pub async fn retry_alert_delivery(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<AlertDeliveryView> {
    let id: DeliveryId = parse_id(&id, "alert delivery")?;
    Ok(Json(delivery_view(&state.app.retry_alert_delivery(staff.caller(), &id).await?)))
}

fn subscription_view(s: &custody_store::SubscriptionRow) -> AlertSubscriptionView {
    AlertSubscriptionView {
        site: s.site.to_string(),
        channel: s.channel.as_str().to_owned(),
        phone: s.phone.clone(),
        min_severity: s.min_severity.as_str().to_owned(),
        consented_at: Some(views::rfc3339(s.consented_at)),
    }
}

/// The signed-in person's consents to hear of alerts.
pub async fn my_alert_subscriptions(
    State(state): State<ServerState>,
    session: PersonSession,
) -> ApiResult<Vec<AlertSubscriptionView>> {
    let rows = state.app.my_alert_subscriptions(session.caller()).await?;
    Ok(Json(rows.iter().map(subscription_view).collect()))
}

/// Agree to hear of a site's alerts by e-mail or text message.
pub async fn subscribe_alerts(
    State(state): State<ServerState>,
    session: PersonSession,
    Json(body): Json<AlertSubscriptionView>,
) -> ApiResult<AlertSubscriptionView> {
    let site: SiteId = parse_id(&body.site, "site")?;
    let invalid = |m: &str| ApiError::from(custody_app::AppError::Invalid(m.to_owned()));
    let channel = Channel::parse(&body.channel)
        .filter(|c| matches!(c, Channel::Email | Channel::Sms))
        .ok_or_else(|| invalid("channel: email or sms"))?;
    let min_severity = Severity::parse(&body.min_severity)
        .ok_or_else(|| invalid("min_severity: low, medium, high or critical"))?;
    let row = state
        .app
        .subscribe_alerts(session.caller(), &site, channel, body.phone.as_deref(), min_severity)
        .await?;
    Ok(Json(subscription_view(&row)))
}

/// Withdraw a consent to hear of a site's alerts on a channel.
pub async fn unsubscribe_alerts(
    State(state): State<ServerState>,
    session: PersonSession,
    Path((site, channel)): Path<(String, String)>,
) -> ApiResult<Vec<AlertSubscriptionView>> {
    let site: SiteId = parse_id(&site, "site")?;
    let channel = Channel::parse(&channel).ok_or_else(|| {
        ApiError::from(custody_app::AppError::Invalid("channel: email or sms".into()))
    })?;
    state.app.unsubscribe_alerts(session.caller(), &site, channel).await?;
    let rows = state.app.my_alert_subscriptions(session.caller()).await?;
    Ok(Json(rows.iter().map(subscription_view).collect()))
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

/// A bank's sensor settings.
pub async fn sensor_settings(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<SensorSettingsView> {
    let bank: BankId = parse_id(&id, "bank")?;
    Ok(Json(views::sensor_settings(&state.app.sensor_settings(reader.caller(), &bank).await?)))
}

/// Replace a bank's sensor settings.
pub async fn set_sensor_settings(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<SensorSettingsView>,
) -> ApiResult<SensorSettingsView> {
    let bank: BankId = parse_id(&id, "bank")?;
    let rules = body.rules.into_iter().map(|r| (r.kind, r.threshold, r.window_ms, r.quiet_ms));
    let settings = SensorSettings::from_wire(rules, body.door_left_open_after_secs)
        .map_err(custody_app::AppError::Invalid)?;
    let stored = state.app.set_sensor_settings(staff.caller(), &bank, settings).await?;
    Ok(Json(views::sensor_settings(&stored)))
}

// --- badges ---------------------------------------------------------------------------------

fn badge_view(b: &custody_store::BadgeRow) -> BadgeView {
    BadgeView {
        id: b.id.to_string(),
        site: b.site.to_string(),
        person: b.person.to_string(),
        hint: b.hint.clone(),
        created_at: views::rfc3339(b.created_at),
        revoked_at: b.revoked_at.map(views::rfc3339),
    }
}

/// A site's badges, revoked ones too.
pub async fn badges(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<Vec<BadgeView>> {
    let site: SiteId = parse_id(&id, "site")?;
    let rows = state.app.badges(reader.caller(), &site).await?;
    Ok(Json(rows.iter().map(badge_view).collect()))
}

/// Register a badge to a person of the site; the site's kiosks get it at once.
pub async fn register_badge(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<RegisterBadgeRequest>,
) -> Result<(StatusCode, Json<BadgeView>), ApiError> {
    let site: SiteId = parse_id(&id, "site")?;
    let spec = custody_app::badges::BadgeSpec { email: body.email, number: body.badge };
    let row = state.app.register_badge(staff.caller(), &site, spec).await?;
    crate::gateway::sync_badges(&state, &site).await;
    Ok((StatusCode::CREATED, Json(badge_view(&row))))
}

/// Register every badge of an access-control export, or none (422 listing the lines at fault).
pub async fn import_badges(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<ImportBadgesRequest>,
) -> Result<(StatusCode, Json<Vec<BadgeView>>), ApiError> {
    use custody_app::badges::Registration;
    let site: SiteId = parse_id(&id, "site")?;
    match state.app.import_badges(staff.caller(), &site, &body.csv).await {
        Ok(rows) => {
            crate::gateway::sync_badges(&state, &site).await;
            Ok((StatusCode::CREATED, Json(rows.iter().map(badge_view).collect())))
        }
        Err(Registration::Refused(e)) => Err(e.into()),
        Err(Registration::Problems(problems)) => {
            let shown = problems
                .iter()
                .take(20)
                .map(|p| format!("line {}: {}", p.line, p.problem))
                .collect::<Vec<_>>()
                .join("; ");
            let more = problems.len().saturating_sub(20);
            let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "badge_import",
                format!("nothing was imported: {shown}{more}"),
            ))
        }
    }
}

/// Revoke a badge; the site's kiosks refuse it from the sync that follows at once.
pub async fn revoke_badge(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<BadgeView> {
    let badge: custody_core::BadgeId = parse_id(&id, "badge")?;
    let row = state.app.revoke_badge(staff.caller(), &badge).await?;
    crate::gateway::sync_badges(&state, &row.site).await;
    Ok(Json(badge_view(&row)))
}

// --- sites and setup ------------------------------------------------------------------------

/// Sites the caller may see.
pub async fn sites(
    State(state): State<ServerState>,
    StaffRead(staff): StaffRead,
) -> ApiResult<Vec<SiteView>> {
    let rows = state.app.sites_for(staff.caller()).await?;
    Ok(Json(rows.iter().map(views::site).collect()))
}

/// One site with its banks and compartments.
pub async fn site(
    State(state): State<ServerState>,
    StaffRead(staff): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<SiteView> {
    let id: SiteId = parse_id(&id, "site")?;
    let (site, banks) = state.app.site_overview(staff.caller(), &id).await?;
    let mut view = views::site(&site);
    view.banks = banks
        .iter()
        .map(|(b, cs)| BankView {
            id: b.id.to_string(),
            name: b.name.to_string(),
            online: state.hub.is_online(&b.id),
            compartments: cs.iter().map(views::compartment).collect(),
        })
        .collect();
    Ok(Json(view))
}

fn org_of(staff: &PersonSession) -> custody_core::OrgId {
    staff.person().org.clone()
}

/// Create a site.
pub async fn create_site(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Json(body): Json<CreateSiteRequest>,
) -> Result<(StatusCode, Json<SiteView>), ApiError> {
    let window = body.pickup_window_hours.map(|h| Duration::from_secs(h.saturating_mul(3600)));
    let s = state
        .app
        .create_site(staff.caller(), &org_of(&staff), &body.name, &body.time_zone, window)
        .await?;
    Ok((StatusCode::CREATED, Json(views::site(&s))))
}

/// Create a bank.
pub async fn create_bank(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<CreateBankRequest>,
) -> Result<(StatusCode, Json<BankView>), ApiError> {
    let site: SiteId = parse_id(&id, "site")?;
    let b = state.app.create_bank(staff.caller(), &site, &body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(BankView {
            id: b.id.to_string(),
            name: b.name.to_string(),
            online: false,
            compartments: Vec::new(),
        }),
    ))
}

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

/// Add a person.
pub async fn create_person(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Json(body): Json<CreatePersonRequest>,
) -> Result<(StatusCode, Json<PersonView>), ApiError> {
    let role = parse_role(&body.role)?;
    let new = NewPerson {
        org: org_of(&staff),
        email: body.email,
        name: body.name,
        role,
        site: body.site.as_deref().map(|s| parse_id(s, "site")).transpose()?,
        carrier: body.carrier.as_deref().map(|s| parse_id(s, "carrier")).transpose()?,
        password: body.password.map(Zeroizing::new),
        reason: body.reason,
    };
    let p = state.app.create_person(staff.caller(), new).await?;
    Ok((StatusCode::CREATED, Json(views::person(&p))))
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    Role::parse(role).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "role must be resident, courier, auditor, admin or super_admin",
        )
    })
}

/// Give a person another role; making someone super-admin waits for a second super-admin.
pub async fn change_role(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<RoleChangeRequest>,
) -> Result<Response, ApiError> {
    let id: custody_core::PersonId = parse_id(&id, "person")?;
    let role = parse_role(&body.role)?;
    Ok(match state.app.change_role(staff.caller(), &id, role, &body.reason).await? {
        RoleChange::Changed(p) => Json(views::person(&p)).into_response(),
        RoleChange::Pending(a) => (StatusCode::ACCEPTED, Json(views::approval(&a))).into_response(),
    })
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

/// Disable a person and end their sessions.
pub async fn disable_person(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: custody_core::PersonId = parse_id(&id, "person")?;
    state.app.disable_person(staff.caller(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Register a carrier.
pub async fn create_carrier(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Json(body): Json<CreateCarrierRequest>,
) -> Result<(StatusCode, Json<CarrierView>), ApiError> {
    let c = state.app.create_carrier(staff.caller(), &org_of(&staff), &body.name).await?;
    Ok((StatusCode::CREATED, Json(CarrierView { id: c.id.to_string(), name: c.name.to_string() })))
}

/// Issue an API key for a carrier.
pub async fn create_api_key(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<ApiKeyIssued>), ApiError> {
    let carrier: CarrierId = parse_id(&id, "carrier")?;
    let sites =
        body.sites.iter().map(|s| parse_id(s, "site")).collect::<Result<Vec<SiteId>, _>>()?;
    let issued = state
        .app
        .issue_api_key(staff.caller(), &carrier, &sites, &body.label, &body.reason)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyIssued {
            id: issued.key.id.to_string(),
            token: issued.token.to_string(),
            replaces_until: None,
        }),
    ))
}

/// A carrier's keys, with their last use.
pub async fn api_keys(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Vec<custody_proto::api::ApiKeyView>> {
    let carrier: CarrierId = parse_id(&id, "carrier")?;
    let keys = state.app.api_keys(staff.caller(), &carrier).await?;
    Ok(Json(
        keys.iter()
            .map(|k| custody_proto::api::ApiKeyView {
                id: k.id.to_string(),
                label: k.label.to_string(),
                sites: k.sites.iter().map(ToString::to_string).collect(),
                created_at: views::rfc3339(k.created_at),
                last_used_at: k.last_used_at.map(views::rfc3339),
                ends_at: k.revoked_at.map(views::rfc3339),
            })
            .collect(),
    ))
}

/// Rotate a key: a new one now, the old one until the overlap ends.
pub async fn rotate_api_key(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<custody_proto::api::RotateApiKeyRequest>,
) -> Result<(StatusCode, Json<ApiKeyIssued>), ApiError> {
    let id: custody_core::ApiKeyId = parse_id(&id, "API key")?;
    let overlap = custody_core::time::hours(u64::from(body.overlap_hours.unwrap_or(24)));
    let issued = state.app.rotate_api_key(staff.caller(), &id, overlap, &body.reason).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyIssued {
            id: issued.key.id.to_string(),
            token: issued.token.to_string(),
            replaces_until: Some(views::rfc3339(state.app.now().plus(overlap))),
        }),
    ))
}

/// Revoke a key at once.
pub async fn revoke_api_key(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: custody_core::ApiKeyId = parse_id(&id, "API key")?;
    state.app.revoke_api_key(staff.caller(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- devices --------------------------------------------------------------------------------

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

// --- audit ----------------------------------------------------------------------------------

fn text_plain(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The checkpoint verifier key (public).
pub async fn audit_key(State(state): State<ServerState>) -> Response {
    text_plain(format!("{}\n", state.app.checkpoint_verifier_key()))
}

/// The latest signed checkpoint.
pub async fn audit_checkpoint(
    State(state): State<ServerState>,
    StaffRead(_): StaffRead,
) -> Result<Response, ApiError> {
    let (_, note) = state.app.current_checkpoint().await?;
    Ok(text_plain(note))
}

/// Sizes for a consistency proof.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    old: u64,
    new: u64,
}

/// A consistency proof between two sizes of the log.
pub async fn audit_consistency(
    State(state): State<ServerState>,
    StaffRead(_): StaffRead,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<custody_proto::api::ConsistencyView> {
    let Query(q) = query?;
    let (checkpoint, _) = state.app.current_checkpoint().await?;
    if q.old == 0 || q.old > q.new || q.new > checkpoint.size {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("need 0 < old <= new <= {} (the checkpointed size)", checkpoint.size),
        ));
    }
    let proof = state.app.consistency_proof(q.old, q.new).await?;
    Ok(Json(custody_proto::api::ConsistencyView {
        old_size: q.old,
        new_size: q.new,
        proof: proof.iter().map(|h| data_encoding::HEXLOWER.encode(h)).collect(),
    }))
}

fn rfc3339(text: Option<&str>, field: &str) -> Result<Option<custody_core::Timestamp>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| custody_app::AppError::Invalid(format!("{field}: expected RFC 3339")))?;
    let millis = i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| custody_app::AppError::Invalid(format!("{field}: out of range")))?;
    Ok(Some(custody_core::Timestamp::from_millis(millis)))
}

/// A site's audit entries with their proofs, one JSON line each after the checkpoint: the
/// format of `custody audit export`, which `custody audit verify` checks offline.
pub async fn audit_export(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Json(body): Json<custody_proto::api::AuditExportRequest>,
) -> Result<Response, ApiError> {
    let filter = custody_store::AuditFilter {
        site: Some(parse_id(&body.site, "site")?),
        parcel: body.parcel.as_deref().map(|p| parse_id(p, "parcel")).transpose()?,
        compartment: body.compartment.as_deref().map(|c| parse_id(c, "compartment")).transpose()?,
        actor: body.actor,
        since: rfc3339(body.since.as_deref(), "since")?,
        until: rfc3339(body.until.as_deref(), "until")?,
    };
    let mut out = Vec::new();
    state
        .app
        .export_site_audit(reader.caller(), &filter, &body.reason, |line| json_line(&mut out, line))
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store")], out)
        .into_response())
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

/// A fresh QR pickup token for the recipient's own parcel.
pub async fn pickup_qr(
    State(state): State<ServerState>,
    session: PersonSession,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    let shown = state.app.pickup_qr(session.caller(), &id).await?;
    let view = PickupQrView { token: shown.text, expires_at: views::rfc3339(shown.expires_at) };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(view)).into_response())
}

/// The recipient opens their compartment from the app with the code the kiosk shows.
pub async fn open_from_app(
    State(state): State<ServerState>,
    session: PersonSession,
    Path(id): Path<String>,
    Json(body): Json<AppOpenRequest>,
) -> ApiResult<AppOpenView> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    let presence = Zeroizing::new(body.presence_code);
    let opening = state.app.open_from_app(session.caller(), &id, &presence).await?;
    Ok(Json(AppOpenView {
        compartment: opening.compartment.get(),
        command_delivered: deliver(&state, &opening.command),
    }))
}

/// A parcel's chain of custody with inclusion proofs against the latest checkpoint.
pub async fn parcel_custody(
    State(state): State<ServerState>,
    Signed(caller): Signed,
    Path(id): Path<String>,
) -> ApiResult<custody_proto::api::CustodyView> {
    let id: ParcelId = parse_id(&id, "parcel")?;
    let (parcel, checkpoint, events) = state.app.parcel_custody(&caller, &id).await?;
    Ok(Json(custody_proto::api::CustodyView {
        parcel: views::parcel(&caller, &parcel),
        checkpoint,
        events: events
            .iter()
            .map(|e| custody_proto::api::CustodyEvent {
                event: views::event(&e.row, &e.statement),
                index: e.exported.index,
                entry: e.exported.entry.clone(),
                proof: e.exported.proof.clone(),
                verified: e.verified,
            })
            .collect(),
    }))
}
