//! An alert exported as one bundle.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use custody_core::AlertId;
use custody_proto::api::ReasonRequest;

use super::{Json, parse_id};
use crate::extract::StaffRead;
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState};

/// Appends one line of an export to `out`.
pub(crate) fn json_line(out: &mut Vec<u8>, line: &impl serde::Serialize) -> std::io::Result<()> {
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

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::StaffRead;
    table.post(
        "/api/v1/alerts/{id}/export",
        StaffRead,
        Doc::plain(
            "Export an incident: the alert, its timeline and the audit entries around it with \
                 proofs (JSON lines, verified by `custody audit verify`); needs a step-up and a \
                 reason",
        )
        .taking("ReasonRequest"),
        export_incident,
    )
}
