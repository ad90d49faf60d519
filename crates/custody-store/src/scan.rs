//! Reading the whole audit log, in order, for verification.
//!
//! Verification reads every entry and every stored subtree root once. Through the async
//! driver, SQLite hands each row across threads one at a time and the generic driver copies it
//! again; at tens of millions of rows that, not hashing, was the cost. On SQLite the scan
//! therefore reads through plain synchronous read-only connections on blocking threads
//! (`rusqlite`, linked to the same SQLite library); on PostgreSQL it uses the pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use custody_audit::merkle::{Frontier, Hash};
use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot};

use crate::rows::{MalformedAuditRow, RowRef};
use crate::tx::audit::{AUDIT_COLS, audit_row_ref};
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

/// One row of `AUDIT_COLS, evidence, leaf_hash`, borrowed from SQLite's buffers: nothing is
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
        evidence: b(13, "evidence")?,
        leaf_hash: b(14, "leaf_hash")?,
    })
}

/// A reading of the whole audit log for verification: the tree head as of one snapshot, then
/// every entry it covers, in order. Entries committed while the scan runs are not read; an
/// entry stored past the head in the snapshot (one added outside the tree) is reported.
///
/// On SQLite two threads read alternate batches through their own connections, so checking
/// rows (the bulk of the work) uses both cores. Only the head and the look past it need the
/// snapshot: the entries it covers can no longer change except by tampering, which the
/// checks find whichever connection reads them.
#[derive(Debug)]
pub struct AuditScan<T> {
    /// The tree head as of the snapshot.
    pub head: Frontier,
    /// What the check returned for the first row stored at or past the head's size, if any:
    /// an entry outside the tree.
    pub beyond_head: Option<T>,
    batch: u64,
    next: u64,
    lanes: Vec<mpsc::Receiver<Result<Vec<T>, StoreError>>>,
}

/// One batch of a scan: the positions it covers and what the check returned for each row
/// read, in order. A batch with fewer rows than positions is missing entries at its end.
#[derive(Debug)]
pub struct ScanBatch<T> {
    /// The first position.
    pub first: u64,
    /// How many positions it covers.
    pub len: u64,
    /// One per row read.
    pub checked: Vec<T>,
}

impl<T> AuditScan<T> {
    /// The next batch, `None` after the last one the head covers.
    pub async fn next_batch(&mut self) -> Result<Option<ScanBatch<T>>, StoreError> {
        let first = self.next * self.batch;
        if first >= self.head.size() || self.lanes.is_empty() {
            return Ok(None);
        }
        let lane = usize::try_from(self.next).unwrap_or(0) % self.lanes.len();
        self.next += 1;
        let Some(lane) = self.lanes.get_mut(lane) else { return Ok(None) };
        let checked = lane.recv().await.ok_or(StoreError::Unavailable)??;
        Ok(Some(ScanBatch { first, len: self.batch.min(self.head.size() - first), checked }))
    }
}

/// Which batches a lane reads and how large they are.
#[derive(Debug, Clone, Copy)]
struct Lanes {
    size: u64,
    batch: u64,
    count: u64,
}

impl Lanes {
    /// Position ranges `(first, len)` of lane `lane`'s batches, in order.
    fn of(self, lane: u64) -> impl Iterator<Item = (u64, u64)> {
        let step = usize::try_from(self.batch * self.count).unwrap_or(usize::MAX).max(1);
        (lane * self.batch..self.size)
            .step_by(step)
            .map(move |first| (first, self.batch.min(self.size - first)))
    }
}

/// The tree head and the checked first row stored past it, in one read transaction.
fn sqlite_head<T>(
    tx: &rusqlite::Transaction<'_>,
    f: &mut impl FnMut(u64, Result<RowRef<'_>, MalformedAuditRow>) -> T,
) -> Result<(Frontier, Option<T>), StoreError> {
    let (size, peaks) = tx
        .query_row("SELECT size, peaks FROM audit_tree WHERE id = 1", (), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(|_| StoreError::Corrupt("audit_tree"))?;
    let size = u64::try_from(size).map_err(|_| StoreError::Corrupt("audit_tree"))?;
    let head = Frontier::from_parts(size, crate::tx::audit::split_hashes(&peaks)?)
        .map_err(|_| StoreError::Corrupt("audit_tree"))?;
    let mut stmt = tx.prepare(ENTRIES).map_err(|e| sqlite_error(&e))?;
    let mut rows = stmt.query((i64_of(size)?, 1)).map_err(|e| sqlite_error(&e))?;
    let beyond = rows.next().map_err(|e| sqlite_error(&e))?.map(|r| f(size, row_ref(r)));
    Ok((head, beyond))
}

/// Stored entries from a position, in order, as [`row_ref`] reads them.
const ENTRIES: &str = const_format::concatcp!(
    "SELECT ",
    AUDIT_COLS,
    ", evidence, leaf_hash FROM audit_entries WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
);

/// Reads `ranges` of entries through `conn` and sends each batch of checked rows.
fn sqlite_lane<T>(
    conn: &rusqlite::Connection,
    ranges: impl Iterator<Item = (u64, u64)>,
    mut f: impl FnMut(u64, Result<RowRef<'_>, MalformedAuditRow>) -> T,
    out: &mpsc::Sender<Result<Vec<T>, StoreError>>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(ENTRIES).map_err(|e| sqlite_error(&e))?;
    for (first, len) in ranges {
        let mut rows = stmt.query((i64_of(first)?, i64_of(len)?)).map_err(|e| sqlite_error(&e))?;
        let mut checked = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let mut expected = first;
        while let Some(row) = rows.next().map_err(|e| sqlite_error(&e))? {
            checked.push(f(expected, row_ref(row)));
            expected += 1;
        }
        // The verifier stopped listening (it found something): stop reading.
        if out.blocking_send(Ok(checked)).is_err() {
            break;
        }
    }
    Ok(())
}

/// The pooled scan (PostgreSQL, or SQLite without a file): the head, the look past it and
/// every batch in one snapshot the caller has begun, through one connection.
async fn pooled_scan<T>(
    tx: &mut crate::Tx,
    batch: u64,
    mut f: impl FnMut(u64, Result<RowRef<'_>, MalformedAuditRow>) -> T,
    head_to: oneshot::Sender<Result<(Frontier, Option<T>), StoreError>>,
    out: &mpsc::Sender<Result<Vec<T>, StoreError>>,
) -> Result<(), StoreError> {
    let head = match tx.tree_head().await {
        Ok(head) => head,
        Err(e) => {
            let _ = head_to.send(Err(e));
            return Ok(());
        }
    };
    let beyond =
        tx.audit_rows(head.size(), 1).await?.first().map(|r| f(head.size(), audit_row_ref(r)));
    let lanes = Lanes { size: head.size(), batch, count: 1 };
    if head_to.send(Ok((head, beyond))).is_err() {
        return Ok(());
    }
    for (first, len) in lanes.of(0) {
        let limit = u32::try_from(len).unwrap_or(u32::MAX);
        let rows = tx.audit_rows(first, limit).await?;
        let checked = (first..).zip(&rows).map(|(expected, r)| f(expected, audit_row_ref(r)));
        if out.send(Ok(checked.collect())).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Subtree roots computed by the verifier, checked against the stored ones in the order the
/// tree completed them. On SQLite the stored roots are read in the order they were appended
/// (a sequential read of the table, not a lookup per root): each computed root is compared
/// with the next stored row, and only when that row is not the same node (the table was
/// rewritten in another order) is the node looked up by its key.
#[derive(Debug, Default)]
pub struct NodeCheck {
    /// The last stored row consumed in append order (SQLite's rowid).
    after: i64,
}

/// Returns the `(level, index)` of the first of `nodes` not stored as computed.
fn sqlite_nodes(
    path: &Path,
    check: &mut NodeCheck,
    nodes: &[(u32, u64, Hash)],
) -> Result<Option<(u32, u64)>, StoreError> {
    let conn = open(path)?;
    let mut stream = conn
        .prepare(
            "SELECT rowid, level, idx, hash FROM audit_nodes WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )
        .map_err(|e| sqlite_error(&e))?;
    let mut lookup = conn
        .prepare("SELECT hash FROM audit_nodes WHERE level = ?1 AND idx = ?2")
        .map_err(|e| sqlite_error(&e))?;
    let limit = i64::try_from(nodes.len()).unwrap_or(i64::MAX);
    let mut rows = stream.query((check.after, limit)).map_err(|e| sqlite_error(&e))?;
    let mut next = rows.next().map_err(|e| sqlite_error(&e))?;
    for &(node_level, node_idx, ref hash) in nodes {
        let (level, idx) = (i64::from(node_level), i64_of(node_idx)?);
        let in_order = next.as_ref().and_then(|row| {
            let key = (row.get::<_, i64>(1).ok()?, row.get::<_, i64>(2).ok()?);
            let stored = row.get_ref(3).ok()?.as_blob().ok()?;
            (key == (level, idx)).then(|| (row.get::<_, i64>(0).ok(), stored == hash.as_slice()))
        });
        let matches = if let Some((rowid, matches)) = in_order {
            check.after = rowid.ok_or(StoreError::Corrupt("audit_nodes.rowid"))?;
            next = rows.next().map_err(|e| sqlite_error(&e))?;
            matches
        } else {
            let mut found = lookup.query((level, idx)).map_err(|e| sqlite_error(&e))?;
            let row = found.next().map_err(|e| sqlite_error(&e))?;
            row.and_then(|r| r.get_ref(0).ok()?.as_blob().ok().map(|b| b == hash.as_slice()))
                .unwrap_or(false)
        };
        if !matches {
            return Ok(Some((node_level, node_idx)));
        }
    }
    Ok(None)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Database(e.to_string()))?
}

/// Batches of checked rows the scan reads ahead of the verifier.
const READ_AHEAD: usize = 1;

impl Store {
    /// Reads the tree head from one snapshot and then every entry it covers, in order,
    /// `batch` at a time; applies `f` to each row where it is read, with the position the row
    /// should have, and hands over what it returned. The verifier checks rows without copying
    /// them, while it works on earlier batches.
    pub async fn scan_audit_log<T, F>(&self, batch: u32, f: F) -> Result<AuditScan<T>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(u64, Result<RowRef<'_>, MalformedAuditRow>) -> T + Clone + Send + 'static,
    {
        let batch = u64::from(batch.max(1));
        let (head_to, head) = oneshot::channel();
        let mut lanes = Vec::new();
        if let Some(path) = self.0.sqlite_path.clone() {
            // Lane 0 reads the head and the look past it in one snapshot, then lets it go (a
            // long read would keep the server's log file from being checkpointed); lane 1
            // starts once the head is known.
            let (out, lane) = mpsc::channel(READ_AHEAD);
            lanes.push(lane);
            let (first_path, mut first_f) = (path.clone(), f.clone());
            let (size_to, size) = oneshot::channel::<u64>();
            tokio::task::spawn_blocking(move || {
                let run = || {
                    let mut conn = open(&first_path)?;
                    let tx = conn.transaction().map_err(|e| sqlite_error(&e))?;
                    let (head, beyond) = sqlite_head(&tx, &mut first_f)?;
                    tx.commit().map_err(|e| sqlite_error(&e))?;
                    let lanes = Lanes { size: head.size(), batch, count: 2 };
                    let _ = size_to.send(head.size());
                    if head_to.send(Ok((head, beyond))).is_err() {
                        return Ok(());
                    }
                    sqlite_lane(&conn, lanes.of(0), first_f, &out)
                };
                if let Err(e) = run() {
                    let _ = out.blocking_send(Err(e));
                }
            });
            let (out, lane) = mpsc::channel(READ_AHEAD);
            lanes.push(lane);
            tokio::task::spawn_blocking(move || {
                let Ok(size) = size.blocking_recv() else { return };
                let run = || {
                    let conn = open(&path)?;
                    sqlite_lane(&conn, Lanes { size, batch, count: 2 }.of(1), f, &out)
                };
                if let Err(e) = run() {
                    let _ = out.blocking_send(Err(e));
                }
            });
        } else {
            let (out, lane) = mpsc::channel(READ_AHEAD);
            lanes.push(lane);
            let store = self.clone();
            tokio::spawn(async move {
                // A pool that cannot give a connection drops `head_to`: the caller hears
                // `Unavailable`.
                let _ = store
                    .read(move |tx| {
                        async move {
                            if let Err(e) = tx.begin_snapshot().await {
                                let _ = head_to.send(Err(e));
                                return Ok::<_, StoreError>(());
                            }
                            let scanned = pooled_scan(tx, batch, f, head_to, &out).await;
                            let ended = tx.end_snapshot().await;
                            if let Err(e) = scanned.and(ended) {
                                let _ = out.send(Err(e)).await;
                            }
                            Ok(())
                        }
                        .boxed()
                    })
                    .await;
            });
        }
        let (head, beyond_head) = head.await.map_err(|_| StoreError::Unavailable)??;
        Ok(AuditScan { head, beyond_head, batch, next: 0, lanes })
    }

    /// Checks subtree roots the verifier computed, in the order the tree completed them,
    /// against the stored ones; `check` carries the position between calls. Returns the
    /// `(level, index)` of the first one missing or different.
    pub async fn check_audit_nodes(
        &self,
        mut check: NodeCheck,
        nodes: Vec<(u32, u64, Hash)>,
    ) -> Result<(NodeCheck, Option<(u32, u64)>), StoreError> {
        if let Some(path) = self.0.sqlite_path.clone() {
            return blocking(move || {
                let wrong = sqlite_nodes(&path, &mut check, &nodes)?;
                Ok((check, wrong))
            })
            .await;
        }
        // PostgreSQL keeps no append order to read by: compare each level's run by key.
        let mut by_level: BTreeMap<u32, Vec<(u64, Hash)>> = BTreeMap::new();
        for (level, idx, hash) in nodes {
            by_level.entry(level).or_default().push((idx, hash));
        }
        let mut wrong: Option<(u32, u64)> = None;
        for (level, run) in by_level {
            let first = run.first().map_or(0, |n| n.0);
            let count = u32::try_from(run.len()).unwrap_or(u32::MAX);
            let stored = self
                .read(move |tx| async move { tx.audit_nodes(level, first, count).await }.boxed())
                .await?;
            let differs = run.iter().zip(stored.iter().map(Some).chain(std::iter::repeat(None)));
            if let Some(((idx, _), _)) = differs.into_iter().find(|((idx, hash), stored)| {
                stored.is_none_or(|(s_idx, s_hash)| s_idx != idx || s_hash.as_slice() != hash)
            }) {
                // Report the wrong root the tree completed first, as the SQLite check does.
                let completed = |level: u32, idx: u64| ((idx + 1) << level, level);
                if wrong.is_none_or(|(l, i)| completed(level, *idx) < completed(l, i)) {
                    wrong = Some((level, *idx));
                }
            }
        }
        Ok((check, wrong))
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
