//! The route table: every route is registered here with the access class its extractor
//! enforces, so the list of routes and their classes comes from the router itself. The route ×
//! role test iterates this list; a route that is added without being classified there fails CI.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post};

/// Who may call a route, as enforced by its capability extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// A signed-in person of any role, second factor proven where the role needs one.
    Person,
    /// A signed-in person of any role, second factor proven or not: the second-factor step.
    AnySession,
    /// A signed-in person or a carrier's API key.
    Signed,
    /// Admins, super-admins and auditors.
    StaffRead,
    /// Admins and super-admins.
    Staff,
    /// A carrier's API key or a courier.
    Carrier,
    /// The metrics scraper's bearer token.
    Metrics,
}

/// What a route is for, for the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doc {
    /// One line.
    pub summary: &'static str,
    /// Schema name of the JSON request body.
    pub request: Option<&'static str>,
    /// Success status.
    pub status: u16,
    /// Schema name of the JSON answer, and whether it is a list of them.
    pub response: Option<(&'static str, bool)>,
}

impl Doc {
    /// A route answering 200 with no JSON schema (text, HTML, redirects).
    pub const fn plain(summary: &'static str) -> Self {
        Self { summary, request: None, status: 200, response: None }
    }

    /// A route answering `status` with a `response` body.
    pub const fn json(summary: &'static str, status: u16, response: &'static str) -> Self {
        Self { summary, request: None, status, response: Some((response, false)) }
    }

    /// A route answering 200 with a list of `response`.
    pub const fn list(summary: &'static str, response: &'static str) -> Self {
        Self { summary, request: None, status: 200, response: Some((response, true)) }
    }

    /// The same, answering `status` (201 for a list created).
    #[must_use]
    pub const fn answering(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The same, taking a `request` body.
    #[must_use]
    pub const fn taking(mut self, request: &'static str) -> Self {
        self.request = Some(request);
        self
    }
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Method.
    pub method: Method,
    /// Path pattern, axum syntax (`/api/v1/parcels/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What it is for.
    pub doc: Doc,
}

/// A router that remembers what it routes.
#[derive(Debug)]
#[must_use]
pub struct Routes<S> {
    router: Router<S>,
    table: Vec<RouteInfo>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// An empty table.
    pub fn new() -> Self {
        Self { router: Router::new(), table: Vec::new() }
    }

    fn add(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        doc: Doc,
        route: MethodRouter<S>,
    ) -> Self {
        self.table.push(RouteInfo { method, path, access, doc });
        self.router = self.router.route(path, route);
        self
    }

    /// A GET route.
    pub fn get<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        doc: Doc,
        handler: H,
    ) -> Self {
        self.add(Method::GET, path, access, doc, get(handler))
    }

    /// A POST route.
    pub fn post<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        doc: Doc,
        handler: H,
    ) -> Self {
        self.add(Method::POST, path, access, doc, post(handler))
    }

    /// A DELETE route.
    pub fn delete<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        doc: Doc,
        handler: H,
    ) -> Self {
        self.add(Method::DELETE, path, access, doc, delete(handler))
    }

    /// The router and its table.
    pub fn finish(self) -> (Router<S>, Vec<RouteInfo>) {
        (self.router, self.table)
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}
