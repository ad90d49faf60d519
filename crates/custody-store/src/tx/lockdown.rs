//! Lockdowns of banks and each site's lockdown rules.

use custody_core::alert::{AlertKind, LockdownRule, LockdownScope, Severity};
use custody_core::{BankId, SiteId, Timestamp};

use crate::StoreError;

use super::{R, Tx, parse, text, time};

impl Tx {
    /// When bank `bank` was locked down and by whom (an actor id), if it is.
    pub async fn lockdown(&mut self, bank: &BankId) -> R<Option<(Timestamp, String)>> {
        let row = self
            .one(
                sqlx::query("SELECT engaged_at, engaged_by FROM lockdowns WHERE bank_id = $1")
                    .bind(bank.as_str().to_owned()),
            )
            .await?;
        row.map(|r| Ok((time(&r, "engaged_at")?, text(&r, "engaged_by")?))).transpose()
    }

    /// Locks bank `bank` down; false when it was already.
    pub async fn engage_lockdown(&mut self, bank: &BankId, by: &str, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "INSERT INTO lockdowns (bank_id, engaged_at, engaged_by) VALUES ($1, $2, $3) \
                     ON CONFLICT (bank_id) DO NOTHING",
                )
                .bind(bank.as_str().to_owned())
                .bind(now.as_millis())
                .bind(by.to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Sets the site's lockdown rule for its kind (or for any kind), replacing the one it had.
    pub async fn put_lockdown_rule(
        &mut self,
        site: &SiteId,
        rule: &LockdownRule,
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO lockdown_rules (site_id, kind, min_severity, scope, set_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (site_id, kind) DO UPDATE SET \
                 min_severity = excluded.min_severity, scope = excluded.scope, set_at = excluded.set_at",
            )
            .bind(site.as_str().to_owned())
            .bind(rule.kind_str())
            .bind(rule.min_severity.as_str())
            .bind(rule.scope.as_str())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Removes the site's lockdown rule for `kind` (`None`: the one for any kind); false when
    /// it had none.
    pub async fn delete_lockdown_rule(
        &mut self,
        site: &SiteId,
        kind: Option<AlertKind>,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM lockdown_rules WHERE site_id = $1 AND kind = $2")
                    .bind(site.as_str().to_owned())
                    .bind(kind.map_or(custody_core::alert::ANY_KIND, AlertKind::as_str)),
            )
            .await?;
        Ok(n == 1)
    }

    /// The site's lockdown rules.
    pub async fn lockdown_rules(&mut self, site: &SiteId) -> R<Vec<LockdownRule>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT kind, min_severity, scope FROM lockdown_rules WHERE site_id = $1 \
                     ORDER BY kind",
                )
                .bind(site.as_str().to_owned()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let kind = text(r, "kind")?;
                Ok(LockdownRule {
                    kind: LockdownRule::parse_kind(&kind)
                        .map_err(|_| StoreError::Corrupt("kind"))?,
                    min_severity: parse(r, "min_severity", Severity::parse)?,
                    scope: parse(r, "scope", LockdownScope::parse)?,
                })
            })
            .collect()
    }

    /// Lifts the lockdown of bank `bank` engaged at `engaged_at`; false when there was none,
    /// or it is another one than the caller read.
    pub async fn lift_lockdown(&mut self, bank: &BankId, engaged_at: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM lockdowns WHERE bank_id = $1 AND engaged_at = $2")
                    .bind(bank.as_str().to_owned())
                    .bind(engaged_at.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }
}
