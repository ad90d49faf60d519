//! Fresh stores for tests.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use custody_store::{Store, sqlite_url_in};
use sqlx::{AnyConnection, Connection as _};

/// A store that lives as long as the test, on its own database.
#[derive(Debug)]
pub struct TestStore {
    /// The store.
    pub store: Store,
    /// Its URL, for a second process (the CLI) to open the same database.
    pub url: String,
    _database: TestDatabase,
}

/// A test's `async move` body names only `t.store` or `t.url`; a closure captures just the
/// fields it names unless the type implements `Drop`, in which case it captures it whole. Without
/// this the database would be dropped as the body starts.
impl Drop for TestStore {
    fn drop(&mut self) {}
}

/// A new, empty database that lives as long as the test (or the [`TestStore`] opened on it).
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDatabase {
    /// Opens the store on it (which brings its schema up to date).
    pub async fn open(self) -> TestStore {
        let store = Store::open(&self.url).await.expect("open the test store");
        TestStore { store, url: self.url.clone(), _database: self }
    }
}

/// A new SQLite file, not opened yet.
pub fn sqlite_database() -> TestDatabase {
    let dir = tempfile::tempdir().expect("temporary directory");
    TestDatabase { url: sqlite_url_in(dir.path()), _dir: Some(dir), pg: None }
}

/// A store on a new SQLite file.
pub async fn sqlite_store() -> TestStore {
    sqlite_database().open().await
}

fn admin_url() -> String {
    std::env::var("CUSTODY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn postgres_required() -> bool {
    std::env::var("CUSTODY_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

fn database_url(admin: &str, name: &str) -> String {
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{admin}/{name}"),
    }
}

/// A store on a new PostgreSQL database, or `None` (with a notice) when no server answers and
/// `CUSTODY_REQUIRE_POSTGRES` is not `1`.
pub async fn postgres_store(test: &str) -> Option<TestStore> {
    Some(postgres_database(test).await?.open().await)
}

/// A new PostgreSQL database, not opened yet, or `None` as for [`postgres_store`].
pub async fn postgres_database(test: &str) -> Option<TestDatabase> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    sqlx::any::install_default_drivers();
    let admin = admin_url();
    let mut conn = match AnyConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            assert!(
                !postgres_required(),
                "CUSTODY_REQUIRE_POSTGRES=1 but PostgreSQL at {admin} is unreachable: {e}"
            );
            // Written to the real stderr (not the captured test output) so the skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (PostgreSQL backend): {test} — no server at {admin} ({e}); set CUSTODY_TEST_POSTGRES_URL"
            );
            return None;
        }
    };
    let name =
        format!("custody_t_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    // Separate statements: PostgreSQL runs a multi-statement string as one transaction, and
    // neither DROP nor CREATE DATABASE may run inside one.
    for sql in
        [format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}")]
    {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("create test database");
    }
    let _ = conn.close().await;
    let url = database_url(&admin, &name);
    Some(TestDatabase { url, _dir: None, pg: Some((admin, name)) })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else { return };
        // Drop runs inside the test's runtime, which must not block on itself: use a thread with
        // a runtime of its own, and wait for it so the database is gone when the test ends.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = AnyConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Runs a conformance test body against a fresh store of each backend.
///
/// ```ignore
/// backends!(redeem_once, |t: TestStore| async move { … });
/// ```
/// expands to `redeem_once::sqlite` and `redeem_once::postgres` tests.
#[macro_export]
macro_rules! backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(
                unused_imports,
                reason = "each test body uses a different part of the prelude"
            )]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let t = $crate::sqlite_store().await;
                ($body)(t).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(t) = $crate::postgres_store(concat!(module_path!(), "::postgres")).await
                else {
                    return;
                };
                ($body)(t).await;
            }
        }
    };
}
