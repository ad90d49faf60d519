//! Sessions, found by a hash of their token.

use custody_core::person::Factor;
use custody_core::{PersonId, SessionId, Timestamp};
use sqlx::any::AnyRow;

use crate::StoreError;
use crate::rows::SessionRow;

use super::{R, Tx, blob, opt_parse, opt_time, parse, time};

pub(crate) const SESSION_COLS: &str = "token_hash, id, person_id, created_at, last_seen_at, expires_at, \
     factor_at, factor, client_sealed";

pub(crate) fn session_row(r: &AnyRow) -> R<SessionRow> {
    let factor = match (opt_parse(r, "factor", Factor::parse)?, opt_time(r, "factor_at")?) {
        (Some(f), Some(at)) => Some((f, at)),
        (None, None) => None,
        _ => return Err(StoreError::Corrupt("sessions.factor")),
    };
    Ok(SessionRow {
        token_hash: blob(r, "token_hash")?,
        id: parse(r, "id", |s| SessionId::parse(s).ok())?,
        person: parse(r, "person_id", |s| PersonId::parse(s).ok())?,
        created_at: time(r, "created_at")?,
        last_seen_at: time(r, "last_seen_at")?,
        expires_at: time(r, "expires_at")?,
        factor,
        client: blob(r, "client_sealed")?,
    })
}

impl Tx {
    /// Stores a new session.
    pub async fn insert_session(&mut self, s: &SessionRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO sessions (token_hash, id, person_id, created_at, last_seen_at, \
                 expires_at, factor_at, factor, client_sealed) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(s.token_hash.clone())
            .bind(s.id.as_str().to_owned())
            .bind(s.person.as_str().to_owned())
            .bind(s.created_at.as_millis())
            .bind(s.last_seen_at.as_millis())
            .bind(s.expires_at.as_millis())
            .bind(s.factor.map(|(_, at)| at.as_millis()))
            .bind(s.factor.map(|(f, _)| f.as_str()))
            .bind(s.client.clone()),
        )
        .await
        .map(|_| ())
    }

    /// A session by the keyed hash of its token.
    pub async fn session(&mut self, token_hash: &[u8]) -> R<Option<SessionRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", SESSION_COLS, " FROM sessions WHERE token_hash = $1"))
                    .bind(token_hash.to_vec()),
            )
            .await?;
        row.as_ref().map(session_row).transpose()
    }

    /// A person's sessions, newest first.
    pub async fn sessions_of(&mut self, person: &PersonId) -> R<Vec<SessionRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    SESSION_COLS,
                    " FROM sessions WHERE person_id = $1 ORDER BY created_at DESC, id"
                ))
                .bind(person.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(session_row).collect()
    }

    /// Notes activity on a session.
    pub async fn touch_session(&mut self, token_hash: &[u8], now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2")
                .bind(now.as_millis())
                .bind(token_hash.to_vec()),
        )
        .await
        .map(|_| ())
    }

    /// Ends a session.
    pub async fn delete_session(&mut self, token_hash: &[u8]) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash.to_vec()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends the session `id` of `person` (and no one else's); whether there was one.
    pub async fn delete_session_of(&mut self, person: &PersonId, id: &SessionId) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM sessions WHERE person_id = $1 AND id = $2")
                    .bind(person.as_str().to_owned())
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends every session of `person` but the one whose token hashes to `keep`; how many ended.
    pub async fn delete_sessions_of(&mut self, person: &PersonId, keep: Option<&[u8]>) -> R<u64> {
        self.exec(
            sqlx::query(
                "DELETE FROM sessions WHERE person_id = $1 AND ($2 IS NULL OR token_hash <> $2)",
            )
            .bind(person.as_str().to_owned())
            .bind(keep.map(<[u8]>::to_vec)),
        )
        .await
    }
}
