//! Portal forms: a form posted with the session cookie is taken only with the session's own
//! CSRF token in its `csrf` field. The check lives here, in the extractor, so that no handler
//! can forget it.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::header;
use axum::response::Response;
use custody_app::AppError;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{error_page, nav};
use crate::ServerState;
use crate::extract::{PersonSession, SESSION_COOKIE, cookie};

/// A form whose `csrf` field is the CSRF token of the session it was posted with, and its
/// other fields as `T`. Put it last among a handler's extractors: it reads the body.
#[derive(Debug)]
pub struct SignedForm<T>(pub T);

/// A form with no field but its CSRF token.
#[derive(Debug, Deserialize)]
pub struct NoFields {}

#[derive(Deserialize)]
struct Csrf {
    #[serde(default)]
    csrf: String,
}

impl<S, T> FromRequest<S> for SignedForm<T>
where
    T: DeserializeOwned,
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let state = ServerState::from_ref(state);
        let (parts, body) = request.into_parts();
        let token = cookie(&parts, SESSION_COOKIE).unwrap_or_default().to_owned();
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/x-www-form-urlencoded"));
        let bytes =
            Bytes::from_request(Request::from_parts(parts, body), &state).await.map_err(|_| {
                error_page(&AppError::Invalid("the form could not be read".into()), None)
            })?;
        let refused = || async {
            // The page names who is signed in, as every portal page does.
            let signed_in = match state.app.session(&token).await {
                Ok(info) => Some(nav(&state.app, &PersonSession { info, token: token.clone() })),
                Err(_) => None,
            };
            error_page(&AppError::Forbidden, signed_in)
        };
        if !is_form {
            let message = "send the form as application/x-www-form-urlencoded";
            return Err(error_page(&AppError::Invalid(message.into()), None));
        }
        let presented = serde_urlencoded::from_bytes::<Csrf>(&bytes).map(|c| c.csrf);
        match presented {
            Ok(csrf) if !token.is_empty() && state.app.csrf_ok(&token, &csrf) => {}
            _ => return Err(refused().await),
        }
        serde_urlencoded::from_bytes::<T>(&bytes).map(Self).map_err(|_| {
            let message = "the form is missing a field or has a value it cannot take";
            error_page(&AppError::Invalid(message.into()), None)
        })
    }
}
