//! Requests a second person must approve.

use custody_core::approval::{ApprovalKind, ApprovalOutcome};
use custody_core::{ApprovalId, OrgId, PersonId, Timestamp};
use sqlx::any::AnyRow;

use crate::StoreError;
use crate::rows::ApprovalRow;

use super::{R, Tx, blob, opt_parse, opt_time, parse, text, time};

pub(crate) const APPROVAL_COLS: &str = "id, org_id, kind, subject_id, params, digest, requested_by, \
     requested_at, expires_at, decided_by, decided_at, outcome";

pub(crate) fn approval_row(r: &AnyRow) -> R<ApprovalRow> {
    let decision = match (
        opt_parse(r, "decided_by", |s| PersonId::parse(s).ok())?,
        opt_time(r, "decided_at")?,
        opt_parse(r, "outcome", ApprovalOutcome::parse)?,
    ) {
        (Some(by), Some(at), Some(outcome)) => Some((by, at, outcome)),
        (None, None, None) => None,
        _ => return Err(StoreError::Corrupt("approvals.decision")),
    };
    Ok(ApprovalRow {
        id: parse(r, "id", |s| ApprovalId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        kind: parse(r, "kind", ApprovalKind::parse)?,
        subject: text(r, "subject_id")?,
        params: text(r, "params")?,
        digest: blob(r, "digest")?,
        requested_by: parse(r, "requested_by", |s| PersonId::parse(s).ok())?,
        requested_at: time(r, "requested_at")?,
        expires_at: time(r, "expires_at")?,
        decision,
    })
}

impl Tx {
    /// Stores a new request for approval.
    pub async fn insert_approval(&mut self, a: &ApprovalRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO approvals (id, org_id, kind, subject_id, params, digest, \
                 requested_by, requested_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(a.id.as_str().to_owned())
            .bind(a.org.as_str().to_owned())
            .bind(a.kind.as_str())
            .bind(a.subject.clone())
            .bind(a.params.clone())
            .bind(a.digest.clone())
            .bind(a.requested_by.as_str().to_owned())
            .bind(a.requested_at.as_millis())
            .bind(a.expires_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A request for approval.
    pub async fn approval(&mut self, id: &ApprovalId) -> R<Option<ApprovalRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", APPROVAL_COLS, " FROM approvals WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(approval_row).transpose()
    }

    /// An organisation's requests still waiting at `now`, oldest first.
    pub async fn pending_approvals(&mut self, org: &OrgId, now: Timestamp) -> R<Vec<ApprovalRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    APPROVAL_COLS,
                    " FROM approvals WHERE org_id = $1 AND decided_at IS NULL AND expires_at > $2 \
                     ORDER BY requested_at, id"
                ))
                .bind(org.as_str().to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        rows.iter().map(approval_row).collect()
    }

    /// Answers request `id` as `by`, if it still waits at `now` and `by` did not ask for it:
    /// `false` otherwise, so of two answers exactly one counts.
    pub async fn decide_approval(
        &mut self,
        id: &ApprovalId,
        by: &PersonId,
        now: Timestamp,
        outcome: ApprovalOutcome,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE approvals SET decided_by = $2, decided_at = $3, outcome = $4 \
                     WHERE id = $1 AND decided_at IS NULL AND expires_at > $3 \
                     AND (requested_by <> $2 OR $4 = 'rejected')",
                )
                .bind(id.as_str().to_owned())
                .bind(by.as_str().to_owned())
                .bind(now.as_millis())
                .bind(outcome.as_str()),
            )
            .await?;
        Ok(n == 1)
    }
}
