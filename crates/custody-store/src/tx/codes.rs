//! Pickup codes: stored as keyed hashes, redeemed once, and each bank's offline list.

use custody_core::compartment::CompartmentNumber;
use custody_core::{BankId, CodeId, CompartmentId, DeviceId, ParcelId, Timestamp};

use crate::StoreError;
use crate::rows::{
    ActiveCode, CodeRefusal, CodeRefused, NewPickupCode, OfflineCodeRow, RedeemedCode,
};

use super::{R, Tx, blob, int, opt_int, parse};

impl Tx {
    /// Stores a pickup code's keyed hash. `Conflict` if the bank already has that code (the
    /// caller draws another).
    pub async fn insert_pickup_code(&mut self, c: &NewPickupCode) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO pickup_codes (id, parcel_id, bank_id, compartment_id, code_hash, offline_verifier, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(c.id.as_str().to_owned())
            .bind(c.parcel.as_str().to_owned())
            .bind(c.bank.as_str().to_owned())
            .bind(c.compartment.as_str().to_owned())
            .bind(c.code_hash.clone())
            .bind(c.offline_verifier.clone())
            .bind(c.created_at.as_millis())
            .bind(c.expires_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Redeems the code with hash `code_hash` at `bank`: marks it used if, and only if, it is
    /// unused, unrevoked and unexpired. Exactly one of any number of concurrent redemptions
    /// succeeds. On refusal, says why (for the audit log).
    pub async fn redeem_pickup_code(
        &mut self,
        bank: &BankId,
        code_hash: &[u8],
        now: Timestamp,
    ) -> R<Result<RedeemedCode, CodeRefused>> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "UPDATE pickup_codes SET used_at = $1 WHERE bank_id = $2 AND code_hash = $3 \
                     AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 RETURNING parcel_id, compartment_id",
                )
                .bind(now.as_millis())
                .bind(bank.as_str().to_owned())
                .bind(code_hash.to_vec()),
            )
            .await?;
        if let Some(r) = row {
            return Ok(Ok(RedeemedCode {
                parcel: parse(&r, "parcel_id", |s| ParcelId::parse(s).ok())?,
                compartment: parse(&r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
            }));
        }
        let why = self
            .one(
                sqlx::query("SELECT parcel_id, compartment_id, used_at, revoked_at FROM pickup_codes WHERE bank_id = $1 AND code_hash = $2")
                    .bind(bank.as_str().to_owned())
                    .bind(code_hash.to_vec()),
            )
            .await?;
        let Some(r) = why else {
            return Ok(Err(CodeRefused { reason: CodeRefusal::Unknown, code: None }));
        };
        let reason = if opt_int(&r, "used_at")?.is_some() {
            CodeRefusal::Used
        } else if opt_int(&r, "revoked_at")?.is_some() {
            CodeRefusal::Revoked
        } else {
            CodeRefusal::Expired
        };
        let code = RedeemedCode {
            parcel: parse(&r, "parcel_id", |s| ParcelId::parse(s).ok())?,
            compartment: parse(&r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
        };
        Ok(Err(CodeRefused { reason, code: Some(code) }))
    }

    /// The pickup code record `id` at `bank`: its keyed hash, to redeem it by
    /// [`Tx::redeem_pickup_code`] (a QR token names its code record, not the code), with its
    /// parcel and compartment.
    pub async fn pickup_code_hash(
        &mut self,
        bank: &BankId,
        id: &CodeId,
    ) -> R<Option<(Vec<u8>, RedeemedCode)>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT code_hash, parcel_id, compartment_id FROM pickup_codes WHERE id = $1 AND bank_id = $2",
                )
                .bind(id.as_str().to_owned())
                .bind(bank.as_str().to_owned()),
            )
            .await?;
        row.map(|r| {
            let code = RedeemedCode {
                parcel: parse(&r, "parcel_id", |s| ParcelId::parse(s).ok())?,
                compartment: parse(&r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
            };
            Ok((blob(&r, "code_hash")?, code))
        })
        .transpose()
    }

    /// The codes that work at `bank` at `now` (unused, unrevoked, unexpired) and have an
    /// offline verifier, with their compartment numbers: what its agent is sent.
    pub async fn offline_codes(&mut self, bank: &BankId, now: Timestamp) -> R<Vec<OfflineCodeRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT p.id, c.number, p.offline_verifier, p.expires_at FROM pickup_codes p \
                     JOIN compartments c ON c.id = p.compartment_id \
                     WHERE p.bank_id = $1 AND p.used_at IS NULL AND p.revoked_at IS NULL \
                     AND p.expires_at > $2 AND p.offline_verifier IS NOT NULL ORDER BY p.id",
                )
                .bind(bank.as_str().to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let number =
                    u16::try_from(int(r, "number")?).map_err(|_| StoreError::Corrupt("number"))?;
                Ok(OfflineCodeRow {
                    id: parse(r, "id", |s| CodeId::parse(s).ok())?,
                    compartment: CompartmentNumber::new(number)
                        .map_err(|_| StoreError::Corrupt("number"))?,
                    verifier: blob(r, "offline_verifier")?,
                    expires_at: Timestamp::from_millis(int(r, "expires_at")?),
                })
            })
            .collect()
    }

    /// Records that `device` reported the offline use `use_id`; false when it had already,
    /// so a report sent twice is consumed once.
    pub async fn record_offline_use(
        &mut self,
        device: &DeviceId,
        use_id: &str,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "INSERT INTO offline_uses (device_id, use_id, received_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (device_id, use_id) DO NOTHING",
                )
                .bind(device.as_str().to_owned())
                .bind(use_id.to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    /// A parcel's code that still works (unused, unrevoked, unexpired), if any.
    pub async fn active_pickup_code(
        &mut self,
        parcel: &ParcelId,
        now: Timestamp,
    ) -> R<Option<ActiveCode>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT id, bank_id, compartment_id, expires_at FROM pickup_codes \
                     WHERE parcel_id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
                     ORDER BY created_at DESC LIMIT 1",
                )
                .bind(parcel.as_str().to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        row.map(|r| {
            Ok(ActiveCode {
                id: parse(&r, "id", |s| CodeId::parse(s).ok())?,
                bank: parse(&r, "bank_id", |s| BankId::parse(s).ok())?,
                compartment: parse(&r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
                expires_at: Timestamp::from_millis(int(&r, "expires_at")?),
            })
        })
        .transpose()
    }

    /// Marks the code with this hash at `bank` as re-opened, if it was used after
    /// `used_after` and has not been re-opened before; true when it was. Once per code.
    pub async fn reopen_pickup_code(
        &mut self,
        bank: &BankId,
        code_hash: &[u8],
        used_after: Timestamp,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE pickup_codes SET reopened_at = $1 WHERE bank_id = $2 AND code_hash = $3 \
                     AND used_at IS NOT NULL AND used_at > $4 AND reopened_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(bank.as_str().to_owned())
                .bind(code_hash.to_vec())
                .bind(used_after.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Revokes a parcel's unused codes; returns how many.
    pub async fn revoke_pickup_codes(&mut self, parcel: &ParcelId, now: Timestamp) -> R<u64> {
        self.exec(
            sqlx::query("UPDATE pickup_codes SET revoked_at = $1 WHERE parcel_id = $2 AND used_at IS NULL AND revoked_at IS NULL")
                .bind(now.as_millis())
                .bind(parcel.as_str().to_owned()),
        )
        .await
    }
}
