//! The admin portal: server-rendered pages (askama, auto-escaped). Two scripts, served from
//! here: one runs passkey ceremonies, the other keeps the alert list live
//! ([`alerts`]); every page works without them but the passkey ceremony.
//!
//! Every form carries a CSRF token (ASVS 3.5.1): the sign-in form a random one mirrored in a
//! `__Host-` cookie (double submit), forms of a session the token derived from that session.
//! Signed-out visitors are sent to the sign-in page.

use askama::Template;
use axum::extract::{Form, FromRef, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use custody_app::AppError;
use custody_app::compartments::Compartment;
use custody_app::parcels::Parcel;
use custody_app::people::Person;
use custody_app::sites::Bank;
use custody_app::sites::Site;
use custody_core::parcel::ParcelState;
use custody_core::person::Role;
use custody_core::{ParcelId, SiteId};
use forms::{NoFields, SignedForm};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::extract::{AnySession, PersonSession, cookie};
use crate::routes::{Access, Doc, Routes};
use crate::{RequestClient, ServerState, api, views};

pub mod account;
pub mod alerts;
pub mod breaches;
pub mod forms;

const LOGIN_CSRF_COOKIE: &str = "__Host-custody-login";

/// A signed-in person on a page, second factor proven where their role needs one. Signed-out
/// visitors are sent to sign in, sessions at the second-factor step to that step.
#[derive(Debug, Clone)]
pub struct PortalUser(pub PersonSession);

impl<S> FromRequestParts<S> for PortalUser
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let PortalSession(s) = PortalSession::from_request_parts(parts, state).await?;
        if s.info.needs_second_factor() {
            return Err(Redirect::to(SECOND_FACTOR_PAGE).into_response());
        }
        Ok(Self(s))
    }
}

/// Who reads staff pages (sites, alerts): admins, super-admins and auditors.
pub(crate) const STAFF_READ: &[Role] = &[Role::Admin, Role::SuperAdmin, Role::Auditor];

/// A signed-in person of one of `roles` on a page, second factor proven; anyone else signed in
/// gets the "not allowed" page, before anything else of the request is read.
async fn portal_person_in<S>(
    parts: &mut Parts,
    state: &S,
    roles: &[Role],
) -> Result<PersonSession, Response>
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    let PortalUser(s) = PortalUser::from_request_parts(parts, state).await?;
    if !roles.contains(&s.person().role) {
        let app = &ServerState::from_ref(state).app;
        return Err(error_page(&AppError::Forbidden, Some(nav(app, &s))));
    }
    Ok(s)
}

/// An admin, super-admin or auditor on a page: the pages staff read.
#[derive(Debug, Clone)]
pub struct PortalStaffRead(pub PersonSession);

impl<S> FromRequestParts<S> for PortalStaffRead
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        portal_person_in(parts, state, STAFF_READ).await.map(Self)
    }
}

/// An admin or super-admin on a page: the forms that change what staff manage.
#[derive(Debug, Clone)]
pub struct PortalAdmin(pub PersonSession);

impl<S> FromRequestParts<S> for PortalAdmin
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        portal_person_in(parts, state, &[Role::Admin, Role::SuperAdmin]).await.map(Self)
    }
}

/// Where a session at the second-factor step is sent.
pub(crate) const SECOND_FACTOR_PAGE: &str = "/portal/second-factor";

/// A signed-in person on a page, second factor proven or not: the second-factor step's pages
/// and signing out. Signed-out visitors are sent to sign in.
#[derive(Debug, Clone)]
pub struct PortalSession(pub PersonSession);

impl<S> FromRequestParts<S> for PortalSession
where
    ServerState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match <AnySession as axum::extract::OptionalFromRequestParts<S>>::from_request_parts(
            parts, state,
        )
        .await
        {
            Ok(Some(AnySession(s))) => Ok(Self(s)),
            _ => Err(Redirect::to("/portal/login").into_response()),
        }
    }
}

pub(crate) fn render(t: &impl Template, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "page could not be rendered").into_response()
        }
    }
}

/// A page for an error.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    message: String,
    signed_in: Option<Nav>,
}

/// What the navigation bar shows.
#[derive(Debug, Clone)]
pub(crate) struct Nav {
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) csrf: String,
}

pub(crate) fn nav(app: &custody_app::App, s: &PersonSession) -> Nav {
    Nav {
        name: s.person().name.to_string(),
        role: s.person().role.as_str().replace('_', " "),
        csrf: app.csrf_token(&s.token),
    }
}

pub(crate) fn error_page(e: &AppError, nav: Option<Nav>) -> Response {
    // The same status the API gives the same error: a mistake or a refusal is never a 500.
    let status = crate::error::status_of(e);
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::UNAUTHORIZED => "Not signed in",
        StatusCode::UNPROCESSABLE_ENTITY => "That is not right",
        StatusCode::CONFLICT => "That cannot be done now",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        StatusCode::SERVICE_UNAVAILABLE => "The bank cannot be reached",
        _ => "Something went wrong",
    };
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "page failed");
        "The request changed nothing. Try again, or ask your administrator.".to_owned()
    } else {
        e.to_string()
    };
    render(&ErrorPage { title: title.into(), message, signed_in: nav }, status)
}

/// `/` → the portal.
pub async fn root() -> Redirect {
    Redirect::to("/portal")
}

/// The passkey script.
pub async fn passkey_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/passkey.js"),
    )
        .into_response()
}

/// The style sheet.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/custody.css"),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    email: String,
    failed: Option<String>,
}

pub(crate) fn login_form(
    state: &ServerState,
    email: String,
    failed: Option<String>,
    status: StatusCode,
) -> Response {
    let (token, cookie) = match login_csrf(state) {
        Ok(t) => t,
        Err(e) => return error_page(&e, None),
    };
    let mut response = render(&LoginPage { csrf: token, email, failed }, status);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// Whether a sign-in form's CSRF field matches the login cookie (double submit).
pub(crate) fn login_csrf_ok(parts: &Parts, presented: &str) -> bool {
    let expected = cookie(parts, LOGIN_CSRF_COOKIE).unwrap_or("");
    !expected.is_empty()
        && custody_crypto::constant_time_eq(expected.as_bytes(), presented.as_bytes())
}

/// A fresh login CSRF token and the cookie that carries it.
pub(crate) fn login_csrf(state: &ServerState) -> Result<(String, HeaderValue), AppError> {
    let token = state_rng_token(state)?;
    let cookie = HeaderValue::from_str(&format!(
        "{LOGIN_CSRF_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .unwrap_or(HeaderValue::from_static(""));
    Ok((token, cookie))
}

fn state_rng_token(state: &ServerState) -> Result<String, AppError> {
    state.app.random_token()
}

/// The sign-in page.
pub async fn login_page(State(state): State<ServerState>) -> Response {
    login_form(&state, String::new(), None, StatusCode::OK)
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    csrf: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm").field("email", &self.email).finish_non_exhaustive()
    }
}

/// Sign in from the form.
pub async fn login_submit(
    State(state): State<ServerState>,
    RequestClient(client): RequestClient,
    parts: Parts,
    Form(form): Form<LoginForm>,
) -> Response {
    if !login_csrf_ok(&parts, &form.csrf) {
        return login_form(
            &state,
            form.email,
            Some("The form expired. Please sign in again.".into()),
            StatusCode::FORBIDDEN,
        );
    }
    match state.app.login(&form.email, Zeroizing::new(form.password), &client).await {
        Ok(session) => {
            let cookies =
                api::sessions::sign_in_cookies(&session, state.app.config().session_absolute);
            let next = if session.needs_second_factor { SECOND_FACTOR_PAGE } else { "/portal" };
            (cookies, Redirect::to(next)).into_response()
        }
        Err(AppError::Throttled) => login_form(
            &state,
            form.email,
            Some("Too many attempts. Wait a few minutes and try again.".into()),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        Err(AppError::AuthenticationFailed) => login_form(
            &state,
            form.email,
            Some("E-mail address or password is not right.".into()),
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => error_page(&e, None),
    }
}

/// Sign out from the form (also from the second-factor step).
pub async fn logout(
    State(state): State<ServerState>,
    PortalSession(s): PortalSession,
    _: SignedForm<NoFields>,
) -> Response {
    if let Err(e) = state.app.logout(&s.token).await {
        return error_page(&e, None);
    }
    ([(header::SET_COOKIE, api::sessions::clear_session_cookie())], Redirect::to("/portal/login"))
        .into_response()
}

/// A parcel row on a page.
struct ParcelLine {
    id: String,
    state: String,
    tracking_ref: String,
    size: String,
    compartment: String,
    created_at: String,
    expires_at: String,
}

fn line(p: &Parcel, compartments: &[Compartment]) -> ParcelLine {
    let number = p
        .compartment
        .as_ref()
        .and_then(|c| compartments.iter().find(|x| &x.id == c))
        .map(|c| c.number.to_string());
    ParcelLine {
        id: p.id.to_string(),
        state: p.state.as_str().replace('_', " "),
        tracking_ref: p.tracking_ref.as_ref().map_or_else(|| "—".into(), ToString::to_string),
        size: p.size.as_str().replace('_', " "),
        compartment: number.unwrap_or_else(|| "—".into()),
        created_at: views::rfc3339(p.created_at),
        expires_at: p.expires_at.map_or_else(|| "—".into(), views::rfc3339),
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    nav: Nav,
    person: Person,
    sites: Vec<Site>,
    parcels: Vec<ParcelLine>,
    staff: bool,
}

/// The overview: sites for staff, parcels for residents and couriers.
pub async fn home(State(state): State<ServerState>, PortalUser(s): PortalUser) -> Response {
    let staff = STAFF_READ.contains(&s.person().role);
    let (sites, parcels) = if staff {
        match state.app.sites_for(s.caller()).await {
            Ok(sites) => (sites, Vec::new()),
            Err(e) => return error_page(&e, Some(nav(&state.app, &s))),
        }
    } else {
        match state.app.visible_parcels(s.caller(), None, 100).await {
            Ok(p) => (Vec::new(), p.iter().map(|p| line(p, &[])).collect()),
            Err(e) => return error_page(&e, Some(nav(&state.app, &s))),
        }
    };
    render(
        &HomePage { nav: nav(&state.app, &s), person: s.person().clone(), sites, parcels, staff },
        StatusCode::OK,
    )
}

struct BankBlock {
    bank: Bank,
    online: bool,
    compartments: Vec<Compartment>,
}

#[derive(Template)]
#[template(path = "site.html")]
struct SitePage {
    nav: Nav,
    site: Site,
    banks: Vec<BankBlock>,
    parcels: Vec<ParcelLine>,
    /// Parcels nobody is named for yet (`custody_app::unaddressed`).
    held: Vec<ParcelLine>,
    /// Whether the reader may name their recipients (managers, not auditors).
    manages: bool,
}

/// A site: its banks, compartments and parcels.
pub async fn site(
    State(state): State<ServerState>,
    PortalStaffRead(s): PortalStaffRead,
    Path(id): Path<String>,
) -> Response {
    let n = nav(&state.app, &s);
    let Ok(id) = SiteId::parse(&id) else { return error_page(&AppError::NotFound, Some(n)) };
    let (site, banks) = match state.app.site_overview(s.caller(), &id).await {
        Ok(v) => v,
        Err(e) => return error_page(&e, Some(n)),
    };
    let parcels = match state.app.visible_parcels(s.caller(), Some(&id), 200).await {
        Ok(p) => p,
        Err(e) => return error_page(&e, Some(n)),
    };
    let held = match state.app.unaddressed_parcels(s.caller(), &id, 200).await {
        Ok(p) => p,
        Err(e) => return error_page(&e, Some(n)),
    };
    let all: Vec<Compartment> = banks.iter().flat_map(|(_, c)| c.clone()).collect();
    let blocks = banks
        .into_iter()
        .map(|(bank, compartments)| BankBlock {
            online: state.hub.is_online(&bank.id),
            bank,
            compartments,
        })
        .collect();
    render(
        &SitePage {
            nav: n,
            site,
            banks: blocks,
            parcels: parcels.iter().map(|p| line(p, &all)).collect(),
            held: held.iter().map(|p| line(p, &all)).collect(),
            manages: s.person().role.is_staff(),
        },
        StatusCode::OK,
    )
}

/// The form that names the resident a held parcel is for.
#[derive(Deserialize)]
pub struct RecipientForm {
    email: String,
}

impl std::fmt::Debug for RecipientForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecipientForm(<redacted>)")
    }
}

/// Name the resident a held parcel is for, from the site's page; back to the site's page.
pub async fn address_parcel(
    State(state): State<ServerState>,
    PortalAdmin(s): PortalAdmin,
    Path(id): Path<String>,
    SignedForm(form): SignedForm<RecipientForm>,
) -> Response {
    let n = nav(&state.app, &s);
    let Ok(id) = ParcelId::parse(&id) else { return error_page(&AppError::NotFound, Some(n)) };
    match state.app.address_parcel(s.caller(), &id, &form.email).await {
        Ok(p) => Redirect::to(&format!("/portal/sites/{}", p.site)).into_response(),
        Err(e) => error_page(&e, Some(n)),
    }
}

struct EventLine {
    at: String,
    action: String,
    outcome: String,
    actor: String,
    reason: String,
    statement: String,
    verified: bool,
}

#[derive(Template)]
#[template(path = "parcel.html")]
struct ParcelPage {
    nav: Nav,
    parcel: ParcelLine,
    recipient: String,
    carrier: String,
    events: Vec<EventLine>,
    checkpoint_size: String,
    /// The pickup QR code as inline SVG, for the recipient of a parcel waiting for pickup.
    pickup_qr: Option<PickupQr>,
    /// What came of opening from here, if she just tried.
    notice: Option<String>,
}

/// A pickup QR code on the recipient's parcel page.
struct PickupQr {
    svg: String,
    expires_at: String,
}

/// A parcel and its chain of custody.
pub async fn parcel(
    State(state): State<ServerState>,
    PortalUser(s): PortalUser,
    Path(id): Path<String>,
) -> Response {
    parcel_page(&state, &s, &id, None).await
}

/// The recipient's "open my locker" form: the code on the kiosk's screen.
#[derive(Deserialize)]
pub struct OpenForm {
    presence_code: String,
}

impl std::fmt::Debug for OpenForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenForm(<redacted>)")
    }
}

/// The recipient opens her compartment from the parcel's page, standing at the bank.
pub async fn open_parcel(
    State(state): State<ServerState>,
    PortalUser(s): PortalUser,
    Path(id): Path<String>,
    SignedForm(form): SignedForm<OpenForm>,
) -> Response {
    let Ok(parcel) = ParcelId::parse(&id) else {
        return error_page(&AppError::NotFound, Some(nav(&state.app, &s)));
    };
    let presence = Zeroizing::new(form.presence_code);
    let notice = match state.app.open_from_app(s.caller(), &parcel, &presence).await {
        Ok(opening) if api::deliver(&state, &opening.command) => {
            format!("Locker {} is opening.", opening.compartment)
        }
        Ok(opening) => format!(
            "Locker {} did not receive the command: please ask staff to open it for you.",
            opening.compartment
        ),
        Err(e @ (AppError::NotFound | AppError::Forbidden)) => {
            return error_page(&e, Some(nav(&state.app, &s)));
        }
        Err(AppError::Throttled) => "Too many wrong codes: try again in a quarter of an hour, \
                                     or scan the QR code instead."
            .to_owned(),
        Err(e) => e.to_string(),
    };
    parcel_page(&state, &s, &id, Some(notice)).await
}

async fn parcel_page(
    state: &ServerState,
    s: &PersonSession,
    id: &str,
    notice: Option<String>,
) -> Response {
    let n = nav(&state.app, s);
    let Ok(id) = ParcelId::parse(id) else { return error_page(&AppError::NotFound, Some(n)) };
    let (p, note, proven) = match state.app.parcel_custody(s.caller(), &id).await {
        Ok(v) => v,
        Err(e) => return error_page(&e, Some(n)),
    };
    let checkpoint_size = note.lines().nth(1).unwrap_or("?").to_owned();
    let compartments = match &p.bank {
        Some(bank) => state.app.bank_overview(bank).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let events = proven
        .iter()
        .map(|e| {
            let r = &e.row;
            EventLine {
                at: views::rfc3339(r.event.at),
                action: r.event.action.as_str().into(),
                outcome: r.event.outcome.as_str().into(),
                actor: match &r.event.actor.id {
                    Some(id) => format!("{} {id}", r.event.actor.kind),
                    None => r.event.actor.kind.to_string(),
                },
                reason: r.event.reason.clone().unwrap_or_default(),
                statement: views::statement_line(&e.statement),
                verified: e.verified,
            }
        })
        .collect();
    let (carrier, recipient) = match state.app.parcel_parties(&p).await {
        Ok(names) => names,
        Err(e) => return error_page(&e, Some(n)),
    };
    // Only the recipient is given a token, and only while the parcel waits for them.
    let pickup_qr =
        if p.state == ParcelState::Notified && p.recipient.as_ref() == Some(&s.person().id) {
            match state.app.pickup_qr(s.caller(), &p.id).await {
                Ok(shown) => crate::qr::svg(&shown.text)
                    .ok()
                    .map(|svg| PickupQr { svg, expires_at: views::rfc3339(shown.expires_at) }),
                Err(_) => None,
            }
        } else {
            None
        };
    let page = ParcelPage {
        nav: n,
        recipient,
        carrier,
        parcel: line(&p, &compartments),
        events,
        checkpoint_size,
        pickup_qr,
        notice,
    };
    render(&page, StatusCode::OK)
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{AnySession, Person, Public, Staff, StaffRead};
    table
        .get("/", Public, Doc::plain("Redirect to the portal"), root)
        .get("/static/custody.css", Public, Doc::plain("Style sheet"), stylesheet)
        .get("/static/passkey.js", Public, Doc::plain("The passkey script"), passkey_script)
        .get("/portal/login", Public, Doc::plain("Sign-in page"), login_page)
        .post("/portal/login", Public, Doc::plain("Sign in"), login_submit)
        .post("/portal/logout", AnySession, Doc::plain("Sign out"), logout)
        .get("/portal", Person, Doc::plain("Overview"), home)
        .get("/portal/sites/{id}", StaffRead, Doc::plain("A site"), site)
        .post(
            "/portal/parcels/{id}/recipient",
            Staff,
            Doc::plain("Name the resident a held parcel is for, from the site's page (form)"),
            address_parcel,
        )
        .get(
            "/portal/parcels/{id}",
            Person,
            Doc::plain("A parcel and its chain of custody"),
            parcel,
        )
        .post(
            "/portal/parcels/{id}/open",
            Person,
            Doc::plain("Open one's own compartment with the code the kiosk shows (form)"),
            open_parcel,
        )
}
