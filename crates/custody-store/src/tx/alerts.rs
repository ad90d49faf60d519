//! Alerts: raised once per thing going on, moved through their states, with their timelines.

use custody_core::alert::{AlertKind, AlertState, Severity};
use custody_core::{AlertId, BankId, OrgId, PersonId, SiteId, Timestamp};
use sqlx::any::AnyRow;

use crate::StoreError;
use crate::rows::{AlertEventRow, AlertRow, NewAlert};

use super::{R, Tx, int, opt_blob, opt_int, opt_parse, opt_text, parse, text, time};

pub(crate) const ALERT_COLS: &str = "id, org_id, site_id, bank_id, compartment, kind, severity, state, \
     owner_id, readings, raised_at, updated_at";

pub(crate) fn alert_row(r: &AnyRow) -> R<AlertRow> {
    Ok(AlertRow {
        id: parse(r, "id", |s| AlertId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        bank: opt_parse(r, "bank_id", |s| BankId::parse(s).ok())?,
        compartment: opt_int(r, "compartment")?
            .map(|n| u16::try_from(n).map_err(|_| StoreError::Corrupt("compartment")))
            .transpose()?,
        kind: parse(r, "kind", AlertKind::parse)?,
        severity: parse(r, "severity", Severity::parse)?,
        state: parse(r, "state", AlertState::parse)?,
        owner: opt_parse(r, "owner_id", |s| PersonId::parse(s).ok())?,
        readings: u64::try_from(int(r, "readings")?)
            .map_err(|_| StoreError::Corrupt("readings"))?,
        raised_at: time(r, "raised_at")?,
        updated_at: time(r, "updated_at")?,
    })
}

impl Tx {
    /// Raises `alert`, or, if one is live for the same thing, counts one more reading on it.
    /// Returns the alert's id and whether it is new. Settled by the live key's uniqueness, so
    /// two readings at once make one alert on both backends.
    pub async fn raise_alert(&mut self, alert: &NewAlert, now: Timestamp) -> R<(AlertId, bool)> {
        let key = alert.live_key();
        let inserted = self
            .exec(
                sqlx::query(
                    "INSERT INTO alerts (id, org_id, site_id, bank_id, compartment, kind, severity, \
                     state, readings, raised_at, updated_at, live_key) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', 1, $8, $8, $9) \
                     ON CONFLICT (live_key) DO NOTHING",
                )
                .bind(alert.id.as_str().to_owned())
                .bind(alert.org.as_str().to_owned())
                .bind(alert.site.as_str().to_owned())
                .bind(alert.bank.as_ref().map(|b| b.as_str().to_owned()))
                .bind(alert.compartment.map(i64::from))
                .bind(alert.kind.as_str())
                .bind(alert.severity.as_str())
                .bind(now.as_millis())
                .bind(key.clone()),
            )
            .await?;
        if inserted == 1 {
            return Ok((alert.id.clone(), true));
        }
        let row = self
            .fetch_write(
                sqlx::query(
                    "UPDATE alerts SET readings = readings + 1, updated_at = $1 WHERE live_key = $2 \
                     RETURNING id",
                )
                .bind(now.as_millis())
                .bind(key),
            )
            .await?
            .ok_or(StoreError::Corrupt("alerts.live_key"))?;
        Ok((parse(&row, "id", |s| AlertId::parse(s).ok())?, false))
    }

    /// The live alert holding `key` ([`crate::rows::live_key`]), if there is one.
    pub async fn live_alert(&mut self, key: &str) -> R<Option<AlertId>> {
        let row = self
            .one(sqlx::query("SELECT id FROM alerts WHERE live_key = $1").bind(key.to_owned()))
            .await?;
        row.map(|r| parse(&r, "id", |s| AlertId::parse(s).ok())).transpose()
    }

    /// Banks with an enrolled, unrevoked device, with their sites: whose agents should be
    /// connected.
    pub async fn enrolled_banks(&mut self) -> R<Vec<(BankId, SiteId)>> {
        let rows = self
            .all(sqlx::query(
                "SELECT DISTINCT d.bank_id, b.site_id FROM devices d JOIN banks b ON b.id = d.bank_id \
                 WHERE d.revoked_at IS NULL ORDER BY d.bank_id",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse(r, "bank_id", |s| BankId::parse(s).ok())?,
                    parse(r, "site_id", |s| SiteId::parse(s).ok())?,
                ))
            })
            .collect()
    }

    /// Moves an alert from `from` to `to` only if it is still in `from`, with its owner if
    /// `owner` names one; a resolved alert gives up its live key. Returns whether it moved.
    pub async fn move_alert(
        &mut self,
        id: &AlertId,
        from: AlertState,
        to: AlertState,
        owner: Option<&PersonId>,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE alerts SET state = $1, owner_id = COALESCE($2, owner_id), updated_at = $3, \
                     live_key = CASE WHEN $1 = 'resolved' THEN NULL ELSE live_key END \
                     WHERE id = $4 AND state = $5",
                )
                .bind(to.as_str())
                .bind(owner.map(|p| p.as_str().to_owned()))
                .bind(now.as_millis())
                .bind(id.as_str().to_owned())
                .bind(from.as_str()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Adds an entry to an alert's timeline, after its last, with the system's own note (a
    /// channel, a bank: nothing personal).
    pub async fn add_alert_event(
        &mut self,
        alert: &AlertId,
        at: Timestamp,
        actor: &str,
        what: &str,
        note: Option<&str>,
    ) -> R<()> {
        self.append_alert_event(alert, at, actor, what, note, None).await
    }

    /// Adds an entry to an alert's timeline with a person's words, sealed under their key.
    pub async fn add_sealed_alert_event(
        &mut self,
        alert: &AlertId,
        at: Timestamp,
        actor: &str,
        what: &str,
        sealed: &[u8],
    ) -> R<()> {
        self.append_alert_event(alert, at, actor, what, None, Some(sealed)).await
    }

    async fn append_alert_event(
        &mut self,
        alert: &AlertId,
        at: Timestamp,
        actor: &str,
        what: &str,
        note: Option<&str>,
        sealed: Option<&[u8]>,
    ) -> R<()> {
        // The next number is read from the events so far; on PostgreSQL two units adding to
        // one alert at once (an admin acknowledging while the fan-out records a delivery)
        // would read the same one. Updating the alert's row first holds it until the unit
        // ends, so they take turns (SQLite has one writer). Every unit that changes an alert
        // takes its row before its events, so the order is the same everywhere.
        self.exec(
            sqlx::query("UPDATE alerts SET updated_at = updated_at WHERE id = $1")
                .bind(alert.as_str().to_owned()),
        )
        .await?;
        self.exec(
            sqlx::query(
                "INSERT INTO alert_events (alert_id, seq, at, actor, what, note, note_sealed) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM alert_events \
                 WHERE alert_id = $1",
            )
            .bind(alert.as_str().to_owned())
            .bind(at.as_millis())
            .bind(actor.to_owned())
            .bind(what.to_owned())
            .bind(note.map(str::to_owned))
            .bind(sealed.map(<[u8]>::to_vec)),
        )
        .await
        .map(|_| ())
    }

    /// The alert `id`.
    pub async fn alert(&mut self, id: &AlertId) -> R<Option<AlertRow>> {
        const Q: &str = sql!("SELECT ", ALERT_COLS, " FROM alerts WHERE id = $1");
        let row = self.one(sqlx::query(Q).bind(id.as_str().to_owned())).await?;
        row.as_ref().map(alert_row).transpose()
    }

    /// Open alerts of medium severity or above raised at or before `before` and not escalated
    /// yet, oldest first, at most `limit`.
    pub async fn alerts_to_escalate(&mut self, before: Timestamp, limit: u32) -> R<Vec<AlertRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    ALERT_COLS,
                    " FROM alerts WHERE state = 'open' AND escalated_at IS NULL AND severity <> 'low' \
                     AND raised_at <= $1 ORDER BY raised_at, id LIMIT $2"
                ))
                .bind(before.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(alert_row).collect()
    }

    /// Marks an alert escalated, if it is still open and was not; whether it was marked.
    pub async fn mark_escalated(&mut self, id: &AlertId, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE alerts SET escalated_at = $1, updated_at = $1 WHERE id = $2 \
                     AND state = 'open' AND escalated_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// A site's alerts, newest first, at most `limit`; with `live_only`, open and acknowledged
    /// ones only.
    pub async fn alerts_of_site(
        &mut self,
        site: &SiteId,
        live_only: bool,
        limit: u32,
    ) -> R<Vec<AlertRow>> {
        const Q: &str = sql!(
            "SELECT ",
            ALERT_COLS,
            " FROM alerts WHERE site_id = $1 AND ($2 = 0 OR state <> 'resolved') \
             ORDER BY raised_at DESC, id LIMIT $3"
        );
        let rows = self
            .all(
                sqlx::query(Q)
                    .bind(site.as_str().to_owned())
                    .bind(i64::from(live_only))
                    .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(alert_row).collect()
    }

    /// An alert's timeline, in order.
    pub async fn alert_events(&mut self, alert: &AlertId) -> R<Vec<AlertEventRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT seq, at, actor, what, note, note_sealed FROM alert_events \
                     WHERE alert_id = $1 ORDER BY seq",
                )
                .bind(alert.as_str().to_owned()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertEventRow {
                    seq: u64::try_from(int(r, "seq")?).map_err(|_| StoreError::Corrupt("seq"))?,
                    at: time(r, "at")?,
                    actor: text(r, "actor")?,
                    what: text(r, "what")?,
                    note: opt_text(r, "note")?,
                    note_sealed: opt_blob(r, "note_sealed")?,
                })
            })
            .collect()
    }

    /// Up to `limit` words people gave on alerts that are still stored in clear (from before
    /// they were sealed): `(alert, seq, writer, words)`.
    pub async fn alert_notes_in_clear(
        &mut self,
        limit: i64,
    ) -> R<Vec<(AlertId, i64, PersonId, String)>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT alert_id, seq, actor, note FROM alert_events \
                     WHERE note IS NOT NULL AND what IN ('note', 'acknowledged', 'resolved') \
                     AND actor LIKE 'per\\_%' ESCAPE '\\' ORDER BY alert_id, seq LIMIT $1",
                )
                .bind(limit),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse(r, "alert_id", |s| AlertId::parse(s).ok())?,
                    int(r, "seq")?,
                    parse(r, "actor", |s| PersonId::parse(s).ok())?,
                    text(r, "note")?,
                ))
            })
            .collect()
    }

    /// Replaces a person's clear words on an alert with their sealed form (or with nothing,
    /// `None`, when the writer has been erased), if they are still in clear.
    pub async fn seal_alert_note(
        &mut self,
        alert: &AlertId,
        seq: i64,
        sealed: Option<&[u8]>,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE alert_events SET note_sealed = $3, note = NULL \
                     WHERE alert_id = $1 AND seq = $2 AND note IS NOT NULL",
                )
                .bind(alert.as_str().to_owned())
                .bind(seq)
                .bind(sealed.map(<[u8]>::to_vec)),
            )
            .await?;
        Ok(n == 1)
    }
}
