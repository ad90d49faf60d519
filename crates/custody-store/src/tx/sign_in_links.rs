//! Residents' e-mailed sign-in links (the table keeps their first name, `magic_links`).

use custody_core::{PersonId, Timestamp};

use super::{R, Tx, parse};

impl Tx {
    /// Stores a sign-in link for `person`.
    pub async fn insert_sign_in_link(
        &mut self,
        token_hash: &[u8],
        person: &PersonId,
        browser_hash: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO magic_links (token_hash, person_id, browser_hash, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash.to_vec())
            .bind(person.as_str().to_owned())
            .bind(browser_hash.to_vec())
            .bind(now.as_millis())
            .bind(expires_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Uses the sign-in link with this token, from the browser with this binding, at `now`:
    /// the person it signs in, if it was unused, unexpired and asked for by that browser.
    /// One conditional update, so a link works once however many requests race.
    pub async fn use_sign_in_link(
        &mut self,
        token_hash: &[u8],
        browser_hash: &[u8],
        now: Timestamp,
    ) -> R<Option<PersonId>> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "UPDATE magic_links SET used_at = $3 WHERE token_hash = $1 \
                     AND browser_hash = $2 AND used_at IS NULL AND expires_at > $3 \
                     RETURNING person_id",
                )
                .bind(token_hash.to_vec())
                .bind(browser_hash.to_vec())
                .bind(now.as_millis()),
            )
            .await?;
        row.map(|r| parse(&r, "person_id", |s| PersonId::parse(s).ok())).transpose()
    }
}
