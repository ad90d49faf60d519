//! Setting up: sites, banks, compartments, people and their roles, carriers and their API keys.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_app::approvals::RoleChange;
use custody_app::compartments::CompartmentSpec;
use custody_app::people::NewPerson;
use custody_core::person::Role;
use custody_core::{BankId, CarrierId, SiteId};
use custody_proto::api::{
    ApiKeyIssued, BankView, CarrierView, CreateApiKeyRequest, CreateBankRequest,
    CreateCarrierRequest, CreateCompartmentsRequest, CreatePersonRequest, CreateSiteRequest,
    PersonView, RoleChangeRequest, SiteView,
};
use zeroize::Zeroizing;

use super::{ApiResult, Json, parse_id, size};
use crate::extract::{PersonSession, Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

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

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Staff, StaffRead};
    table
        .get(
            "/api/v1/sites",
            StaffRead,
            Doc::list("Sites in the caller's scope", "SiteView"),
            sites,
        )
        .post(
            "/api/v1/sites",
            Staff,
            Doc::json("Create a site", 201, "SiteView").taking("CreateSiteRequest"),
            create_site,
        )
        .get(
            "/api/v1/sites/{id}",
            StaffRead,
            Doc::json("A site with its banks and compartments", 200, "SiteView"),
            site,
        )
        .post(
            "/api/v1/sites/{id}/banks",
            Staff,
            Doc::json("Create a bank", 201, "BankView").taking("CreateBankRequest"),
            create_bank,
        )
        .post(
            "/api/v1/banks/{id}/compartments",
            Staff,
            Doc::list("Add compartments", "CompartmentView").taking("CreateCompartmentsRequest"),
            create_compartments,
        )
        .post(
            "/api/v1/people",
            Staff,
            Doc::json("Add a person", 201, "PersonView").taking("CreatePersonRequest"),
            create_person,
        )
        .post(
            "/api/v1/people/{id}/role",
            Staff,
            Doc::json(
                "Give a person another role (needs a step-up); making someone super-admin \
                 answers 202 with a request another super-admin must approve",
                200,
                "PersonView",
            )
            .taking("RoleChangeRequest"),
            change_role,
        )
        .post(
            "/api/v1/people/{id}/disable",
            Staff,
            Doc::plain("Disable a person; ends their sessions"),
            disable_person,
        )
        .post(
            "/api/v1/carriers",
            Staff,
            Doc::json("Register a carrier", 201, "CarrierView").taking("CreateCarrierRequest"),
            create_carrier,
        )
        .post(
            "/api/v1/carriers/{id}/api-keys",
            Staff,
            Doc::json("Issue an API key", 201, "ApiKeyIssued").taking("CreateApiKeyRequest"),
            create_api_key,
        )
        .get(
            "/api/v1/carriers/{id}/api-keys",
            Staff,
            Doc::list("A carrier's keys, with their last use (never their secrets)", "ApiKeyView"),
            api_keys,
        )
        .post(
            "/api/v1/api-keys/{id}/rotate",
            Staff,
            Doc::json(
                "Rotate a key (needs a step-up): the old one works until the overlap ends",
                201,
                "ApiKeyIssued",
            )
            .taking("RotateApiKeyRequest"),
            rotate_api_key,
        )
        .post(
            "/api/v1/api-keys/{id}/revoke",
            Staff,
            Doc::plain("Revoke a key at once (needs a step-up)"),
            revoke_api_key,
        )
}
