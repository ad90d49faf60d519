//! Carriers' API keys: issued, listed, rotated, revoked.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use custody_core::{CarrierId, SiteId};
use custody_proto::api::{ApiKeyIssued, CreateApiKeyRequest};

use super::{ApiResult, Json, parse_id};
use crate::extract::Staff;
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

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
    use Access::Staff;
    table
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
            Doc::plain("Revoke a key at once (needs a step-up)").answering(204),
            revoke_api_key,
        )
}
