//! The JSON API under `/api/v1`.

use std::str::FromStr;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_core::BankId;
use custody_core::compartment::SizeClass;
use custody_proto::device::SignedOpenCommand;

use crate::{ApiError, ServerState};

pub mod alerts;
pub mod api_keys;
pub mod approvals;
pub mod audit;
pub mod badges;
pub mod breaches;
pub mod bulk;
pub mod carriers;
pub mod compartments;
pub mod couriers;
pub mod devices;
pub mod factors;
pub mod fanout;
pub mod health;
pub mod incident;
pub mod lockdown;
pub mod parcels;
pub mod passkeys;
pub mod people;
pub mod presence;
pub mod qr;
pub mod remote_opens;
pub mod retention;
pub mod sensors;
pub mod sessions;
pub mod sites;
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

/// A time given as RFC 3339 (`2030-01-01T09:00:00Z`), if given; a clear 422 naming `field`
/// otherwise.
pub(crate) fn time_in(
    text: Option<&str>,
    field: &str,
) -> Result<Option<custody_core::Timestamp>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| custody_app::AppError::Invalid(format!("{field}: expected RFC 3339")))?;
    let millis = i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| custody_app::AppError::Invalid(format!("{field}: out of range")))?;
    Ok(Some(custody_core::Timestamp::from_millis(millis)))
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

/// Sends an open command to its bank's agent; whether it reached the link.
pub(crate) fn deliver(state: &ServerState, command: &SignedOpenCommand) -> bool {
    let Ok(bank) = BankId::parse(&command.command.bank) else { return false };
    state.hub.send(&bank, custody_proto::device::ServerMessage::Open(command.clone()))
}
