//! Where a site's alerts go: endpoints, people's consents, and the deliveries' outbox.

use custody_core::alert::{Channel, Severity};
use custody_core::{AlertId, DeliveryId, EndpointId, PersonId, SiteId, Timestamp};
use sqlx::any::AnyRow;

use crate::StoreError;
use crate::rows::{ConsentEventRow, DeliveryRow, EndpointRow, SubscriptionRow};

use super::{
    R, Tx, int, opt_blob, opt_parse, opt_stored, opt_text, opt_time, parse, stored_columns, text,
    time,
};

pub(crate) const ENDPOINT_COLS: &str =
    "id, site_id, channel, target, secret, min_severity, created_at";

pub(crate) fn endpoint_row(r: &AnyRow) -> R<EndpointRow> {
    Ok(EndpointRow {
        id: parse(r, "id", |s| EndpointId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        channel: parse(r, "channel", Channel::parse)?,
        target: text(r, "target")?,
        secret: opt_blob(r, "secret")?,
        min_severity: parse(r, "min_severity", Severity::parse)?,
        created_at: time(r, "created_at")?,
    })
}

pub(crate) const DELIVERY_COLS: &str = "id, alert_id, site_id, channel, endpoint_id, person_id, event, \
     created_at, next_attempt_at, attempts, last_error, delivered_at, dead_at";

pub(crate) fn delivery_row(r: &AnyRow) -> R<DeliveryRow> {
    Ok(DeliveryRow {
        id: parse(r, "id", |s| DeliveryId::parse(s).ok())?,
        alert: parse(r, "alert_id", |s| AlertId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        channel: parse(r, "channel", Channel::parse)?,
        endpoint: opt_parse(r, "endpoint_id", |s| EndpointId::parse(s).ok())?,
        person: opt_parse(r, "person_id", |s| PersonId::parse(s).ok())?,
        event: text(r, "event")?,
        created_at: time(r, "created_at")?,
        next_attempt_at: time(r, "next_attempt_at")?,
        attempts: u32::try_from(int(r, "attempts")?)
            .map_err(|_| StoreError::Corrupt("attempts"))?,
        last_error: opt_text(r, "last_error")?,
        delivered_at: opt_time(r, "delivered_at")?,
        dead_at: opt_time(r, "dead_at")?,
    })
}

impl Tx {
    /// Adds a site's alert endpoint.
    pub async fn insert_alert_endpoint(&mut self, e: &EndpointRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO alert_endpoints (id, site_id, channel, target, secret, min_severity, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(e.id.as_str().to_owned())
            .bind(e.site.as_str().to_owned())
            .bind(e.channel.as_str())
            .bind(e.target.clone())
            .bind(e.secret.clone())
            .bind(e.min_severity.as_str())
            .bind(e.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A site's alert endpoints (not removed), oldest first.
    pub async fn alert_endpoints(&mut self, site: &SiteId) -> R<Vec<EndpointRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    ENDPOINT_COLS,
                    " FROM alert_endpoints WHERE site_id = $1 AND removed_at IS NULL ORDER BY created_at, id"
                ))
                .bind(site.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(endpoint_row).collect()
    }

    /// An alert endpoint, unless it was removed.
    pub async fn alert_endpoint(&mut self, id: &EndpointId) -> R<Option<EndpointRow>> {
        let row = self
            .one(
                sqlx::query(sql!(
                    "SELECT ",
                    ENDPOINT_COLS,
                    " FROM alert_endpoints WHERE id = $1 AND removed_at IS NULL"
                ))
                .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(endpoint_row).transpose()
    }

    /// Removes an endpoint (its deliveries stay on record); false when it was gone already.
    pub async fn remove_alert_endpoint(&mut self, id: &EndpointId, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE alert_endpoints SET removed_at = $1, secret = NULL WHERE id = $2 AND removed_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Queues one notification, due at once.
    pub async fn enqueue_alert_delivery(&mut self, d: &DeliveryRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO alert_deliveries (id, alert_id, site_id, channel, endpoint_id, person_id, event, \
                 created_at, next_attempt_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0)",
            )
            .bind(d.id.as_str().to_owned())
            .bind(d.alert.as_str().to_owned())
            .bind(d.site.as_str().to_owned())
            .bind(d.channel.as_str())
            .bind(d.endpoint.as_ref().map(|e| e.as_str().to_owned()))
            .bind(d.person.as_ref().map(|p| p.as_str().to_owned()))
            .bind(d.event.clone())
            .bind(d.created_at.as_millis())
            .bind(d.next_attempt_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Takes up to `limit` due notifications, each leased until `lease_until` (a lapsed lease
    /// makes it due again), most urgent first.
    pub async fn lease_alert_deliveries(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> R<Vec<DeliveryRow>> {
        let candidates = self
            .all(
                sqlx::query(
                    "SELECT id FROM alert_deliveries WHERE delivered_at IS NULL AND dead_at IS NULL \
                     AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) \
                     ORDER BY next_attempt_at, id LIMIT $2",
                )
                .bind(now.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        let mut leased = Vec::with_capacity(candidates.len());
        for c in candidates {
            let row = self
                .fetch_write(
                    sqlx::query(sql!(
                        "UPDATE alert_deliveries SET lease_until = $1 WHERE id = $2 AND delivered_at IS NULL \
                         AND dead_at IS NULL AND (lease_until IS NULL OR lease_until <= $3) RETURNING ",
                        DELIVERY_COLS
                    ))
                    .bind(lease_until.as_millis())
                    .bind(text(&c, "id")?)
                    .bind(now.as_millis()),
                )
                .await?;
            if let Some(r) = row {
                leased.push(delivery_row(&r)?);
            }
        }
        Ok(leased)
    }

    /// Records a delivery.
    pub async fn alert_delivered(&mut self, id: &DeliveryId, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query(
                "UPDATE alert_deliveries SET delivered_at = $1, lease_until = NULL, attempts = attempts + 1, \
                 last_error = NULL WHERE id = $2",
            )
            .bind(now.as_millis())
            .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// Records a failed try: again at `retry_at`, or into the dead-letter list when `None`.
    pub async fn alert_delivery_failed(
        &mut self,
        id: &DeliveryId,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> R<()> {
        let (next, dead) = match retry_at {
            Some(at) => (Some(at.as_millis()), None),
            None => (None, Some(now.as_millis())),
        };
        self.exec(
            sqlx::query(
                "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = $1, \
                 next_attempt_at = COALESCE($2, next_attempt_at), dead_at = $3, lease_until = NULL WHERE id = $4",
            )
            .bind(error.to_owned())
            .bind(next)
            .bind(dead)
            .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// Puts a notification from the dead-letter list back in the queue, due now, with its
    /// tries counted afresh; false when it was not dead.
    pub async fn retry_alert_delivery(&mut self, id: &DeliveryId, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE alert_deliveries SET dead_at = NULL, attempts = 0, next_attempt_at = $1, \
                     lease_until = NULL WHERE id = $2 AND dead_at IS NOT NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// One notification.
    pub async fn alert_delivery(&mut self, id: &DeliveryId) -> R<Option<DeliveryRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", DELIVERY_COLS, " FROM alert_deliveries WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(delivery_row).transpose()
    }

    /// A site's notifications, newest first; with `dead_only`, the dead-letter list.
    pub async fn alert_deliveries(
        &mut self,
        site: &SiteId,
        dead_only: bool,
        limit: u32,
    ) -> R<Vec<DeliveryRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    DELIVERY_COLS,
                    " FROM alert_deliveries WHERE site_id = $1 AND ($2 = 0 OR dead_at IS NOT NULL) \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ))
                .bind(site.as_str().to_owned())
                .bind(i64::from(dead_only))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(delivery_row).collect()
    }

    /// Records a person's consent to hear of a site's alerts on a channel, replacing the one
    /// they gave before.
    pub async fn put_alert_subscription(&mut self, s: &SubscriptionRow) -> R<()> {
        let (sealed, clear) = stored_columns(s.phone.as_ref());
        self.exec(
            sqlx::query(
                "INSERT INTO alert_subscriptions (person_id, site_id, channel, phone_sealed, \
                 clear_phone, min_severity, consented_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (person_id, site_id, channel) DO UPDATE SET \
                 phone_sealed = excluded.phone_sealed, clear_phone = excluded.clear_phone, \
                 min_severity = excluded.min_severity, consented_at = excluded.consented_at",
            )
            .bind(s.person.as_str().to_owned())
            .bind(s.site.as_str().to_owned())
            .bind(s.channel.as_str())
            .bind(sealed)
            .bind(clear)
            .bind(s.min_severity.as_str())
            .bind(s.consented_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Withdraws a consent; false when there was none.
    pub async fn delete_alert_subscription(
        &mut self,
        person: &PersonId,
        site: &SiteId,
        channel: Channel,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "DELETE FROM alert_subscriptions WHERE person_id = $1 AND site_id = $2 AND channel = $3",
                )
                .bind(person.as_str().to_owned())
                .bind(site.as_str().to_owned())
                .bind(channel.as_str()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Deletes every consent of a person, and their history (their data is being erased).
    pub async fn delete_alert_subscriptions_of(&mut self, person: &PersonId) -> R<u64> {
        self.exec(
            sqlx::query("DELETE FROM consent_history WHERE person_id = $1")
                .bind(person.as_str().to_owned()),
        )
        .await?;
        self.exec(
            sqlx::query("DELETE FROM alert_subscriptions WHERE person_id = $1")
                .bind(person.as_str().to_owned()),
        )
        .await
    }

    /// Adds a consent given or withdrawn to its person's history.
    pub async fn add_consent_event(&mut self, e: &ConsentEventRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO consent_history (person_id, site_id, channel, change, min_severity, \
                 at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(e.person.as_str().to_owned())
            .bind(e.site.as_str().to_owned())
            .bind(e.channel.as_str())
            .bind(if e.given.is_some() { "given" } else { "withdrawn" })
            .bind(e.given.map(Severity::as_str))
            .bind(e.at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A person's consents given and withdrawn, oldest first.
    pub async fn consent_history(&mut self, person: &PersonId) -> R<Vec<ConsentEventRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT person_id, site_id, channel, change, min_severity, at \
                     FROM consent_history WHERE person_id = $1 ORDER BY at, site_id, channel",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let given = opt_parse(r, "min_severity", Severity::parse)?;
                let change = text(r, "change")?;
                if (change == "given") != given.is_some() {
                    return Err(StoreError::Corrupt("consent_history.change"));
                }
                Ok(ConsentEventRow {
                    person: parse(r, "person_id", |s| PersonId::parse(s).ok())?,
                    site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
                    channel: parse(r, "channel", Channel::parse)?,
                    given,
                    at: time(r, "at")?,
                })
            })
            .collect()
    }

    /// A person's consents, or a site's, or both.
    pub async fn alert_subscriptions(
        &mut self,
        person: Option<&PersonId>,
        site: Option<&SiteId>,
    ) -> R<Vec<SubscriptionRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT person_id, site_id, channel, phone_sealed, clear_phone, min_severity, \
                     consented_at FROM alert_subscriptions WHERE ($1 IS NULL OR person_id = $1) \
                     AND ($2 IS NULL OR site_id = $2) ORDER BY site_id, person_id, channel",
                )
                .bind(person.map(|p| p.as_str().to_owned()))
                .bind(site.map(|s| s.as_str().to_owned())),
            )
            .await?;
        rows.iter().map(subscription_row).collect()
    }

    /// Up to `limit` consents whose phone number is still stored in clear (from before numbers
    /// were sealed).
    pub async fn subscriptions_in_clear(&mut self, limit: i64) -> R<Vec<SubscriptionRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT person_id, site_id, channel, phone_sealed, clear_phone, min_severity, \
                     consented_at FROM alert_subscriptions WHERE clear_phone IS NOT NULL \
                     ORDER BY person_id, site_id, channel LIMIT $1",
                )
                .bind(limit),
            )
            .await?;
        rows.iter().map(subscription_row).collect()
    }

    /// Replaces a consent's clear phone number with its sealed form, if it is still in clear.
    pub async fn seal_subscription_phone(&mut self, s: &SubscriptionRow, sealed: &[u8]) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE alert_subscriptions SET phone_sealed = $4, clear_phone = NULL \
                     WHERE person_id = $1 AND site_id = $2 AND channel = $3 \
                     AND clear_phone IS NOT NULL",
                )
                .bind(s.person.as_str().to_owned())
                .bind(s.site.as_str().to_owned())
                .bind(s.channel.as_str())
                .bind(sealed.to_vec()),
            )
            .await?;
        Ok(n == 1)
    }
}

fn subscription_row(r: &AnyRow) -> R<SubscriptionRow> {
    Ok(SubscriptionRow {
        person: parse(r, "person_id", |s| PersonId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        channel: parse(r, "channel", Channel::parse)?,
        phone: opt_stored(r, "phone_sealed", "clear_phone")?,
        min_severity: parse(r, "min_severity", Severity::parse)?,
        consented_at: time(r, "consented_at")?,
    })
}
