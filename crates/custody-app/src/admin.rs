//! Setting up the physical and human world: organisations, sites, banks, compartments,
//! carriers, people and carrier API keys.

use std::time::Duration;

use custody_core::audit::{AuditAction, AuditEvent, Outcome, Target};
use custody_core::compartment::{CompartmentNumber, SizeClass};
use custody_core::person::{Role, check_new_password};
use custody_core::policy::{self, Denied, Principal};
use custody_core::site::{PickupWindow, TimeZoneName};
use custody_core::text::{Email, Name, Reason};
use custody_core::{ApiKeyId, BankId, CarrierId, CompartmentId, OrgId, PersonId, SiteId};
use custody_store::{
    ApiKeyRow, BankRow, CarrierRow, CompartmentRow, NewCompartment, OrgRow, PersonRow, SiteRow,
    StoreError,
};
use data_encoding::BASE32_NOPAD;
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

use crate::approvals::RoleChange;
use crate::{App, AppError, Caller};

/// The longest a rotated-out key keeps working beside its successor.
pub const MAX_KEY_OVERLAP: Duration = custody_core::time::days(7);

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

/// A new compartment's details.
#[derive(Debug, Clone, Copy)]
pub struct CompartmentSpec {
    /// Number on the door.
    pub number: u16,
    /// Size class.
    pub size: SizeClass,
    /// At accessible height.
    pub accessible: bool,
    /// Refrigerated.
    pub refrigerated: bool,
}

/// A freshly issued API key. The secret is shown once and never stored in clear.
#[derive(Debug)]
pub struct IssuedApiKey {
    /// The key's record.
    pub key: ApiKeyRow,
    /// The whole token to give the carrier: `<id>.<secret>`.
    pub token: Zeroizing<String>,
}

fn created(
    caller: &Caller,
    action: AuditAction,
    target: Target,
    at: custody_core::Timestamp,
) -> AuditEvent {
    AuditEvent {
        at,
        actor: caller.actor(),
        action,
        target,
        outcome: Outcome::Success,
        reason: None,
        personal: None,
    }
}

impl App {
    pub(crate) fn new_id<T>(&self, make: fn([u8; 16]) -> T) -> Result<T, AppError> {
        Ok(make(self.rng().bytes()?))
    }

    /// Creates an organisation. Operators only: a tenant is made by whoever runs the platform.
    pub async fn create_org(&self, caller: &Caller, name: &str) -> Result<OrgRow, AppError> {
        if *caller != Caller::Operator {
            return Err(self
                .refuse(caller, AuditAction::OrgCreate, Target::default(), Denied::Role)
                .await);
        }
        let org = OrgRow {
            id: self.new_id(OrgId::from_random)?,
            name: Name::parse(name).map_err(AppError::invalid)?,
            created_at: self.now(),
        };
        let event = created(caller, AuditAction::OrgCreate, Target::default(), org.created_at);
        let row = org.clone();
        self.store()
            .write(move |tx| {
                async move {
                    tx.insert_org(&row).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(org)
    }

    /// Creates a site in an organisation.
    pub async fn create_site(
        &self,
        caller: &Caller,
        org: &OrgId,
        name: &str,
        time_zone: &str,
        pickup_window: Option<Duration>,
    ) -> Result<SiteRow, AppError> {
        if let Err(d) = caller.check(|p| policy::may_manage_org(p, org)) {
            return Err(self.refuse(caller, AuditAction::SiteCreate, Target::default(), d).await);
        }
        let site = SiteRow {
            id: self.new_id(SiteId::from_random)?,
            org: org.clone(),
            name: Name::parse(name).map_err(AppError::invalid)?,
            time_zone: TimeZoneName::parse(time_zone)
                .map_err(AppError::invalid)?
                .as_str()
                .to_owned(),
            pickup_window: pickup_window
                .map(PickupWindow::new)
                .transpose()
                .map_err(AppError::invalid)?
                .unwrap_or_default(),
            created_at: self.now(),
        };
        let event = created(
            caller,
            AuditAction::SiteCreate,
            Target { site: Some(site.id.clone()), ..Target::default() },
            site.created_at,
        );
        let row = site.clone();
        self.store()
            .write(move |tx| {
                async move {
                    tx.org(&row.org).await?.ok_or(AppError::NotFound)?;
                    tx.insert_site(&row).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(site)
    }

    /// Creates a locker bank at a site.
    pub async fn create_bank(
        &self,
        caller: &Caller,
        site: &SiteId,
        name: &str,
    ) -> Result<BankRow, AppError> {
        let site_row = self.site(site).await?;
        let target = Target { site: Some(site.clone()), ..Target::default() };
        if let Err(d) = caller.check(|p| policy::may_manage_site(p, &site_row.org, site)) {
            return Err(self.refuse(caller, AuditAction::BankCreate, target, d).await);
        }
        let bank = BankRow {
            id: self.new_id(BankId::from_random)?,
            site: site.clone(),
            name: Name::parse(name).map_err(AppError::invalid)?,
            created_at: self.now(),
        };
        let event = created(
            caller,
            AuditAction::BankCreate,
            Target { bank: Some(bank.id.clone()), ..target },
            bank.created_at,
        );
        let row = bank.clone();
        self.store()
            .write(move |tx| {
                async move {
                    tx.insert_bank(&row).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(bank)
    }

    /// Adds compartments to a bank, all or none.
    pub async fn add_compartments(
        &self,
        caller: &Caller,
        bank: &BankId,
        specs: &[CompartmentSpec],
    ) -> Result<Vec<CompartmentRow>, AppError> {
        let (bank_row, site_row) = self.bank_and_site(bank).await?;
        let target = Target {
            site: Some(site_row.id.clone()),
            bank: Some(bank.clone()),
            ..Target::default()
        };
        if let Err(d) = caller.check(|p| policy::may_manage_site(p, &site_row.org, &site_row.id)) {
            return Err(self.refuse(caller, AuditAction::CompartmentCreate, target, d).await);
        }
        let mut new = Vec::with_capacity(specs.len());
        for spec in specs {
            new.push(NewCompartment {
                id: self.new_id(CompartmentId::from_random)?,
                bank: bank_row.id.clone(),
                number: CompartmentNumber::new(spec.number).map_err(AppError::invalid)?,
                size: spec.size,
                accessible: spec.accessible,
                refrigerated: spec.refrigerated,
            });
        }
        let (now, actor) = (self.now(), caller.actor());
        let bank = bank.clone();
        self.store()
            .write(move |tx| {
                async move {
                    let mut rows = Vec::with_capacity(new.len());
                    for c in &new {
                        tx.insert_compartment(c, now).await.map_err(|e| match e {
                            StoreError::Conflict => AppError::conflict(
                                "compartment_exists",
                                format!("compartment {} already exists in this bank", c.number),
                            ),
                            other => other.into(),
                        })?;
                        tx.append_audit(&AuditEvent {
                            at: now,
                            actor: actor.clone(),
                            action: AuditAction::CompartmentCreate,
                            target: Target { compartment: Some(c.id.clone()), ..target.clone() },
                            outcome: Outcome::Success,
                            reason: None,
                            personal: None,
                        })?;
                    }
                    for row in tx.compartments(&bank).await? {
                        if new.iter().any(|c| c.id == row.id) {
                            rows.push(row);
                        }
                    }
                    Ok::<_, AppError>(rows)
                }
                .boxed()
            })
            .await
    }

    /// Registers a carrier with an organisation.
    pub async fn create_carrier(
        &self,
        caller: &Caller,
        org: &OrgId,
        name: &str,
    ) -> Result<CarrierRow, AppError> {
        if let Err(d) = caller.check(|p| policy::may_manage_org(p, org)) {
            return Err(self
                .refuse(caller, AuditAction::CarrierCreate, Target::default(), d)
                .await);
        }
        let carrier = CarrierRow {
            id: self.new_id(CarrierId::from_random)?,
            org: org.clone(),
            name: Name::parse(name).map_err(AppError::invalid)?,
            created_at: self.now(),
        };
        let event =
            created(caller, AuditAction::CarrierCreate, Target::default(), carrier.created_at);
        let row = carrier.clone();
        self.store()
            .write(move |tx| {
                async move {
                    tx.org(&row.org).await?.ok_or(AppError::NotFound)?;
                    tx.insert_carrier(&row).await.map_err(|e| match e {
                        StoreError::Conflict => {
                            AppError::conflict("carrier_exists", "a carrier of that name exists")
                        }
                        other => other.into(),
                    })?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(carrier)
    }

    /// Adds a person. A role can be given only by someone whose role outranks it; a site-scoped
    /// admin can add people to their own site only.
    pub async fn create_person(
        &self,
        caller: &Caller,
        new: NewPerson,
    ) -> Result<PersonRow, AppError> {
        let email = Email::parse(&new.email).map_err(AppError::invalid)?;
        let name = Name::parse(&new.name).map_err(AppError::invalid)?;
        if new.role == Role::Courier && new.carrier.is_none() {
            return Err(AppError::Invalid("a courier needs a carrier".into()));
        }
        if new.role != Role::Courier && new.carrier.is_some() {
            return Err(AppError::Invalid("only couriers belong to a carrier".into()));
        }
        if new.role == Role::Resident && new.site.is_none() {
            return Err(AppError::Invalid("a resident needs a site".into()));
        }
        let target = Target { site: new.site.clone(), ..Target::default() };
        let allowed = caller.check(|p| match p {
            Principal::Person { standing, .. } => {
                if !standing.role.may_grant(new.role) {
                    return Err(Denied::Role);
                }
                match &new.site {
                    Some(site) if standing.scope.covers(&new.org, site) => Ok(()),
                    None if standing.scope.org == new.org && standing.scope.site.is_none() => {
                        Ok(())
                    }
                    _ => Err(Denied::Scope),
                }
            }
            Principal::CarrierKey { .. } | Principal::Device { .. } => Err(Denied::Role),
        });
        // Giving someone a role with power (auditor and up) is a role grant: it needs a step-up
        // and, from a person, a reason.
        let grant = new.role.rank() > 0;
        let allowed =
            allowed.and_then(|()| if grant { self.require_step_up(caller) } else { Ok(()) });
        if let Err(d) = allowed {
            return Err(self.refuse(caller, AuditAction::PersonCreate, target, d).await);
        }
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
        let person = PersonRow {
            id: self.new_id(PersonId::from_random)?,
            org: new.org.clone(),
            email,
            name,
            role: new.role,
            site: new.site.clone(),
            carrier: new.carrier.clone(),
            password_hash,
            disabled_at: None,
            created_at: self.now(),
        };
        let mut event = created(caller, AuditAction::PersonCreate, target, person.created_at);
        let (row, app) = (person.clone(), self.clone());
        self.store()
            .write(move |tx| {
                async move {
                    tx.org(&row.org).await?.ok_or(AppError::NotFound)?;
                    if let Some(site) = &row.site {
                        let s = tx.site(site).await?.ok_or(AppError::NotFound)?;
                        if s.org != row.org {
                            return Err(AppError::NotFound);
                        }
                    }
                    if let Some(carrier) = &row.carrier {
                        let c = tx.carrier(carrier).await?.ok_or(AppError::NotFound)?;
                        if c.org != row.org {
                            return Err(AppError::NotFound);
                        }
                    }
                    tx.insert_person(&row).await.map_err(|e| match e {
                        StoreError::Conflict => AppError::conflict(
                            "email_taken",
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

    /// The person `id` and their standing, for a change by `caller`; refusals are audited as
    /// `action` and say "not found" for people out of reach.
    async fn person_to_change(
        &self,
        caller: &Caller,
        id: &PersonId,
        action: AuditAction,
    ) -> Result<PersonRow, AppError> {
        let lookup = id.clone();
        let person = self
            .store()
            .read(move |tx| async move { tx.person(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        let standing = crate::auth::standing_of(&person);
        let target = Target { site: person.site.clone(), ..Target::default() };
        if let Err(d) = caller.check(|p| policy::may_manage_person(p, &person.id, &standing)) {
            return Err(self.refuse(caller, action, target, d).await);
        }
        if person.disabled_at.is_some() {
            return Err(AppError::conflict("disabled", "that person is disabled"));
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
            return self.request_super_admin_grant(caller, person, reason).await;
        }
        let target = Target { site: person.site.clone(), ..Target::default() };
        let allowed = caller
            .check(|p| match p {
                Principal::Person { standing, .. } if standing.role.may_grant(role) => Ok(()),
                _ => Err(Denied::Role),
            })
            .and_then(|()| self.require_step_up(caller));
        if let Err(d) = allowed {
            return Err(self.refuse(caller, AuditAction::PersonRoleChange, target, d).await);
        }
        if person.role == Role::Courier || role == Role::Courier {
            return Err(AppError::Invalid(
                "couriers belong to a carrier: add or disable the courier instead".into(),
            ));
        }
        if role == Role::Resident && person.site.is_none() {
            return Err(AppError::Invalid("a resident needs a site".into()));
        }
        let mut event = AuditEvent {
            at: self.now(),
            actor: caller.actor(),
            action: AuditAction::PersonRoleChange,
            target,
            outcome: Outcome::Success,
            reason: Some(format!("{}:{}>{}", person.id, person.role, role)),
            personal: None,
        };
        let (row, from, app) = (person.clone(), person.role, self.clone());
        self.store()
            .write(move |tx| {
                async move {
                    // The words are about the person whose role changes.
                    event.personal = app.seal_personal(tx, &row.id, reason.as_str()).await?;
                    if !tx.set_role(&row, from, role).await? {
                        return Err(AppError::conflict(
                            "last_super_admin",
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
        Ok(RoleChange::Changed(PersonRow { role, ..person }))
    }

    /// Disables a person: they can no longer sign in, and every session of theirs ends in the
    /// same unit of work (ASVS 7.4.2). Only staff who outrank them, within scope, never
    /// themselves; the last active super-admin of an organisation stays.
    pub async fn disable_person(&self, caller: &Caller, id: &PersonId) -> Result<(), AppError> {
        let person = self.person_to_change(caller, id, AuditAction::PersonDisable).await?;
        let now = self.now();
        let event = AuditEvent {
            at: now,
            actor: caller.actor(),
            action: AuditAction::PersonDisable,
            target: Target { site: person.site.clone(), ..Target::default() },
            outcome: Outcome::Success,
            reason: Some(person.id.to_string()),
            personal: None,
        };
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.disable_person(&person, now).await? {
                        return Err(AppError::conflict(
                            "last_super_admin",
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

    /// Issues an API key for a carrier, limited to `sites` of the carrier's organisation.
    /// Needs a step-up.
    pub async fn issue_api_key(
        &self,
        caller: &Caller,
        carrier: &CarrierId,
        sites: &[SiteId],
        label: &str,
        reason: &str,
    ) -> Result<IssuedApiKey, AppError> {
        let label = Name::parse(label).map_err(AppError::invalid)?;
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        if sites.is_empty() {
            return Err(AppError::Invalid("an API key needs at least one site".into()));
        }
        let carrier_id = carrier.clone();
        let carrier_row = self
            .store()
            .read(move |tx| {
                async move { tx.carrier(&carrier_id).await?.ok_or(AppError::NotFound) }.boxed()
            })
            .await?;
        self.may_handle_keys_for(caller, &carrier_row.org, sites, AuditAction::ApiKeyCreate)
            .await?;
        let key = NewKey { carrier: &carrier_row.id, org: &carrier_row.org, sites, label, reason };
        self.new_api_key(caller, key, None).await
    }

    /// Staff of every one of `sites` (in the carrier's organisation), stepped up: who may
    /// issue, rotate or revoke a key for them. Refusals are audited as `action`.
    async fn may_handle_keys_for(
        &self,
        caller: &Caller,
        org: &OrgId,
        sites: &[SiteId],
        action: AuditAction,
    ) -> Result<(), AppError> {
        for site in sites {
            let s = self.site(site).await?;
            if &s.org != org {
                return Err(AppError::NotFound);
            }
            let allowed = caller
                .check(|p| policy::may_manage_site(p, &s.org, &s.id))
                .and_then(|()| self.require_step_up(caller));
            if let Err(d) = allowed {
                let target = Target { site: Some(s.id.clone()), ..Target::default() };
                return Err(self.refuse(caller, action, target, d).await);
            }
        }
        Ok(())
    }

    /// Stores a new key (and retires `replaces` at its time, in the same unit). The reason
    /// given is sealed to the person who gave it.
    async fn new_api_key(
        &self,
        caller: &Caller,
        new: NewKey<'_>,
        replaces: Option<(ApiKeyId, custody_core::Timestamp)>,
    ) -> Result<IssuedApiKey, AppError> {
        let NewKey { carrier, org, sites, label, reason } = new;
        let id = self.new_id(ApiKeyId::from_random)?;
        let secret: [u8; 32] = self.rng().bytes()?;
        let secret_text = Zeroizing::new(BASE32_NOPAD.encode(&secret).to_lowercase());
        let key = ApiKeyRow {
            id: id.clone(),
            carrier: carrier.clone(),
            org: org.clone(),
            label,
            secret_hash: self
                .keys()
                .api_keys
                .hash(&[id.as_str().as_bytes(), secret_text.as_bytes()])
                .to_vec(),
            sites: sites.to_vec(),
            created_at: self.now(),
            last_used_at: None,
            revoked_at: None,
        };
        let mut created =
            created(caller, AuditAction::ApiKeyCreate, Target::default(), key.created_at);
        let retired = replaces.as_ref().map(|(old, at)| {
            created.reason = Some(format!("rotation_of:{old}"));
            AuditEvent {
                action: AuditAction::ApiKeyRevoke,
                reason: Some(format!("{old}:rotated_to:{id}:until:{}", at.as_millis())),
                ..created.clone()
            }
        });
        let (row, app, person) = (key.clone(), self.clone(), caller.person().cloned());
        self.store()
            .write(move |tx| {
                async move {
                    if let Some(person) = &person {
                        created.personal = app.seal_personal(tx, person, reason.as_str()).await?;
                    }
                    if let Some((old, at)) = &replaces
                        && !tx.retire_api_key(old, *at).await?
                    {
                        return Err(AppError::conflict(
                            "key_retired",
                            "that key is revoked or retiring already; rotate its successor",
                        ));
                    }
                    tx.insert_api_key(&row).await?;
                    tx.append_audit(&created)?;
                    if let Some(retired) = &retired {
                        tx.append_audit(retired)?;
                    }
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        let token = Zeroizing::new(format!("{id}.{}", secret_text.as_str()));
        Ok(IssuedApiKey { key, token })
    }

    /// A key by id, for a change by `caller`.
    async fn api_key_to_change(&self, id: &ApiKeyId) -> Result<ApiKeyRow, AppError> {
        let id = id.clone();
        self.store()
            .read(move |tx| async move { tx.api_key(&id).await?.ok_or(AppError::NotFound) }.boxed())
            .await
    }

    /// Rotates a key: a new key with the same carrier, sites and label, while the old one keeps
    /// working for `overlap` (at most a week) so the carrier can switch without a gap. Needs a
    /// step-up.
    pub async fn rotate_api_key(
        &self,
        caller: &Caller,
        id: &ApiKeyId,
        overlap: Duration,
        reason: &str,
    ) -> Result<IssuedApiKey, AppError> {
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        if overlap > MAX_KEY_OVERLAP {
            return Err(AppError::Invalid("the overlap is at most a week (168 hours)".into()));
        }
        let old = self.api_key_to_change(id).await?;
        self.may_handle_keys_for(caller, &old.org, &old.sites, AuditAction::ApiKeyCreate).await?;
        let retire_at = self.now().plus(overlap);
        let key = NewKey {
            carrier: &old.carrier,
            org: &old.org,
            sites: &old.sites,
            label: old.label.clone(),
            reason,
        };
        self.new_api_key(caller, key, Some((old.id.clone(), retire_at))).await
    }

    /// Revokes a key at once. Needs a step-up.
    pub async fn revoke_api_key(&self, caller: &Caller, id: &ApiKeyId) -> Result<(), AppError> {
        let key = self.api_key_to_change(id).await?;
        self.may_handle_keys_for(caller, &key.org, &key.sites, AuditAction::ApiKeyRevoke).await?;
        let now = self.now();
        let mut event = created(caller, AuditAction::ApiKeyRevoke, Target::default(), now);
        event.reason = Some(key.id.to_string());
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.retire_api_key(&key.id, now).await? {
                        return Err(AppError::conflict(
                            "key_retired",
                            "that key is revoked already",
                        ));
                    }
                    tx.append_audit(&event)?;
                    Ok(())
                }
                .boxed()
            })
            .await
    }

    /// A carrier's keys that `caller` may see (staff of every site a key serves), newest
    /// first, with their last use. Never their secrets.
    pub async fn api_keys(
        &self,
        caller: &Caller,
        carrier: &CarrierId,
    ) -> Result<Vec<ApiKeyRow>, AppError> {
        let carrier = carrier.clone();
        let keys = self
            .store()
            .read(move |tx| async move { tx.api_keys_of(&carrier).await }.boxed())
            .await?;
        Ok(keys
            .into_iter()
            .filter(|k| {
                k.sites
                    .iter()
                    .all(|s| caller.check(|p| policy::may_manage_site(p, &k.org, s)).is_ok())
            })
            .collect())
    }

    // --- reads used by several use cases ---------------------------------------------------

    /// A site, or `NotFound`.
    pub async fn site(&self, id: &SiteId) -> Result<SiteRow, AppError> {
        let id = id.clone();
        self.store()
            .read(move |tx| async move { tx.site(&id).await?.ok_or(AppError::NotFound) }.boxed())
            .await
    }

    /// The banks of a site (to reach their agents).
    pub async fn site_banks(&self, site: &SiteId) -> Result<Vec<BankRow>, AppError> {
        let site = site.clone();
        Ok(self.store().read(move |tx| async move { tx.banks(&site).await }.boxed()).await?)
    }

    /// A bank and its site, or `NotFound`.
    pub async fn bank_and_site(&self, id: &BankId) -> Result<(BankRow, SiteRow), AppError> {
        let id = id.clone();
        self.store().read(move |tx| async move { crate::bank_site(tx, &id).await }.boxed()).await
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

/// A bank with its compartments.
pub type BankOverview = (BankRow, Vec<CompartmentRow>);

impl App {
    /// The sites a staff member or auditor may see, by name.
    pub async fn sites_for(&self, caller: &Caller) -> Result<Vec<SiteRow>, AppError> {
        let Caller::Principal(Principal::Person { standing, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        if !(standing.role.is_staff() || standing.role == Role::Auditor) {
            return Err(AppError::Forbidden);
        }
        let scope = standing.scope.clone();
        let all =
            self.store().read(move |tx| async move { tx.sites(&scope.org).await }.boxed()).await?;
        Ok(all.into_iter().filter(|s| standing.scope.covers(&s.org, &s.id)).collect())
    }

    /// A site with its banks and their compartments, for those who may view it.
    pub async fn site_overview(
        &self,
        caller: &Caller,
        site: &SiteId,
    ) -> Result<(SiteRow, Vec<BankOverview>), AppError> {
        let s = self.site(site).await?;
        if let Err(d) = caller.check(|p| policy::may_view_site(p, &s.org, &s.id)) {
            return Err(self
                .refuse(
                    caller,
                    AuditAction::AccessDenied,
                    Target { site: Some(site.clone()), ..Target::default() },
                    d,
                )
                .await);
        }
        let id = s.id.clone();
        let banks = self
            .store()
            .read(move |tx| {
                async move {
                    let mut out = Vec::new();
                    for bank in tx.banks(&id).await? {
                        let compartments = tx.compartments(&bank.id).await?;
                        out.push((bank, compartments));
                    }
                    Ok::<_, AppError>(out)
                }
                .boxed()
            })
            .await?;
        Ok((s, banks))
    }
}

impl App {
    /// The compartment numbers of a bank (for its agent).
    pub async fn bank_compartment_numbers(&self, bank: &BankId) -> Result<Vec<u16>, AppError> {
        let bank = bank.clone();
        let rows = self
            .store()
            .read(move |tx| async move { tx.compartments(&bank).await }.boxed())
            .await?;
        Ok(rows.iter().map(|c| c.number.get()).collect())
    }
}

impl App {
    /// A bank's compartments (for pages that show compartment numbers).
    pub async fn bank_overview(&self, bank: &BankId) -> Result<Vec<CompartmentRow>, AppError> {
        let bank = bank.clone();
        Ok(self.store().read(move |tx| async move { tx.compartments(&bank).await }.boxed()).await?)
    }

    /// A random token for one-off uses such as a sign-in form's CSRF token.
    pub fn random_token(&self) -> Result<String, AppError> {
        let bytes: [u8; 32] = self.rng().bytes()?;
        Ok(data_encoding::BASE64URL_NOPAD.encode(&bytes))
    }
}

/// A key about to be issued.
struct NewKey<'a> {
    carrier: &'a CarrierId,
    org: &'a OrgId,
    sites: &'a [SiteId],
    label: Name,
    reason: Reason,
}
