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
    /// May answer 429 `throttled`: it spends a failure budget or waits for a password hash.
    pub throttled: bool,
    /// May answer 202 with a request a second person must approve.
    pub pending: bool,
    /// May answer 503 `bank_offline`: it opens a door, which needs the bank's agent online.
    pub opens: bool,
}

impl Doc {
    /// A route answering 200 with no JSON schema (text, HTML, redirects).
    pub const fn plain(summary: &'static str) -> Self {
        Self::new(summary, 200, None)
    }

    const fn new(
        summary: &'static str,
        status: u16,
        response: Option<(&'static str, bool)>,
    ) -> Self {
        Self {
            summary,
            request: None,
            status,
            response,
            throttled: false,
            pending: false,
            opens: false,
        }
    }

    /// A route answering `status` with a `response` body.
    pub const fn json(summary: &'static str, status: u16, response: &'static str) -> Self {
        Self::new(summary, status, Some((response, false)))
    }

    /// A route answering 200 with a list of `response`.
    pub const fn list(summary: &'static str, response: &'static str) -> Self {
        Self::new(summary, 200, Some((response, true)))
    }

    /// The same, answering `status` (201 for a list created).
    #[must_use]
    pub const fn answering(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The same, answering 429 when its budget is spent.
    #[must_use]
    pub const fn throttled(mut self) -> Self {
        self.throttled = true;
        self
    }

    /// The same, answering 202 with an approval request past its budget or for a second person.
    #[must_use]
    pub const fn or_pending(mut self) -> Self {
        self.pending = true;
        self
    }

    /// The same, answering 503 while the bank's agent is offline.
    #[must_use]
    pub const fn opening(mut self) -> Self {
        self.opens = true;
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
    /// The handler's name: the API document's `operationId`.
    pub operation: &'static str,
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

    fn add<H>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        doc: Doc,
        route: MethodRouter<S>,
    ) -> Self {
        // A handler is a function item: its type's name is its path, and its last segment is
        // the function's name.
        let operation = std::any::type_name::<H>().rsplit("::").next().unwrap_or_default();
        self.table.push(RouteInfo { method, path, access, doc, operation });
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
        self.add::<H>(Method::GET, path, access, doc, get(handler))
    }

    /// A POST route.
    pub fn post<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        doc: Doc,
        handler: H,
    ) -> Self {
        self.add::<H>(Method::POST, path, access, doc, post(handler))
    }

    /// A DELETE route.
    pub fn delete<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        doc: Doc,
        handler: H,
    ) -> Self {
        self.add::<H>(Method::DELETE, path, access, doc, delete(handler))
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
