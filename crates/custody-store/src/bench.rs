//! The raw limit `custody bench audit` compares the audit log with: the same rows inserted
//! into a bare table of a fresh SQLite file, in batched transactions, with the store's own
//! durability settings and none of its work (no tree, no savepoints, no writer task).

use std::path::Path;
use std::str::FromStr as _;

use sqlx::ConnectOptions as _;
use sqlx::any::AnyConnectOptions;

use crate::StoreError;

/// Rows per transaction for the raw measurement: the store's writer batches up to 512 units.
pub const RAW_BATCH: usize = 256;

/// Inserts `rows` (entry bytes and leaf hash) into a new SQLite database at `path`,
/// [`RAW_BATCH`] rows per durable transaction, and returns how long it took.
pub async fn raw_sqlite_inserts(
    path: &Path,
    rows: &[(Vec<u8>, Vec<u8>)],
) -> Result<std::time::Duration, StoreError> {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = AnyConnectOptions::from_str(&url)
        .map_err(|e| StoreError::Connect(e.to_string()))?
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|e| StoreError::Connect(e.to_string()))?;
    sqlx::raw_sql(crate::SQLITE_PRAGMAS).execute(&mut conn).await?;
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
        let sql = crate::tx::values_sql(
            crate::Backend::Sqlite,
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
