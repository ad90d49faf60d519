//! Compartments: their sizes and needs, reservations, doors.

use custody_core::compartment::{CompartmentNumber, CompartmentState, DoorState, SizeClass};
use custody_core::{BankId, CompartmentId, ParcelId, Timestamp};
use sqlx::any::AnyRow;

use crate::StoreError;
use crate::rows::{CompartmentNeeds, CompartmentRow, NewCompartment};

use super::{R, Tx, b, flag, int, opt_parse, opt_time, parse, time};

/// Size classes compare by rank in SQL ("this size or larger").
pub(crate) fn size_rank(s: SizeClass) -> i64 {
    match s {
        SizeClass::Small => 1,
        SizeClass::Medium => 2,
        SizeClass::Large => 3,
        SizeClass::ExtraLarge => 4,
    }
}

pub(crate) const COMPARTMENT_COLS: &str = "id, bank_id, number, size, accessible, refrigerated, state, door, \
     parcel_id, reserved_until, updated_at";

pub(crate) fn compartment_row(r: &AnyRow) -> R<CompartmentRow> {
    let number = u16::try_from(int(r, "number")?).map_err(|_| StoreError::Corrupt("number"))?;
    Ok(CompartmentRow {
        id: parse(r, "id", |s| CompartmentId::parse(s).ok())?,
        bank: parse(r, "bank_id", |s| BankId::parse(s).ok())?,
        number: CompartmentNumber::new(number).map_err(|_| StoreError::Corrupt("number"))?,
        size: parse(r, "size", SizeClass::parse)?,
        accessible: flag(r, "accessible")?,
        refrigerated: flag(r, "refrigerated")?,
        state: parse(r, "state", CompartmentState::parse)?,
        door: parse(r, "door", DoorState::parse)?,
        parcel: opt_parse(r, "parcel_id", |s| ParcelId::parse(s).ok())?,
        reserved_until: opt_time(r, "reserved_until")?,
        updated_at: time(r, "updated_at")?,
    })
}

impl Tx {
    /// Adds a free compartment with its door in unknown state. `Conflict` if the number exists.
    pub async fn insert_compartment(&mut self, c: &NewCompartment, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO compartments (id, bank_id, number, size, size_rank, accessible, \
                 refrigerated, state, door, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(c.id.as_str().to_owned())
            .bind(c.bank.as_str().to_owned())
            .bind(i64::from(c.number.get()))
            .bind(c.size.as_str())
            .bind(size_rank(c.size))
            .bind(b(c.accessible))
            .bind(b(c.refrigerated))
            .bind(CompartmentState::Free.as_str())
            .bind(DoorState::Unknown.as_str())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A compartment.
    pub async fn compartment(&mut self, id: &CompartmentId) -> R<Option<CompartmentRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", COMPARTMENT_COLS, " FROM compartments WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(compartment_row).transpose()
    }

    /// A compartment by its number at a bank.
    pub async fn compartment_by_number(
        &mut self,
        bank: &BankId,
        number: CompartmentNumber,
    ) -> R<Option<CompartmentRow>> {
        let row = self
            .one(
                sqlx::query(sql!(
                    "SELECT ",
                    COMPARTMENT_COLS,
                    " FROM compartments WHERE bank_id = $1 AND number = $2"
                ))
                .bind(bank.as_str().to_owned())
                .bind(i64::from(number.get())),
            )
            .await?;
        row.as_ref().map(compartment_row).transpose()
    }

    /// The compartments of a bank, by number.
    pub async fn compartments(&mut self, bank: &BankId) -> R<Vec<CompartmentRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    COMPARTMENT_COLS,
                    " FROM compartments WHERE bank_id = $1 ORDER BY number"
                ))
                .bind(bank.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(compartment_row).collect()
    }

    /// Reserves the best free compartment of `bank` for `parcel` until `until`: the smallest
    /// that fits, preferring ones without special features so accessible and refrigerated
    /// compartments stay free for parcels that need them. `None` when none is free.
    ///
    /// The `state = 'free'` condition on the update settles races: of two deposits that pick
    /// the same compartment, one updates it and the other retries with the next.
    pub async fn reserve_compartment(
        &mut self,
        bank: &BankId,
        needs: CompartmentNeeds,
        parcel: &ParcelId,
        until: Timestamp,
        now: Timestamp,
    ) -> R<Option<CompartmentRow>> {
        /// The best candidate; `$4`–`$7` are bank, size rank, accessible, refrigerated.
        const CANDIDATE: &str = "SELECT id FROM compartments WHERE bank_id = $4 AND state = 'free' \
             AND size_rank >= $5 AND accessible >= $6 AND refrigerated >= $7 \
             ORDER BY size_rank, accessible, refrigerated, number LIMIT 1";
        /// Whether any candidate exists; `$1`–`$4` as above.
        const ANY_CANDIDATE: &str = "SELECT COUNT(*) AS n FROM compartments WHERE bank_id = $1 \
             AND state = 'free' AND size_rank >= $2 AND accessible >= $3 AND refrigerated >= $4";
        for _ in 0..16 {
            let row = self
                .fetch_write(
                    sqlx::query(sql!(
                        "UPDATE compartments SET state = 'reserved', parcel_id = $1, reserved_until = $2, \
                         updated_at = $3 WHERE id = (",
                        CANDIDATE,
                        ") AND state = 'free' RETURNING ",
                        COMPARTMENT_COLS
                    ))
                    .bind(parcel.as_str().to_owned())
                    .bind(until.as_millis())
                    .bind(now.as_millis())
                    .bind(bank.as_str().to_owned())
                    .bind(size_rank(needs.size))
                    .bind(b(needs.accessible))
                    .bind(b(needs.refrigerated)),
                )
                .await?;
            if let Some(row) = row {
                return compartment_row(&row).map(Some);
            }
            // Lost a race, or nothing fits: only retry while a candidate exists.
            let exists = self
                .one(
                    sqlx::query(ANY_CANDIDATE)
                        .bind(bank.as_str().to_owned())
                        .bind(size_rank(needs.size))
                        .bind(b(needs.accessible))
                        .bind(b(needs.refrigerated)),
                )
                .await?;
            if exists.map(|r| int(&r, "n")).transpose()?.unwrap_or(0) == 0 {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Reserves this compartment for `parcel` until `until`, only if it is free. Returns whether
    /// it was.
    pub async fn reserve_this_compartment(
        &mut self,
        id: &CompartmentId,
        parcel: &ParcelId,
        until: Timestamp,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE compartments SET state = 'reserved', parcel_id = $1, reserved_until = $2, \
                     updated_at = $3 WHERE id = $4 AND state = 'free'",
                )
                .bind(parcel.as_str().to_owned())
                .bind(until.as_millis())
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Moves a compartment from `from` to `to` (and sets its parcel) only if it is still in
    /// `from`. Returns whether it moved.
    pub async fn move_compartment(
        &mut self,
        id: &CompartmentId,
        from: CompartmentState,
        to: CompartmentState,
        parcel: Option<&ParcelId>,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE compartments SET state = $1, parcel_id = $2, reserved_until = NULL, updated_at = $3 \
                     WHERE id = $4 AND state = $5",
                )
                .bind(to.as_str())
                .bind(parcel.map(|p| p.as_str().to_owned()))
                .bind(now.as_millis())
                .bind(id.as_str().to_owned())
                .bind(from.as_str()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Records what the door sensor reported.
    pub async fn set_door(
        &mut self,
        id: &CompartmentId,
        door: DoorState,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("UPDATE compartments SET door = $1, updated_at = $2 WHERE id = $3")
                    .bind(door.as_str())
                    .bind(now.as_millis())
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Reservations whose time is up.
    pub async fn stale_reservations(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> R<Vec<CompartmentRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ", COMPARTMENT_COLS,
                    " FROM compartments WHERE state = 'reserved' AND reserved_until <= $1 ORDER BY reserved_until LIMIT $2"
                ))
                .bind(now.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(compartment_row).collect()
    }
}
