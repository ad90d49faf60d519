//! Fresh stores for tests.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use custody_store::{Store, sqlite_url_in};
use sqlx::{AnyConnection, Connection as _, Row as _};

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
///
/// The database is a copy of a template migrated once per schema (see [`template`]): copying
/// takes a tenth of the time migrating does, and most tests open a store.
pub async fn postgres_store(test: &str) -> Option<TestStore> {
    Some(new_postgres_database(test, true).await?.open().await)
}

/// A new, empty PostgreSQL database, not opened yet (for tests of the migrations themselves),
/// or `None` as for [`postgres_store`].
pub async fn postgres_database(test: &str) -> Option<TestDatabase> {
    new_postgres_database(test, false).await
}

async fn new_postgres_database(test: &str, migrated: bool) -> Option<TestDatabase> {
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
    let create = if migrated {
        format!("CREATE DATABASE {name} TEMPLATE {}", template(&mut conn, &admin).await)
    } else {
        format!("CREATE DATABASE {name}")
    };
    // Separate statements: PostgreSQL runs a multi-statement string as one transaction, and
    // neither DROP nor CREATE DATABASE may run inside one.
    execute(&mut conn, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    execute(&mut conn, &create).await;
    let _ = conn.close().await;
    let url = database_url(&admin, &name);
    Some(TestDatabase { url, _dir: None, pg: Some((admin, name)) })
}

async fn exists(conn: &mut AnyConnection, database: &str) -> bool {
    sqlx::query("SELECT 1 AS one FROM pg_database WHERE datname = $1")
        .bind(database.to_owned())
        .fetch_optional(conn)
        .await
        .expect("look for the template database")
        .is_some()
}

async fn execute(conn: &mut AnyConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The name of the template database holding this build's schema, built by the first test of
/// a run that needs it. Tests run in processes of their own (cargo nextest) and at once, so the
/// build is serialised by an advisory lock; it migrates a scratch database and only then
/// renames it, so a template that exists is complete. Templates of other schemas (an earlier
/// build's) are dropped then. Connections to the template are refused, because PostgreSQL
/// copies a database only while no one is connected to it.
async fn template(conn: &mut AnyConnection, admin: &str) -> String {
    // Any fixed number: every test process takes the same lock.
    const BUILDING: i64 = 0x00C0_57D1;
    let name = format!(
        "custody_template_{}",
        custody_store::schema_digest(custody_store::Backend::Postgres)
    );
    if exists(conn, &name).await {
        return name;
    }
    execute(conn, &format!("SELECT pg_advisory_lock({BUILDING})")).await;
    if !exists(conn, &name).await {
        let stale: Vec<String> = sqlx::query(
            "SELECT datname::text AS datname FROM pg_database WHERE datname LIKE 'custody\\_template\\_%' \
             AND datname <> 'custody_template_building'",
        )
        .fetch_all(&mut *conn)
        .await
        .expect("list template databases")
        .iter()
        .map(|row| row.get("datname"))
        .collect();
        for old in stale {
            execute(conn, &format!("ALTER DATABASE {old} IS_TEMPLATE false")).await;
            execute(conn, &format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)")).await;
        }
        // Left behind only by a build that died, whose lock died with it.
        let scratch = "custody_template_building";
        execute(conn, &format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")).await;
        execute(conn, &format!("CREATE DATABASE {scratch}")).await;
        custody_store::migrate_to(&database_url(admin, scratch), i64::MAX)
            .await
            .expect("migrate the template database");
        execute(conn, &format!("ALTER DATABASE {scratch} RENAME TO {name}")).await;
        execute(
            conn,
            &format!("ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"),
        )
        .await;
    }
    execute(conn, &format!("SELECT pg_advisory_unlock({BUILDING})")).await;
    name
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
