//! [`Tx`]: a unit of work's view of the store, with one method per thing the domain does.

use custody_core::Timestamp;
use custody_core::audit::AuditEvent;
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Row as _, Transaction};

use crate::rows::StoredText;
use crate::{Backend, StoreError};

enum Conn {
    /// The SQLite writer's own connection; transactions are managed by the writer.
    Writer(AnyConnection),
    /// A PostgreSQL transaction, committed by [`crate::Store::write`].
    Postgres(Transaction<'static, Any>),
    /// A read connection.
    Reader(PoolConnection<Any>),
}

/// A unit of work's handle on the store.
pub struct Tx {
    conn: Conn,
    backend: Backend,
    /// Audit entries of this unit, appended to the tree when the unit ends (see
    /// [`Tx::append_audit`]).
    pending: Vec<AuditEvent>,
    /// On the SQLite writer, the savepoint of the unit under way.
    unit: Unit,
}

/// The savepoint of a unit of work in the SQLite writer's batch. It is opened just before the
/// unit's first statement: a unit that only records audit entries (a refused attempt, a sensor
/// reading) runs no statement at all, and so costs no savepoint round trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Not in a batched unit (PostgreSQL, readers, the writer between units).
    Outside,
    /// A unit has begun and has run no statement yet.
    Pending,
    /// The unit's savepoint is open.
    Open,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("backend", &self.backend).finish_non_exhaustive()
    }
}

// --- decoding -----------------------------------------------------------------------------

type R<T> = Result<T, StoreError>;

fn text(row: &AnyRow, col: &'static str) -> R<String> {
    row.try_get::<String, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn opt_text(row: &AnyRow, col: &'static str) -> R<Option<String>> {
    row.try_get::<Option<String>, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn int(row: &AnyRow, col: &'static str) -> R<i64> {
    row.try_get::<i64, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn opt_int(row: &AnyRow, col: &'static str) -> R<Option<i64>> {
    row.try_get::<Option<i64>, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn time(row: &AnyRow, col: &'static str) -> R<Timestamp> {
    int(row, col).map(Timestamp::from_millis)
}

fn opt_time(row: &AnyRow, col: &'static str) -> R<Option<Timestamp>> {
    opt_int(row, col).map(|v| v.map(Timestamp::from_millis))
}

fn flag(row: &AnyRow, col: &'static str) -> R<bool> {
    match int(row, col)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(StoreError::Corrupt(col)),
    }
}

fn blob(row: &AnyRow, col: &'static str) -> R<Vec<u8>> {
    row.try_get::<Vec<u8>, _>(col).map_err(|_| StoreError::Corrupt(col))
}

fn opt_blob(row: &AnyRow, col: &'static str) -> R<Option<Vec<u8>>> {
    row.try_get::<Option<Vec<u8>>, _>(col).map_err(|_| StoreError::Corrupt(col))
}

/// A personal text from its sealed column, or its clear one from before it was sealed.
fn opt_stored(row: &AnyRow, sealed: &'static str, clear: &'static str) -> R<Option<StoredText>> {
    Ok(match opt_blob(row, sealed)? {
        Some(bytes) => Some(StoredText::Sealed(bytes)),
        None => opt_text(row, clear)?.map(StoredText::Clear),
    })
}

/// A personal text as its sealed and clear columns take it.
fn stored_columns(t: Option<&StoredText>) -> (Option<Vec<u8>>, Option<String>) {
    match t {
        Some(StoredText::Sealed(bytes)) => (Some(bytes.clone()), None),
        Some(StoredText::Clear(text)) => (None, Some(text.clone())),
        None => (None, None),
    }
}

fn parse<T>(row: &AnyRow, col: &'static str, f: impl FnOnce(&str) -> Option<T>) -> R<T> {
    f(&text(row, col)?).ok_or(StoreError::Corrupt(col))
}

fn opt_parse<T>(
    row: &AnyRow,
    col: &'static str,
    f: impl FnOnce(&str) -> Option<T>,
) -> R<Option<T>> {
    match opt_text(row, col)? {
        Some(s) => f(&s).map(Some).ok_or(StoreError::Corrupt(col)),
        None => Ok(None),
    }
}

fn b(v: bool) -> i64 {
    i64::from(v)
}

/// Builds a static SQL string from parts at compile time.
macro_rules! sql {
    ($($part:expr),+ $(,)?) => { const_format::concatcp!($($part),+) };
}

// --- one file per concept, each an `impl Tx` block of its own -------------------------

mod alerts;
mod api_keys;
mod approvals;
pub(crate) mod audit;
mod badges;
mod breaches;
mod carriers;
mod codes;
mod compartments;
mod couriers;
mod devices;
mod factors;
mod fanout;
mod inventory;
mod lockdown;
mod outbox;
mod parcels;
mod passkeys;
mod people;
mod personal;
pub(crate) mod remote_opens;
mod retention;
mod sensors;
mod sessions;
mod sign_in_links;
mod sites;
mod throttle;

// --- the handle ----------------------------------------------------------------------------

/// Audit entries per INSERT statement (13 parameters each; well under both databases'
/// parameter limits).
pub(crate) const ENTRIES_PER_INSERT: usize = 64;
/// Subtree roots per INSERT statement.
pub(crate) const NODES_PER_INSERT: usize = 256;

/// `head` followed by `rows` groups of `columns` placeholders: `($1, $2), ($3, $4)` on
/// PostgreSQL, `(?, ?), (?, ?)` on SQLite. Only placeholders are generated; values are always
/// bound. SQLite gets anonymous ones because the driver looks up every numbered parameter's
/// name, and SQLite finds a name by scanning all of them: binding a statement of n numbered
/// parameters costs O(n²), most of a write batch's time at a few hundred rows.
pub(crate) fn values_sql(backend: Backend, head: &str, columns: usize, rows: usize) -> String {
    let mut sql = String::from(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(r * columns + c + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

impl Tx {
    pub(crate) fn writer(conn: AnyConnection, backend: Backend) -> Self {
        Self { conn: Conn::Writer(conn), backend, pending: Vec::new(), unit: Unit::Outside }
    }

    pub(crate) fn postgres(tx: Transaction<'static, Any>) -> Self {
        Self {
            conn: Conn::Postgres(tx),
            backend: Backend::Postgres,
            pending: Vec::new(),
            unit: Unit::Outside,
        }
    }

    pub(crate) fn reader(conn: PoolConnection<Any>, backend: Backend) -> Self {
        Self { conn: Conn::Reader(conn), backend, pending: Vec::new(), unit: Unit::Outside }
    }

    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        match &mut self.conn {
            Conn::Writer(c) => c,
            Conn::Postgres(t) => t,
            Conn::Reader(c) => c,
        }
    }

    pub(crate) async fn commit_postgres(self) -> R<()> {
        match self.conn {
            Conn::Postgres(t) => t.commit().await.map_err(StoreError::from),
            Conn::Writer(_) | Conn::Reader(_) => Ok(()),
        }
    }

    /// The connection for a write; refused on read-only handles.
    fn w(&mut self) -> R<&mut AnyConnection> {
        match &mut self.conn {
            Conn::Writer(c) => Ok(c),
            Conn::Postgres(t) => Ok(t),
            Conn::Reader(_) => Err(StoreError::ReadOnly),
        }
    }

    /// The writer starts a unit of work; its savepoint opens with its first statement.
    pub(crate) fn begin_unit(&mut self) {
        self.unit = Unit::Pending;
    }

    /// The writer ends a unit; `true` if its savepoint was opened and must be closed.
    pub(crate) fn end_unit(&mut self) -> bool {
        std::mem::replace(&mut self.unit, Unit::Outside) == Unit::Open
    }

    /// Opens the unit's savepoint before its first statement.
    async fn enter(&mut self) -> R<()> {
        if self.unit == Unit::Pending {
            sqlx::raw_sql("SAVEPOINT unit").execute(self.conn()).await?;
            self.unit = Unit::Open;
        }
        Ok(())
    }

    async fn one(
        &mut self,
        q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> R<Option<AnyRow>> {
        self.enter().await?;
        q.fetch_optional(self.conn()).await.map_err(StoreError::from)
    }

    async fn all(
        &mut self,
        q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> R<Vec<AnyRow>> {
        self.enter().await?;
        q.fetch_all(self.conn()).await.map_err(StoreError::from)
    }

    async fn exec(&mut self, q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>) -> R<u64> {
        self.w()?;
        self.enter().await?;
        Ok(q.execute(self.w()?).await?.rows_affected())
    }

    async fn fetch_write(
        &mut self,
        q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> R<Option<AnyRow>> {
        self.w()?;
        self.enter().await?;
        q.fetch_optional(self.w()?).await.map_err(StoreError::from)
    }
}
