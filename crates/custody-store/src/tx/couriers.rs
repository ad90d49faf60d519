//! Couriers' daily kiosk codes.

use custody_core::{PersonId, Timestamp};

use super::{R, Tx, parse};

impl Tx {
    /// Keeps a courier's code (its keyed hash) until `valid_until`, and forgets lapsed ones.
    /// Keeping the same code again changes nothing.
    pub async fn keep_courier_code(
        &mut self,
        code_hash: &[u8],
        person: &PersonId,
        now: Timestamp,
        valid_until: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query("DELETE FROM courier_codes WHERE valid_until <= $1").bind(now.as_millis()),
        )
        .await?;
        self.exec(
            sqlx::query(
                "INSERT INTO courier_codes (code_hash, person_id, valid_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (code_hash) DO NOTHING",
            )
            .bind(code_hash.to_vec())
            .bind(person.as_str().to_owned())
            .bind(valid_until.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Whose courier code hashes to `code_hash`, if it is valid at `now`.
    pub async fn courier_by_code(
        &mut self,
        code_hash: &[u8],
        now: Timestamp,
    ) -> R<Option<PersonId>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT person_id FROM courier_codes WHERE code_hash = $1 AND valid_until > $2",
                )
                .bind(code_hash.to_vec())
                .bind(now.as_millis()),
            )
            .await?;
        row.map(|r| parse(&r, "person_id", |s| PersonId::parse(s).ok())).transpose()
    }
}
