//! Subjects' keys, which seal personal data and are destroyed on erasure.

use custody_core::{PersonId, Timestamp};

use sqlx::Row as _;

use super::{R, Tx, blob, int, parse, text};
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

    /// Up to `limit` live subject keys (by subject, after `after`) that `kek` did not wrap: a
    /// rotation's next batch.
    pub async fn subject_keys_not_under(
        &mut self,
        kek: &str,
        after: &str,
        limit: i64,
    ) -> R<Vec<(PersonId, WrappedKeyRow)>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT subject, kek, wrapped FROM subject_keys \
                     WHERE erased_at IS NULL AND kek <> $1 AND subject > $2 \
                     ORDER BY subject LIMIT $3",
                )
                .bind(kek.to_owned())
                .bind(after.to_owned())
                .bind(limit),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse(r, "subject", |s| PersonId::parse(s).ok())?,
                    WrappedKeyRow { kek: text(r, "kek")?, wrapped: blob(r, "wrapped")? },
                ))
            })
            .collect()
    }

    /// Replaces a subject's wrapped key with `new`, if it is still `old` (not erased, not
    /// re-wrapped meanwhile). `false` otherwise.
    pub async fn rewrap_subject_key(
        &mut self,
        subject: &PersonId,
        old: &WrappedKeyRow,
        new: &WrappedKeyRow,
    ) -> R<bool> {
        self.exec(
            sqlx::query(
                "UPDATE subject_keys SET kek = $1, wrapped = $2 \
                 WHERE subject = $3 AND kek = $4 AND wrapped = $5 AND erased_at IS NULL",
            )
            .bind(new.kek.clone())
            .bind(new.wrapped.clone())
            .bind(subject.as_str().to_owned())
            .bind(old.kek.clone())
            .bind(old.wrapped.clone()),
        )
        .await
        .map(|n| n == 1)
    }

    /// How many rows still hold personal data in clear, stored by an earlier version: people,
    /// consents with a phone number, badges, parcels, people's words on alerts.
    pub async fn count_in_clear(&mut self) -> R<i64> {
        let row = self
            .one(sqlx::query(
                "SELECT (SELECT COUNT(*) FROM people WHERE clear_email IS NOT NULL) \
                 + (SELECT COUNT(*) FROM alert_subscriptions WHERE clear_phone IS NOT NULL) \
                 + (SELECT COUNT(*) FROM badges WHERE clear_hint IS NOT NULL) \
                 + (SELECT COUNT(*) FROM parcels WHERE clear_tracking_ref IS NOT NULL) \
                 + (SELECT COUNT(*) FROM alert_events WHERE note IS NOT NULL \
                    AND what IN ('note', 'acknowledged', 'resolved') \
                    AND actor LIKE 'per\\_%' ESCAPE '\\') AS n",
            ))
            .await?;
        row.map(|r| int(&r, "n")).transpose().map(|n| n.unwrap_or(0))
    }

    /// Takes the installation's current-KEK row until the unit ends and answers the KEK it
    /// names; when there is none yet, `mine` becomes current. Every unit that wraps a new
    /// subject key calls this first, and wraps only if the answer is the KEK it holds.
    pub async fn claim_current_kek(&mut self, mine: &str) -> R<String> {
        let row = self
            .one(
                sqlx::query(
                    "INSERT INTO current_kek (id, kek) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET kek = current_kek.kek RETURNING kek",
                )
                .bind(mine.to_owned()),
            )
            .await?;
        row.map(|r| text(&r, "kek")).transpose()?.ok_or(crate::StoreError::Corrupt("current_kek"))
    }

    /// Names `kek` the installation's current KEK (a rotation), after any unit still wrapping
    /// under the one before has ended.
    pub async fn set_current_kek(&mut self, kek: &str) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO current_kek (id, kek) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET kek = excluded.kek",
            )
            .bind(kek.to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// How many live subject keys each key-encryption key wraps, by KEK id.
    pub async fn subject_keys_by_kek(&mut self) -> R<Vec<(String, i64)>> {
        let rows = self
            .all(sqlx::query(
                "SELECT kek, COUNT(*) AS n FROM subject_keys WHERE erased_at IS NULL \
                 GROUP BY kek ORDER BY kek",
            ))
            .await?;
        rows.iter().map(|r| Ok((text(r, "kek")?, int(r, "n")?))).collect()
    }
}
