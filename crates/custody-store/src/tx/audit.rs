//! The audit log: entries queued by units and appended to the Merkle tree, checkpoints, reads.

use custody_audit::merkle::{self as audit_merkle, Frontier};
use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Outcome, SealedText, Target};
use custody_core::{BankId, CompartmentId, ParcelId, PersonId, SiteId, Timestamp};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::rows::{AuditFilter, AuditRow, MalformedAuditRow, RowRef, StoredEntry};
use crate::{Backend, StoreError};

use super::{
    ENTRIES_PER_INSERT, NODES_PER_INSERT, R, Tx, blob, int, opt_blob, opt_parse, opt_text, parse,
    text, time, values_sql,
};
use crate::rows::entry_of;

/// The audit row's columns, in the order the verifier's scans read them by position.
pub(crate) const AUDIT_COLS: &str = "seq, at, actor_kind, actor_id, action, site_id, bank_id, compartment_id, parcel_id, outcome, reason, sealed_subject, sealed";

/// Splits concatenated 32-byte hashes.
pub(crate) fn split_hashes(bytes: &[u8]) -> R<Vec<audit_merkle::Hash>> {
    if !bytes.len().is_multiple_of(32) {
        return Err(StoreError::Corrupt("hash list"));
    }
    bytes
        .chunks_exact(32)
        .map(|c| c.try_into().map_err(|_| StoreError::Corrupt("hash list")))
        .collect()
}

pub(crate) fn audit_row(r: &AnyRow) -> R<AuditRow> {
    Ok(AuditRow {
        seq: int(r, "seq")?,
        event: AuditEvent {
            at: time(r, "at")?,
            actor: Actor {
                kind: parse(r, "actor_kind", ActorKind::parse)?,
                id: opt_text(r, "actor_id")?,
            },
            action: parse(r, "action", AuditAction::parse)?,
            target: Target {
                site: opt_parse(r, "site_id", |s| SiteId::parse(s).ok())?,
                bank: opt_parse(r, "bank_id", |s| BankId::parse(s).ok())?,
                compartment: opt_parse(r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
                parcel: opt_parse(r, "parcel_id", |s| ParcelId::parse(s).ok())?,
            },
            outcome: parse(r, "outcome", Outcome::parse)?,
            reason: opt_text(r, "reason")?,
            personal: match (
                opt_parse(r, "sealed_subject", |s| PersonId::parse(s).ok())?,
                opt_blob(r, "sealed")?,
            ) {
                (Some(subject), Some(ciphertext)) => Some(SealedText { subject, ciphertext }),
                (None, None) => None,
                _ => return Err(StoreError::Corrupt("audit_entries.sealed")),
            },
        },
    })
}

/// A row of `AUDIT_COLS, evidence, leaf_hash`, borrowed and read by position, parsing nothing.
pub(crate) fn audit_row_ref(r: &AnyRow) -> Result<RowRef<'_>, MalformedAuditRow> {
    let seq = r.try_get::<i64, _>(0).ok();
    let bad = |column| MalformedAuditRow { seq, column };
    let s = |i: usize, column| r.try_get::<&str, _>(i).map_err(|_| bad(column));
    let o = |i: usize, column| r.try_get::<Option<&str>, _>(i).map_err(|_| bad(column));
    let b = |i: usize, column| r.try_get::<&[u8], _>(i).map_err(|_| bad(column));
    Ok(RowRef {
        seq: seq.ok_or(bad("seq"))?,
        at: r.try_get::<i64, _>(1).map_err(|_| bad("at"))?,
        actor_kind: s(2, "actor_kind")?,
        actor_id: o(3, "actor_id")?,
        action: s(4, "action")?,
        target: [o(5, "site_id")?, o(6, "bank_id")?, o(7, "compartment_id")?, o(8, "parcel_id")?],
        outcome: s(9, "outcome")?,
        reason: o(10, "reason")?,
        sealed: (
            o(11, "sealed_subject")?,
            r.try_get::<Option<&[u8]>, _>(12).map_err(|_| bad("sealed"))?,
        ),
        evidence: b(13, "evidence")?,
        leaf_hash: b(14, "leaf_hash")?,
    })
}

impl Tx {
    /// Records an audit entry as part of this unit of work. Entries are appended to the Merkle
    /// tree after all other writes of the transaction (when the unit ends on PostgreSQL, when
    /// the write batch ends on SQLite), so the lock on the tree head is the last one taken and
    /// is held only until commit: two units can never wait on each other through it. If the
    /// append fails, the unit fails and nothing it changed is kept. An entry that could not be
    /// read back (over the format's size limit) is refused here, so that it fails its own unit
    /// and not the write batch it would have shared with others.
    pub fn append_audit(&mut self, e: &AuditEvent) -> R<()> {
        self.w()?;
        let entry = entry_of(0, e);
        entry
            .borrowed(&entry.evidence_bytes())
            .encode_into(&mut Vec::new())
            .map_err(|err| StoreError::Refused(format!("audit entry: {err}")))?;
        self.pending.push(e.clone());
        Ok(())
    }

    /// How many entries are queued (the writer marks where a unit's entries begin).
    pub(crate) fn pending_audit_len(&self) -> usize {
        self.pending.len()
    }

    /// Forgets the entries queued after the first `len` (a rolled-back unit's).
    pub(crate) fn truncate_pending_audit(&mut self, len: usize) {
        self.pending.truncate(len);
    }

    /// Appends the queued entries: each becomes leaf `size` of the tree, its completed subtree
    /// roots are stored for proofs, and the head moves, all in this transaction. Rows go in
    /// multi-row statements: on SQLite the cost of a write batch is mostly per statement.
    pub(crate) async fn flush_audit(&mut self) -> R<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Taking the head with an UPDATE locks the row on PostgreSQL until commit, so leaf
        // indexes are dense and in commit order; SQLite's single writer gives the same.
        let head = self
            .fetch_write(sqlx::query(
                "UPDATE audit_tree SET size = size WHERE id = 1 RETURNING size, peaks",
            ))
            .await?
            .ok_or(StoreError::Corrupt("audit_tree"))?;
        let size =
            u64::try_from(int(&head, "size")?).map_err(|_| StoreError::Corrupt("audit_tree"))?;
        let mut frontier = Frontier::from_parts(size, split_hashes(&blob(&head, "peaks")?)?)
            .map_err(|_| StoreError::Corrupt("audit_tree"))?;
        let pending = std::mem::take(&mut self.pending);
        let mut scratch = Vec::with_capacity(512);
        let mut nodes: Vec<(i64, i64, Vec<u8>)> = Vec::new();
        for chunk in pending.chunks(ENTRIES_PER_INSERT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(values_sql(
                self.backend,
                "INSERT INTO audit_entries (seq, at, actor_kind, actor_id, action, site_id, \
                 bank_id, compartment_id, parcel_id, outcome, reason, sealed_subject, sealed, \
                 evidence, leaf_hash) VALUES ",
                15,
                chunk.len(),
            )));
            for e in chunk {
                let index = frontier.size();
                let entry = entry_of(index, e);
                let evidence = entry.evidence_bytes();
                // Checked by append_audit already; an entry that could not be read back is
                // never written.
                let leaf = entry
                    .borrowed(&evidence)
                    .leaf_hash(&mut scratch)
                    .map_err(|err| StoreError::Refused(format!("audit entry: {err}")))?;
                for (level, idx, hash) in frontier.push(leaf) {
                    if level > 0 {
                        let idx =
                            i64::try_from(idx).map_err(|_| StoreError::Corrupt("audit node"))?;
                        nodes.push((i64::from(level), idx, hash.to_vec()));
                    }
                }
                q = q
                    .bind(i64::try_from(index).map_err(|_| StoreError::Corrupt("audit size"))?)
                    .bind(e.at.as_millis())
                    .bind(e.actor.kind.as_str())
                    .bind(e.actor.id.clone())
                    .bind(e.action.as_str())
                    .bind(e.target.site.as_ref().map(|v| v.as_str().to_owned()))
                    .bind(e.target.bank.as_ref().map(|v| v.as_str().to_owned()))
                    .bind(e.target.compartment.as_ref().map(|v| v.as_str().to_owned()))
                    .bind(e.target.parcel.as_ref().map(|v| v.as_str().to_owned()))
                    .bind(e.outcome.as_str())
                    .bind(e.reason.clone())
                    .bind(e.personal.as_ref().map(|p| p.subject.as_str().to_owned()))
                    .bind(e.personal.as_ref().map(|p| p.ciphertext.clone()))
                    .bind(evidence)
                    .bind(leaf.to_vec());
            }
            self.exec(q).await?;
        }
        for chunk in nodes.chunks(NODES_PER_INSERT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(values_sql(
                self.backend,
                "INSERT INTO audit_nodes (level, idx, hash) VALUES ",
                3,
                chunk.len(),
            )));
            for (level, idx, hash) in chunk {
                q = q.bind(*level).bind(*idx).bind(hash.clone());
            }
            self.exec(q).await?;
        }
        let peaks: Vec<u8> = frontier.peaks().concat();
        self.exec(
            sqlx::query("UPDATE audit_tree SET size = $1, peaks = $2 WHERE id = 1")
                .bind(
                    i64::try_from(frontier.size())
                        .map_err(|_| StoreError::Corrupt("audit size"))?,
                )
                .bind(peaks),
        )
        .await?;
        Ok(())
    }

    /// The tree head: size and frontier, as stored.
    pub async fn tree_head(&mut self) -> R<Frontier> {
        let head = self
            .one(sqlx::query("SELECT size, peaks FROM audit_tree WHERE id = 1"))
            .await?
            .ok_or(StoreError::Corrupt("audit_tree"))?;
        let size =
            u64::try_from(int(&head, "size")?).map_err(|_| StoreError::Corrupt("audit_tree"))?;
        Frontier::from_parts(size, split_hashes(&blob(&head, "peaks")?)?)
            .map_err(|_| StoreError::Corrupt("audit_tree"))
    }

    /// Stored entries `from..from + limit` with their evidence and leaf hashes, in order.
    pub async fn audit_leaves(&mut self, from: u64, limit: u32) -> R<Vec<StoredEntry>> {
        self.audit_rows(from, limit)
            .await?
            .iter()
            .map(|r| {
                Ok(StoredEntry {
                    row: audit_row(r)?,
                    evidence: split_hashes(&blob(r, "evidence")?)?,
                    leaf_hash: blob(r, "leaf_hash")?,
                })
            })
            .collect()
    }

    /// Starts a read-only transaction whose reads all see one snapshot (the verifier's scan).
    pub(crate) async fn begin_snapshot(&mut self) -> R<()> {
        let sql = match self.backend {
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            Backend::Sqlite => "BEGIN",
        };
        sqlx::raw_sql(sql).execute(self.conn()).await?;
        Ok(())
    }

    /// Ends the snapshot begun by [`Tx::begin_snapshot`]; the connection goes back clean.
    pub(crate) async fn end_snapshot(&mut self) -> R<()> {
        sqlx::raw_sql("ROLLBACK").execute(self.conn()).await?;
        Ok(())
    }

    /// Stored entries `from..from + limit` as rows of `AUDIT_COLS, evidence, leaf_hash`, in order:
    /// the verifier's scan reads them with [`audit_row_ref`], [`Tx::audit_leaves`] parses them.
    pub(crate) async fn audit_rows(&mut self, from: u64, limit: u32) -> R<Vec<AnyRow>> {
        self.all(
            sqlx::query(sql!(
                "SELECT ",
                AUDIT_COLS,
                ", evidence, leaf_hash FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2"
            ))
            .bind(i64::try_from(from).map_err(|_| StoreError::Corrupt("seq"))?)
            .bind(i64::from(limit)),
        )
        .await
    }

    /// Stored subtree roots of `level` with index in `from..from + limit`, in order.
    pub async fn audit_nodes(
        &mut self,
        level: u32,
        from: u64,
        limit: u32,
    ) -> R<Vec<(u64, Vec<u8>)>> {
        let rows = self
            .all(
                sqlx::query("SELECT idx, hash FROM audit_nodes WHERE level = $1 AND idx >= $2 ORDER BY idx LIMIT $3")
                    .bind(i64::from(level))
                    .bind(i64::try_from(from).map_err(|_| StoreError::Corrupt("idx"))?)
                    .bind(i64::from(limit)),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    u64::try_from(int(r, "idx")?).map_err(|_| StoreError::Corrupt("idx"))?,
                    blob(r, "hash")?,
                ))
            })
            .collect()
    }

    /// The stored hash of tree node `(level, idx)`: a leaf hash for level 0, a subtree root
    /// above.
    pub async fn audit_node(&mut self, level: u32, idx: u64) -> R<Option<Vec<u8>>> {
        let idx = i64::try_from(idx).map_err(|_| StoreError::Corrupt("idx"))?;
        let row = if level == 0 {
            self.one(
                sqlx::query("SELECT leaf_hash AS hash FROM audit_entries WHERE seq = $1").bind(idx),
            )
            .await?
        } else {
            self.one(
                sqlx::query("SELECT hash FROM audit_nodes WHERE level = $1 AND idx = $2")
                    .bind(i64::from(level))
                    .bind(idx),
            )
            .await?
        };
        row.map(|r| blob(&r, "hash")).transpose()
    }

    /// Stored entries that match `filter`, with `seq` in `from..before`, oldest first, at most
    /// `limit`.
    pub async fn audit_select(
        &mut self,
        filter: &AuditFilter,
        from: u64,
        before: u64,
        limit: u32,
    ) -> R<Vec<StoredEntry>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    AUDIT_COLS,
                    ", evidence, leaf_hash FROM audit_entries WHERE seq >= $1 AND seq < $2 \
                     AND ($3 IS NULL OR parcel_id = $3) AND ($4 IS NULL OR compartment_id = $4) \
                     AND ($5 IS NULL OR actor_id = $5 OR sealed_subject = $5) AND ($6 IS NULL OR at >= $6) AND ($7 IS NULL OR at < $7) \
                     AND ($9 IS NULL OR site_id = $9) ORDER BY seq LIMIT $8"
                ))
                .bind(i64::try_from(from).map_err(|_| StoreError::Corrupt("seq"))?)
                .bind(i64::try_from(before).map_err(|_| StoreError::Corrupt("seq"))?)
                .bind(filter.parcel.as_ref().map(|v| v.as_str().to_owned()))
                .bind(filter.compartment.as_ref().map(|v| v.as_str().to_owned()))
                .bind(filter.actor.clone())
                .bind(filter.since.map(Timestamp::as_millis))
                .bind(filter.until.map(Timestamp::as_millis))
                .bind(i64::from(limit))
                .bind(filter.site.as_ref().map(|v| v.as_str().to_owned())),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEntry {
                    row: audit_row(r)?,
                    evidence: split_hashes(&blob(r, "evidence")?)?,
                    leaf_hash: blob(r, "leaf_hash")?,
                })
            })
            .collect()
    }

    /// Stores a signed checkpoint; `false` when one of that size exists already (another server
    /// instance signed it first).
    pub async fn insert_checkpoint(
        &mut self,
        size: u64,
        root: &[u8],
        note: &str,
        now: Timestamp,
    ) -> R<bool> {
        let result = self
            .exec(
                sqlx::query("INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(i64::try_from(size).map_err(|_| StoreError::Corrupt("size"))?)
                    .bind(root.to_vec())
                    .bind(note.to_owned())
                    .bind(now.as_millis()),
            )
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The latest stored checkpoint: size and signed note.
    pub async fn latest_checkpoint(&mut self) -> R<Option<(u64, String)>> {
        let row = self
            .one(sqlx::query("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"))
            .await?;
        row.map(|r| {
            Ok((
                u64::try_from(int(&r, "size")?).map_err(|_| StoreError::Corrupt("size"))?,
                text(&r, "note")?,
            ))
        })
        .transpose()
    }

    /// A parcel's audit entries, oldest first.
    pub async fn audit_for_parcel(&mut self, parcel: &ParcelId) -> R<Vec<AuditRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    AUDIT_COLS,
                    " FROM audit_entries WHERE parcel_id = $1 ORDER BY seq"
                ))
                .bind(parcel.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(audit_row).collect()
    }

    /// The entries about `subject`, oldest first, at most `limit`: those holding words about
    /// them (sealed under their key), and those about the parcels that are still theirs. Both
    /// are found through indexes (the sealed subject's, the parcels' recipient's and the
    /// entries' parcel's); the log has no index by actor.
    pub async fn audit_about(&mut self, subject: &PersonId, limit: u32) -> R<Vec<AuditRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    AUDIT_COLS,
                    " FROM audit_entries WHERE seq IN (\
                     SELECT seq FROM audit_entries WHERE sealed_subject = $1 \
                     UNION SELECT e.seq FROM audit_entries e JOIN parcels p ON p.id = e.parcel_id \
                     WHERE p.recipient_id = $1) ORDER BY seq LIMIT $2"
                ))
                .bind(subject.as_str().to_owned())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(audit_row).collect()
    }

    /// The newest `limit` entries of a site, newest first.
    pub async fn audit_for_site(&mut self, site: &SiteId, limit: u32) -> R<Vec<AuditRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    AUDIT_COLS,
                    " FROM audit_entries WHERE site_id = $1 ORDER BY seq DESC LIMIT $2"
                ))
                .bind(site.as_str().to_owned())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(audit_row).collect()
    }

    /// Entries with `seq >= from`, oldest first, at most `limit`.
    pub async fn audit_from(&mut self, from: u64, limit: u32) -> R<Vec<AuditRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    AUDIT_COLS,
                    " FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2"
                ))
                .bind(i64::try_from(from).map_err(|_| StoreError::Corrupt("seq"))?)
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(audit_row).collect()
    }
}
