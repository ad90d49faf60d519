//! Carriers.

use custody_core::text::Name;
use custody_core::{CarrierId, OrgId};
use sqlx::any::AnyRow;

use crate::rows::CarrierRow;

use super::{R, Tx, parse, time};

pub(crate) fn carrier_row(r: &AnyRow) -> R<CarrierRow> {
    Ok(CarrierRow {
        id: parse(r, "id", |s| CarrierId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        name: parse(r, "name", |s| Name::parse(s).ok())?,
        created_at: time(r, "created_at")?,
    })
}

impl Tx {
    /// Adds a carrier. `Conflict` if the organisation has one of that name.
    pub async fn insert_carrier(&mut self, c: &CarrierRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO carriers (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(c.id.as_str().to_owned())
            .bind(c.org.as_str().to_owned())
            .bind(c.name.as_str().to_owned())
            .bind(c.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A carrier.
    pub async fn carrier(&mut self, id: &CarrierId) -> R<Option<CarrierRow>> {
        let row = self
            .one(
                sqlx::query("SELECT id, org_id, name, created_at FROM carriers WHERE id = $1")
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(carrier_row).transpose()
    }

    /// The carriers of an organisation, by name.
    pub async fn carriers(&mut self, org: &OrgId) -> R<Vec<CarrierRow>> {
        let rows = self
            .all(
                sqlx::query("SELECT id, org_id, name, created_at FROM carriers WHERE org_id = $1 ORDER BY name, id")
                    .bind(org.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(carrier_row).collect()
    }
}
