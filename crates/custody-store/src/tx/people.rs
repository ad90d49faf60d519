//! People: residents, couriers and staff, their roles, and disabling them.

use custody_core::person::Role;
use custody_core::text::{Email, Name};
use custody_core::{CarrierId, OrgId, PersonId, SiteId, Timestamp};
use sqlx::any::AnyRow;

use crate::rows::{PersonDetails, PersonRow, WrappedKeyRow};

use super::{R, Tx, int, opt_blob, opt_parse, opt_text, opt_time, parse, time};

/// A person's columns, with their data key read alongside (`p` is `people`, `k` their row in
/// `subject_keys`).
pub(crate) const PERSON_COLS: &str = "p.id, p.org_id, p.email_index, p.email_sealed, \
     p.name_sealed, p.clear_email, p.clear_name, p.role, p.site_id, p.carrier_id, \
     p.password_hash, p.disabled_at, p.created_at, k.kek AS key_kek, k.wrapped AS key_wrapped";

/// `people p` with each person's live data key.
const PEOPLE_WITH_KEYS: &str =
    " FROM people p LEFT JOIN subject_keys k ON k.subject = p.id AND k.erased_at IS NULL";

pub(crate) fn person_row(r: &AnyRow) -> R<PersonRow> {
    let details = match (opt_blob(r, "email_sealed")?, opt_blob(r, "name_sealed")?) {
        (Some(email), Some(name)) => PersonDetails::Sealed { email, name },
        _ => match opt_parse(r, "clear_email", |s| Email::parse(s).ok())? {
            Some(email) => PersonDetails::Clear {
                email,
                name: parse(r, "clear_name", |s| Name::parse(s).ok())?,
            },
            None => PersonDetails::Erased,
        },
    };
    let key = match (opt_text(r, "key_kek")?, opt_blob(r, "key_wrapped")?) {
        (Some(kek), Some(wrapped)) => Some(WrappedKeyRow { kek, wrapped }),
        _ => None,
    };
    Ok(PersonRow {
        id: parse(r, "id", |s| PersonId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        email_index: opt_blob(r, "email_index")?,
        details,
        key,
        role: parse(r, "role", Role::parse)?,
        site: opt_parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        carrier: opt_parse(r, "carrier_id", |s| CarrierId::parse(s).ok())?,
        password_hash: opt_text(r, "password_hash")?,
        disabled_at: opt_time(r, "disabled_at")?,
        created_at: time(r, "created_at")?,
    })
}

/// What the row stores for a person's address and name: sealed, clear, or nothing.
fn stored_details(d: &PersonDetails) -> [(Option<Vec<u8>>, Option<String>); 2] {
    match d {
        PersonDetails::Sealed { email, name } => {
            [(Some(email.clone()), None), (Some(name.clone()), None)]
        }
        PersonDetails::Clear { email, name } => {
            [(None, Some(email.as_str().to_owned())), (None, Some(name.as_str().to_owned()))]
        }
        PersonDetails::Erased => [(None, None), (None, None)],
    }
}

impl Tx {
    /// Adds a person (their data key, if any, is stored on its own). `Conflict` if the
    /// e-mail address is taken.
    pub async fn insert_person(&mut self, p: &PersonRow) -> R<()> {
        let [(email_sealed, clear_email), (name_sealed, clear_name)] = stored_details(&p.details);
        self.exec(
            sqlx::query(
                "INSERT INTO people (id, org_id, email_index, email_sealed, name_sealed, \
                 clear_email, clear_name, role, site_id, carrier_id, password_hash, disabled_at, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(p.id.as_str().to_owned())
            .bind(p.org.as_str().to_owned())
            .bind(p.email_index.clone())
            .bind(email_sealed)
            .bind(name_sealed)
            .bind(clear_email)
            .bind(clear_name)
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
                sqlx::query(sql!("SELECT ", PERSON_COLS, PEOPLE_WITH_KEYS, " WHERE p.id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(person_row).transpose()
    }

    /// The person whose e-mail address has this blind index.
    pub async fn person_by_email_index(&mut self, index: &[u8]) -> R<Option<PersonRow>> {
        let row = self
            .one(
                sqlx::query(sql!(
                    "SELECT ",
                    PERSON_COLS,
                    PEOPLE_WITH_KEYS,
                    " WHERE p.email_index = $1"
                ))
                .bind(index.to_vec()),
            )
            .await?;
        row.as_ref().map(person_row).transpose()
    }

    /// Up to `limit` people whose address and name are still stored in clear (from before
    /// people were sealed), by id.
    pub async fn people_in_clear(&mut self, limit: i64) -> R<Vec<PersonRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    PERSON_COLS,
                    PEOPLE_WITH_KEYS,
                    " WHERE p.clear_email IS NOT NULL ORDER BY p.id LIMIT $1"
                ))
                .bind(limit),
            )
            .await?;
        rows.iter().map(person_row).collect()
    }

    /// Replaces a person's clear address and name with their sealed forms and the address's
    /// blind index, if they are still in clear. Returns whether it did.
    pub async fn seal_person(
        &mut self,
        id: &PersonId,
        email_index: &[u8],
        email: &[u8],
        name: &[u8],
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE people SET email_index = $2, email_sealed = $3, name_sealed = $4, \
                     clear_email = NULL, clear_name = NULL \
                     WHERE id = $1 AND clear_email IS NOT NULL",
                )
                .bind(id.as_str().to_owned())
                .bind(email_index.to_vec())
                .bind(email.to_vec())
                .bind(name.to_vec()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Clears everything that names or reaches a person from their row — address, name, blind
    /// index and password — leaving what the rest of the records refer to (id, organisation,
    /// role, dates). Their sealed fields were unreadable once their key was destroyed; this
    /// removes even the ciphertext and frees the address for a new account.
    pub async fn erase_person(&mut self, id: &PersonId) -> R<()> {
        self.exec(
            sqlx::query(
                "UPDATE people SET email_index = NULL, email_sealed = NULL, name_sealed = NULL, \
                 clear_email = NULL, clear_name = NULL, password_hash = NULL WHERE id = $1",
            )
            .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// The people of an organisation, oldest first (names are sealed: callers sort by them).
    pub async fn people(&mut self, org: &OrgId) -> R<Vec<PersonRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    PERSON_COLS,
                    PEOPLE_WITH_KEYS,
                    " WHERE p.org_id = $1 ORDER BY p.created_at, p.id"
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
