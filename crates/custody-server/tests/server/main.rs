//! custody-server over real TLS: the API, the portal in a real browser, alert fan-out and the
//! outbox, as one test binary (linked once) with a module per concern.

mod api;
mod browser;
mod fanout;
mod outbox;
