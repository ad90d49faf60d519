//! The portal's account pages: the second-factor step (and step-up), setting up an
//! authenticator app, recovery codes, and the person's sessions.
//!
//! Like every portal page they run without scripts; the authenticator's QR code is an inline
//! SVG rendered on the server.

use super::forms::{NoFields, SignedForm};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use custody_app::AppError;
use custody_app::factors::{Factors, Proof, Proven, TotpEnrolment};
use custody_core::SessionId;
use custody_core::person::Role;
use custody_core::text::percent_encode_component;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{Nav, PortalSession, PortalUser, SECOND_FACTOR_PAGE, error_page, nav, render};
use crate::extract::PersonSession;
use crate::routes::{Access, Doc, Routes};
use crate::{RequestClient, ServerState, api, views};

/// Where to go after a step-up: a path of this portal, nothing else. No other origin and no
/// path outside the portal (no open redirect), and nothing a `Location` header cannot carry as
/// it is: printable ASCII only, so no CR or LF splits the answer. Checked before anything else
/// of the request is done, so a bad one spends no code and rotates no session; none given is
/// the portal's home.
fn next_page(next: Option<&str>) -> Result<&str, AppError> {
    match next {
        None => Ok("/portal"),
        Some(n)
            if (n == "/portal" || n.starts_with("/portal/") || n.starts_with("/portal?"))
                && n.bytes().all(|b| b.is_ascii_graphic())
                && !n.contains("//")
                && !n.contains("..")
                && !n.contains('\\') =>
        {
            Ok(n)
        }
        Some(_) => Err(AppError::Invalid(
            "the page to return to is not a page of this portal; open the portal and try again"
                .into(),
        )),
    }
}

/// The step-up page that returns to `next` once a factor is proven.
fn step_up(next: &str) -> Response {
    let query = format!("{SECOND_FACTOR_PAGE}?next={}", percent_encode_component(next));
    Redirect::to(&query).into_response()
}

/// A page's answer to a use-case error: a step-up where one is needed, the error page else.
fn failed(e: &AppError, s: &PersonSession, state: &ServerState, back: &str) -> Response {
    match e {
        AppError::StepUpRequired => step_up(back),
        _ => error_page(e, Some(nav(&state.app, s))),
    }
}

#[derive(Template)]
#[template(path = "second_factor.html")]
struct SecondFactorPage {
    nav: Nav,
    factors: Factors,
    /// Signing in (true) or confirming for a sensitive action (false).
    signing_in: bool,
    /// Only a passkey counts (a super-admin).
    passkey_only: bool,
    /// A factor was proven in this session already (one that may not count).
    proven: bool,
    next: String,
    failed: Option<String>,
}

/// `?next=` of the second-factor page.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn second_factor_page(
    state: &ServerState,
    s: &PersonSession,
    next: &str,
    failed: Option<String>,
    status: StatusCode,
    factors: Factors,
) -> Response {
    let page = SecondFactorPage {
        nav: nav(&state.app, s),
        factors,
        signing_in: s.info.needs_second_factor(),
        passkey_only: s.info.person.role == Role::SuperAdmin,
        proven: s.info.factor.is_some(),
        next: next.to_owned(),
        failed,
    };
    render(&page, status)
}

/// The second-factor step: after a password, or to confirm a sensitive action.
pub async fn second_factor(
    State(state): State<ServerState>,
    PortalSession(s): PortalSession,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = match next_page(q.next.as_deref()) {
        Ok(next) => next.to_owned(),
        Err(e) => return error_page(&e, Some(nav(&state.app, &s))),
    };
    match state.app.factors(&s.info).await {
        Ok(f) => second_factor_page(&state, &s, &next, None, StatusCode::OK, f),
        Err(e) => error_page(&e, Some(nav(&state.app, &s))),
    }
}

/// A code for the second-factor step.
#[derive(Deserialize)]
pub struct FactorForm {
    #[serde(default)]
    totp: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

impl std::fmt::Debug for FactorForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FactorForm(<redacted>)")
    }
}

/// The rotated session's cookies, then `then`.
fn with_cookie(state: &ServerState, proven: &Proven, then: Response) -> Response {
    (api::sessions::sign_in_cookies(&proven.session, state.app.config().session_absolute), then)
        .into_response()
}

/// Prove a factor from the form.
pub async fn second_factor_submit(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    PortalSession(s): PortalSession,
    SignedForm(form): SignedForm<FactorForm>,
) -> Response {
    let next = match next_page(form.next.as_deref()) {
        Ok(next) => next.to_owned(),
        Err(e) => return error_page(&e, Some(nav(&state.app, &s))),
    };
    let filled = |v: Option<String>| v.filter(|c| !c.trim().is_empty()).map(Zeroizing::new);
    let proof = match (filled(form.totp), filled(form.recovery_code)) {
        (Some(code), None) => Proof::Totp(code),
        (None, Some(code)) => Proof::RecoveryCode(code),
        _ => {
            let factors = state.app.factors(&s.info).await.unwrap_or(Factors {
                totp: false,
                totp_pending: false,
                recovery_codes_left: 0,
                passkeys: 0,
            });
            let message = "Type the code from your authenticator app, or one recovery code.";
            return second_factor_page(
                &state,
                &s,
                &next,
                Some(message.into()),
                StatusCode::UNPROCESSABLE_ENTITY,
                factors,
            );
        }
    };
    match state.app.prove_second_factor(&s.token, &s.info, proof, &client).await {
        Ok(proven) if proven.session.needs_second_factor => {
            // A super-admin's code proves who they are; a passkey is still to come.
            with_cookie(&state, &proven, step_up(&next))
        }
        Ok(proven) => with_cookie(&state, &proven, Redirect::to(&next).into_response()),
        Err(e @ (AppError::AuthenticationFailed | AppError::Throttled)) => {
            let (message, status) = if matches!(e, AppError::Throttled) {
                (
                    "Too many attempts. Wait a few minutes and try again.",
                    StatusCode::TOO_MANY_REQUESTS,
                )
            } else {
                ("That code is not right, or was used already.", StatusCode::UNAUTHORIZED)
            };
            match state.app.factors(&s.info).await {
                Ok(f) => second_factor_page(&state, &s, &next, Some(message.into()), status, f),
                Err(e) => error_page(&e, Some(nav(&state.app, &s))),
            }
        }
        Err(e) => failed(&e, &s, &state, &next),
    }
}

#[derive(Template)]
#[template(path = "totp_setup.html")]
struct TotpSetupPage {
    nav: Nav,
    qr_svg: String,
    secret: String,
    failed: Option<String>,
}

impl std::fmt::Debug for TotpSetupPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSetupPage(<redacted>)")
    }
}

/// Begin setting up an authenticator app: the seed as a QR code and as text, once.
pub async fn totp_begin(
    State(state): State<ServerState>,
    PortalSession(s): PortalSession,
    _: SignedForm<NoFields>,
) -> Response {
    match state.app.begin_totp(&s.info).await {
        Ok(enrolment) => totp_setup_page(&state, &s, &enrolment, None, StatusCode::OK),
        Err(e) => failed(&e, &s, &state, "/portal/account"),
    }
}

fn totp_setup_page(
    state: &ServerState,
    s: &PersonSession,
    enrolment: &TotpEnrolment,
    failed: Option<String>,
    status: StatusCode,
) -> Response {
    let qr = match crate::qr::svg(&enrolment.uri).map_err(AppError::Invalid) {
        Ok(svg) => svg,
        Err(e) => return error_page(&e, Some(nav(&state.app, s))),
    };
    let page = TotpSetupPage {
        nav: nav(&state.app, s),
        qr_svg: qr,
        secret: enrolment.secret.as_str().to_owned(),
        failed,
    };
    let mut response = render(&page, status);
    // The seed is on this page: no cache may keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// The first code of the app being set up.
#[derive(Deserialize)]
pub struct ConfirmForm {
    code: String,
}

impl std::fmt::Debug for ConfirmForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfirmForm(<redacted>)")
    }
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage {
    nav: Nav,
    codes: Vec<String>,
}

impl std::fmt::Debug for RecoveryCodesPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCodesPage(<redacted>)")
    }
}

fn recovery_codes_page(nav: Nav, codes: &[Zeroizing<String>]) -> Response {
    let page = RecoveryCodesPage { nav, codes: codes.iter().map(|c| c.to_string()).collect() };
    let mut response = render(&page, StatusCode::OK);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// Confirm the app with its first code.
pub async fn totp_confirm(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    PortalSession(s): PortalSession,
    SignedForm(form): SignedForm<ConfirmForm>,
) -> Response {
    match state.app.confirm_totp(&s.token, &s.info, &form.code, &client).await {
        Ok(proven) => {
            // The rotated session's token makes the page's CSRF token.
            let rotated = PersonSession {
                info: s.info.clone(),
                token: proven.session.token.as_str().to_owned(),
            };
            let then = match &proven.recovery_codes {
                Some(codes) => recovery_codes_page(nav(&state.app, &rotated), codes),
                None => Redirect::to("/portal/account").into_response(),
            };
            with_cookie(&state, &proven, then)
        }
        Err(AppError::AuthenticationFailed) => match state.app.pending_totp(&s.info).await {
            Ok(Some(enrolment)) => {
                let message = "That code is not right. Type the code the app shows now.";
                totp_setup_page(
                    &state,
                    &s,
                    &enrolment,
                    Some(message.into()),
                    StatusCode::UNAUTHORIZED,
                )
            }
            Ok(None) => Redirect::to("/portal/account").into_response(),
            Err(e) => error_page(&e, Some(nav(&state.app, &s))),
        },
        Err(e) => failed(&e, &s, &state, "/portal/account"),
    }
}

/// One of the person's sessions on the account page.
struct SessionLine {
    id: String,
    created_at: String,
    last_seen_at: String,
    source: String,
    user_agent: String,
    factor: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    nav: Nav,
    factors: Factors,
    sessions: Vec<SessionLine>,
}

/// Everything held about the signed-in person, the API's document, as a file to download.
pub async fn personal_data(
    State(state): State<ServerState>,
    PortalUser(s): PortalUser,
) -> Response {
    let data = match state.app.personal_data(s.caller(), &s.person().id).await {
        Ok(data) => data,
        Err(e) => return error_page(&e, Some(nav(&state.app, &s))),
    };
    let now = state.app.now();
    let document = api::people::personal_data_document(now, s.caller(), &data, Some(&s.info.id));
    let Ok(body) = serde_json::to_vec_pretty(&document) else {
        return error_page(&AppError::Invalid("the export".into()), Some(nav(&state.app, &s)));
    };
    let name = format!("attachment; filename=\"custody-personal-data-{}.json\"", now.utc_day());
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response()
}

/// The person's factors and sessions.
pub async fn account(State(state): State<ServerState>, PortalUser(s): PortalUser) -> Response {
    let n = nav(&state.app, &s);
    let (factors, rows) =
        match tokio::try_join!(state.app.factors(&s.info), state.app.sessions_of(&s.info)) {
            Ok(v) => v,
            Err(e) => return error_page(&e, Some(n)),
        };
    let sessions = rows
        .iter()
        .map(|r| SessionLine {
            id: r.id.to_string(),
            created_at: views::rfc3339(r.created_at),
            last_seen_at: views::rfc3339(r.last_seen_at),
            source: r.source.clone(),
            user_agent: r.user_agent.clone(),
            factor: r
                .factor
                .map_or_else(|| "password only".into(), |(f, _)| f.as_str().replace('_', " ")),
            current: r.id == s.info.id,
        })
        .collect();
    render(&AccountPage { nav: n, factors, sessions }, StatusCode::OK)
}

/// End one session.
pub async fn end_session(
    State(state): State<ServerState>,
    PortalUser(s): PortalUser,
    Path(id): Path<String>,
    _: SignedForm<NoFields>,
) -> Response {
    let Ok(id) = SessionId::parse(&id) else {
        return error_page(&AppError::NotFound, Some(nav(&state.app, &s)));
    };
    match state.app.end_session(&s.info, &id).await {
        Ok(()) if id == s.info.id => (
            [(header::SET_COOKIE, api::sessions::clear_session_cookie())],
            Redirect::to("/portal/login"),
        )
            .into_response(),
        Ok(()) => Redirect::to("/portal/account").into_response(),
        Err(e) => failed(&e, &s, &state, "/portal/account"),
    }
}

/// End every other session.
pub async fn end_other_sessions(
    State(state): State<ServerState>,
    PortalUser(s): PortalUser,
    _: SignedForm<NoFields>,
) -> Response {
    match state.app.end_other_sessions(&s.info, &s.token).await {
        Ok(_) => Redirect::to("/portal/account").into_response(),
        Err(e) => failed(&e, &s, &state, "/portal/account"),
    }
}

/// Replace the recovery codes (a step-up first when the last factor is not fresh).
pub async fn recovery_codes(
    State(state): State<ServerState>,
    PortalUser(s): PortalUser,
    _: SignedForm<NoFields>,
) -> Response {
    match state.app.issue_recovery_codes(&s.info).await {
        Ok(codes) => recovery_codes_page(nav(&state.app, &s), &codes),
        Err(e) => failed(&e, &s, &state, "/portal/account"),
    }
}

/// Remove the authenticator app.
pub async fn totp_remove(
    State(state): State<ServerState>,
    PortalUser(s): PortalUser,
    _: SignedForm<NoFields>,
) -> Response {
    match state.app.remove_totp(&s.info).await {
        Ok(()) => Redirect::to("/portal/account").into_response(),
        Err(e) => failed(&e, &s, &state, "/portal/account"),
    }
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{AnySession, Person};
    table
        .get(
            "/portal/second-factor",
            AnySession,
            Doc::plain("The second-factor step, and step-up"),
            second_factor,
        )
        .post(
            "/portal/second-factor",
            AnySession,
            Doc::plain("Prove a second factor"),
            second_factor_submit,
        )
        .get("/portal/account", Person, Doc::plain("Factors and sessions"), account)
        .post(
            "/portal/account/totp",
            AnySession,
            Doc::plain("Begin setting up an authenticator app"),
            totp_begin,
        )
        .post(
            "/portal/account/totp/confirm",
            AnySession,
            Doc::plain("Confirm the authenticator app"),
            totp_confirm,
        )
        .post(
            "/portal/account/totp/remove",
            Person,
            Doc::plain("Remove the authenticator app"),
            totp_remove,
        )
        .post(
            "/portal/account/recovery-codes",
            Person,
            Doc::plain("New recovery codes"),
            recovery_codes,
        )
        .post("/portal/account/sessions/{id}/end", Person, Doc::plain("End a session"), end_session)
        .get(
            "/portal/account/personal-data",
            Person,
            Doc::plain(
                "Everything held about the signed-in person, as a JSON file to keep (GDPR Art. 15 \
                 and 20); audited",
            ),
            personal_data,
        )
        .post(
            "/portal/account/sessions/end-others",
            Person,
            Doc::plain("End every other session"),
            end_other_sessions,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_portal_paths_are_followed_after_a_step_up() {
        for good in ["/portal", "/portal/account", "/portal/alerts/alt_x?tab=timeline"] {
            assert_eq!(next_page(Some(good)).ok(), Some(good));
        }
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/portal//evil",
            "/api/v1/me",
            "/portal\\x",
            "/portalx",
            "/portal/../api",
            "/portal/account\r\nSet-Cookie: a=b",
            "/portal/account\n",
            "/portal/a b",
            "/portal/\u{e9}",
            "/portal/\u{0}",
            "",
        ] {
            assert!(next_page(Some(bad)).is_err(), "{bad:?}");
            // Whatever gets through must be a valid header value as it is.
        }
        assert_eq!(next_page(None).ok(), Some("/portal"));
    }
}
