//! Personal-data breaches: as declared, whom the log shows they reached, and each step in
//! answering them.

use custody_core::breach::BreachStep;
use custody_core::{AlertId, BankId, BreachId, OrgId, PersonId, SiteId, Timestamp};
use sqlx::any::AnyRow;

use crate::rows::{BreachRow, BreachStepRow};

use super::{R, Tx, blob, opt_parse, parse, text, time};

const BREACH_COLS: &str = "id, org_id, site_id, bank_id, alert_id, summary_sealed, window_from, \
     window_to, discovered_at, declared_at, declared_by";

fn breach_row(r: &AnyRow) -> R<BreachRow> {
    Ok(BreachRow {
        id: parse(r, "id", |s| BreachId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        bank: opt_parse(r, "bank_id", |s| BankId::parse(s).ok())?,
        alert: opt_parse(r, "alert_id", |s| AlertId::parse(s).ok())?,
        summary: blob(r, "summary_sealed")?,
        window_from: time(r, "window_from")?,
        window_to: time(r, "window_to")?,
        discovered_at: time(r, "discovered_at")?,
        declared_at: time(r, "declared_at")?,
        declared_by: parse(r, "declared_by", |s| PersonId::parse(s).ok())?,
    })
}

impl Tx {
    /// Stores a declared breach and the people it reached.
    pub async fn insert_breach(&mut self, b: &BreachRow, affected: &[PersonId]) -> R<()> {
        self.exec(
            sqlx::query(sql!(
                "INSERT INTO breaches (",
                BREACH_COLS,
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(b.id.as_str().to_owned())
            .bind(b.org.as_str().to_owned())
            .bind(b.site.as_str().to_owned())
            .bind(b.bank.as_ref().map(|x| x.as_str().to_owned()))
            .bind(b.alert.as_ref().map(|x| x.as_str().to_owned()))
            .bind(b.summary.clone())
            .bind(b.window_from.as_millis())
            .bind(b.window_to.as_millis())
            .bind(b.discovered_at.as_millis())
            .bind(b.declared_at.as_millis())
            .bind(b.declared_by.as_str().to_owned()),
        )
        .await?;
        for person in affected {
            self.exec(
                sqlx::query("INSERT INTO breach_affected (breach_id, person_id) VALUES ($1, $2)")
                    .bind(b.id.as_str().to_owned())
                    .bind(person.as_str().to_owned()),
            )
            .await?;
        }
        Ok(())
    }

    /// A breach by id.
    pub async fn breach(&mut self, id: &BreachId) -> R<Option<BreachRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", BREACH_COLS, " FROM breaches WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(breach_row).transpose()
    }

    /// A site's breaches, newest first.
    pub async fn breaches_at(&mut self, site: &SiteId) -> R<Vec<BreachRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    BREACH_COLS,
                    " FROM breaches WHERE site_id = $1 ORDER BY declared_at DESC, id"
                ))
                .bind(site.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(breach_row).collect()
    }

    /// The people a breach reached, by id.
    pub async fn breach_affected(&mut self, id: &BreachId) -> R<Vec<PersonId>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT person_id FROM breach_affected WHERE breach_id = $1 ORDER BY person_id",
                )
                .bind(id.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(|r| parse(r, "person_id", |s| PersonId::parse(s).ok())).collect()
    }

    /// The people the audit log shows at `site` (and `bank`, when given) between `from` and
    /// `to`, both included: those who acted there, those whose words an entry there holds,
    /// and the recipients of the parcels its entries concern (while the parcel still names
    /// them). It reads the site's entries in order of the log, once per declaration.
    pub async fn people_in_the_log(
        &mut self,
        site: &SiteId,
        bank: Option<&BankId>,
        from: Timestamp,
        to: Timestamp,
    ) -> R<Vec<PersonId>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT DISTINCT person FROM (\
                     SELECT e.actor_id AS person FROM audit_entries e \
                     WHERE e.site_id = $1 AND ($2 IS NULL OR e.bank_id = $2) \
                     AND e.at >= $3 AND e.at <= $4 AND e.actor_kind = 'person' \
                     UNION SELECT e.sealed_subject FROM audit_entries e \
                     WHERE e.site_id = $1 AND ($2 IS NULL OR e.bank_id = $2) \
                     AND e.at >= $3 AND e.at <= $4 AND e.sealed_subject IS NOT NULL \
                     UNION SELECT p.recipient_id FROM audit_entries e \
                     JOIN parcels p ON p.id = e.parcel_id \
                     WHERE e.site_id = $1 AND ($2 IS NULL OR e.bank_id = $2) \
                     AND e.at >= $3 AND e.at <= $4 AND p.recipient_id IS NOT NULL\
                     ) reached WHERE person IS NOT NULL ORDER BY person",
                )
                .bind(site.as_str().to_owned())
                .bind(bank.map(|b| b.as_str().to_owned()))
                .bind(from.as_millis())
                .bind(to.as_millis()),
            )
            .await?;
        // Only ids that name a person: an entry's actor is a person's id by its kind, but the
        // join keeps what a corrupted row might hold out of a notice list.
        rows.iter()
            .filter_map(|r| text(r, "person").ok())
            .filter_map(|s| PersonId::parse(&s).ok())
            .map(Ok)
            .collect()
    }

    /// Records a step in answering a breach; false when it was recorded already.
    pub async fn add_breach_step(
        &mut self,
        id: &BreachId,
        step: BreachStep,
        at: Timestamp,
        by: &PersonId,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "INSERT INTO breach_steps (breach_id, step, at, by_person) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (breach_id, step) DO NOTHING",
                )
                .bind(id.as_str().to_owned())
                .bind(step.as_str())
                .bind(at.as_millis())
                .bind(by.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// The steps recorded for a breach, in order: by time, and steps recorded in the same
    /// millisecond in the order the law has them.
    pub async fn breach_steps(&mut self, id: &BreachId) -> R<Vec<BreachStepRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT step, at, by_person FROM breach_steps WHERE breach_id = $1 ORDER BY at, step",
                )
                .bind(id.as_str().to_owned()),
            )
            .await?;
        let mut steps = rows
            .iter()
            .map(|r| {
                Ok(BreachStepRow {
                    step: parse(r, "step", BreachStep::parse)?,
                    at: time(r, "at")?,
                    by: parse(r, "by_person", |s| PersonId::parse(s).ok())?,
                })
            })
            .collect::<R<Vec<_>>>()?;
        steps.sort_by_key(|s| (s.at, s.step));
        Ok(steps)
    }
}
