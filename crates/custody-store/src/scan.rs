//! Reading the whole audit log, in order, for verification.
//!
//! Verification reads every entry and every stored subtree root once. Through the async
//! driver, SQLite hands each row across threads one at a time and the generic driver copies it
//! again; at tens of millions of rows that, not hashing, was the cost. On SQLite the scan
//! therefore reads through a plain synchronous read-only connection on a blocking thread
//! (`rusqlite`, linked to the same SQLite library); on PostgreSQL it uses the pool.

use std::path::{Path, PathBuf};

use futures_util::FutureExt as _;

use crate::rows::{MalformedAuditRow, RowRef};
use crate::tx::{AUDIT_COLS, audit_row_ref};
use crate::{Store, StoreError};

/// The database file of a `sqlite://PATH?…` URL.
pub(crate) fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn sqlite_error(e: &rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn open(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Connect(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| sqlite_error(&e))?;
    Ok(conn)
}

fn i64_of(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt("seq"))
}

/// One row of `AUDIT_COLS, entry, leaf_hash`, borrowed from SQLite's buffers: nothing is
/// parsed or copied.
fn row_ref<'a>(r: &'a rusqlite::Row<'a>) -> Result<RowRef<'a>, MalformedAuditRow> {
    let value = |i: usize| r.get_ref(i).ok();
    let seq = value(0).and_then(|v| v.as_i64().ok());
    let bad = |column| MalformedAuditRow { seq, column };
    let s = |i: usize, column| value(i).and_then(|v| v.as_str().ok()).ok_or(bad(column));
    let o = |i: usize, column| value(i).and_then(|v| v.as_str_or_null().ok()).ok_or(bad(column));
    let b = |i: usize, column| value(i).and_then(|v| v.as_blob().ok()).ok_or(bad(column));
    Ok(RowRef {
        seq: seq.ok_or(bad("seq"))?,
        at: value(1).and_then(|v| v.as_i64().ok()).ok_or(bad("at"))?,
        actor_kind: s(2, "actor_kind")?,
        actor_id: o(3, "actor_id")?,
        action: s(4, "action")?,
        target: [o(5, "site_id")?, o(6, "bank_id")?, o(7, "compartment_id")?, o(8, "parcel_id")?],
        outcome: s(9, "outcome")?,
        reason: o(10, "reason")?,
        sealed: (
            o(11, "sealed_subject")?,
            value(12).and_then(|v| v.as_blob_or_null().ok()).ok_or(bad("sealed"))?,
        ),
        entry: b(13, "entry")?,
        leaf_hash: b(14, "leaf_hash")?,
    })
}

fn sqlite_entries<T>(
    path: &Path,
    from: u64,
    limit: u32,
    mut f: impl FnMut(Result<RowRef<'_>, MalformedAuditRow>) -> T,
) -> Result<Vec<T>, StoreError> {
    let conn = open(path)?;
    let mut stmt = conn
        .prepare(const_format::concatcp!(
            "SELECT ",
            AUDIT_COLS,
            ", entry, leaf_hash FROM audit_entries WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
        ))
        .map_err(|e| sqlite_error(&e))?;
    let mut rows = stmt.query((i64_of(from)?, i64::from(limit))).map_err(|e| sqlite_error(&e))?;
    let mut out = Vec::with_capacity(usize::try_from(limit).unwrap_or(0));
    while let Some(row) = rows.next().map_err(|e| sqlite_error(&e))? {
        out.push(f(row_ref(row)));
    }
    Ok(out)
}

fn sqlite_nodes(
    path: &Path,
    level: u32,
    from: u64,
    limit: u32,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let conn = open(path)?;
    let mut stmt = conn
        .prepare(
            "SELECT idx, hash FROM audit_nodes WHERE level = ?1 AND idx >= ?2 ORDER BY idx LIMIT ?3",
        )
        .map_err(|e| sqlite_error(&e))?;
    let mut rows = stmt
        .query((i64::from(level), i64_of(from)?, i64::from(limit)))
        .map_err(|e| sqlite_error(&e))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| sqlite_error(&e))? {
        let idx = row.get::<_, i64>(0).map_err(|_| StoreError::Corrupt("audit_nodes.idx"))?;
        let hash = row.get::<_, Vec<u8>>(1).map_err(|_| StoreError::Corrupt("audit_nodes.hash"))?;
        out.push((u64::try_from(idx).map_err(|_| StoreError::Corrupt("audit_nodes.idx"))?, hash));
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Database(e.to_string()))?
}

impl Store {
    /// Applies `f` to each stored entry `from..from + limit`, in order, and returns what it
    /// returned: the verifier checks rows where they are read, without copying them.
    pub async fn scan_audit_entries<T, F>(
        &self,
        from: u64,
        limit: u32,
        mut f: F,
    ) -> Result<Vec<T>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(Result<RowRef<'_>, MalformedAuditRow>) -> T + Send + 'static,
    {
        if let Some(path) = self.0.sqlite_path.clone() {
            return blocking(move || sqlite_entries(&path, from, limit, f)).await;
        }
        let rows =
            self.read(move |tx| async move { tx.audit_rows(from, limit).await }.boxed()).await?;
        Ok(rows.iter().map(|r| f(audit_row_ref(r))).collect())
    }

    /// Stored subtree roots of `level` with index in `from..from + limit`, in order.
    pub async fn scan_audit_nodes(
        &self,
        level: u32,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if let Some(path) = self.0.sqlite_path.clone() {
            return blocking(move || sqlite_nodes(&path, level, from, limit)).await;
        }
        self.read(move |tx| async move { tx.audit_nodes(level, from, limit).await }.boxed()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_come_from_urls() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/custody/custody.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/custody/custody.db"))
        );
        assert_eq!(sqlite_path("sqlite://data/custody.db"), Some(PathBuf::from("data/custody.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://localhost/custody"), None);
    }
}
