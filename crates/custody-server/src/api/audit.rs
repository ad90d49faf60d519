//! The audit log: its key, checkpoints, consistency proofs, exports, and a parcel's proven chain of custody.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use custody_core::ParcelId;
use serde::Deserialize;

use super::incident::json_line;
use super::{ApiResult, Json, parse_id};
use crate::extract::{Signed, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

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

/// A site's audit entries with their proofs, one JSON line each after the checkpoint: the
/// format of `custody audit export`, which `custody audit verify` checks offline.
pub async fn audit_export(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Json(body): Json<custody_proto::api::AuditExportRequest>,
) -> Result<Response, ApiError> {
    let filter = custody_core::audit::AuditFilter {
        site: Some(parse_id(&body.site, "site")?),
        parcel: body.parcel.as_deref().map(|p| parse_id(p, "parcel")).transpose()?,
        compartment: body.compartment.as_deref().map(|c| parse_id(c, "compartment")).transpose()?,
        actor: body.actor,
        since: super::time_in(body.since.as_deref(), "since")?,
        until: super::time_in(body.until.as_deref(), "until")?,
    };
    let mut out = Vec::new();
    state
        .app
        .export_site_audit(reader.caller(), &filter, &body.reason, |line| json_line(&mut out, line))
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store")], out)
        .into_response())
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

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Public, Signed, StaffRead};
    table
        .get(
            "/api/v1/parcels/{id}/custody",
            Signed,
            Doc::json(
                "A parcel's chain of custody with inclusion proofs against a signed checkpoint",
                200,
                "CustodyView",
            ),
            parcel_custody,
        )
        .get(
            "/api/v1/audit/key",
            Public,
            Doc::plain("The audit checkpoint verifier key (C2SP note verifier key)"),
            audit_key,
        )
        .get(
            "/api/v1/audit/checkpoint",
            StaffRead,
            Doc::plain("The latest signed audit checkpoint (C2SP signed note)"),
            audit_checkpoint,
        )
        .get(
            "/api/v1/audit/consistency",
            StaffRead,
            Doc::json(
                "A consistency proof between two log sizes (?old=&new=)",
                200,
                "ConsistencyView",
            ),
            audit_consistency,
        )
        .post(
            "/api/v1/audit/export",
            StaffRead,
            Doc::plain(
                "Export a site's audit entries with proofs (JSON lines, as `custody audit \
                 export`); needs a step-up and a reason",
            )
            .taking("AuditExportRequest"),
            audit_export,
        )
}
