//! Carriers' API keys: only a keyed hash of each secret.

use custody_core::text::Name;
use custody_core::{ApiKeyId, CarrierId, OrgId, SiteId, Timestamp};

use crate::rows::ApiKeyRow;

use super::{R, Tx, blob, opt_time, parse, time};

impl Tx {
    /// Stores a carrier API key and its sites.
    pub async fn insert_api_key(&mut self, k: &ApiKeyRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO api_keys (id, carrier_id, label, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(k.id.as_str().to_owned())
            .bind(k.carrier.as_str().to_owned())
            .bind(k.label.as_str().to_owned())
            .bind(k.secret_hash.clone())
            .bind(k.created_at.as_millis()),
        )
        .await?;
        for site in &k.sites {
            self.exec(
                sqlx::query("INSERT INTO api_key_sites (key_id, site_id) VALUES ($1, $2)")
                    .bind(k.id.as_str().to_owned())
                    .bind(site.as_str().to_owned()),
            )
            .await?;
        }
        Ok(())
    }

    /// An API key with its sites and organisation.
    pub async fn api_key(&mut self, id: &ApiKeyId) -> R<Option<ApiKeyRow>> {
        let Some(r) = self
            .one(
                sqlx::query(
                    "SELECT k.id, k.carrier_id, c.org_id, k.label, k.secret_hash, k.created_at, k.last_used_at, \
                     k.revoked_at FROM api_keys k JOIN carriers c ON c.id = k.carrier_id WHERE k.id = $1",
                )
                .bind(id.as_str().to_owned()),
            )
            .await?
        else {
            return Ok(None);
        };
        let sites = self
            .all(
                sqlx::query("SELECT site_id FROM api_key_sites WHERE key_id = $1 ORDER BY site_id")
                    .bind(id.as_str().to_owned()),
            )
            .await?
            .iter()
            .map(|s| parse(s, "site_id", |v| SiteId::parse(v).ok()))
            .collect::<R<Vec<_>>>()?;
        Ok(Some(ApiKeyRow {
            id: parse(&r, "id", |s| ApiKeyId::parse(s).ok())?,
            carrier: parse(&r, "carrier_id", |s| CarrierId::parse(s).ok())?,
            org: parse(&r, "org_id", |s| OrgId::parse(s).ok())?,
            label: parse(&r, "label", |s| Name::parse(s).ok())?,
            secret_hash: blob(&r, "secret_hash")?,
            sites,
            created_at: time(&r, "created_at")?,
            last_used_at: opt_time(&r, "last_used_at")?,
            revoked_at: opt_time(&r, "revoked_at")?,
        }))
    }

    /// Notes an authenticated use of a key.
    pub async fn touch_api_key(&mut self, id: &ApiKeyId, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// Makes a key stop working at `at` (now, to revoke it; later, to let its successor take
    /// over after a rotation). Returns whether it still worked until later than that, so a key
    /// is never given a longer life.
    pub async fn retire_api_key(&mut self, id: &ApiKeyId, at: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 \
                     AND (revoked_at IS NULL OR revoked_at > $1)",
                )
                .bind(at.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// A carrier's keys, newest first.
    pub async fn api_keys_of(&mut self, carrier: &CarrierId) -> R<Vec<ApiKeyRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT id FROM api_keys WHERE carrier_id = $1 ORDER BY created_at DESC, id",
                )
                .bind(carrier.as_str().to_owned()),
            )
            .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for r in &rows {
            let id = parse(r, "id", |s| ApiKeyId::parse(s).ok())?;
            keys.extend(self.api_key(&id).await?);
        }
        Ok(keys)
    }
}
