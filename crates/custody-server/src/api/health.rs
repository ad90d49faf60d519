//! Health, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState};

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers. The body's second line says the cryptographic module's
/// mode (FIPS or not), for monitors that check it.
pub async fn readyz(State(state): State<ServerState>) -> Response {
    match state.app.ping().await {
        Ok(()) => (StatusCode::OK, format!("ready\n{}\n", custody_crypto::fips::describe()))
            .into_response(),
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

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Metrics, Public};
    table
        .get("/healthz", Public, Doc::plain("Liveness"), healthz)
        .get("/readyz", Public, Doc::plain("Readiness: the database answers"), readyz)
        .get("/metrics", Metrics, Doc::plain("Prometheus metrics"), metrics)
        .get("/api/v1/openapi.json", Public, Doc::plain("This document"), openapi)
}
