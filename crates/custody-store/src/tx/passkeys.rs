//! Passkeys and the state of their ceremonies.

use custody_core::{PersonId, Timestamp};

use super::{R, Tx, parse, text, time};

impl Tx {
    /// A person's passkeys: credential id and passkey (JSON), oldest first.
    pub async fn passkeys_of(&mut self, person: &PersonId) -> R<Vec<(String, String)>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT credential_id, passkey FROM passkeys WHERE person_id = $1 \
                     ORDER BY created_at, credential_id",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(|r| Ok((text(r, "credential_id")?, text(r, "passkey")?))).collect()
    }

    /// Stores a new passkey of `person`. `Conflict` when the credential is registered already.
    pub async fn insert_passkey(
        &mut self,
        person: &PersonId,
        credential_id: &str,
        passkey: &str,
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO passkeys (credential_id, person_id, passkey, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(credential_id.to_owned())
            .bind(person.as_str().to_owned())
            .bind(passkey.to_owned())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Records a use of `person`'s passkey, with its updated counter.
    pub async fn use_passkey(
        &mut self,
        person: &PersonId,
        credential_id: &str,
        passkey: &str,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE passkeys SET passkey = $3, last_used_at = $4 \
                     WHERE person_id = $1 AND credential_id = $2",
                )
                .bind(person.as_str().to_owned())
                .bind(credential_id.to_owned())
                .bind(passkey.to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    /// The passkey with this credential id, and whose it is (people who are disabled
    /// included: the caller decides).
    pub async fn passkey(&mut self, credential_id: &str) -> R<Option<(PersonId, String)>> {
        let row = self
            .one(
                sqlx::query("SELECT person_id, passkey FROM passkeys WHERE credential_id = $1")
                    .bind(credential_id.to_owned()),
            )
            .await?;
        row.map(|r| {
            Ok((parse(&r, "person_id", |s| PersonId::parse(s).ok())?, text(&r, "passkey")?))
        })
        .transpose()
    }

    /// Keeps the state of a WebAuthn ceremony begun by `person` (none when it is a sign-in,
    /// begun before anyone is known), and forgets ceremonies that lapsed unanswered.
    pub async fn insert_ceremony(
        &mut self,
        id: &str,
        person: Option<&PersonId>,
        kind: &str,
        state: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at <= $1")
                .bind(now.as_millis()),
        )
        .await?;
        self.exec(
            sqlx::query(
                "INSERT INTO webauthn_ceremonies (id, person_id, kind, state, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.to_owned())
            .bind(person.map(|p| p.as_str().to_owned()))
            .bind(kind.to_owned())
            .bind(state.to_owned())
            .bind(expires_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Takes (deletes) ceremony `id` of `person` (none for a sign-in) and `kind`: its state,
    /// if it was there and had not lapsed at `now`. A ceremony is answered once.
    pub async fn take_ceremony(
        &mut self,
        id: &str,
        person: Option<&PersonId>,
        kind: &str,
        now: Timestamp,
    ) -> R<Option<String>> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "DELETE FROM webauthn_ceremonies WHERE id = $1 AND kind = $3 \
                     AND (person_id = $2 OR (person_id IS NULL AND $2 IS NULL)) \
                     RETURNING state, expires_at",
                )
                .bind(id.to_owned())
                .bind(person.map(|p| p.as_str().to_owned()))
                .bind(kind.to_owned()),
            )
            .await?;
        row.map(|r| Ok((text(&r, "state")?, time(&r, "expires_at")?))).transpose().map(
            |taken: Option<(String, Timestamp)>| {
                taken.filter(|(_, expires)| *expires > now).map(|(state, _)| state)
            },
        )
    }
}
