//! The portal's live alert list: a site's live alerts, newest first, acknowledged and resolved
//! in place by admins in scope, read by staff and auditors.
//!
//! The page works without scripts (its forms post and come back here). With its one script
//! (`/static/alerts.js`) it stays current: the script listens to the site's server-sent events
//! (`/portal/sites/{id}/alerts/live`) and puts each update in the table. An update is the
//! table's rows rendered by the same template as the page, so what is shown live and what is
//! shown on loading cannot drift apart, and escaping stays the template's job.
//!
//! The stream sends when the app says the site's alerts changed ([`custody_app::App::alert_changes`])
//! and, in case a change was made by another server, looks again every half minute. Before
//! each update it checks the session again, without counting that as activity: a page left
//! open does not keep an idle session alive, and a session signed out, ended or expired ends
//! the stream. Every update is read with the person's rights at that moment.

use super::forms::SignedForm;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use custody_app::alerts::AlertBoard;
use custody_app::sites::Site;
use custody_app::{App, AppError, Caller};
use custody_core::alert::AlertState;
use custody_core::{AlertId, SiteId};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::{Nav, PortalAdmin, PortalStaffRead, STAFF_READ, error_page, nav, render};
use crate::extract::PersonSession;
use crate::routes::{Access, Doc, Routes};
use crate::{ServerState, views};

/// How often a live stream looks again though nothing was said: changes made through another
/// server, and a session that timed out.
const LOOK_AGAIN: Duration = Duration::from_secs(30);

/// One alert in the list.
struct AlertLine {
    id: String,
    severity: String,
    kind: String,
    place: String,
    state: String,
    owner: String,
    readings: u64,
    raised_at: String,
    /// Whether it may be acknowledged (it is open).
    open: bool,
}

/// The list's rows: the page's table body, and each live update.
#[derive(Template)]
#[template(path = "alert_rows.html")]
struct AlertRows {
    lines: Vec<AlertLine>,
    /// Whether the viewer may acknowledge and resolve (an admin; auditors only read).
    manage: bool,
    csrf: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    nav: Nav,
    site: Site,
    lines: Vec<AlertLine>,
    manage: bool,
    csrf: String,
    notice: Option<String>,
}

fn lines(board: &AlertBoard) -> Vec<AlertLine> {
    board
        .alerts
        .iter()
        .map(|a| {
            let bank = a
                .bank
                .as_ref()
                .map(|b| board.banks.get(b).cloned().unwrap_or_else(|| b.to_string()));
            let place = match (bank, a.compartment) {
                (Some(bank), Some(n)) => format!("{bank}, compartment {n}"),
                (Some(bank), None) => bank,
                (None, _) => "the whole site".to_owned(),
            };
            let owner = a.owner.as_ref().map_or_else(
                || "—".to_owned(),
                |p| board.owners.get(p).cloned().unwrap_or_else(|| p.to_string()),
            );
            AlertLine {
                id: a.id.to_string(),
                severity: a.severity.as_str().to_owned(),
                kind: a.kind.as_str().replace('_', " "),
                place,
                state: a.state.as_str().to_owned(),
                owner,
                readings: a.readings,
                raised_at: views::rfc3339(a.raised_at),
                open: a.state == AlertState::Open,
            }
        })
        .collect()
}

/// The rows as the person sees them now.
async fn rows(app: &App, s: &PersonSession, site: &SiteId) -> Result<AlertRows, AppError> {
    let board = app.alert_board(s.caller(), site).await?;
    Ok(AlertRows {
        lines: lines(&board),
        manage: s.person().role.is_staff(),
        csrf: app.csrf_token(&s.token),
    })
}

/// The page, with a notice (and its status) if a step just failed.
async fn page(
    state: &ServerState,
    s: &PersonSession,
    id: &str,
    notice: Option<(StatusCode, String)>,
) -> Response {
    let n = nav(&state.app, s);
    let Ok(id) = SiteId::parse(id) else { return error_page(&AppError::NotFound, Some(n)) };
    let rows = match rows(&state.app, s, &id).await {
        Ok(r) => r,
        Err(e) => return error_page(&e, Some(n)),
    };
    // The rows were read with the caller's rights: the site is theirs to see.
    let site = match state.app.site(&id).await {
        Ok(site) => site,
        Err(e) => return error_page(&e, Some(n)),
    };
    let (status, notice) = match notice {
        Some((status, notice)) => (status, Some(notice)),
        None => (StatusCode::OK, None),
    };
    let AlertRows { lines, manage, csrf } = rows;
    render(&AlertsPage { nav: n, site, lines, manage, csrf, notice }, status)
}

/// A site's live alerts.
pub async fn alerts(
    State(state): State<ServerState>,
    PortalStaffRead(s): PortalStaffRead,
    Path(id): Path<String>,
) -> Response {
    page(&state, &s, &id, None).await
}

/// One event of an alert's timeline on its page.
struct TimelineLine {
    at: String,
    who: String,
    what: String,
    note: String,
}

#[derive(Template)]
#[template(path = "alert.html")]
struct AlertPage {
    nav: Nav,
    site: Site,
    line: AlertLine,
    timeline: Vec<TimelineLine>,
    manage: bool,
    csrf: String,
}

/// One alert and its timeline: where every notification's link leads.
pub async fn alert(
    State(state): State<ServerState>,
    PortalStaffRead(s): PortalStaffRead,
    Path(id): Path<String>,
) -> Response {
    let n = nav(&state.app, &s);
    let Ok(id) = AlertId::parse(&id) else { return error_page(&AppError::NotFound, Some(n)) };
    let found = match state.app.alert(s.caller(), &id).await {
        Ok(found) => found,
        Err(e) => return error_page(&e, Some(n)),
    };
    // The alert was read with the caller's rights: its site is theirs to see.
    let site = match state.app.site(&found.alert.site).await {
        Ok(site) => site,
        Err(e) => return error_page(&e, Some(n)),
    };
    let board = match state.app.name_alerts(vec![found.alert.clone()]).await {
        Ok(board) => board,
        Err(e) => return error_page(&e, Some(n)),
    };
    let Some(line) = lines(&board).pop() else { return error_page(&AppError::NotFound, Some(n)) };
    let timeline = found
        .timeline
        .iter()
        .map(|e| TimelineLine {
            at: views::rfc3339(e.at),
            who: e.actor.clone(),
            what: e.what.replace('_', " "),
            note: e.note.clone().unwrap_or_default(),
        })
        .collect();
    let page = AlertPage {
        nav: n,
        site,
        line,
        timeline,
        manage: s.person().role.is_staff(),
        csrf: state.app.csrf_token(&s.token),
    };
    render(&page, StatusCode::OK)
}

/// What a live stream carries between updates.
struct Live {
    app: App,
    token: String,
    site: SiteId,
    changes: broadcast::Receiver<SiteId>,
    every: tokio::time::Interval,
    /// The rows last sent, so that looking again sends nothing when nothing changed.
    last: String,
}

impl Live {
    /// Waits for a change to the site's alerts, or for the time to look again. `None` once the
    /// app is gone.
    async fn wait(&mut self) -> Option<()> {
        loop {
            tokio::select! {
                changed = self.changes.recv() => match changed {
                    Ok(site) if site != self.site => {}
                    // Fallen behind: whatever was missed, the rows are read afresh.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return Some(()),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.every.tick() => return Some(()),
            }
        }
    }

    /// The next update to send; `None` ends the stream (the session is over, or the person
    /// may no longer see the site).
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            self.wait().await?;
            let session = self.app.session_unattended(&self.token).await.ok()?;
            let s = PersonSession { info: session, token: self.token.clone() };
            if s.info.needs_second_factor() || !STAFF_READ.contains(&s.person().role) {
                return None;
            }
            let html = rows(&self.app, &s, &self.site).await.ok()?.render().ok()?;
            if html != self.last {
                self.last.clone_from(&html);
                return Some((Ok(Event::default().event("alerts").data(html)), self));
            }
        }
    }
}

/// The site's live alerts as server-sent events: `alerts`, each the table's rows.
pub async fn live(
    State(state): State<ServerState>,
    PortalStaffRead(s): PortalStaffRead,
    Path(id): Path<String>,
) -> Response {
    let Ok(site) = SiteId::parse(&id) else {
        return error_page(&AppError::NotFound, Some(nav(&state.app, &s)));
    };
    // Listening starts before the first read, so no change falls between the two.
    let changes = state.app.alert_changes();
    let first = match rows(&state.app, &s, &site).await {
        Ok(rows) => rows.render(),
        Err(e) => return error_page(&e, Some(nav(&state.app, &s))),
    };
    let Ok(first) = first else {
        tracing::error!("the alert list's rows could not be rendered");
        return (StatusCode::INTERNAL_SERVER_ERROR, "page could not be rendered").into_response();
    };
    let mut every = tokio::time::interval(LOOK_AGAIN);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.reset();
    let live = Live { app: state.app.clone(), token: s.token, site, changes, every, last: first };
    let opening = Event::default().event("alerts").data(live.last.clone());
    let updates = futures_util::stream::unfold(live, Live::next);
    let stream =
        futures_util::StreamExt::chain(futures_util::stream::once(async { Ok(opening) }), updates);
    let mut response = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    // Nothing between here and the browser may hold updates back or keep them.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// For resolving, what it was.
#[derive(Debug, Deserialize)]
pub struct StepForm {
    #[serde(default)]
    reason: String,
    /// `alert` to come back to the alert's page rather than the list.
    #[serde(default)]
    back: String,
}

/// Acknowledge or resolve from the list; back to the list, or the list with what went wrong.
async fn step(
    state: &ServerState,
    s: &PersonSession,
    id: &str,
    form: &StepForm,
    resolve: bool,
) -> Response {
    let n = nav(&state.app, s);
    let Ok(id) = AlertId::parse(id) else { return error_page(&AppError::NotFound, Some(n)) };
    let caller: &Caller = s.caller();
    let done = if resolve {
        state.app.resolve_alert(caller, &id, &form.reason).await
    } else {
        state.app.acknowledge_alert(caller, &id).await
    };
    match done {
        Ok(alert) if form.back == "alert" => {
            Redirect::to(&format!("/portal/alerts/{}", alert.id)).into_response()
        }
        Ok(alert) => Redirect::to(&format!("/portal/sites/{}/alerts", alert.site)).into_response(),
        Err(e @ (AppError::Conflict { .. } | AppError::Invalid(_))) => {
            let status = if matches!(e, AppError::Invalid(_)) {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::CONFLICT
            };
            let site = match state.app.alert(caller, &id).await {
                Ok(a) => a.alert.site,
                Err(e) => return error_page(&e, Some(n)),
            };
            page(state, s, site.as_str(), Some((status, e.to_string()))).await
        }
        Err(e) => error_page(&e, Some(n)),
    }
}

/// Acknowledge an alert from the list: it is the admin's from now on.
pub async fn acknowledge(
    State(state): State<ServerState>,
    PortalAdmin(s): PortalAdmin,
    Path(id): Path<String>,
    SignedForm(form): SignedForm<StepForm>,
) -> Response {
    step(&state, &s, &id, &form, false).await
}

/// Resolve an alert from the list, saying what it was.
pub async fn resolve(
    State(state): State<ServerState>,
    PortalAdmin(s): PortalAdmin,
    Path(id): Path<String>,
    SignedForm(form): SignedForm<StepForm>,
) -> Response {
    step(&state, &s, &id, &form, true).await
}

/// The list's script: listens for updates and keeps what a person is typing.
pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/alerts.js"),
    )
        .into_response()
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Public, Staff, StaffRead};
    table
        .get("/static/alerts.js", Public, Doc::plain("The live alert list's script"), script)
        .get("/portal/sites/{id}/alerts", StaffRead, Doc::plain("A site's live alerts"), alerts)
        .get(
            "/portal/sites/{id}/alerts/live",
            StaffRead,
            Doc::plain("A site's live alerts as server-sent events (`alerts`: the list's rows)"),
            live,
        )
        .get(
            "/portal/alerts/{id}",
            StaffRead,
            Doc::plain("An alert and its timeline (where notifications link)"),
            alert,
        )
        .post(
            "/portal/alerts/{id}/acknowledge",
            Staff,
            Doc::plain("Acknowledge an alert from the list (form)"),
            acknowledge,
        )
        .post(
            "/portal/alerts/{id}/resolve",
            Staff,
            Doc::plain("Resolve an alert from the list, saying what it was (form)"),
            resolve,
        )
}
