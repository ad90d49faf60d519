//! Sign-in links for residents, over the API and in the portal. Asking sets a cookie that
//! binds the link to this browser; the e-mailed link opens a page whose button uses it, so a
//! mail scanner that follows links spends nothing.

use std::time::Duration;

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use custody_app::AppError;
use custody_proto::api::{LinkRedeemRequest, LinkRequest};
use serde::Deserialize;

use crate::api::Json;
use crate::api::sessions::{sign_in_cookies, signed_in};
use crate::extract::cookie;
use crate::portal::{error_page, login_csrf, login_csrf_ok, login_form, render};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, RequestClient, ServerState};

/// The cookie that binds a requested link to the browser that asked.
pub const LINK_COOKIE: &str = "__Host-custody-link";

fn binding_cookie(value: &str, lifetime: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{LINK_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        lifetime.as_secs()
    ))
    .unwrap_or(HeaderValue::from_static(""))
}

/// The same answer for every address.
const SENT: &str = "If that address belongs to a resident, a sign-in link is on its way. \
                    Open it in this browser within 15 minutes.";

/// Ask for a sign-in link (API).
pub async fn request(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    Json(body): Json<LinkRequest>,
) -> Result<Response, ApiError> {
    let binding = state.app.link_binding()?;
    state.app.request_sign_in_link(&body.email, &binding, &client).await?;
    let cookie = binding_cookie(&binding, custody_app::sign_in_links::LINK_TTL);
    let answer = serde_json::json!({"message": SENT});
    Ok((StatusCode::ACCEPTED, [(header::SET_COOKIE, cookie)], axum::Json(answer)).into_response())
}

/// Sign in with a link's token, from the browser that asked (API).
pub async fn redeem(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    parts: Parts,
    Json(body): Json<LinkRedeemRequest>,
) -> Result<Response, ApiError> {
    let binding = cookie(&parts, LINK_COOKIE).unwrap_or("");
    let session = state.app.sign_in_with_link(&body.token, binding, &client).await?;
    Ok(signed_in(&state, &session, None))
}

#[derive(Template)]
#[template(path = "link.html")]
struct LinkPage {
    csrf: String,
    token: Option<String>,
}

/// The e-mail form of the sign-in page.
#[derive(Deserialize)]
pub struct LinkForm {
    csrf: String,
    email: String,
}

impl std::fmt::Debug for LinkForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkForm").field("email", &self.email).finish_non_exhaustive()
    }
}

/// Ask for a sign-in link (portal).
pub async fn request_page(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    parts: Parts,
    Form(form): Form<LinkForm>,
) -> Response {
    if !login_csrf_ok(&parts, &form.csrf) {
        let message = "The form expired. Please try again.";
        return login_form(&state, String::new(), Some(message.into()), StatusCode::FORBIDDEN);
    }
    let binding = match state.app.link_binding() {
        Ok(b) => b,
        Err(e) => return error_page(&e, None),
    };
    match state.app.request_sign_in_link(&form.email, &binding, &client).await {
        Ok(()) => {
            let cookie = binding_cookie(&binding, custody_app::sign_in_links::LINK_TTL);
            let page = LinkPage { csrf: String::new(), token: None };
            ([(header::SET_COOKIE, cookie)], render(&page, StatusCode::OK)).into_response()
        }
        Err(AppError::Throttled) => login_form(
            &state,
            String::new(),
            Some("Too many links asked for. Wait a few minutes and try again.".into()),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        Err(e) => error_page(&e, None),
    }
}

/// `?token=` of an e-mailed link.
#[derive(Deserialize)]
pub struct LinkQuery {
    token: String,
}

impl std::fmt::Debug for LinkQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkQuery(<redacted>)")
    }
}

/// The page an e-mailed link opens: a button that signs in (following the link spends nothing).
pub async fn open_page(State(state): State<ServerState>, Query(q): Query<LinkQuery>) -> Response {
    let (csrf, cookie) = match login_csrf(&state) {
        Ok(t) => t,
        Err(e) => return error_page(&e, None),
    };
    let mut response = render(&LinkPage { csrf, token: Some(q.token) }, StatusCode::OK);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The button of that page.
#[derive(Deserialize)]
pub struct RedeemForm {
    csrf: String,
    token: String,
}

impl std::fmt::Debug for RedeemForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedeemForm(<redacted>)")
    }
}

/// Sign in with the link (portal).
pub async fn redeem_page(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    parts: Parts,
    Form(form): Form<RedeemForm>,
) -> Response {
    let failed =
        |message: &str, status| login_form(&state, String::new(), Some(message.into()), status);
    if !login_csrf_ok(&parts, &form.csrf) {
        return failed(
            "The form expired. Open the link from your e-mail again.",
            StatusCode::FORBIDDEN,
        );
    }
    let binding = cookie(&parts, LINK_COOKIE).unwrap_or("");
    match state.app.sign_in_with_link(&form.token, binding, &client).await {
        Ok(session) => {
            let cookies = sign_in_cookies(&session, state.app.config().session_absolute);
            (cookies, Redirect::to("/portal")).into_response()
        }
        Err(AppError::AuthenticationFailed) => failed(
            "That link has expired, was used, or was opened in another browser. Ask for a new one.",
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => error_page(&e, None),
    }
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::Public;
    table
        .post(
            "/api/v1/sessions/link",
            Public,
            Doc::plain(
                "Ask for a sign-in link by e-mail (residents): 202 whoever asks; binds it to this \
                 client by a cookie",
            )
            .taking("LinkRequest")
            .throttled(),
            request,
        )
        .post(
            "/api/v1/sessions/link/redeem",
            Public,
            Doc::json(
                "Sign in with the link's token, from the client that asked",
                200,
                "SessionView",
            )
            .taking("LinkRedeemRequest")
            .throttled(),
            redeem,
        )
        .post("/portal/login/link", Public, Doc::plain("E-mail a sign-in link"), request_page)
        .get(
            "/portal/login/link",
            Public,
            Doc::plain("The page an e-mailed sign-in link opens"),
            open_page,
        )
        .post("/portal/login/link/redeem", Public, Doc::plain("Sign in with the link"), redeem_page)
}
