//! Parcels and their chain of custody's states.

use custody_core::compartment::SizeClass;
use custody_core::parcel::ParcelState;
use custody_core::{
    BankId, CarrierId, CompartmentId, OrgId, ParcelId, PersonId, SiteId, Timestamp,
};
use sqlx::any::AnyRow;

use crate::rows::ParcelRow;

use super::{R, Tx, b, flag, opt_parse, opt_stored, opt_time, parse, stored_columns, time};

pub(crate) const PARCEL_COLS: &str = "id, org_id, site_id, bank_id, compartment_id, carrier_id, recipient_id, \
     tracking_sealed, clear_tracking_ref, size, needs_accessible, needs_refrigerated, state, created_at, deposited_at, \
     notified_at, expires_at, closed_at, updated_at";

pub(crate) fn parcel_row(r: &AnyRow) -> R<ParcelRow> {
    Ok(ParcelRow {
        id: parse(r, "id", |s| ParcelId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        bank: opt_parse(r, "bank_id", |s| BankId::parse(s).ok())?,
        compartment: opt_parse(r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
        carrier: parse(r, "carrier_id", |s| CarrierId::parse(s).ok())?,
        recipient: opt_parse(r, "recipient_id", |s| PersonId::parse(s).ok())?,
        tracking_ref: opt_stored(r, "tracking_sealed", "clear_tracking_ref")?,
        size: parse(r, "size", SizeClass::parse)?,
        needs_accessible: flag(r, "needs_accessible")?,
        needs_refrigerated: flag(r, "needs_refrigerated")?,
        state: parse(r, "state", ParcelState::parse)?,
        created_at: time(r, "created_at")?,
        deposited_at: opt_time(r, "deposited_at")?,
        notified_at: opt_time(r, "notified_at")?,
        expires_at: opt_time(r, "expires_at")?,
        closed_at: opt_time(r, "closed_at")?,
        updated_at: time(r, "updated_at")?,
    })
}

impl Tx {
    /// Adds a parcel.
    pub async fn insert_parcel(&mut self, p: &ParcelRow) -> R<()> {
        let (sealed, clear) = stored_columns(p.tracking_ref.as_ref());
        self.exec(
            sqlx::query(sql!(
                "INSERT INTO parcels (", PARCEL_COLS, ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
            ))
            .bind(p.id.as_str().to_owned())
            .bind(p.org.as_str().to_owned())
            .bind(p.site.as_str().to_owned())
            .bind(p.bank.as_ref().map(|v| v.as_str().to_owned()))
            .bind(p.compartment.as_ref().map(|v| v.as_str().to_owned()))
            .bind(p.carrier.as_str().to_owned())
            .bind(p.recipient.as_ref().map(|v| v.as_str().to_owned()))
            .bind(sealed)
            .bind(clear)
            .bind(p.size.as_str())
            .bind(b(p.needs_accessible))
            .bind(b(p.needs_refrigerated))
            .bind(p.state.as_str())
            .bind(p.created_at.as_millis())
            .bind(p.deposited_at.map(Timestamp::as_millis))
            .bind(p.notified_at.map(Timestamp::as_millis))
            .bind(p.expires_at.map(Timestamp::as_millis))
            .bind(p.closed_at.map(Timestamp::as_millis))
            .bind(p.updated_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A parcel.
    pub async fn parcel(&mut self, id: &ParcelId) -> R<Option<ParcelRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", PARCEL_COLS, " FROM parcels WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(parcel_row).transpose()
    }

    /// Up to `limit` parcels whose tracking number is still stored in clear (from before
    /// tracking numbers were sealed), by id.
    pub async fn parcels_in_clear(&mut self, limit: i64) -> R<Vec<ParcelRow>> {
        const Q: &str = sql!(
            "SELECT ",
            PARCEL_COLS,
            " FROM parcels WHERE clear_tracking_ref IS NOT NULL ORDER BY id LIMIT $1"
        );
        let rows = self.all(sqlx::query(Q).bind(limit)).await?;
        rows.iter().map(parcel_row).collect()
    }

    /// Replaces a parcel's clear tracking number with its sealed form, if it is still in clear.
    pub async fn seal_tracking_ref(&mut self, id: &ParcelId, sealed: &[u8]) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE parcels SET tracking_sealed = $2, clear_tracking_ref = NULL \
                     WHERE id = $1 AND clear_tracking_ref IS NOT NULL",
                )
                .bind(id.as_str().to_owned())
                .bind(sealed.to_vec()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Drops the tracking numbers of every parcel of `recipient` (who is being erased).
    pub async fn drop_tracking_refs_of(&mut self, recipient: &PersonId) -> R<u64> {
        self.exec(
            sqlx::query(
                "UPDATE parcels SET tracking_sealed = NULL, clear_tracking_ref = NULL \
                 WHERE recipient_id = $1",
            )
            .bind(recipient.as_str().to_owned()),
        )
        .await
    }

    /// Parcels selected by `query` (`$1` = `value`, `$2` = `limit`), newest first.
    async fn newest_parcels(
        &mut self,
        query: &'static str,
        value: &str,
        limit: u32,
    ) -> R<Vec<ParcelRow>> {
        let rows =
            self.all(sqlx::query(query).bind(value.to_owned()).bind(i64::from(limit))).await?;
        rows.iter().map(parcel_row).collect()
    }

    /// A site's parcels, newest first, at most `limit`.
    pub async fn parcels_at_site(&mut self, site: &SiteId, limit: u32) -> R<Vec<ParcelRow>> {
        const Q: &str = sql!(
            "SELECT ",
            PARCEL_COLS,
            " FROM parcels WHERE site_id = $1 ORDER BY created_at DESC, id LIMIT $2"
        );
        self.newest_parcels(Q, site.as_str(), limit).await
    }

    /// A recipient's parcels, newest first, at most `limit`.
    pub async fn parcels_for_recipient(
        &mut self,
        person: &PersonId,
        limit: u32,
    ) -> R<Vec<ParcelRow>> {
        const Q: &str = sql!(
            "SELECT ",
            PARCEL_COLS,
            " FROM parcels WHERE recipient_id = $1 ORDER BY created_at DESC, id LIMIT $2"
        );
        self.newest_parcels(Q, person.as_str(), limit).await
    }

    /// A carrier's parcels, newest first, at most `limit`.
    pub async fn parcels_for_carrier(
        &mut self,
        carrier: &CarrierId,
        limit: u32,
    ) -> R<Vec<ParcelRow>> {
        const Q: &str = sql!(
            "SELECT ",
            PARCEL_COLS,
            " FROM parcels WHERE carrier_id = $1 ORDER BY created_at DESC, id LIMIT $2"
        );
        self.newest_parcels(Q, carrier.as_str(), limit).await
    }

    /// Parcels still in a compartment whose pickup window ended at or before `now`.
    pub async fn parcels_due_to_expire(&mut self, now: Timestamp, limit: u32) -> R<Vec<ParcelRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ", PARCEL_COLS,
                    " FROM parcels WHERE state IN ('deposited', 'notified') AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2"
                ))
                .bind(now.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(parcel_row).collect()
    }

    /// Deposited parcels whose recipient has not been notified yet (a notification that failed
    /// to queue is retried from here).
    pub async fn parcels_awaiting_notification(&mut self, limit: u32) -> R<Vec<ParcelRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    PARCEL_COLS,
                    " FROM parcels WHERE state = 'deposited' AND recipient_id IS NOT NULL \
                     ORDER BY deposited_at, id LIMIT $1"
                ))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(parcel_row).collect()
    }

    /// A site's parcels that no resident has been named for yet and that are still to be dealt
    /// with (announced, in a compartment, or expired there), oldest first.
    pub async fn unaddressed_parcels(&mut self, site: &SiteId, limit: u32) -> R<Vec<ParcelRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    PARCEL_COLS,
                    " FROM parcels WHERE site_id = $1 AND recipient_id IS NULL \
                     AND state IN ('expected', 'deposited', 'expired') \
                     ORDER BY created_at, id LIMIT $2"
                ))
                .bind(site.as_str().to_owned())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(parcel_row).collect()
    }

    /// Names the recipient of a parcel that had none. `false` when it already has one.
    pub async fn address_parcel(
        &mut self,
        parcel: &ParcelId,
        recipient: &PersonId,
        now: Timestamp,
    ) -> R<bool> {
        let done = self
            .exec(
                sqlx::query(
                    "UPDATE parcels SET recipient_id = $2, updated_at = $3 \
                     WHERE id = $1 AND recipient_id IS NULL",
                )
                .bind(parcel.as_str().to_owned())
                .bind(recipient.as_str().to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        Ok(done == 1)
    }

    /// Assigns a bank and compartment to an expected parcel (a deposit is under way).
    pub async fn assign_compartment(
        &mut self,
        id: &ParcelId,
        bank: &BankId,
        compartment: Option<&CompartmentId>,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("UPDATE parcels SET bank_id = $1, compartment_id = $2, updated_at = $3 WHERE id = $4 AND state = 'expected'")
                    .bind(bank.as_str().to_owned())
                    .bind(compartment.map(|c| c.as_str().to_owned()))
                    .bind(now.as_millis())
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Moves a parcel from `from` to `to` only if it is still in `from`, stamping the time
    /// column that belongs to `to`. For `Deposited`, `expires_at` is the end of its window.
    /// Returns whether it moved.
    pub async fn move_parcel(
        &mut self,
        id: &ParcelId,
        from: ParcelState,
        to: ParcelState,
        now: Timestamp,
        expires_at: Option<Timestamp>,
    ) -> R<bool> {
        let q = match to {
            ParcelState::Deposited => sqlx::query(
                "UPDATE parcels SET state = $1, updated_at = $2, deposited_at = $2, expires_at = $3 WHERE id = $4 AND state = $5",
            ),
            ParcelState::Notified => sqlx::query(
                "UPDATE parcels SET state = $1, updated_at = $2, notified_at = $2, expires_at = COALESCE($3, expires_at) WHERE id = $4 AND state = $5",
            ),
            ParcelState::PickedUp | ParcelState::Returned | ParcelState::Retrieved => sqlx::query(
                "UPDATE parcels SET state = $1, updated_at = $2, closed_at = $2, expires_at = COALESCE($3, expires_at) WHERE id = $4 AND state = $5",
            ),
            ParcelState::Expected | ParcelState::Expired => sqlx::query(
                "UPDATE parcels SET state = $1, updated_at = $2, expires_at = COALESCE($3, expires_at) WHERE id = $4 AND state = $5",
            ),
        };
        let n = self
            .exec(
                q.bind(to.as_str())
                    .bind(now.as_millis())
                    .bind(expires_at.map(Timestamp::as_millis))
                    .bind(id.as_str().to_owned())
                    .bind(from.as_str()),
            )
            .await?;
        Ok(n == 1)
    }
}
