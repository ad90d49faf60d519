//! Throttle counters: failures per key and window.

use custody_core::Timestamp;

use crate::StoreError;

use super::{R, Tx, int};

impl Tx {
    /// Counts one more failure for `key` in the window starting at `window_start` and returns
    /// the new count. Counting first and checking after makes check-and-count one atomic step.
    pub async fn add_failure(&mut self, key: &str, window_start: Timestamp) -> R<u32> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "INSERT INTO throttle_counters (key, window_start, failures) VALUES ($1, $2, 1) \
                     ON CONFLICT (key, window_start) DO UPDATE SET failures = throttle_counters.failures + 1 \
                     RETURNING failures",
                )
                .bind(key.to_owned())
                .bind(window_start.as_millis()),
            )
            .await?
            .ok_or(StoreError::Corrupt("throttle_counters"))?;
        u32::try_from(int(&row, "failures")?).map_err(|_| StoreError::Corrupt("failures"))
    }

    /// Takes back one counted failure (the attempt it reserved succeeded).
    pub async fn refund_failure(&mut self, key: &str, window_start: Timestamp) -> R<()> {
        self.exec(
            sqlx::query("UPDATE throttle_counters SET failures = failures - 1 WHERE key = $1 AND window_start = $2 AND failures > 0")
                .bind(key.to_owned())
                .bind(window_start.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Failures counted for `key` in the window starting at `window_start`.
    pub async fn failures(&mut self, key: &str, window_start: Timestamp) -> R<u32> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT failures FROM throttle_counters WHERE key = $1 AND window_start = $2",
                )
                .bind(key.to_owned())
                .bind(window_start.as_millis()),
            )
            .await?;
        row.map(|r| int(&r, "failures"))
            .transpose()
            .map(|n| u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX))
    }

    /// Drops counters of windows that started before `before`.
    pub async fn prune_throttles(&mut self, before: Timestamp) -> R<u64> {
        self.exec(
            sqlx::query("DELETE FROM throttle_counters WHERE window_start < $1")
                .bind(before.as_millis()),
        )
        .await
    }
}
