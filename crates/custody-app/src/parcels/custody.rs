//! A parcel's chain of custody with its proofs: each event proved against the current
//! checkpoint, for anyone who may see the parcel to check again on their own.

use custody_core::ParcelId;
use futures_util::FutureExt as _;

use super::Parcel;
use crate::audit::AuditRecord;
use crate::personal::Statement;

/// One event of a parcel's chain of custody, with its proof and whether the proof holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenEvent {
    /// The entry as stored.
    pub row: AuditRecord,
    /// The entry with its inclusion proof against the checkpoint.
    pub exported: custody_audit::export::ExportedEntry,
    /// Whether the proof leads to the checkpoint's root and the entry says what its row says
    /// (checked by the server; anyone can check again with the checkpoint key).
    pub verified: bool,
    /// The words given for it, as the caller may see them.
    pub statement: Statement,
}

impl crate::App {
    /// A parcel's chain of custody with proofs: every event, proved against the current
    /// checkpoint, and whether each proof holds. For those who may see the parcel.
    pub async fn parcel_custody(
        &self,
        caller: &crate::Caller,
        parcel: &ParcelId,
    ) -> Result<(Parcel, String, Vec<ProvenEvent>), crate::AppError> {
        let (row, _) = self.parcel_history(caller, parcel).await?;
        let (checkpoint, note) = self.current_checkpoint().await?;
        let filter = custody_core::audit::AuditFilter {
            parcel: Some(row.id.clone()),
            ..custody_core::audit::AuditFilter::default()
        };
        let size = checkpoint.size;
        let stored = self
            .store()
            .read(move |tx| async move { tx.audit_select(&filter, 0, size, 10_000).await }.boxed())
            .await?;
        let stored = super::entries_seen_by(caller, stored, |s| s.row.event.action);
        let (mut events, mut rows) = (Vec::with_capacity(stored.len()), Vec::new());
        for s in stored {
            // The entry as its row says it is: if the row was changed after it was appended,
            // its leaf hash is not the stored one and the proof fails against the checkpoint.
            let entry = s.entry();
            let proof = self.inclusion_proof(entry.index, size).await?;
            let leaf = entry.leaf_hash();
            let proved = custody_audit::merkle::verify_inclusion(
                &leaf,
                entry.index,
                size,
                &proof,
                &checkpoint.root,
            )
            .is_ok();
            events.push(ProvenEvent {
                exported: custody_audit::export::ExportedEntry::new(&entry, &proof),
                verified: proved,
                row: s.row.clone().into(),
                statement: Statement::None,
            });
            rows.push(s.row);
        }
        let statements = self.statements(caller, &row.org, &row.site, &rows).await?;
        for (event, statement) in events.iter_mut().zip(statements) {
            event.statement = statement;
        }
        Ok((row, note, events))
    }
}
