//! Badges: registered, found by their keyed verifier, revoked.

use custody_core::{BadgeId, PersonId, SiteId, Timestamp};
use sqlx::any::AnyRow;

use crate::StoreError;
use crate::rows::{BadgeRow, NewBadge};

use super::{R, Tx, blob, int, opt_stored, opt_time, parse, time};

pub(crate) const BADGE_COLS: &str =
    "id, site_id, person_id, verifier, hint_sealed, clear_hint, created_at, revoked_at";

pub(crate) fn badge_row(r: &AnyRow) -> R<BadgeRow> {
    Ok(BadgeRow {
        id: parse(r, "id", |s| BadgeId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        person: parse(r, "person_id", |s| PersonId::parse(s).ok())?,
        verifier: blob(r, "verifier")?,
        hint: opt_stored(r, "hint_sealed", "clear_hint")?
            .ok_or(StoreError::Corrupt("badges.hint_sealed"))?,
        created_at: time(r, "created_at")?,
        revoked_at: opt_time(r, "revoked_at")?,
    })
}

impl Tx {
    /// Registers a badge. `Conflict` when the site has a badge with that number already (not
    /// revoked).
    pub async fn insert_badge(&mut self, b: &NewBadge) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO badges (id, site_id, person_id, verifier, hint_sealed, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(b.id.as_str().to_owned())
            .bind(b.site.as_str().to_owned())
            .bind(b.person.as_str().to_owned())
            .bind(b.verifier.clone())
            .bind(b.hint.clone())
            .bind(b.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// The badge `id`.
    pub async fn badge(&mut self, id: &BadgeId) -> R<Option<BadgeRow>> {
        const Q: &str = sql!("SELECT ", BADGE_COLS, " FROM badges WHERE id = $1");
        let row = self.one(sqlx::query(Q).bind(id.as_str().to_owned())).await?;
        row.as_ref().map(badge_row).transpose()
    }

    /// The site's badge (not revoked) whose number has keyed hash `verifier`; one index probe.
    pub async fn badge_by_verifier(
        &mut self,
        site: &SiteId,
        verifier: &[u8],
    ) -> R<Option<BadgeRow>> {
        const Q: &str = sql!(
            "SELECT ",
            BADGE_COLS,
            " FROM badges WHERE site_id = $1 AND verifier = $2 AND revoked_at IS NULL"
        );
        let row =
            self.one(sqlx::query(Q).bind(site.as_str().to_owned()).bind(verifier.to_vec())).await?;
        row.as_ref().map(badge_row).transpose()
    }

    /// The site's badges, revoked ones too, oldest first, at most `limit`.
    pub async fn badges_of_site(&mut self, site: &SiteId, limit: u32) -> R<Vec<BadgeRow>> {
        const Q: &str = sql!(
            "SELECT ",
            BADGE_COLS,
            " FROM badges WHERE site_id = $1 ORDER BY created_at, id LIMIT $2"
        );
        let rows =
            self.all(sqlx::query(Q).bind(site.as_str().to_owned()).bind(i64::from(limit))).await?;
        rows.iter().map(badge_row).collect()
    }

    /// A person's badges, revoked ones too, oldest first.
    pub async fn badges_of_person(&mut self, person: &PersonId) -> R<Vec<BadgeRow>> {
        const Q: &str = sql!(
            "SELECT ",
            BADGE_COLS,
            " FROM badges WHERE person_id = $1 ORDER BY created_at, id"
        );
        let rows = self.all(sqlx::query(Q).bind(person.as_str().to_owned())).await?;
        rows.iter().map(badge_row).collect()
    }

    /// How many badges of the site are not revoked.
    pub async fn count_active_badges(&mut self, site: &SiteId) -> R<u64> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM badges WHERE site_id = $1 AND revoked_at IS NULL",
                )
                .bind(site.as_str().to_owned()),
            )
            .await?;
        let n = row.map(|r| int(&r, "n")).transpose()?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The keyed hashes of the site's badges that are not revoked: what its agents are sent.
    pub async fn active_badge_verifiers(&mut self, site: &SiteId) -> R<Vec<Vec<u8>>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT verifier FROM badges WHERE site_id = $1 AND revoked_at IS NULL ORDER BY verifier",
                )
                .bind(site.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(|r| blob(r, "verifier")).collect()
    }

    /// Up to `limit` badges whose hint is still stored in clear (from before hints were
    /// sealed), by id.
    pub async fn badges_in_clear(&mut self, limit: i64) -> R<Vec<BadgeRow>> {
        const Q: &str = sql!(
            "SELECT ",
            BADGE_COLS,
            " FROM badges WHERE clear_hint IS NOT NULL ORDER BY id LIMIT $1"
        );
        let rows = self.all(sqlx::query(Q).bind(limit)).await?;
        rows.iter().map(badge_row).collect()
    }

    /// Replaces a badge's clear hint with its sealed form, if it is still in clear.
    pub async fn seal_badge_hint(&mut self, id: &BadgeId, sealed: &[u8]) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE badges SET hint_sealed = $2, clear_hint = NULL \
                     WHERE id = $1 AND clear_hint IS NOT NULL",
                )
                .bind(id.as_str().to_owned())
                .bind(sealed.to_vec()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Revokes every badge of `person` still working (they are being erased); how many.
    pub async fn revoke_badges_of(&mut self, person: &PersonId, now: Timestamp) -> R<u64> {
        self.exec(
            sqlx::query(
                "UPDATE badges SET revoked_at = $1 WHERE person_id = $2 AND revoked_at IS NULL",
            )
            .bind(now.as_millis())
            .bind(person.as_str().to_owned()),
        )
        .await
    }

    /// Revokes badge `id`; false when it was revoked already.
    pub async fn revoke_badge(&mut self, id: &BadgeId, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE badges SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }
}
