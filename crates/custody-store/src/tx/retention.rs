//! Each site's retention of personal data, and the sweeper's deletions under it. Every
//! deletion takes the site's own retention, or the defaults the caller passes for a site
//! without one (and for what belongs to no site: a message with no parcel, a session of
//! someone with no site), and works through at most `limit` rows, oldest first.

use custody_core::site::Retention;
use custody_core::{SiteId, Timestamp};

use super::{R, Tx, int};

const DAY_MS: i64 = 86_400_000;

fn retention_of(r: &sqlx::any::AnyRow) -> R<Retention> {
    let days = |col| {
        int(r, col).and_then(|d| u32::try_from(d).map_err(|_| crate::StoreError::Corrupt(col)))
    };
    Ok(Retention {
        parcel_days: days("parcel_days")?,
        session_days: days("session_days")?,
        delivery_days: days("delivery_days")?,
        evidence_days: days("evidence_days")?,
    })
}

impl Tx {
    /// `site`'s retention, if its admins set one.
    pub async fn retention(&mut self, site: &SiteId) -> R<Option<Retention>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT parcel_days, session_days, delivery_days, evidence_days \
                     FROM site_retention WHERE site_id = $1",
                )
                .bind(site.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(retention_of).transpose()
    }

    /// Sets `site`'s retention.
    pub async fn put_retention(&mut self, site: &SiteId, r: &Retention, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO site_retention (site_id, parcel_days, session_days, delivery_days, \
                 evidence_days, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (site_id) DO UPDATE SET parcel_days = $2, session_days = $3, \
                 delivery_days = $4, evidence_days = $5, updated_at = $6",
            )
            .bind(site.as_str().to_owned())
            .bind(i64::from(r.parcel_days))
            .bind(i64::from(r.session_days))
            .bind(i64::from(r.delivery_days))
            .bind(i64::from(r.evidence_days))
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Drops the tracking number and the recipient of parcels closed at least their site's
    /// `parcel_days` before `now`, marking them anonymised; how many.
    pub async fn anonymise_closed_parcels(
        &mut self,
        now: Timestamp,
        default: &Retention,
        limit: i64,
    ) -> R<u64> {
        self.exec(
            sqlx::query(
                "UPDATE parcels SET tracking_sealed = NULL, clear_tracking_ref = NULL, \
                 recipient_id = NULL, anonymised_at = $1 WHERE id IN (\
                 SELECT p.id FROM parcels p LEFT JOIN site_retention r ON r.site_id = p.site_id \
                 WHERE p.closed_at IS NOT NULL AND p.anonymised_at IS NULL \
                 AND p.closed_at <= $1 - CAST(COALESCE(r.parcel_days, $2) AS BIGINT) * $3 \
                 ORDER BY p.closed_at LIMIT $4)",
            )
            .bind(now.as_millis())
            .bind(i64::from(default.parcel_days))
            .bind(DAY_MS)
            .bind(limit),
        )
        .await
    }

    /// Deletes sessions that ended (expired) at least their holder's site's `session_days`
    /// before `now`; how many. (A session signed out is deleted at once.)
    pub async fn delete_lapsed_sessions(
        &mut self,
        now: Timestamp,
        default: &Retention,
        limit: i64,
    ) -> R<u64> {
        self.exec(
            sqlx::query(
                "DELETE FROM sessions WHERE token_hash IN (\
                 SELECT s.token_hash FROM sessions s JOIN people p ON p.id = s.person_id \
                 LEFT JOIN site_retention r ON r.site_id = p.site_id \
                 WHERE s.expires_at <= $1 - CAST(COALESCE(r.session_days, $2) AS BIGINT) * $3 \
                 ORDER BY s.expires_at LIMIT $4)",
            )
            .bind(now.as_millis())
            .bind(i64::from(default.session_days))
            .bind(DAY_MS)
            .bind(limit),
        )
        .await
    }

    /// Deletes the records of messages delivered or given up at least their parcel's site's
    /// `delivery_days` before `now`; how many.
    pub async fn delete_old_messages(
        &mut self,
        now: Timestamp,
        default: &Retention,
        limit: i64,
    ) -> R<u64> {
        self.exec(
            sqlx::query(
                "DELETE FROM outbox WHERE id IN (\
                 SELECT o.id FROM outbox o LEFT JOIN parcels p ON p.id = o.parcel_id \
                 LEFT JOIN site_retention r ON r.site_id = p.site_id \
                 WHERE (o.delivered_at IS NOT NULL OR o.dead_at IS NOT NULL) \
                 AND COALESCE(o.delivered_at, o.dead_at) \
                     <= $1 - CAST(COALESCE(r.delivery_days, $2) AS BIGINT) * $3 \
                 ORDER BY COALESCE(o.delivered_at, o.dead_at) LIMIT $4)",
            )
            .bind(now.as_millis())
            .bind(i64::from(default.delivery_days))
            .bind(DAY_MS)
            .bind(limit),
        )
        .await
    }

    /// Deletes the records of alert notifications delivered or given up at least their site's
    /// `delivery_days` before `now`; how many.
    pub async fn delete_old_alert_deliveries(
        &mut self,
        now: Timestamp,
        default: &Retention,
        limit: i64,
    ) -> R<u64> {
        self.exec(
            sqlx::query(
                "DELETE FROM alert_deliveries WHERE id IN (\
                 SELECT d.id FROM alert_deliveries d \
                 LEFT JOIN site_retention r ON r.site_id = d.site_id \
                 WHERE (d.delivered_at IS NOT NULL OR d.dead_at IS NOT NULL) \
                 AND COALESCE(d.delivered_at, d.dead_at) \
                     <= $1 - CAST(COALESCE(r.delivery_days, $2) AS BIGINT) * $3 \
                 ORDER BY COALESCE(d.delivered_at, d.dead_at) LIMIT $4)",
            )
            .bind(now.as_millis())
            .bind(i64::from(default.delivery_days))
            .bind(DAY_MS)
            .bind(limit),
        )
        .await
    }
}
