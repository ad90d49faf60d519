//! Messages to residents, sealed until delivered.

use custody_core::{MessageId, ParcelId, Timestamp};
use sqlx::any::AnyRow;

use crate::StoreError;
use crate::rows::OutboxRow;

use super::{R, Tx, int, opt_blob, opt_parse, opt_text, opt_time, parse, text, time};

pub(crate) const OUTBOX_COLS: &str = "id, channel, parcel_id, sealed, created_at, next_attempt_at, attempts, \
     delivered_at, dead_at, last_error";

pub(crate) fn outbox_row(r: &AnyRow) -> R<OutboxRow> {
    Ok(OutboxRow {
        id: parse(r, "id", |s| MessageId::parse(s).ok())?,
        channel: text(r, "channel")?,
        parcel: opt_parse(r, "parcel_id", |s| ParcelId::parse(s).ok())?,
        sealed: opt_blob(r, "sealed")?,
        created_at: time(r, "created_at")?,
        next_attempt_at: time(r, "next_attempt_at")?,
        attempts: u32::try_from(int(r, "attempts")?)
            .map_err(|_| StoreError::Corrupt("attempts"))?,
        delivered_at: opt_time(r, "delivered_at")?,
        dead_at: opt_time(r, "dead_at")?,
        last_error: opt_text(r, "last_error")?,
    })
}

impl Tx {
    /// Queues a sealed message for delivery at `now`.
    pub async fn enqueue_message(
        &mut self,
        id: &MessageId,
        channel: &str,
        parcel: Option<&ParcelId>,
        sealed: &[u8],
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO outbox (id, channel, parcel_id, sealed, created_at, next_attempt_at, attempts) \
                 VALUES ($1, $2, $3, $4, $5, $5, 0)",
            )
            .bind(id.as_str().to_owned())
            .bind(channel.to_owned())
            .bind(parcel.map(|p| p.as_str().to_owned()))
            .bind(sealed.to_vec())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Takes up to `limit` due messages for delivery, leasing each until `lease_until` so that
    /// another worker does not send it too. A lease that lapses (the worker died) makes the
    /// message due again.
    pub async fn lease_due_messages(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> R<Vec<OutboxRow>> {
        let candidates = self
            .all(
                sqlx::query(
                    "SELECT id FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $1 \
                     AND (lease_until IS NULL OR lease_until <= $1) ORDER BY next_attempt_at, id LIMIT $2",
                )
                .bind(now.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        let mut leased = Vec::with_capacity(candidates.len());
        for c in candidates {
            let id = text(&c, "id")?;
            let row = self
                .fetch_write(
                    sqlx::query(sql!(
                        "UPDATE outbox SET lease_until = $1 WHERE id = $2 AND delivered_at IS NULL AND dead_at IS NULL \
                         AND (lease_until IS NULL OR lease_until <= $3) RETURNING ",
                        OUTBOX_COLS
                    ))
                    .bind(lease_until.as_millis())
                    .bind(id)
                    .bind(now.as_millis()),
                )
                .await?;
            if let Some(r) = row {
                leased.push(outbox_row(&r)?);
            }
        }
        Ok(leased)
    }

    /// Marks a message delivered and wipes its sealed body.
    pub async fn message_delivered(&mut self, id: &MessageId, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query(
                "UPDATE outbox SET delivered_at = $1, sealed = NULL, lease_until = NULL, attempts = attempts + 1, last_error = NULL WHERE id = $2",
            )
            .bind(now.as_millis())
            .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// Records a failed try: retry at `retry_at`, or give up (and wipe the body) when `None`.
    pub async fn message_failed(
        &mut self,
        id: &MessageId,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> R<()> {
        let q = match retry_at {
            Some(at) => sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, lease_until = NULL WHERE id = $3",
            )
            .bind(error.to_owned())
            .bind(at.as_millis())
            .bind(id.as_str().to_owned()),
            None => sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $1, dead_at = $2, sealed = NULL, lease_until = NULL WHERE id = $3",
            )
            .bind(error.to_owned())
            .bind(now.as_millis())
            .bind(id.as_str().to_owned()),
        };
        self.exec(q).await.map(|_| ())
    }

    /// Every message whose body is still held (waiting, or leased), oldest first: what an
    /// erasure looks through for messages to the person erased.
    pub async fn held_messages(&mut self) -> R<Vec<OutboxRow>> {
        let rows = self
            .all(sqlx::query(sql!(
                "SELECT ",
                OUTBOX_COLS,
                " FROM outbox WHERE sealed IS NOT NULL ORDER BY created_at, id"
            )))
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Gives a message up unsent and wipes its body, saying why.
    pub async fn withdraw_message(&mut self, id: &MessageId, why: &str, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query(
                "UPDATE outbox SET dead_at = $1, sealed = NULL, lease_until = NULL, last_error = $2 \
                 WHERE id = $3 AND sealed IS NOT NULL",
            )
            .bind(now.as_millis())
            .bind(why.to_owned())
            .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// A message.
    pub async fn message(&mut self, id: &MessageId) -> R<Option<OutboxRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", OUTBOX_COLS, " FROM outbox WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(outbox_row).transpose()
    }

    /// Messages about a parcel, oldest first.
    pub async fn messages_for_parcel(&mut self, parcel: &ParcelId) -> R<Vec<OutboxRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    OUTBOX_COLS,
                    " FROM outbox WHERE parcel_id = $1 ORDER BY created_at, id"
                ))
                .bind(parcel.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(outbox_row).collect()
    }
}
