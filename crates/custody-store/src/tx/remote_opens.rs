//! Doors opened without a parcel's own credential, counted per opener and per bank over a
//! sliding window (`custody_app::remote_opens`).

use custody_core::{BankId, Timestamp};

use super::{R, Tx, int};
use crate::StoreError;

/// Doors counted in the window, for one opener and one bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteOpenCounts {
    /// Opened by the opener, at any bank.
    pub opener: u32,
    /// Opened at the bank, by anyone.
    pub bank: u32,
}

impl Tx {
    /// Holds the opener's and the bank's counts for the rest of this unit, then counts the doors
    /// each opened since `since`. The heads are taken opener first, then bank, in every unit,
    /// so two units never wait for each other in a circle.
    pub async fn remote_opens_since(
        &mut self,
        opener: &str,
        bank: &BankId,
        since: Timestamp,
    ) -> R<RemoteOpenCounts> {
        for key in [format!("opener:{opener}"), format!("bank:{bank}")] {
            self.exec(
                sqlx::query(
                    "INSERT INTO remote_open_heads (key, opens) VALUES ($1, 0) \
                     ON CONFLICT (key) DO UPDATE SET opens = remote_open_heads.opens",
                )
                .bind(key),
            )
            .await?;
        }
        let count =
            |sql: &'static str, key: String| sqlx::query(sql).bind(key).bind(since.as_millis());
        let opener_row = self
            .one(count(
                "SELECT COUNT(*) AS n FROM remote_opens WHERE opener = $1 AND opened_at > $2",
                opener.to_owned(),
            ))
            .await?;
        let bank_row = self
            .one(count(
                "SELECT COUNT(*) AS n FROM remote_opens WHERE bank_id = $1 AND opened_at > $2",
                bank.as_str().to_owned(),
            ))
            .await?;
        let n = |row: Option<sqlx::any::AnyRow>| -> R<u32> {
            let row = row.ok_or(StoreError::Corrupt("remote_opens"))?;
            u32::try_from(int(&row, "n")?).map_err(|_| StoreError::Corrupt("remote_opens"))
        };
        Ok(RemoteOpenCounts { opener: n(opener_row)?, bank: n(bank_row)? })
    }

    /// Counts one door opened by `opener` at `bank`, approved by a second person or not.
    pub async fn record_remote_open(
        &mut self,
        opener: &str,
        bank: &BankId,
        at: Timestamp,
        approved_by: Option<&str>,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO remote_opens (opener, bank_id, opened_at, approved_by) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(opener.to_owned())
            .bind(bank.as_str().to_owned())
            .bind(at.as_millis())
            .bind(approved_by.map(str::to_owned)),
        )
        .await
        .map(|_| ())
    }

    /// Forgets doors opened before `before`: past every window, they count for nothing (the
    /// audit log keeps each of them).
    pub async fn prune_remote_opens(&mut self, before: Timestamp) -> R<u64> {
        self.exec(
            sqlx::query("DELETE FROM remote_opens WHERE opened_at < $1").bind(before.as_millis()),
        )
        .await
    }
}
