//! Second factors: authenticator apps and recovery codes.

use custody_core::{PersonId, Timestamp};

use crate::StoreError;
use crate::rows::TotpRow;

use super::{R, Tx, blob, int, parse, time};

impl Tx {
    /// Starts (or restarts) setting up an authenticator app for `person`; a working one stays
    /// in place until the new one is confirmed.
    pub async fn put_totp_enrolment(
        &mut self,
        person: &PersonId,
        sealed_seed: &[u8],
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO totp_enrolments (person_id, sealed_seed, created_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (person_id) DO UPDATE \
                 SET sealed_seed = excluded.sealed_seed, created_at = excluded.created_at",
            )
            .bind(person.as_str().to_owned())
            .bind(sealed_seed.to_vec())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// The authenticator app `person` is setting up: its sealed seed and when it was begun.
    pub async fn totp_enrolment(&mut self, person: &PersonId) -> R<Option<(Vec<u8>, Timestamp)>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT sealed_seed, created_at FROM totp_enrolments WHERE person_id = $1",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        row.map(|r| Ok((blob(&r, "sealed_seed")?, time(&r, "created_at")?))).transpose()
    }

    /// Makes the app being set up with `sealed_seed` `person`'s authenticator app, with `step`
    /// (the step of the code that confirmed it) spent. `false` when that enrolment is no longer
    /// there (confirmed by a concurrent request, or restarted with another seed).
    pub async fn confirm_totp(
        &mut self,
        person: &PersonId,
        sealed_seed: &[u8],
        step: u64,
        now: Timestamp,
    ) -> R<bool> {
        let step = i64::try_from(step).map_err(|_| StoreError::Corrupt("last_step"))?;
        let taken = self
            .exec(
                sqlx::query(
                    "DELETE FROM totp_enrolments WHERE person_id = $1 AND sealed_seed = $2",
                )
                .bind(person.as_str().to_owned())
                .bind(sealed_seed.to_vec()),
            )
            .await?;
        if taken != 1 {
            return Ok(false);
        }
        self.exec(
            sqlx::query(
                "INSERT INTO totp_factors (person_id, sealed_seed, confirmed_at, last_step) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (person_id) DO UPDATE \
                 SET sealed_seed = excluded.sealed_seed, confirmed_at = excluded.confirmed_at, \
                 last_step = excluded.last_step, failures = 0",
            )
            .bind(person.as_str().to_owned())
            .bind(sealed_seed.to_vec())
            .bind(now.as_millis())
            .bind(step),
        )
        .await?;
        Ok(true)
    }

    /// `person`'s authenticator app.
    pub async fn totp(&mut self, person: &PersonId) -> R<Option<TotpRow>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT person_id, sealed_seed, confirmed_at, last_step, failures \
                     FROM totp_factors WHERE person_id = $1",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        row.map(|r| {
            Ok(TotpRow {
                person: parse(&r, "person_id", |s| PersonId::parse(s).ok())?,
                sealed_seed: blob(&r, "sealed_seed")?,
                confirmed_at: time(&r, "confirmed_at")?,
                last_step: u64::try_from(int(&r, "last_step")?)
                    .map_err(|_| StoreError::Corrupt("last_step"))?,
                failures: u32::try_from(int(&r, "failures")?)
                    .map_err(|_| StoreError::Corrupt("failures"))?,
            })
        })
        .transpose()
    }

    /// Spends time step `step` of `person`'s authenticator app and clears its count of wrong
    /// codes: `false` when that step or a later one was spent already, so of two requests with
    /// the same code exactly one wins.
    pub async fn spend_totp_step(&mut self, person: &PersonId, step: u64) -> R<bool> {
        let step = i64::try_from(step).map_err(|_| StoreError::Corrupt("last_step"))?;
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE totp_factors SET last_step = $2, failures = 0 \
                     WHERE person_id = $1 AND last_step < $2",
                )
                .bind(person.as_str().to_owned())
                .bind(step),
            )
            .await?;
        Ok(n == 1)
    }

    /// Counts a wrong code of `person`'s authenticator app; returns the wrong codes since the
    /// last right one (0 when the person has no app).
    pub async fn record_totp_failure(&mut self, person: &PersonId) -> R<u32> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "UPDATE totp_factors SET failures = failures + 1 WHERE person_id = $1 \
                     RETURNING failures",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        row.map_or(Ok(0), |r| {
            u32::try_from(int(&r, "failures")?).map_err(|_| StoreError::Corrupt("failures"))
        })
    }

    /// Removes `person`'s authenticator app.
    pub async fn delete_totp(&mut self, person: &PersonId) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM totp_factors WHERE person_id = $1")
                    .bind(person.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Replaces `person`'s recovery codes with these keyed hashes.
    pub async fn replace_recovery_codes(
        &mut self,
        person: &PersonId,
        hashes: &[[u8; 32]],
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query("DELETE FROM recovery_codes WHERE person_id = $1")
                .bind(person.as_str().to_owned()),
        )
        .await?;
        for hash in hashes {
            self.exec(
                sqlx::query(
                    "INSERT INTO recovery_codes (person_id, code_hash, created_at) \
                     VALUES ($1, $2, $3)",
                )
                .bind(person.as_str().to_owned())
                .bind(hash.to_vec())
                .bind(now.as_millis()),
            )
            .await?;
        }
        Ok(())
    }

    /// Spends the recovery code of `person` with this keyed hash: `false` when there is no
    /// such unused code.
    pub async fn spend_recovery_code(
        &mut self,
        person: &PersonId,
        hash: &[u8],
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE recovery_codes SET used_at = $3 \
                     WHERE person_id = $1 AND code_hash = $2 AND used_at IS NULL",
                )
                .bind(person.as_str().to_owned())
                .bind(hash.to_vec())
                .bind(now.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    /// How many unused recovery codes `person` holds.
    pub async fn recovery_codes_left(&mut self, person: &PersonId) -> R<u32> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM recovery_codes \
                     WHERE person_id = $1 AND used_at IS NULL",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        let n = row.map(|r| int(&r, "n")).transpose()?.unwrap_or(0);
        u32::try_from(n).map_err(|_| StoreError::Corrupt("recovery_codes"))
    }
}
