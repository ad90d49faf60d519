//! Each bank's sensor settings and the readings they count.

use std::time::Duration;

use custody_core::alert::{Debounce, SensorSettings};
use custody_core::{BankId, DeviceId, Timestamp};
use sqlx::any::AnyRow;

use crate::StoreError;

use super::{R, Tx, int, text};

impl Tx {
    /// The bank's sensor settings: the defaults until an admin sets them.
    pub async fn sensor_settings(&mut self, bank: &BankId) -> R<SensorSettings> {
        let door = self
            .one(
                sqlx::query(
                    "SELECT door_left_open_after_ms FROM sensor_settings WHERE bank_id = $1",
                )
                .bind(bank.as_str().to_owned()),
            )
            .await?;
        let Some(door) = door else { return Ok(SensorSettings::default()) };
        let door = Duration::from_millis(
            u64::try_from(int(&door, "door_left_open_after_ms")?)
                .map_err(|_| StoreError::Corrupt("door_left_open_after_ms"))?,
        );
        let rows = self
            .all(
                sqlx::query(
                    "SELECT kind, threshold, window_ms, quiet_ms FROM sensor_rules \
                     WHERE bank_id = $1 ORDER BY kind",
                )
                .bind(bank.as_str().to_owned()),
            )
            .await?;
        let millis = |r: &AnyRow, col| -> R<Duration> {
            Ok(Duration::from_millis(
                u64::try_from(int(r, col)?).map_err(|_| StoreError::Corrupt(col))?,
            ))
        };
        let rules = rows
            .iter()
            .map(|r| {
                let rule = Debounce {
                    threshold: u32::try_from(int(r, "threshold")?)
                        .map_err(|_| StoreError::Corrupt("threshold"))?,
                    window: millis(r, "window_ms")?,
                    quiet: millis(r, "quiet_ms")?,
                };
                Ok((text(r, "kind")?, rule))
            })
            .collect::<R<Vec<_>>>()?;
        SensorSettings::new(rules, door).map_err(|_| StoreError::Corrupt("sensor_rules"))
    }

    /// Replaces the bank's sensor settings.
    pub async fn put_sensor_settings(
        &mut self,
        bank: &BankId,
        settings: &SensorSettings,
        now: Timestamp,
    ) -> R<()> {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.exec(
            sqlx::query(
                "INSERT INTO sensor_settings (bank_id, door_left_open_after_ms, set_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (bank_id) DO UPDATE SET \
                 door_left_open_after_ms = excluded.door_left_open_after_ms, set_at = excluded.set_at",
            )
            .bind(bank.as_str().to_owned())
            .bind(millis(settings.door_left_open_after))
            .bind(now.as_millis()),
        )
        .await?;
        self.exec(
            sqlx::query("DELETE FROM sensor_rules WHERE bank_id = $1")
                .bind(bank.as_str().to_owned()),
        )
        .await?;
        for (kind, rule) in &settings.debounce {
            self.exec(
                sqlx::query(
                    "INSERT INTO sensor_rules (bank_id, kind, threshold, window_ms, quiet_ms) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(bank.as_str().to_owned())
                .bind(kind.as_str())
                .bind(i64::from(rule.threshold))
                .bind(millis(rule.window))
                .bind(millis(rule.quiet)),
            )
            .await?;
        }
        Ok(())
    }

    /// Takes note of a device's sensor reading under its journal counter; false when it was
    /// taken already (the agent sent it again before it heard the acknowledgement).
    pub async fn note_sensor_reading(
        &mut self,
        device: &DeviceId,
        counter: i64,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "INSERT INTO sensor_readings (device_id, counter, received_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (device_id, counter) DO NOTHING",
                )
                .bind(device.as_str().to_owned())
                .bind(counter)
                .bind(now.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }
}
