//! The portal's breach pages: a site's breaches, and one breach with its clocks — how long is
//! left before each notice is due, or when it was given — so whoever answers it sees at a
//! glance what the law still asks. Declaring a breach and recording its steps go through the
//! API (`/api/v1/breaches`), with a step-up.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use custody_app::breaches::Breach;
use custody_app::sites::Site;
use custody_app::{AppError, Caller};
use custody_core::breach::BreachStep;
use custody_core::{BreachId, SiteId, Timestamp};

use super::{Nav, PortalStaffRead, error_page, nav, render};
use crate::routes::{Access, Doc, Routes};
use crate::{ServerState, views};

/// One clock on a breach's page.
struct Clock {
    /// What is due.
    what: &'static str,
    /// Which law asks for it.
    law: &'static str,
    /// `clock-authority`, …: for the page's anchors and its tests.
    id: &'static str,
    /// When it is due.
    due: String,
    /// `12 h 5 min left`, `overdue by 3 h 0 min`, or `given 2030-01-02T…`.
    state: String,
    /// `left`, `overdue` or `done`, for the style sheet.
    class: &'static str,
}

/// `d` as hours and minutes, or days and hours once it is more than two days.
fn span(ms: i64) -> String {
    let minutes = ms / 60_000;
    if minutes >= 48 * 60 {
        format!("{} days {} h", minutes / (24 * 60), minutes % (24 * 60) / 60)
    } else {
        format!("{} h {} min", minutes / 60, minutes % 60)
    }
}

fn clock(
    b: &Breach,
    now: Timestamp,
    (what, law, id): (&'static str, &'static str, &'static str),
    due: Timestamp,
    step: BreachStep,
) -> Clock {
    let (state, class) = match b.done(step) {
        Some(at) => (format!("given {}", views::rfc3339(at)), "done"),
        None if now <= due => (format!("{} left", span(due.as_millis() - now.as_millis())), "left"),
        None => (format!("overdue by {}", span(now.as_millis() - due.as_millis())), "overdue"),
    };
    Clock { what, law, id, due: views::rfc3339(due), state, class }
}

/// A breach's clocks at `now`: the authority's, each person's, HHS's, and the media's when
/// one may be owed.
fn clocks(b: &Breach, now: Timestamp) -> Vec<Clock> {
    let d = &b.deadlines;
    let mut out = vec![
        clock(
            b,
            now,
            ("The supervisory authority", "GDPR Art. 33: 72 hours", "clock-authority"),
            d.authority,
            BreachStep::AuthorityNotified,
        ),
        clock(
            b,
            now,
            ("Each person reached", "HIPAA §164.404: 60 days", "clock-individuals"),
            d.individuals,
            BreachStep::IndividualsNotified,
        ),
        clock(b, now, ("HHS", "HIPAA §164.408", "clock-hhs"), d.hhs, BreachStep::HhsNotified),
    ];
    if let Some(media) = d.media {
        out.push(clock(
            b,
            now,
            ("The media", "HIPAA §164.406: more than 500 reached", "clock-media"),
            media,
            BreachStep::MediaNotified,
        ));
    }
    out
}

#[derive(Template)]
#[template(path = "breach.html")]
struct BreachPage {
    nav: Nav,
    site: Site,
    id: String,
    summary: String,
    window: String,
    discovered_at: String,
    affected: u64,
    clocks: Vec<Clock>,
    closed: bool,
    steps: Vec<(String, String)>,
}

/// One breach, with its clocks.
pub async fn breach(
    State(state): State<ServerState>,
    PortalStaffRead(s): PortalStaffRead,
    Path(id): Path<String>,
) -> Response {
    let n = nav(&state.app, &s);
    let Ok(id) = BreachId::parse(&id) else { return error_page(&AppError::NotFound, Some(n)) };
    let caller: &Caller = s.caller();
    let b = match state.app.breach(caller, &id).await {
        Ok(b) => b,
        Err(e) => return error_page(&e, Some(n)),
    };
    let site = match state.app.site(&b.site).await {
        Ok(site) => site,
        Err(e) => return error_page(&e, Some(n)),
    };
    let page = BreachPage {
        nav: n,
        site,
        id: b.id.to_string(),
        summary: b.summary.clone(),
        window: format!("{} to {}", views::rfc3339(b.window_from), views::rfc3339(b.window_to)),
        discovered_at: views::rfc3339(b.discovered_at),
        affected: b.affected,
        clocks: clocks(&b, state.app.now()),
        closed: b.done(BreachStep::Closed).is_some(),
        steps: b
            .steps
            .iter()
            .map(|(step, at, _)| (views::rfc3339(*at), step.as_str().replace('_', " ")))
            .collect(),
    };
    render(&page, StatusCode::OK)
}

struct BreachLine {
    id: String,
    discovered_at: String,
    affected: u64,
    authority: String,
    class: &'static str,
}

#[derive(Template)]
#[template(path = "breaches.html")]
struct BreachesPage {
    nav: Nav,
    site: Site,
    lines: Vec<BreachLine>,
}

/// A site's breaches, newest first, each with the authority's clock.
pub async fn breaches(
    State(state): State<ServerState>,
    PortalStaffRead(s): PortalStaffRead,
    Path(id): Path<String>,
) -> Response {
    let n = nav(&state.app, &s);
    let Ok(site_id) = SiteId::parse(&id) else { return error_page(&AppError::NotFound, Some(n)) };
    let all = match state.app.breaches_at(s.caller(), &site_id).await {
        Ok(all) => all,
        Err(e) => return error_page(&e, Some(n)),
    };
    let site = match state.app.site(&site_id).await {
        Ok(site) => site,
        Err(e) => return error_page(&e, Some(n)),
    };
    let now = state.app.now();
    let lines = all
        .iter()
        .map(|b| {
            let first = clocks(b, now).into_iter().next();
            let (authority, class) = first.map_or((String::new(), "done"), |c| (c.state, c.class));
            BreachLine {
                id: b.id.to_string(),
                discovered_at: views::rfc3339(b.discovered_at),
                affected: b.affected,
                authority,
                class,
            }
        })
        .collect();
    render(&BreachesPage { nav: n, site, lines }, StatusCode::OK)
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::StaffRead;
    table
        .get(
            "/portal/sites/{id}/breaches",
            StaffRead,
            Doc::plain("A site's personal-data breaches, each with the authority's clock"),
            breaches,
        )
        .get(
            "/portal/breaches/{id}",
            StaffRead,
            Doc::plain("A personal-data breach and its clocks"),
            breach,
        )
}
