//! Enrolment tokens and the devices of banks.

use custody_core::{BankId, DeviceId, Timestamp};
use sqlx::any::AnyRow;

use crate::rows::{DeviceRow, NewEnrolmentToken};

use super::{R, Tx, blob, opt_time, parse, text, time};

pub(crate) fn device_row(r: &AnyRow) -> R<DeviceRow> {
    Ok(DeviceRow {
        id: parse(r, "id", |s| DeviceId::parse(s).ok())?,
        bank: parse(r, "bank_id", |s| BankId::parse(s).ok())?,
        cert_serial: text(r, "cert_serial")?,
        spki_sha256: blob(r, "spki_sha256")?,
        enrolled_at: time(r, "enrolled_at")?,
        cert_expires_at: time(r, "cert_expires_at")?,
        revoked_at: opt_time(r, "revoked_at")?,
        last_seen_at: opt_time(r, "last_seen_at")?,
    })
}

impl Tx {
    /// Stores an enrolment token's keyed hash.
    pub async fn insert_enrolment_token(&mut self, t: &NewEnrolmentToken) -> R<()> {
        self.exec(
            sqlx::query("INSERT INTO enrolment_tokens (id, bank_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(t.id.as_str().to_owned())
                .bind(t.bank.as_str().to_owned())
                .bind(t.token_hash.clone())
                .bind(t.created_at.as_millis())
                .bind(t.expires_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Uses an enrolment token: succeeds once, before expiry, and returns its bank.
    pub async fn consume_enrolment_token(
        &mut self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> R<Option<BankId>> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "UPDATE enrolment_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING bank_id",
                )
                .bind(now.as_millis())
                .bind(token_hash.to_vec()),
            )
            .await?;
        row.map(|r| parse(&r, "bank_id", |s| BankId::parse(s).ok())).transpose()
    }

    /// Stores an enrolled device.
    pub async fn insert_device(&mut self, d: &DeviceRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO devices (id, bank_id, cert_serial, spki_sha256, enrolled_at, cert_expires_at, revoked_at, last_seen_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(d.id.as_str().to_owned())
            .bind(d.bank.as_str().to_owned())
            .bind(d.cert_serial.clone())
            .bind(d.spki_sha256.clone())
            .bind(d.enrolled_at.as_millis())
            .bind(d.cert_expires_at.as_millis())
            .bind(d.revoked_at.map(Timestamp::as_millis))
            .bind(d.last_seen_at.map(Timestamp::as_millis)),
        )
        .await
        .map(|_| ())
    }

    /// A device.
    pub async fn device(&mut self, id: &DeviceId) -> R<Option<DeviceRow>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT id, bank_id, cert_serial, spki_sha256, enrolled_at, cert_expires_at, revoked_at, last_seen_at FROM devices WHERE id = $1",
                )
                .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(device_row).transpose()
    }

    /// The devices of a bank, newest first.
    pub async fn devices_of_bank(&mut self, bank: &BankId) -> R<Vec<DeviceRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT id, bank_id, cert_serial, spki_sha256, enrolled_at, cert_expires_at, revoked_at, last_seen_at FROM devices \
                     WHERE bank_id = $1 ORDER BY enrolled_at DESC, id",
                )
                .bind(bank.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(device_row).collect()
    }

    /// Revokes every live device of a bank except `keep` (a re-enrolled bank has one identity).
    pub async fn revoke_devices_of_bank(
        &mut self,
        bank: &BankId,
        keep: &DeviceId,
        now: Timestamp,
    ) -> R<u64> {
        self.exec(
            sqlx::query("UPDATE devices SET revoked_at = $1 WHERE bank_id = $2 AND id <> $3 AND revoked_at IS NULL")
                .bind(now.as_millis())
                .bind(bank.as_str().to_owned())
                .bind(keep.as_str().to_owned()),
        )
        .await
    }

    /// Revokes a device; returns whether it was live.
    pub async fn revoke_device(&mut self, id: &DeviceId, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE devices SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Replaces a live device's certificate (serial, key, expiry); returns whether it was live.
    pub async fn renew_device(
        &mut self,
        id: &DeviceId,
        serial: &str,
        spki_sha256: &[u8],
        expires_at: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE devices SET cert_serial = $1, spki_sha256 = $2, cert_expires_at = $3 \
                     WHERE id = $4 AND revoked_at IS NULL",
                )
                .bind(serial.to_owned())
                .bind(spki_sha256.to_vec())
                .bind(expires_at.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Serial numbers of revoked certificates still within their validity: what the gateway
    /// refuses at the handshake (an expired one is refused anyway).
    pub async fn revoked_device_serials(&mut self, now: Timestamp) -> R<Vec<String>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT cert_serial FROM devices WHERE revoked_at IS NOT NULL AND cert_expires_at > $1",
                )
                .bind(now.as_millis()),
            )
            .await?;
        rows.iter().map(|r| text(r, "cert_serial")).collect()
    }

    /// Notes that a device connected.
    pub async fn touch_device(&mut self, id: &DeviceId, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }
}
