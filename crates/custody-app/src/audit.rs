//! Verifying the audit log as stored: every entry, every leaf hash, every stored subtree root
//! and the tree head, recomputed from the entries' fields.

use crate::conflicts::ConflictCode;
use custody_audit::checkpoint::Checkpoint;
use custody_audit::entry::EntryRef;
use custody_audit::merkle::{Frontier, Hash};
use custody_store::scan::{NodeCheck, ScanBatch};
use custody_store::{MalformedAuditRow, RowRef, Store, StoreError};
use futures_util::FutureExt as _;

use custody_core::audit::AuditEvent;
use custody_store::AuditRow;

view! {
    /// A stored audit entry: its position in the log and the event.
    AuditRecord from AuditRow {
        /// Position in the log.
        seq: i64,
        /// The entry.
        event: AuditEvent,
    }
}

/// Entries read per batch while verifying.
const BATCH: u32 = 50_000;

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {index}: {problem}")]
pub struct Tampering {
    /// The first index at which the log is not what it claims.
    pub index: u64,
    /// What is wrong there.
    pub problem: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything checked out: the tree of `size` entries has this root.
    Intact {
        /// Entries verified.
        size: u64,
        /// Root of their tree.
        root: Hash,
    },
    /// The log has been tampered with (or damaged).
    Tampered(Tampering),
}

fn fail(index: u64, problem: impl Into<String>) -> Verdict {
    Verdict::Tampered(Tampering { index, problem: problem.into() })
}

/// Checks one stored row against its position and re-encodes it; returns its leaf hash. The
/// usual case costs an encoding into `scratch`, a hash and a comparison, and allocates nothing.
fn check_entry(
    expected: u64,
    stored: Result<RowRef<'_>, MalformedAuditRow>,
    scratch: &mut Vec<u8>,
) -> Result<Hash, Verdict> {
    let stored = match stored {
        Ok(row) => row,
        Err(m) => {
            let at = m.seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(expected).min(expected);
            return Err(fail(at, format!("stored row is malformed (column {})", m.column)));
        }
    };
    let seq = u64::try_from(stored.seq).map_err(|_| fail(expected, "negative position"))?;
    if seq != expected {
        return Err(fail(expected, format!("entry missing (the next stored entry is {seq})")));
    }
    let sealed = match stored.sealed {
        (Some(subject), Some(ciphertext)) => Some((subject, ciphertext)),
        (None, None) => None,
        _ => return Err(fail(seq, "sealed part is half missing (subject or ciphertext)")),
    };
    let entry = EntryRef {
        index: seq,
        at_ms: stored.at,
        actor_kind: stored.actor_kind,
        actor_id: stored.actor_id,
        action: stored.action,
        target: stored.target,
        outcome: stored.outcome,
        reason: stored.reason,
        sealed,
        evidence: stored.evidence,
    };
    let leaf = entry
        .leaf_hash(scratch)
        .map_err(|e| fail(seq, format!("stored fields are not an entry: {e}")))?;
    if leaf.as_slice() != stored.leaf_hash {
        return Err(fail(
            seq,
            "fields do not hash to the stored leaf hash at this position \
             (the row was edited, moved or copied)",
        ));
    }
    Ok(leaf)
}

/// Recomputes the whole log from the store and compares it with what the store claims and,
/// when given, with a checkpoint trusted from elsewhere (one shipped off the machine): the log
/// must contain that checkpoint's tree. This is what catches a rollback to an older copy or a
/// consistent rewrite, which no check inside the database alone can.
/// The head is read from one snapshot and only the entries it covers are checked, so a server
/// that keeps appending meanwhile is verified as it stood when the check began.
/// `progress` is told how many entries are verified, out of how many the head claims.
pub async fn verify_store(
    store: &Store,
    trusted: Option<&Checkpoint>,
    progress: impl FnMut(u64, u64),
) -> Result<Verdict, StoreError> {
    verify_store_in_batches(store, trusted, BATCH, progress).await
}

/// [`verify_store`] reading `batch` entries at a time (tests use small batches).
#[doc(hidden)]
pub async fn verify_store_in_batches(
    store: &Store,
    trusted: Option<&Checkpoint>,
    batch: u32,
    mut progress: impl FnMut(u64, u64),
) -> Result<Verdict, StoreError> {
    // Three things run at once: the scan checks rows where they are read (two blocking threads
    // on SQLite),
    // this task builds the tree from their leaf hashes, and the subtree roots that completed
    // in one batch are compared with the stored ones while the next batch goes into the tree.
    let mut scratch = Vec::with_capacity(512);
    let mut scan = store
        .scan_audit_log(batch, move |expected, row| check_entry(expected, row, &mut scratch))
        .await?;
    let head = scan.head.clone();
    let mut frontier = Frontier::new();
    let mut trusted_seen = trusted.is_none_or(|c| c.size == 0);
    let mut nodes_in_flight: Option<NodesInFlight> = None;
    let mut check = NodeCheck::default();
    while let Some(ScanBatch { first, len, checked: batch }) = scan.next_batch().await? {
        let read = batch.len() as u64;
        // Subtree roots this batch completes, in the order the tree completed them.
        let mut computed: Vec<(u32, u64, Hash)> = Vec::with_capacity(batch.len());
        let mut bad_entry = None;
        for checked in batch {
            let leaf = match checked {
                Ok(leaf) => leaf,
                Err(verdict) => {
                    bad_entry = Some(verdict);
                    break;
                }
            };
            frontier.push_with(leaf, |level, idx, hash| {
                if level > 0 {
                    computed.push((level, idx, hash));
                }
            });
            if let Some(c) = trusted.filter(|c| c.size == frontier.size()) {
                if frontier.root() != c.root {
                    bad_entry = Some(fail(
                        c.size - 1,
                        format!(
                            "the first {} entries differ from the trusted checkpoint of that size",
                            c.size
                        ),
                    ));
                    break;
                }
                trusted_seen = true;
            }
        }
        // The previous batch's roots come first: their problem is at a lower index.
        if let Some(in_flight) = nodes_in_flight.take() {
            match in_flight.finish().await? {
                Ok(c) => check = c,
                Err(verdict) => return Ok(verdict),
            }
        }
        if let Some(verdict) = bad_entry {
            return Ok(verdict);
        }
        if read < len {
            let missing = first + read;
            return Ok(if first + len == head.size() {
                fail(
                    missing,
                    format!(
                        "the tree head claims {} entries but the log holds {missing} (truncated)",
                        head.size()
                    ),
                )
            } else {
                fail(missing, "entry missing")
            });
        }
        nodes_in_flight = Some(NodesInFlight::start(store, std::mem::take(&mut check), computed));
        progress(frontier.size(), head.size());
    }
    if let Some(in_flight) = nodes_in_flight.take()
        && let Err(verdict) = in_flight.finish().await?
    {
        return Ok(verdict);
    }
    if let Some(c) = trusted.filter(|_| !trusted_seen) {
        return Ok(fail(
            frontier.size(),
            format!(
                "the trusted checkpoint covers {} entries but the log holds only {} (truncated or rolled back)",
                c.size,
                frontier.size()
            ),
        ));
    }
    if let Some(beyond) = scan.beyond_head {
        let what = match beyond {
            Err(Verdict::Tampered(t)) => t.problem,
            _ => "an entry".into(),
        };
        return Ok(fail(
            head.size(),
            format!(
                "stored past the {} entries the tree head claims (added outside the tree): {what}",
                head.size()
            ),
        ));
    }
    if frontier.root() != head.root() {
        return Ok(fail(frontier.size(), "the tree head's root does not match the entries"));
    }
    Ok(Verdict::Intact { size: frontier.size(), root: frontier.root() })
}

/// One batch's subtree roots being compared with the stored ones.
struct NodesInFlight(tokio::task::JoinHandle<Result<(NodeCheck, Option<NodeKey>), StoreError>>);

/// A node of the tree: level and index.
type NodeKey = (u32, u64);

impl NodesInFlight {
    fn start(store: &Store, check: NodeCheck, computed: Vec<(u32, u64, Hash)>) -> Self {
        let store = store.clone();
        Self(tokio::spawn(async move { store.check_audit_nodes(check, computed).await }))
    }

    /// The check to carry on with, or what is wrong.
    async fn finish(self) -> Result<Result<NodeCheck, Verdict>, StoreError> {
        let (check, wrong) = self.0.await.map_err(|e| StoreError::Database(e.to_string()))??;
        Ok(match wrong {
            None => Ok(check),
            Some((level, idx)) => Err(fail(
                idx << level,
                format!("stored subtree root at level {level}, index {idx} is missing or wrong"),
            )),
        })
    }
}

/// A freshly signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What it says.
    pub checkpoint: Checkpoint,
    /// The signed note.
    pub note: String,
}

impl crate::App {
    /// Signs a checkpoint of the log if it has grown since the last one; `None` when there is
    /// nothing new. The checkpointer calls it at least once a second.
    pub async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, crate::AppError> {
        let (head, latest) = self
            .store()
            .read(|tx| {
                async move {
                    Ok::<_, StoreError>((tx.tree_head().await?, tx.latest_checkpoint().await?))
                }
                .boxed()
            })
            .await?;
        if head.size() == 0 || latest.as_ref().is_some_and(|(size, _)| *size >= head.size()) {
            return Ok(None);
        }
        let signer = &self.keys().checkpoint;
        let checkpoint = Checkpoint {
            origin: signer.name().to_owned(),
            size: head.size(),
            root: head.root(),
            extensions: Vec::new(),
        };
        let note = signer
            .sign_checkpoint(&checkpoint)
            .map_err(|e| crate::AppError::Invalid(e.to_string()))?;
        let (size, root, stored, now) =
            (checkpoint.size, checkpoint.root, note.clone(), self.now());
        let fresh = self
            .store()
            .write(move |tx| {
                async move { tx.insert_checkpoint(size, &root, &stored, now).await }.boxed()
            })
            .await?;
        Ok(fresh.then_some(SignedCheckpoint { checkpoint, note }))
    }

    /// The verifier key of this installation's checkpoints.
    pub fn checkpoint_verifier_key(&self) -> String {
        self.keys().checkpoint.verifier_key()
    }

    /// The verifier of this installation's checkpoints, to open its own notes with.
    pub fn checkpoint_verifier(
        &self,
    ) -> Result<custody_audit::checkpoint::NoteVerifier, crate::AppError> {
        custody_audit::checkpoint::NoteVerifier::parse(&self.checkpoint_verifier_key())
            .map_err(|e| crate::AppError::Invalid(e.to_string()))
    }
}

/// What an export held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries exported.
    pub entries: usize,
    /// Size of the checkpoint they are proved against.
    pub checkpoint_size: u64,
}

impl crate::App {
    /// Exports the entries that match `filter`, each with its inclusion proof against the
    /// latest checkpoint, which comes first. `write` receives the lines in order.
    pub async fn export_audit(
        &self,
        filter: &custody_core::audit::AuditFilter,
        mut write: impl FnMut(&custody_audit::export::Line) -> std::io::Result<()>,
    ) -> Result<ExportSummary, crate::AppError> {
        use custody_audit::export::Line;
        // Prove against a checkpoint that covers everything written so far.
        let (checkpoint, note) = self.current_checkpoint().await?;
        write(&Line::Checkpoint { note }).map_err(export_io)?;
        let size = checkpoint.size;
        let mut entries = 0usize;
        self.each_proven(filter, size, |e| {
            entries += 1;
            write(&Line::Entry(Box::new(e))).map_err(export_io)
        })
        .await?;
        Ok(ExportSummary { entries, checkpoint_size: size })
    }

    /// Each entry that matches `filter` among the first `size`, in log order, with its
    /// inclusion proof against the checkpoint of that size.
    pub(crate) async fn each_proven(
        &self,
        filter: &custody_core::audit::AuditFilter,
        size: u64,
        mut each: impl FnMut(custody_audit::export::ExportedEntry) -> Result<(), crate::AppError>,
    ) -> Result<(), crate::AppError> {
        let mut from = 0u64;
        loop {
            let f = filter.clone();
            let batch = self
                .store()
                .read(move |tx| async move { tx.audit_select(&f, from, size, 1000).await }.boxed())
                .await?;
            let Some(last) = batch.last() else { break };
            from = u64::try_from(last.row.seq).unwrap_or(size) + 1;
            for stored in batch {
                let entry = stored.entry();
                let proof = self.inclusion_proof(entry.index, size).await?;
                each(custody_audit::export::ExportedEntry::new(&entry, &proof))?;
            }
        }
        Ok(())
    }
}

/// A failure to write an export, as the caller hears it.
#[allow(clippy::needless_pass_by_value, reason = "the shape `map_err` takes")]
pub(crate) fn export_io(e: std::io::Error) -> crate::AppError {
    crate::AppError::Invalid(format!("writing the export: {e}"))
}

impl crate::App {
    /// The newest checkpoint stored: the log's size it covers and its signed note.
    pub async fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, crate::AppError> {
        Ok(self.store().read(|tx| async move { tx.latest_checkpoint().await }.boxed()).await?)
    }

    /// The latest checkpoint, signed now if the log has grown since, so it covers every entry
    /// written so far. Returns the checkpoint and its signed note.
    pub async fn current_checkpoint(&self) -> Result<(Checkpoint, String), crate::AppError> {
        self.checkpoint().await?;
        let latest = self.latest_checkpoint().await?;
        let Some((_, note)) = latest else {
            return Err(crate::AppError::conflict(
                ConflictCode::EmptyLog,
                "the audit log is empty",
            ));
        };
        let verifier = self.checkpoint_verifier()?;
        let checkpoint = verifier
            .open_checkpoint(&note, verifier.name())
            .map_err(|e| crate::AppError::Invalid(e.to_string()))?;
        Ok((checkpoint, note))
    }

    /// The inclusion proof of entry `index` in the tree of the first `size` entries, from
    /// stored nodes.
    pub async fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, crate::AppError> {
        use custody_audit::merkle::{inclusion_nodes, inclusion_proof};
        let needed = inclusion_nodes(index, size).map_err(|_| crate::AppError::NotFound)?;
        let mut nodes = self.fetch_nodes(needed).await?;
        inclusion_proof(&mut nodes, index, size)
            .map_err(|_| crate::AppError::Invalid("inclusion proof".into()))
    }

    /// The consistency proof between the trees of the first `old` and `new` entries.
    pub async fn consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, crate::AppError> {
        use custody_audit::merkle::{consistency_nodes, consistency_proof};
        let needed = consistency_nodes(old, new)
            .map_err(|e| crate::AppError::Invalid(format!("sizes: {e}")))?;
        let mut nodes = self.fetch_nodes(needed).await?;
        consistency_proof(&mut nodes, old, new)
            .map_err(|_| crate::AppError::Invalid("consistency proof".into()))
    }

    async fn fetch_nodes(
        &self,
        needed: Vec<custody_audit::merkle::NodeId>,
    ) -> Result<custody_audit::merkle::NodeMap, crate::AppError> {
        Ok(self
            .store()
            .read(move |tx| {
                async move {
                    let mut map = custody_audit::merkle::NodeMap::default();
                    for (level, idx) in needed {
                        let hash = tx
                            .audit_node(level, idx)
                            .await?
                            .and_then(|h| Hash::try_from(h).ok())
                            .ok_or(StoreError::Corrupt("audit node"))?;
                        map.0.insert((level, idx), hash);
                    }
                    Ok::<_, StoreError>(map)
                }
                .boxed()
            })
            .await?)
    }
}

/// The newest checkpoint file in `dir` (names are zero-padded sizes, so they sort by size).
pub fn newest_checkpoint_file(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "checkpoint"))
        .collect();
    files.sort();
    files.pop()
}

impl crate::App {
    /// Checks the stored log against the largest checkpoint this server has signed: the newest
    /// one shipped to `shipped` (outside the database, so it survives a rollback of it) or the
    /// newest stored one. Returns what is wrong, if anything. A checkpoint that does not open
    /// under this server's key is itself a finding.
    pub async fn self_check(
        &self,
        shipped: Option<&std::path::Path>,
    ) -> Result<Option<String>, crate::AppError> {
        let verifier = self.checkpoint_verifier()?;
        let open = |what: &str, note: &str| {
            verifier.open_checkpoint(note, verifier.name()).map_err(|e| format!("{what}: {e}"))
        };
        let mut trusted: Option<Checkpoint> = None;
        if let Some(path) = shipped.and_then(newest_checkpoint_file) {
            let note = tokio::fs::read_to_string(&path).await.map_err(|e| {
                crate::AppError::Invalid(format!("reading {}: {e}", path.display()))
            })?;
            match open(&format!("shipped checkpoint {}", path.display()), &note) {
                Ok(c) => trusted = Some(c),
                Err(problem) => return Ok(Some(problem)),
            }
        }
        let stored = self.latest_checkpoint().await?;
        if let Some((_, note)) = stored {
            match open("stored checkpoint", &note) {
                Ok(c) if trusted.as_ref().is_none_or(|t| c.size > t.size) => trusted = Some(c),
                Ok(_) => {}
                Err(problem) => return Ok(Some(problem)),
            }
        }
        Ok(match verify_store(self.store(), trusted.as_ref(), |_, _| {}).await? {
            Verdict::Intact { .. } => None,
            Verdict::Tampered(t) => Some(t.to_string()),
        })
    }

    /// Records an audit-integrity failure in the log and the server's own log, and raises an
    /// `audit_integrity` alert at every site: the log is the whole installation's.
    pub async fn raise_integrity_alert(&self, problem: &str) -> Result<(), crate::AppError> {
        use custody_core::audit::{Actor, AuditAction, AuditEvent, Target};
        tracing::error!(problem, "audit log integrity check failed");
        let reason: String = problem.chars().take(500).collect();
        let event = AuditEvent::failure(
            self.now(),
            Actor::system(),
            AuditAction::AuditIntegrity,
            Target::default(),
        )
        .because(reason);
        self.store()
            .write(move |tx| {
                async move {
                    tx.append_audit(&event)?;
                    Ok::<_, StoreError>(())
                }
                .boxed()
            })
            .await?;
        // The log is the installation's, not one site's: every site's staff hear of it.
        let sites = self
            .store()
            .read(|tx| {
                async move {
                    let mut sites = Vec::new();
                    for org in tx.orgs().await? {
                        sites.extend(tx.sites(&org.id).await?.into_iter().map(|s| s.id));
                    }
                    Ok::<_, StoreError>(sites)
                }
                .boxed()
            })
            .await?;
        for site in sites {
            let place = crate::alerts::AlertAt { site, bank: None, compartment: None };
            self.raise_alert(custody_core::alert::AlertKind::AuditIntegrity, place).await?;
        }
        Ok(())
    }
}

impl crate::App {
    /// Exports one site's audit entries over the API, like [`crate::App::export_audit`], for
    /// someone who may see the site (auditors and staff in scope) with a fresh step-up and a
    /// reason. The export is itself an audit entry, its reason sealed to the person who gave
    /// it. Entries that belong to no site (sign-ins, the installation's own events) leave the
    /// server only through `custody audit export`, on the server itself.
    pub async fn export_site_audit(
        &self,
        caller: &crate::Caller,
        filter: &custody_core::audit::AuditFilter,
        reason: &str,
        write: impl FnMut(&custody_audit::export::Line) -> std::io::Result<()>,
    ) -> Result<ExportSummary, crate::AppError> {
        let Some(site) = filter.site.clone() else {
            return Err(crate::AppError::Invalid("name the site whose entries to export".into()));
        };
        self.export_on_record(caller, &site, reason, None).await?;
        self.export_audit(filter, write).await
    }

    /// Lets `caller` export entries of `site` if they may see it and stepped up, and records
    /// that they did (`audit.export`, with `what` as its reason and their `reason` sealed to
    /// them), before anything is written. A refusal is recorded too.
    pub(crate) async fn export_on_record(
        &self,
        caller: &crate::Caller,
        site: &custody_core::SiteId,
        reason: &str,
        what: Option<String>,
    ) -> Result<(), crate::AppError> {
        use custody_core::audit::{AuditAction, AuditEvent, Target};
        let reason = custody_core::text::Reason::parse(reason).map_err(crate::AppError::invalid)?;
        let site = site.clone();
        let site = self
            .store()
            .read(move |tx| async move { tx.site(&site).await }.boxed())
            .await?
            .ok_or(crate::AppError::NotFound)?;
        let target = Target { site: Some(site.id.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::AuditExport, &target, |p| {
            custody_core::policy::may_view_site(p, &site.org, &site.id)
                .and_then(|()| self.stepped_up(p))
        })
        .await?;
        let (app, now, actor) = (self.clone(), self.now(), caller.actor());
        let subject = caller.person().cloned();
        self.store()
            .write(move |tx| {
                async move {
                    let mut e = AuditEvent::success(now, actor, AuditAction::AuditExport, target)
                        .with_reason(what);
                    if let Some(subject) = subject {
                        e.personal = app.seal_personal(tx, &subject, reason.as_str()).await?;
                    }
                    tx.append_audit(&e)?;
                    Ok::<_, crate::AppError>(())
                }
                .boxed()
            })
            .await
    }
}
