//! Subjects' keys, which seal personal data and are destroyed on erasure.

use custody_core::{PersonId, Timestamp};

use sqlx::Row as _;

use super::{R, Tx, blob, text};
use crate::WrappedKeyRow;

impl Tx {
    /// A subject's wrapped key: `None` when they have none yet, `Some(None)` once erased.
    pub async fn subject_key(&mut self, subject: &PersonId) -> R<Option<Option<WrappedKeyRow>>> {
        let row = self
            .one(
                sqlx::query("SELECT kek, wrapped, erased_at FROM subject_keys WHERE subject = $1")
                    .bind(subject.as_str().to_owned()),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        if row.try_get::<Option<i64>, _>("erased_at")?.is_some() {
            return Ok(Some(None));
        }
        Ok(Some(Some(WrappedKeyRow { kek: text(&row, "kek")?, wrapped: blob(&row, "wrapped")? })))
    }

    /// Stores a subject's first key, unless one (or its erasure) is there already: two units
    /// racing to create it keep the first, and both then read that one back.
    pub async fn insert_subject_key(
        &mut self,
        subject: &PersonId,
        key: &WrappedKeyRow,
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO subject_keys (subject, kek, wrapped, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (subject) DO NOTHING",
            )
            .bind(subject.as_str().to_owned())
            .bind(key.kek.clone())
            .bind(key.wrapped.clone())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Destroys a subject's key for good (and records the erasure if they had none, so nothing
    /// about them is sealed afterwards). `false` if it was erased already.
    pub async fn erase_subject_key(&mut self, subject: &PersonId, now: Timestamp) -> R<bool> {
        self.exec(
            sqlx::query(
                "INSERT INTO subject_keys (subject, wrapped, created_at, erased_at) \
                 VALUES ($1, NULL, $2, $2) ON CONFLICT (subject) DO UPDATE \
                 SET wrapped = NULL, erased_at = $2 WHERE subject_keys.erased_at IS NULL",
            )
            .bind(subject.as_str().to_owned())
            .bind(now.as_millis()),
        )
        .await
        .map(|n| n > 0)
    }
}
