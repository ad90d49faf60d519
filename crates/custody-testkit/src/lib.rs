//! The test harness: real stores, real servers, a test clock.
//!
//! **Architecture Invariant:** only tests depend on this crate.
//!
//! Every test gets its own database: a fresh SQLite file in a temporary directory, or a fresh
//! PostgreSQL database created on the server named by `CUSTODY_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), copied from a template migrated once per
//! schema, and dropped afterwards. When that server is not
//! reachable the PostgreSQL variants are skipped with a notice on standard error, unless
//! `CUSTODY_REQUIRE_POSTGRES=1` (as in CI), which turns the skip into a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test harness: failing loudly is the point"
)]

pub mod attacker;
pub mod browser;
pub mod dump;
pub mod env;
pub mod mail;
pub mod rsyslog;
pub mod server;
pub mod smtp;
pub mod softhsm;
pub mod store;

pub use env::Env;
pub use server::TestServer;
pub use store::{
    TestDatabase, TestStore, postgres_database, postgres_store, sqlite_database, sqlite_store,
};

use custody_core::{ManualClock, Timestamp};

/// 2030-01-01T00:00:00Z: where test clocks start, far from any real date so that a test that
/// reads the wall clock by mistake shows up.
pub const TEST_EPOCH: Timestamp = Timestamp::from_millis(1_893_456_000_000);

/// Waits until `check` holds, checking every few milliseconds, for at most ten seconds: for
/// effects that cross a socket (a door report reaching the server). Fails the test on timeout.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(5));
    for _ in 0..2000 {
        if check().await {
            return;
        }
        tick.tick().await;
    }
    panic!("timed out waiting for: {what}");
}

/// A manual clock at [`TEST_EPOCH`].
pub fn clock() -> ManualClock {
    ManualClock::new(TEST_EPOCH)
}
