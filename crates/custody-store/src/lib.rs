//! Custody's storage: one interface over SQLite (the embedded default) and PostgreSQL.
//!
//! **Architecture Invariant:** SQL lives in this crate only. Callers describe a unit of work as
//! a closure over a [`Tx`] whose methods speak the domain (`reserve_compartment`,
//! `redeem_pickup_code`, `append_audit`); no dialect leaks upward.
//!
//! **Architecture Invariant:** races are settled by conditional updates, never by isolation
//! level. A single-use code is redeemed by `UPDATE … WHERE used_at IS NULL`, a compartment is
//! reserved by `UPDATE … WHERE state = 'free'`, and the affected row count decides who won. This
//! holds on SQLite's single writer and on PostgreSQL's concurrent READ COMMITTED transactions
//! alike (DESIGN.md §3 "Storage and durability"; Jepsen found SERIALIZABLE anomalies in
//! PostgreSQL releases).
//!
//! Writes go through [`Store::write`]:
//! - **SQLite**: one writer task owns the only write connection. It takes every unit waiting,
//!   runs each in its own savepoint (a failing unit rolls back only itself), appends the
//!   surviving units' audit entries to the tree, commits the batch with one durable sync (WAL,
//!   `synchronous = FULL`) and only then answers each caller. That is group commit for the whole
//!   transaction — state change and audit entry together.
//! - **PostgreSQL**: each unit is a short transaction on a pooled connection; the server groups
//!   concurrent commits itself.
//!
//! A unit must only await its [`Tx`]: holding the writer while waiting on anything else (the
//! network, a lock, a timer) would stall every other write.

pub mod bench;
pub mod inventory;
mod migrate;
mod rows;
pub mod scan;
mod tx;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions as _, Connection as _, Row as _};
use tokio::sync::{mpsc, oneshot};

pub use rows::*;
pub use tx::Tx;
pub use tx::remote_opens::RemoteOpenCounts;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or reached.
    #[error("cannot open database: {0}")]
    Connect(String),
    /// The database URL is not one Custody understands.
    #[error("unsupported database url (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl,
    /// A schema migration failed; the database is unchanged past the last good migration.
    #[error("migration {version} failed: {message}")]
    Migration {
        /// The migration that failed.
        version: i64,
        /// The database's complaint.
        message: String,
    },
    /// A statement failed.
    #[error("database error: {0}")]
    Database(String),
    /// A uniqueness rule refused the write (the e-mail address is taken, the compartment number
    /// exists).
    #[error("already exists")]
    Conflict,
    /// A value in the database is not valid (a corrupted or hand-edited row).
    #[error("corrupt value in {0}")]
    Corrupt(&'static str),
    /// The store refuses to write a value (an audit entry too large to be read back).
    #[error("refused: {0}")]
    Refused(String),
    /// A write was attempted on a read-only transaction.
    #[error("write attempted in a read-only transaction")]
    ReadOnly,
    /// The writer has stopped (shutdown or a fatal error), or its batch could not start.
    #[error("the store is not accepting writes")]
    Unavailable,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return Self::Conflict;
        }
        Self::Database(e.to_string())
    }
}

/// A unit of work after its result type has been erased for the writer's queue.
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, (bool, Completion)> + Send>;

#[derive(Debug)]
enum WritePath {
    Sqlite(mpsc::Sender<Job>),
    Postgres,
    /// Opened for inspection only (`custody audit verify` on a copy): every write is refused.
    ReadOnly,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    pool: AnyPool,
    writes: WritePath,
    /// The SQLite database file, for the verifier's scan (see [`scan`]).
    sqlite_path: Option<std::path::PathBuf>,
}

/// The store. Cheap to clone; clones share connections and the writer.
#[derive(Debug, Clone)]
pub struct Store(Arc<Inner>);

/// Connections in the read pool (SQLite) or the shared pool (PostgreSQL).
const POOL_SIZE: u32 = 8;

fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

/// Brings the schema of the database at `url` to `version` and no further: how tests build a
/// database as an older Custody left it, to test the migrations after it.
#[doc(hidden)]
pub async fn migrate_to(url: &str, version: i64) -> Result<(), StoreError> {
    sqlx::any::install_default_drivers();
    let backend = backend_of(url)?;
    let mut conn = AnyConnectOptions::from_str(url)
        .map_err(|e| StoreError::Connect(e.to_string()))?
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|e| StoreError::Connect(e.to_string()))?;
    migrate::run_to(&mut conn, backend, version).await?;
    // Closed before answering, so the database can be copied (PostgreSQL refuses to use a
    // database as a template while anyone is connected to it).
    conn.close().await?;
    Ok(())
}

/// Names the schema this build migrates `backend` to: the latest version and a digest of every
/// migration. Test harnesses key a database migrated once and cloned per test by it.
#[doc(hidden)]
pub fn schema_digest(backend: Backend) -> String {
    migrate::digest(backend)
}

/// The URL of the SQLite database file in `data_dir`.
pub fn sqlite_url_in(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join(SQLITE_FILE).display())
}

/// The SQLite database's file name in a data directory.
pub const SQLITE_FILE: &str = "custody.db";

/// The read-only URL of the SQLite database file in `data_dir`.
pub fn sqlite_read_only_url_in(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=ro", data_dir.join(SQLITE_FILE).display())
}

/// SQLite connection settings. WAL lets readers proceed beside the writer; `synchronous = FULL`
/// makes every commit durable before the caller is answered; foreign keys are enforced.
///
/// `secure_delete` overwrites freed content, so an erased subject key or a delivered
/// notification's sealed body does not linger in the file's free pages.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA secure_delete = ON;";

impl Store {
    /// Opens the database at `url` (`sqlite://PATH?mode=rwc` or `postgres://…`) and brings its
    /// schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| StoreError::Connect(e.to_string()))?
            .disable_statement_logging();
        match backend {
            Backend::Sqlite => {
                let mut writer =
                    options.connect().await.map_err(|e| StoreError::Connect(e.to_string()))?;
                sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut writer).await?;
                migrate::run(&mut writer, backend).await?;
                let pool = AnyPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut *conn).await?;
                            // Readers cannot write even by mistake: the writer task is the only
                            // writer SQLite will ever see.
                            sqlx::raw_sql("PRAGMA query_only = ON").execute(conn).await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
                    .map_err(|e| StoreError::Connect(e.to_string()))?;
                let sender = writer::spawn(writer, backend);
                Ok(Self(Arc::new(Inner {
                    backend,
                    pool,
                    writes: WritePath::Sqlite(sender),
                    sqlite_path: scan::sqlite_path(url),
                })))
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .connect_with(options)
                    .await
                    .map_err(|e| StoreError::Connect(e.to_string()))?;
                let mut conn = pool.acquire().await?;
                migrate::run(&mut conn, backend).await?;
                drop(conn);
                Ok(Self(Arc::new(Inner {
                    backend,
                    pool,
                    writes: WritePath::Postgres,
                    sqlite_path: None,
                })))
            }
        }
    }

    /// Opens an existing database for reading only: no migrations run, nothing can be written,
    /// and the schema must be the one this build knows. For inspecting a database (or a copy
    /// of one) without changing it.
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| StoreError::Connect(e.to_string()))?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        let version: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
            .fetch_one(&pool)
            .await
            .map_err(|e| StoreError::Connect(format!("not a Custody database: {e}")))?
            .try_get("v")?;
        if version != Some(migrate::latest_version()) {
            return Err(StoreError::Migration {
                version: version.unwrap_or(0),
                message: format!(
                    "this build reads schema version {}; run the matching Custody version",
                    migrate::latest_version()
                ),
            });
        }
        let sqlite_path = match backend {
            Backend::Sqlite => scan::sqlite_path(url),
            Backend::Postgres => None,
        };
        Ok(Self(Arc::new(Inner { backend, pool, writes: WritePath::ReadOnly, sqlite_path })))
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.0.backend
    }

    /// Runs `unit` as one atomic, durable unit of work and returns its result once committed.
    ///
    /// If `unit` fails, none of its writes happen. If the commit fails, the caller gets the
    /// error even though `unit` succeeded. `unit` must await nothing but its [`Tx`].
    pub async fn write<T, E, F>(&self, unit: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<T, E>> + Send + 'static,
    {
        match &self.0.writes {
            WritePath::Sqlite(sender) => {
                let (answer, answered) = oneshot::channel::<Result<T, E>>();
                let job: Job = Box::new(move |tx| {
                    Box::pin(async move {
                        let result = unit(tx).await;
                        let ok = result.is_ok();
                        let completion: Completion = Box::new(move |committed| {
                            let outcome = match (result, committed) {
                                (Ok(v), Ok(())) => Ok(v),
                                (Ok(_), Err(e)) => Err(E::from(e)),
                                (Err(e), _) => Err(e),
                            };
                            // The caller may have gone away; its unit is committed regardless.
                            let _ = answer.send(outcome);
                        });
                        (ok, completion)
                    })
                });
                sender.send(job).await.map_err(|_| E::from(StoreError::Unavailable))?;
                answered.await.map_err(|_| E::from(StoreError::Unavailable))?
            }
            WritePath::ReadOnly => Err(E::from(StoreError::ReadOnly)),
            WritePath::Postgres => {
                let conn = self.0.pool.begin().await.map_err(|e| E::from(e.into()))?;
                let mut tx = Tx::postgres(conn);
                let value = unit(&mut tx).await?;
                tx.flush_audit().await.map_err(E::from)?;
                tx.commit_postgres().await.map_err(E::from)?;
                Ok(value)
            }
        }
    }

    /// Runs `query` on a read connection. It sees only committed data and cannot write.
    pub async fn read<T, E, F>(&self, query: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<T, E>>,
    {
        let conn = self.0.pool.acquire().await.map_err(|e| E::from(e.into()))?;
        let mut tx = Tx::reader(conn, self.0.backend);
        query(&mut tx).await
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.0.pool.acquire().await?;
        sqlx::raw_sql("SELECT 1").execute(&mut *conn).await?;
        Ok(())
    }
}
