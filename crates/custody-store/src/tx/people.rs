//! People: residents, couriers and staff, their roles, and disabling them.

use custody_core::person::Role;
use custody_core::text::{Email, Name};
use custody_core::{CarrierId, OrgId, PersonId, SiteId, Timestamp};
use sqlx::any::AnyRow;

use crate::rows::PersonRow;

use super::{R, Tx, int, opt_parse, opt_text, opt_time, parse, time};

pub(crate) const PERSON_COLS: &str =
    "id, org_id, email, name, role, site_id, carrier_id, password_hash, disabled_at, created_at";

pub(crate) fn person_row(r: &AnyRow) -> R<PersonRow> {
    Ok(PersonRow {
        id: parse(r, "id", |s| PersonId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        email: parse(r, "email", |s| Email::parse(s).ok())?,
        name: parse(r, "name", |s| Name::parse(s).ok())?,
        role: parse(r, "role", Role::parse)?,
        site: opt_parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        carrier: opt_parse(r, "carrier_id", |s| CarrierId::parse(s).ok())?,
        password_hash: opt_text(r, "password_hash")?,
        disabled_at: opt_time(r, "disabled_at")?,
        created_at: time(r, "created_at")?,
    })
}

impl Tx {
    /// Adds a person. `Conflict` if the e-mail address is taken.
    pub async fn insert_person(&mut self, p: &PersonRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO people (id, org_id, email, name, role, site_id, carrier_id, password_hash, \
                 disabled_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(p.id.as_str().to_owned())
            .bind(p.org.as_str().to_owned())
            .bind(p.email.as_str().to_owned())
            .bind(p.name.as_str().to_owned())
            .bind(p.role.as_str())
            .bind(p.site.as_ref().map(|s| s.as_str().to_owned()))
            .bind(p.carrier.as_ref().map(|c| c.as_str().to_owned()))
            .bind(p.password_hash.clone())
            .bind(p.disabled_at.map(Timestamp::as_millis))
            .bind(p.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A person.
    pub async fn person(&mut self, id: &PersonId) -> R<Option<PersonRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", PERSON_COLS, " FROM people WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(person_row).transpose()
    }

    /// A person by e-mail address.
    pub async fn person_by_email(&mut self, email: &Email) -> R<Option<PersonRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", PERSON_COLS, " FROM people WHERE email = $1"))
                    .bind(email.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(person_row).transpose()
    }

    /// The people of an organisation, by name.
    pub async fn people(&mut self, org: &OrgId) -> R<Vec<PersonRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    PERSON_COLS,
                    " FROM people WHERE org_id = $1 ORDER BY name, id"
                ))
                .bind(org.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(person_row).collect()
    }

    /// Takes the organisation's row lock until the unit ends, so that checks over its people
    /// (how many super-admins are left) and the change they guard are one step on PostgreSQL
    /// too; SQLite's single writer gives the same.
    async fn lock_org(&mut self, org: &OrgId) -> R<()> {
        self.exec(
            sqlx::query("UPDATE organisations SET name = name WHERE id = $1")
                .bind(org.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// Changes `person`'s role from `from` to `to`, if it still is `from`, they are not
    /// disabled, and they are not the last active super-admin of their organisation. Returns
    /// whether it changed.
    pub async fn set_role(&mut self, person: &PersonRow, from: Role, to: Role) -> R<bool> {
        self.lock_org(&person.org).await?;
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE people SET role = $3 WHERE id = $1 AND role = $2 \
                     AND disabled_at IS NULL AND ($2 <> 'super_admin' OR $3 = 'super_admin' \
                     OR EXISTS (SELECT 1 FROM people o WHERE o.org_id = $4 AND o.id <> $1 \
                     AND o.role = 'super_admin' AND o.disabled_at IS NULL))",
                )
                .bind(person.id.as_str().to_owned())
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(person.org.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Disables `person` and ends every session of theirs, unless they are the last active
    /// super-admin of their organisation or disabled already. Returns whether it happened.
    pub async fn disable_person(&mut self, person: &PersonRow, now: Timestamp) -> R<bool> {
        self.lock_org(&person.org).await?;
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE people SET disabled_at = $2 WHERE id = $1 AND disabled_at IS NULL \
                     AND (role <> 'super_admin' \
                     OR EXISTS (SELECT 1 FROM people o WHERE o.org_id = $3 AND o.id <> $1 \
                     AND o.role = 'super_admin' AND o.disabled_at IS NULL))",
                )
                .bind(person.id.as_str().to_owned())
                .bind(now.as_millis())
                .bind(person.org.as_str().to_owned()),
            )
            .await?;
        if n != 1 {
            return Ok(false);
        }
        self.delete_sessions_of(&person.id, None).await?;
        Ok(true)
    }

    /// Counts people with a role across all organisations (for first-run checks).
    pub async fn count_people_with_role(&mut self, role: Role) -> R<i64> {
        let row = self
            .one(
                sqlx::query("SELECT COUNT(*) AS n FROM people WHERE role = $1").bind(role.as_str()),
            )
            .await?;
        row.map(|r| int(&r, "n")).transpose().map(|n| n.unwrap_or(0))
    }
}
