//! Organisations, sites and banks: setting them up, and reading them for the use cases and
//! pages that need them.

use crate::compartments::Compartment;
use crate::{App, AppError, Caller};
use custody_core::audit::{AuditAction, AuditEvent, Target};
use custody_core::person::Role;
use custody_core::policy::{self, Denied, Principal};
use custody_core::site::{PickupWindow, TimeZoneName};
use custody_core::text::Name;
use custody_core::{BankId, OrgId, SiteId};
use custody_store::{BankRow, OrgRow, SiteRow};
use futures_util::FutureExt as _;
use std::time::Duration;

use custody_core::Timestamp;

view! {
    /// An organisation.
    Org from OrgRow {
        /// Id.
        id: OrgId,
        /// Display name.
        name: Name,
        /// Created.
        created_at: Timestamp,
    }
}
view! {
    /// A site.
    Site from SiteRow {
        /// Id.
        id: SiteId,
        /// Organisation.
        org: OrgId,
        /// Display name.
        name: Name,
        /// IANA time zone name.
        time_zone: String,
        /// How long parcels wait here.
        pickup_window: PickupWindow,
        /// Created.
        created_at: Timestamp,
    }
}
view! {
    /// A locker bank.
    Bank from BankRow {
        /// Id.
        id: BankId,
        /// Site.
        site: SiteId,
        /// Display name.
        name: Name,
        /// Created.
        created_at: Timestamp,
    }
}

impl App {
    /// Creates an organisation. Operators only: a tenant is made by whoever runs the platform.
    pub async fn create_org(&self, caller: &Caller, name: &str) -> Result<Org, AppError> {
        self.authorize(caller, AuditAction::OrgCreate, &Target::default(), |_| Err(Denied::Role))
            .await?;
        let org = OrgRow {
            id: self.new_id(OrgId::from_random)?,
            name: Name::parse(name).map_err(AppError::invalid)?,
            created_at: self.now(),
        };
        let event = AuditEvent::success(
            org.created_at,
            caller.actor(),
            AuditAction::OrgCreate,
            Target::default(),
        );
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
        Ok(org.into())
    }

    /// Creates a site in an organisation.
    pub async fn create_site(
        &self,
        caller: &Caller,
        org: &OrgId,
        name: &str,
        time_zone: &str,
        pickup_window: Option<Duration>,
    ) -> Result<Site, AppError> {
        self.authorize(caller, AuditAction::SiteCreate, &Target::default(), |p| {
            policy::may_manage_org(p, org)
        })
        .await?;
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
        let event = AuditEvent::success(
            site.created_at,
            caller.actor(),
            AuditAction::SiteCreate,
            Target { site: Some(site.id.clone()), ..Target::default() },
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
        Ok(site.into())
    }

    /// Creates a locker bank at a site.
    pub async fn create_bank(
        &self,
        caller: &Caller,
        site: &SiteId,
        name: &str,
    ) -> Result<Bank, AppError> {
        let site_row = self.site(site).await?;
        let target = Target { site: Some(site.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::BankCreate, &target, |p| {
            policy::may_manage_site(p, &site_row.org, site)
        })
        .await?;
        let bank = BankRow {
            id: self.new_id(BankId::from_random)?,
            site: site.clone(),
            name: Name::parse(name).map_err(AppError::invalid)?,
            created_at: self.now(),
        };
        let event = AuditEvent::success(
            bank.created_at,
            caller.actor(),
            AuditAction::BankCreate,
            Target { bank: Some(bank.id.clone()), ..target },
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
        Ok(bank.into())
    }

    /// A site, or `NotFound`.
    pub async fn site(&self, id: &SiteId) -> Result<Site, AppError> {
        let id = id.clone();
        self.store()
            .read(move |tx| async move { tx.site(&id).await?.ok_or(AppError::NotFound) }.boxed())
            .await
            .map(Site::from)
    }

    /// The banks of a site (to reach their agents).
    pub async fn site_banks(&self, site: &SiteId) -> Result<Vec<Bank>, AppError> {
        let site = site.clone();
        Ok(crate::views(
            self.store().read(move |tx| async move { tx.banks(&site).await }.boxed()).await?,
        ))
    }

    /// A bank and its site, or `NotFound`.
    pub async fn bank_and_site(&self, id: &BankId) -> Result<(Bank, Site), AppError> {
        let id = id.clone();
        let (bank, site) = self
            .store()
            .read(move |tx| async move { crate::bank_site(tx, &id).await }.boxed())
            .await?;
        Ok((bank.into(), site.into()))
    }

    /// The sites a staff member or auditor may see, by name.
    pub async fn sites_for(&self, caller: &Caller) -> Result<Vec<Site>, AppError> {
        let Caller::Principal(Principal::Person { standing, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        if !(standing.role.is_staff() || standing.role == Role::Auditor) {
            return Err(AppError::Forbidden);
        }
        let scope = standing.scope.clone();
        let all =
            self.store().read(move |tx| async move { tx.sites(&scope.org).await }.boxed()).await?;
        Ok(all
            .into_iter()
            .filter(|s| standing.scope.covers(&s.org, &s.id))
            .map(Site::from)
            .collect())
    }

    /// The site, for a caller who may see it (staff and auditors in scope); anyone else is
    /// refused on the record.
    pub(crate) async fn viewable_site(
        &self,
        caller: &Caller,
        site: &SiteId,
    ) -> Result<Site, AppError> {
        let s = self.site(site).await?;
        let target = Target { site: Some(site.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::AccessDenied, &target, |p| {
            policy::may_view_site(p, &s.org, &s.id)
        })
        .await?;
        Ok(s)
    }

    /// A site with its banks and their compartments, for those who may view it.
    pub async fn site_overview(
        &self,
        caller: &Caller,
        site: &SiteId,
    ) -> Result<(Site, Vec<BankOverview>), AppError> {
        let s = self.viewable_site(caller, site).await?;
        let id = s.id.clone();
        let banks = self
            .store()
            .read(move |tx| {
                async move {
                    let mut out = Vec::new();
                    for bank in tx.banks(&id).await? {
                        let compartments = tx.compartments(&bank.id).await?;
                        out.push((Bank::from(bank), crate::views(compartments)));
                    }
                    Ok::<_, AppError>(out)
                }
                .boxed()
            })
            .await?;
        Ok((s, banks))
    }
}

/// A bank with its compartments.
pub type BankOverview = (Bank, Vec<Compartment>);
