//! Organisations, their sites, and the sites' banks.

use std::time::Duration;

use custody_core::site::PickupWindow;
use custody_core::text::Name;
use custody_core::time::duration_millis;
use custody_core::{BankId, OrgId, SiteId};
use sqlx::any::AnyRow;

use crate::StoreError;
use crate::rows::{BankRow, OrgRow, SiteRow};

use super::{R, Tx, int, parse, text, time};

pub(crate) fn org_row(r: &AnyRow) -> R<OrgRow> {
    Ok(OrgRow {
        id: parse(r, "id", |s| OrgId::parse(s).ok())?,
        name: parse(r, "name", |s| Name::parse(s).ok())?,
        created_at: time(r, "created_at")?,
    })
}

pub(crate) fn site_row(r: &AnyRow) -> R<SiteRow> {
    let window = Duration::from_millis(u64::try_from(int(r, "pickup_window_ms")?).unwrap_or(0));
    Ok(SiteRow {
        id: parse(r, "id", |s| SiteId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        name: parse(r, "name", |s| Name::parse(s).ok())?,
        time_zone: text(r, "time_zone")?,
        pickup_window: PickupWindow::new(window)
            .map_err(|_| StoreError::Corrupt("pickup_window_ms"))?,
        created_at: time(r, "created_at")?,
    })
}

pub(crate) fn bank_row(r: &AnyRow) -> R<BankRow> {
    Ok(BankRow {
        id: parse(r, "id", |s| BankId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        name: parse(r, "name", |s| Name::parse(s).ok())?,
        created_at: time(r, "created_at")?,
    })
}

impl Tx {
    /// Adds an organisation.
    pub async fn insert_org(&mut self, org: &OrgRow) -> R<()> {
        self.exec(
            sqlx::query("INSERT INTO organisations (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(org.id.as_str().to_owned())
                .bind(org.name.as_str().to_owned())
                .bind(org.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// An organisation.
    pub async fn org(&mut self, id: &OrgId) -> R<Option<OrgRow>> {
        let row = self
            .one(
                sqlx::query("SELECT id, name, created_at FROM organisations WHERE id = $1")
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(org_row).transpose()
    }

    /// Every organisation, oldest first.
    pub async fn orgs(&mut self) -> R<Vec<OrgRow>> {
        let rows = self
            .all(sqlx::query(
                "SELECT id, name, created_at FROM organisations ORDER BY created_at, id",
            ))
            .await?;
        rows.iter().map(org_row).collect()
    }

    /// Adds a site.
    pub async fn insert_site(&mut self, site: &SiteRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO sites (id, org_id, name, time_zone, pickup_window_ms, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(site.id.as_str().to_owned())
            .bind(site.org.as_str().to_owned())
            .bind(site.name.as_str().to_owned())
            .bind(site.time_zone.clone())
            .bind(duration_millis(site.pickup_window.get()))
            .bind(site.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A site.
    pub async fn site(&mut self, id: &SiteId) -> R<Option<SiteRow>> {
        let row = self
            .one(
                sqlx::query("SELECT id, org_id, name, time_zone, pickup_window_ms, created_at FROM sites WHERE id = $1")
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(site_row).transpose()
    }

    /// The sites of an organisation, by name.
    pub async fn sites(&mut self, org: &OrgId) -> R<Vec<SiteRow>> {
        let rows = self
            .all(
                sqlx::query("SELECT id, org_id, name, time_zone, pickup_window_ms, created_at FROM sites WHERE org_id = $1 ORDER BY name, id")
                    .bind(org.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(site_row).collect()
    }

    /// Adds a bank.
    pub async fn insert_bank(&mut self, bank: &BankRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO banks (id, site_id, name, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(bank.id.as_str().to_owned())
            .bind(bank.site.as_str().to_owned())
            .bind(bank.name.as_str().to_owned())
            .bind(bank.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A bank.
    pub async fn bank(&mut self, id: &BankId) -> R<Option<BankRow>> {
        let row = self
            .one(
                sqlx::query("SELECT id, site_id, name, created_at FROM banks WHERE id = $1")
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(bank_row).transpose()
    }

    /// The banks of a site, by name.
    pub async fn banks(&mut self, site: &SiteId) -> R<Vec<BankRow>> {
        let rows = self
            .all(
                sqlx::query("SELECT id, site_id, name, created_at FROM banks WHERE site_id = $1 ORDER BY name, id")
                    .bind(site.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(bank_row).collect()
    }
}
