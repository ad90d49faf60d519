//! People: adding them, changing their role, disabling them, and their standing as the
//! access policy sees it.

use crate::approvals::Approval;
use crate::conflicts::ConflictCode;
use crate::{App, AppError, Caller};
use custody_core::audit::{AuditAction, AuditEvent, Target};
use custody_core::person::{Role, Scope, Standing, check_new_password};
use custody_core::policy::{self, Denied, Principal};
use custody_core::text::{Email, Name, Reason};
use custody_core::{CarrierId, OrgId, PersonId, SiteId, Timestamp};
use custody_store::{PersonRow, StoreError};
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

/// A person, without their password's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Id.
    pub id: PersonId,
    /// Organisation.
    pub org: OrgId,
    /// Login and notification address.
    pub email: Email,
    /// Display name.
    pub name: Name,
    /// Role.
    pub role: Role,
    /// Site the role is limited to, if any.
    pub site: Option<SiteId>,
    /// For couriers, their carrier.
    pub carrier: Option<CarrierId>,
    /// When the account was disabled.
    pub disabled_at: Option<Timestamp>,
    /// Created.
    pub created_at: Timestamp,
}

/// What a request to change a role came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleChange {
    /// Done.
    Changed(Person),
    /// Waiting for a second person's approval.
    Pending(Approval),
}

/// A new person's details.
#[derive(Debug, Clone)]
pub struct NewPerson {
    /// Organisation.
    pub org: OrgId,
    /// Login and notification address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Limit the role to one site.
    pub site: Option<SiteId>,
    /// For couriers, their carrier.
    pub carrier: Option<CarrierId>,
    /// Initial password, if they sign in with one.
    pub password: Option<Zeroizing<String>>,
    /// Why, when the role has power (auditor and up) and a person gives it: a role grant
    /// needs a reason as well as a step-up.
    pub reason: Option<String>,
}

impl NewPerson {
    /// The parsed address and name, once the role, site and carrier agree.
    fn check(&self) -> Result<(Email, Name), AppError> {
        let email = Email::parse(&self.email).map_err(AppError::invalid)?;
        let name = Name::parse(&self.name).map_err(AppError::invalid)?;
        if self.role == Role::Courier && self.carrier.is_none() {
            return Err(AppError::Invalid("a courier needs a carrier".into()));
        }
        if self.role != Role::Courier && self.carrier.is_some() {
            return Err(AppError::Invalid("only couriers belong to a carrier".into()));
        }
        if self.role == Role::Resident && self.site.is_none() {
            return Err(AppError::Invalid("a resident needs a site".into()));
        }
        Ok((email, name))
    }
}

impl App {
    /// Adds a person. A role can be given only by someone whose role outranks it; a site-scoped
    /// admin can add people to their own site only.
    pub async fn create_person(&self, caller: &Caller, new: NewPerson) -> Result<Person, AppError> {
        let (email, name) = new.check()?;
        let target = Target { site: new.site.clone(), ..Target::default() };
        // Giving someone a role with power (auditor and up) is a role grant: it needs a step-up
        // and, from a person, a reason.
        let grant = new.role.rank() > 0;
        self.authorize(caller, AuditAction::PersonCreate, &target, |p| {
            policy::may_add_person(p, &new.org, new.site.as_ref(), new.role)
                .and_then(|()| if grant { self.stepped_up(p) } else { Ok(()) })
        })
        .await?;
        let reason = match (&new.reason, grant && caller.person().is_some()) {
            (Some(words), _) => Some(Reason::parse(words).map_err(AppError::invalid)?),
            (None, true) => {
                return Err(AppError::Invalid("say why this role is given (a reason)".into()));
            }
            (None, false) => None,
        };
        let password_hash = match &new.password {
            Some(pw) => {
                check_new_password(pw).map_err(AppError::invalid)?;
                Some(self.hash_password(pw.clone()).await?)
            }
            None => None,
        };
        let (id, now) = (self.new_id(PersonId::from_random)?, self.now());
        let person = Person {
            id: id.clone(),
            org: new.org.clone(),
            email,
            name,
            role: new.role,
            site: new.site.clone(),
            carrier: new.carrier.clone(),
            disabled_at: None,
            created_at: now,
        };
        let mut event = AuditEvent::success(now, caller.actor(), AuditAction::PersonCreate, target);
        let (view, app) = (person.clone(), self.clone());
        self.store()
            .write(move |tx| {
                async move {
                    tx.org(&view.org).await?.ok_or(AppError::NotFound)?;
                    if let Some(site) = &view.site {
                        let s = tx.site(site).await?.ok_or(AppError::NotFound)?;
                        if s.org != view.org {
                            return Err(AppError::NotFound);
                        }
                    }
                    if let Some(carrier) = &view.carrier {
                        let c = tx.carrier(carrier).await?.ok_or(AppError::NotFound)?;
                        if c.org != view.org {
                            return Err(AppError::NotFound);
                        }
                    }
                    // A new id has no key and no erasure: sealing cannot come back empty.
                    let (email_index, details) = app
                        .seal_details(tx, &view.id, &view.email, &view.name)
                        .await?
                        .ok_or(AppError::NotFound)?;
                    let row = PersonRow {
                        id: view.id.clone(),
                        org: view.org.clone(),
                        email_index: Some(email_index),
                        details,
                        key: None,
                        role: view.role,
                        site: view.site.clone(),
                        carrier: view.carrier.clone(),
                        password_hash,
                        disabled_at: None,
                        created_at: view.created_at,
                    };
                    tx.insert_person(&row).await.map_err(|e| match e {
                        StoreError::Conflict => AppError::conflict(
                            ConflictCode::EmailTaken,
                            "that e-mail address is already registered",
                        ),
                        other => other.into(),
                    })?;
                    if let Some(reason) = &reason {
                        // The words are about the person given the role.
                        event.personal = app.seal_personal(tx, &row.id, reason.as_str()).await?;
                    }
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(person)
    }

    /// A stored person as others see them: address and name opened. An erased person is not
    /// found.
    pub(crate) fn person_view(&self, row: &PersonRow) -> Result<Person, AppError> {
        let (email, name) = self.open_details(row)?.ok_or(AppError::NotFound)?;
        Ok(Person {
            id: row.id.clone(),
            org: row.org.clone(),
            email,
            name,
            role: row.role,
            site: row.site.clone(),
            carrier: row.carrier.clone(),
            disabled_at: row.disabled_at,
            created_at: row.created_at,
        })
    }

    /// The stored row of person `id`; not found when there is none.
    pub(crate) async fn person_row(&self, id: &PersonId) -> Result<PersonRow, AppError> {
        let lookup = id.clone();
        self.store()
            .read(move |tx| async move { tx.person(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)
    }

    /// The person `id` and their standing, for a change by `caller`; refusals are audited as
    /// `action` and say "not found" for people out of reach.
    async fn person_to_change(
        &self,
        caller: &Caller,
        id: &PersonId,
        action: AuditAction,
    ) -> Result<PersonRow, AppError> {
        let person = self.person_row(id).await?;
        let standing = standing_of(&person);
        let target = Target { site: person.site.clone(), ..Target::default() };
        self.authorize(caller, action, &target, |p| {
            policy::may_manage_person(p, &person.id, &standing)
        })
        .await?;
        if person.disabled_at.is_some() {
            return Err(AppError::conflict(ConflictCode::Disabled, "that person is disabled"));
        }
        Ok(person)
    }

    /// Gives a person another role: a role grant when it goes up, a demotion when it goes down.
    /// Only staff who outrank both the old and the new role, within scope, never on themselves,
    /// after a step-up. Making someone super-admin is asked by a super-admin and runs when
    /// another approves it ([`RoleChange::Pending`]). The last active super-admin of an
    /// organisation keeps the role; the check and the change are one conditional update, so
    /// two concurrent demotions cannot both win. The change takes effect on the person's next
    /// request.
    pub async fn change_role(
        &self,
        caller: &Caller,
        id: &PersonId,
        role: Role,
        reason: &str,
    ) -> Result<RoleChange, AppError> {
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        let person = self.person_to_change(caller, id, AuditAction::PersonRoleChange).await?;
        if role == Role::SuperAdmin
            && person.role != Role::SuperAdmin
            && *caller != Caller::Operator
        {
            return self
                .request_super_admin_grant(caller, person, reason)
                .await
                .map(RoleChange::Pending);
        }
        let target = Target { site: person.site.clone(), ..Target::default() };
        self.authorize(caller, AuditAction::PersonRoleChange, &target, |p| match p {
            Principal::Person { standing, .. } if standing.role.may_grant(role) => {
                self.stepped_up(p)
            }
            _ => Err(Denied::Role),
        })
        .await?;
        if person.role == Role::Courier || role == Role::Courier {
            return Err(AppError::Invalid(
                "couriers belong to a carrier: add or disable the courier instead".into(),
            ));
        }
        if role == Role::Resident && person.site.is_none() {
            return Err(AppError::Invalid("a resident needs a site".into()));
        }
        let mut event =
            AuditEvent::success(self.now(), caller.actor(), AuditAction::PersonRoleChange, target)
                .because(format!("{}:{}>{}", person.id, person.role, role));
        let (row, from, app) = (person.clone(), person.role, self.clone());
        self.store()
            .write(move |tx| {
                async move {
                    // The words are about the person whose role changes.
                    event.personal = app.seal_personal(tx, &row.id, reason.as_str()).await?;
                    if !tx.set_role(&row, from, role).await? {
                        return Err(AppError::conflict(
                            ConflictCode::LastSuperAdmin,
                            "the organisation's last super-admin keeps the role (or the person \
                             changed meanwhile); appoint another first",
                        ));
                    }
                    tx.append_audit(&event)?;
                    Ok(())
                }
                .boxed()
            })
            .await?;
        Ok(RoleChange::Changed(self.person_view(&PersonRow { role, ..person })?))
    }

    /// Disables a person: they can no longer sign in, and every session of theirs ends in the
    /// same unit of work (ASVS 7.4.2). Only staff who outrank them, within scope, never
    /// themselves; the last active super-admin of an organisation stays.
    pub async fn disable_person(&self, caller: &Caller, id: &PersonId) -> Result<(), AppError> {
        let person = self.person_to_change(caller, id, AuditAction::PersonDisable).await?;
        let now = self.now();
        let event = AuditEvent::success(
            now,
            caller.actor(),
            AuditAction::PersonDisable,
            Target { site: person.site.clone(), ..Target::default() },
        )
        .because(person.id.to_string());
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.disable_person(&person, now).await? {
                        return Err(AppError::conflict(
                            ConflictCode::LastSuperAdmin,
                            "the organisation's last super-admin stays; appoint another first",
                        ));
                    }
                    tx.append_audit(&event)?;
                    Ok(())
                }
                .boxed()
            })
            .await
    }

    /// Hashes a password off the async threads, at most a few at a time.
    pub(crate) async fn hash_password(
        &self,
        password: Zeroizing<String>,
    ) -> Result<String, AppError> {
        let _permit = self.0.hash_permits.acquire().await.map_err(|_| AppError::Throttled)?;
        let app = self.clone();
        tokio::task::spawn_blocking(move || app.0.passwords.hash(app.rng(), &password))
            .await
            .map_err(|_| AppError::Crypto(custody_crypto::CryptoError::PasswordHash))?
            .map_err(AppError::from)
    }
}

/// The principal of a person, who last proved a second factor at `second_factor_at`.
pub fn principal_of(person: &Person, second_factor_at: Option<Timestamp>) -> Principal {
    let standing =
        standing(person.role, &person.org, person.site.as_ref(), person.carrier.as_ref());
    Principal::Person { id: person.id.clone(), standing, second_factor_at }
}

/// A stored person's standing as the policy sees it.
pub(crate) fn standing_of(person: &PersonRow) -> Standing {
    standing(person.role, &person.org, person.site.as_ref(), person.carrier.as_ref())
}

/// [`principal_of`] a stored person.
pub(crate) fn principal_of_row(
    person: &PersonRow,
    second_factor_at: Option<Timestamp>,
) -> Principal {
    Principal::Person { id: person.id.clone(), standing: standing_of(person), second_factor_at }
}

fn standing(
    role: Role,
    org: &OrgId,
    site: Option<&SiteId>,
    carrier: Option<&CarrierId>,
) -> Standing {
    Standing {
        role,
        scope: Scope { org: org.clone(), site: site.cloned() },
        carrier: carrier.cloned(),
    }
}
