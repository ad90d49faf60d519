//! The raw limits `custody bench audit` compares the audit log with: the log's rows inserted
//! into a fresh SQLite file in batched transactions, with the store's own durability settings
//! and none of its work (no encoding, no hashing, no savepoints, no writer task, no callers).
//! Two are measured: the same rows as the log stores them, in the store's own schema, and just
//! each entry's bytes and leaf hash in a bare table.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use rusqlite::types::Value;
use sqlx::AnyConnection;
use sqlx::ConnectOptions as _;
use sqlx::any::AnyConnectOptions;

use crate::tx::audit::AUDIT_COLS;
use crate::tx::{ENTRIES_PER_INSERT, NODES_PER_INSERT, values_sql};
use crate::{Backend, Store, StoreError};

/// Rows per transaction for the raw measurement: the store's writer batches up to 512 units.
pub const RAW_BATCH: usize = 256;

/// Inserts `rows` (entry bytes and leaf hash) into a new SQLite database at `path`,
/// [`RAW_BATCH`] rows per durable transaction, and returns how long it took.
pub async fn raw_sqlite_inserts(
    path: &Path,
    rows: &[(Vec<u8>, Vec<u8>)],
) -> Result<Duration, StoreError> {
    let mut conn = connect(path).await?;
    sqlx::raw_sql(
        "CREATE TABLE raw_entries (seq INTEGER PRIMARY KEY, entry BLOB NOT NULL, \
         leaf_hash BLOB NOT NULL)",
    )
    .execute(&mut conn)
    .await?;
    #[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
    let started = std::time::Instant::now();
    let mut seq = 0_i64;
    for chunk in rows.chunks(RAW_BATCH) {
        let sql = values_sql(
            Backend::Sqlite,
            "INSERT INTO raw_entries (seq, entry, leaf_hash) VALUES ",
            3,
            chunk.len(),
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (entry, leaf) in chunk {
            query = query.bind(seq).bind(entry.clone()).bind(leaf.clone());
            seq += 1;
        }
        sqlx::raw_sql("BEGIN").execute(&mut conn).await?;
        query.execute(&mut conn).await?;
        sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
    }
    Ok(started.elapsed())
}

async fn connect(path: &Path) -> Result<AnyConnection, StoreError> {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = AnyConnectOptions::from_str(&url)
        .map_err(|e| StoreError::Connect(e.to_string()))?
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|e| StoreError::Connect(e.to_string()))?;
    sqlx::raw_sql(crate::SQLITE_PRAGMAS).execute(&mut conn).await?;
    Ok(conn)
}

/// The first `n` entries of `source`'s log exactly as stored (every column of
/// `audit_entries`), and the subtree roots they complete (`audit_nodes`), in append order.
type LogRows = (Vec<Vec<Value>>, Vec<Vec<Value>>);

fn read_log(source: &Path, n: u64) -> Result<LogRows, StoreError> {
    let fail = |e: rusqlite::Error| StoreError::Database(e.to_string());
    let conn =
        rusqlite::Connection::open_with_flags(source, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Connect(e.to_string()))?;
    let n = i64::try_from(n).map_err(|_| StoreError::Corrupt("seq"))?;
    let read = |sql: &str, columns: usize| -> Result<Vec<Vec<Value>>, StoreError> {
        let mut stmt = conn.prepare(sql).map_err(fail)?;
        let rows = stmt
            .query_map([n], |r| (0..columns).map(|i| r.get::<_, Value>(i)).collect())
            .map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    };
    let entries = read(
        const_format::concatcp!(
            "SELECT ",
            AUDIT_COLS,
            ", evidence, leaf_hash FROM audit_entries WHERE seq < ?1 ORDER BY seq"
        ),
        15,
    )?;
    let nodes = read(
        "SELECT level, idx, hash FROM audit_nodes WHERE ((idx + 1) << level) <= ?1 ORDER BY rowid",
        3,
    )?;
    Ok((entries, nodes))
}

fn bind<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    value: &Value,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    match value {
        Value::Null => query.bind(None::<String>),
        Value::Integer(i) => query.bind(*i),
        Value::Real(r) => query.bind(*r),
        Value::Text(t) => query.bind(t.clone()),
        Value::Blob(b) => query.bind(b.clone()),
    }
}

async fn insert_rows(
    conn: &mut AnyConnection,
    head: &str,
    rows: &[Vec<Value>],
    per_statement: usize,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(per_statement) {
        let columns = chunk.first().map_or(0, Vec::len);
        let sql = values_sql(Backend::Sqlite, head, columns, chunk.len());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in chunk.iter().flatten() {
            query = bind(query, value);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts the first `n` entries of `source`'s log, as stored, into the same schema (with its
/// indexes) in a new SQLite database at `path`: [`RAW_BATCH`] entries and the subtree roots
/// they complete per durable transaction, in multi-row statements of the sizes the store uses.
/// Returns how long the inserts took.
pub async fn raw_log_inserts(source: &Store, n: u64, path: &Path) -> Result<Duration, StoreError> {
    let from = source.0.sqlite_path.clone().ok_or(StoreError::Unavailable)?;
    let (entries, nodes) = tokio::task::spawn_blocking(move || read_log(&from, n))
        .await
        .map_err(|e| StoreError::Database(e.to_string()))??;
    // The store's own schema: migrations run, then the store is let go.
    drop(Store::open(&format!("sqlite://{}?mode=rwc", path.display())).await?);
    let mut conn = connect(path).await?;
    #[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
    let started = std::time::Instant::now();
    let mut nodes = nodes.as_slice();
    for (batch, chunk) in entries.chunks(RAW_BATCH).enumerate() {
        // The roots the batch's entries complete: up to the end of the batch.
        let end = i64::try_from((batch * RAW_BATCH + chunk.len()) as u64).unwrap_or(i64::MAX);
        let split = nodes
            .iter()
            .position(|node| match (node.first(), node.get(1)) {
                (Some(Value::Integer(level)), Some(Value::Integer(idx))) => {
                    (idx + 1) << level > end
                }
                _ => true,
            })
            .unwrap_or(nodes.len());
        let (these, rest) = nodes.split_at(split);
        nodes = rest;
        sqlx::raw_sql("BEGIN").execute(&mut conn).await?;
        insert_rows(
            &mut conn,
            const_format::concatcp!(
                "INSERT INTO audit_entries (",
                AUDIT_COLS,
                ", evidence, leaf_hash) VALUES "
            ),
            chunk,
            ENTRIES_PER_INSERT,
        )
        .await?;
        insert_rows(
            &mut conn,
            "INSERT INTO audit_nodes (level, idx, hash) VALUES ",
            these,
            NODES_PER_INSERT,
        )
        .await?;
        sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
    }
    Ok(started.elapsed())
}

/// Lets a freshly built log come to rest before it is measured: the write-ahead log is folded
/// into the database file and the file is synced, so the measurement reads a log at rest
/// instead of competing with the kernel writing back what was just built.
pub async fn settle(store: &Store) -> Result<(), StoreError> {
    let Some(path) = store.0.sqlite_path.clone() else { return Ok(()) };
    tokio::task::spawn_blocking(move || {
        let conn =
            rusqlite::Connection::open(&path).map_err(|e| StoreError::Connect(e.to_string()))?;
        conn.busy_timeout(Duration::from_mins(1))
            .map_err(|e| StoreError::Database(e.to_string()))?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", (), |_| Ok(()))
            .map_err(|e| StoreError::Database(e.to_string()))?;
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::Database(e.to_string()))
    })
    .await
    .map_err(|e| StoreError::Database(e.to_string()))?
}
