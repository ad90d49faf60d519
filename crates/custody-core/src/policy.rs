//! Who may do what to which thing: the access policy as pure functions.
//!
//! The HTTP layer proves who is calling (session, API key, client certificate) and hands a
//! [`Principal`] to the use case; the use case asks this module before touching anything. Data
//! level checks (ASVS 8.2.2) live here next to function level checks, so "a resident sees only
//! their own parcels" is one line that tests read directly.

use std::time::Duration;

use crate::audit::AuditAction;
use crate::person::{Role, Standing};
use crate::{ApiKeyId, BankId, CarrierId, DeviceId, OrgId, PersonId, SiteId, Timestamp};

/// A party whose identity has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in person.
    Person {
        /// Who.
        id: PersonId,
        /// Their role and scope.
        standing: Standing,
        /// When they last proved a second factor in this session, if they did.
        second_factor_at: Option<Timestamp>,
    },
    /// A carrier system calling with an API key.
    CarrierKey {
        /// The key.
        key: ApiKeyId,
        /// The carrier it belongs to.
        carrier: CarrierId,
        /// The organisation that issued it.
        org: OrgId,
        /// The sites it may deliver to.
        sites: Vec<SiteId>,
    },
    /// An enrolled agent.
    Device {
        /// Which device.
        device: DeviceId,
        /// The bank it runs.
        bank: BankId,
        /// That bank's site.
        site: SiteId,
        /// That site's organisation.
        org: OrgId,
    },
}

/// Why the policy said no. Goes to the audit log; the caller sees a uniform refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The principal's role cannot do this at all.
    #[error("role does not allow this")]
    Role,
    /// The thing lies outside the principal's organisation or sites.
    #[error("outside the caller's scope")]
    Scope,
    /// The parcel belongs to another person or carrier.
    #[error("not the caller's parcel")]
    NotOwner,
    /// Allowed, but only with a second factor proven within the last few minutes.
    #[error("needs a fresh second factor")]
    StepUp,
}

impl Denied {
    /// Stable reason for the audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Role => "denied_role",
            Self::Scope => "denied_scope",
            Self::NotOwner => "denied_not_owner",
            Self::StepUp => "denied_step_up",
        }
    }
}

/// The facts about a parcel that decide who may see or handle it.
#[derive(Debug, Clone, Copy)]
pub struct ParcelFacts<'a> {
    /// Its organisation.
    pub org: &'a OrgId,
    /// Its site.
    pub site: &'a SiteId,
    /// The carrier that delivered or will deliver it.
    pub carrier: &'a CarrierId,
    /// Who may collect it, once known.
    pub recipient: Option<&'a PersonId>,
}

fn staff_in_scope(standing: &Standing, org: &OrgId, site: &SiteId) -> Result<(), Denied> {
    if !standing.role.is_staff() {
        return Err(Denied::Role);
    }
    if standing.scope.covers(org, site) { Ok(()) } else { Err(Denied::Scope) }
}

/// May `p` see a site's banks, compartments and parcels (metadata only)?
/// Staff and auditors, within scope.
pub fn may_view_site(p: &Principal, org: &OrgId, site: &SiteId) -> Result<(), Denied> {
    match p {
        Principal::Person { standing, .. } if standing.role == Role::Auditor => {
            if standing.scope.covers(org, site) { Ok(()) } else { Err(Denied::Scope) }
        }
        Principal::Person { standing, .. } => staff_in_scope(standing, org, site),
        Principal::CarrierKey { .. } | Principal::Device { .. } => Err(Denied::Role),
    }
}

/// May `p` change a site: create banks and compartments, add people, open compartments remotely,
/// retrieve parcels? Admins and super-admins within scope.
pub fn may_manage_site(p: &Principal, org: &OrgId, site: &SiteId) -> Result<(), Denied> {
    match p {
        Principal::Person { standing, .. } => staff_in_scope(standing, org, site),
        Principal::CarrierKey { .. } | Principal::Device { .. } => Err(Denied::Role),
    }
}

/// May `p` manage the organisation itself (sites, carriers, org-wide people)? Org-wide staff.
pub fn may_manage_org(p: &Principal, org: &OrgId) -> Result<(), Denied> {
    match p {
        Principal::Person { standing, .. } if standing.role.is_staff() => {
            if &standing.scope.org == org && standing.scope.site.is_none() {
                Ok(())
            } else {
                Err(Denied::Scope)
            }
        }
        _ => Err(Denied::Role),
    }
}

/// May `p` deliver parcels of `carrier` to `site`? That carrier's couriers within their scope,
/// and that carrier's API keys scoped to the site.
pub fn may_deposit(
    p: &Principal,
    org: &OrgId,
    site: &SiteId,
    carrier: &CarrierId,
) -> Result<(), Denied> {
    match p {
        Principal::Person { standing, .. } => {
            if standing.role != Role::Courier {
                return Err(Denied::Role);
            }
            if standing.carrier.as_ref() != Some(carrier) {
                return Err(Denied::NotOwner);
            }
            if standing.scope.covers(org, site) { Ok(()) } else { Err(Denied::Scope) }
        }
        Principal::CarrierKey { carrier: c, org: o, sites, .. } => {
            if c != carrier {
                Err(Denied::NotOwner)
            } else if o != org || !sites.contains(site) {
                Err(Denied::Scope)
            } else {
                Ok(())
            }
        }
        Principal::Device { .. } => Err(Denied::Role),
    }
}

/// May `p` see this parcel? The recipient; the carrier's couriers and keys (within scope); staff
/// and auditors within scope.
pub fn may_view_parcel(p: &Principal, f: ParcelFacts<'_>) -> Result<(), Denied> {
    match p {
        Principal::Person { id, standing, .. } => match standing.role {
            Role::Resident => {
                if f.recipient == Some(id) {
                    Ok(())
                } else {
                    Err(Denied::NotOwner)
                }
            }
            Role::Courier => may_deposit(p, f.org, f.site, f.carrier),
            Role::Auditor | Role::Admin | Role::SuperAdmin => may_view_site(p, f.org, f.site),
        },
        Principal::CarrierKey { .. } => may_deposit(p, f.org, f.site, f.carrier),
        Principal::Device { .. } => Err(Denied::Role),
    }
}

/// Is `p` the person a parcel is for? What only they may do with it: show its QR code, open
/// its door from their phone, have its code sent again.
pub fn is_recipient(p: &Principal, recipient: Option<&PersonId>) -> Result<(), Denied> {
    match p {
        Principal::Person { id, .. } if recipient == Some(id) => Ok(()),
        _ => Err(Denied::NotOwner),
    }
}

/// May `p`, who may see a parcel, also see who it is for and whether and when they were told?
/// The recipient and the site's staff and auditors. Never the carrier's couriers and keys:
/// a carrier announces parcels for e-mail addresses, and an address that matches no resident
/// is accepted like any other, so what a carrier sees of a parcel (its answers, its states,
/// its chain of custody) must not tell it whether the address belongs to someone who lives
/// there.
pub fn may_see_recipient(p: &Principal) -> Result<(), Denied> {
    match p {
        Principal::Person { standing, .. } if standing.role != Role::Courier => Ok(()),
        _ => Err(Denied::Role),
    }
}

/// The entries of a parcel's chain of custody a carrier sees: its own part (announced,
/// deposited, expired, taken back) and the doors and the end, never the steps that exist only
/// because a resident was found (told, codes typed, a recipient named).
pub fn carrier_sees(action: AuditAction) -> bool {
    use AuditAction as A;
    matches!(
        action,
        A::ParcelExpect
            | A::DepositReserve
            | A::Deposit
            | A::DepositCancel
            | A::DepositOfflineConflict
            | A::PickUp
            | A::Expire
            | A::ReturnToCarrier
            | A::Retrieve
            | A::OpenCommand
            | A::DoorReport
    )
}

/// May `p` read the words someone gave for an action at a site (sealed personal data about
/// `subject`)? The subject themselves, and staff and auditors within scope; never carriers,
/// couriers or devices, who see only that words were given.
pub fn may_read_statement(
    p: &Principal,
    org: &OrgId,
    site: &SiteId,
    subject: &PersonId,
) -> Result<(), Denied> {
    match p {
        Principal::Person { id, .. } if id == subject => Ok(()),
        Principal::Person { standing, .. } if standing.role == Role::Courier => Err(Denied::Role),
        _ => may_view_site(p, org, site),
    }
}

/// May `p` add a person with `role` to `org`, at `site` or (with none) organisation-wide? A
/// person whose role outranks it, within scope: a site-scoped caller adds people to their own
/// site only.
pub fn may_add_person(
    p: &Principal,
    org: &OrgId,
    site: Option<&SiteId>,
    role: Role,
) -> Result<(), Denied> {
    let Principal::Person { standing, .. } = p else { return Err(Denied::Role) };
    if !standing.role.may_grant(role) {
        return Err(Denied::Role);
    }
    match site {
        Some(site) if standing.scope.covers(org, site) => Ok(()),
        None if &standing.scope.org == org && standing.scope.site.is_none() => Ok(()),
        _ => Err(Denied::Scope),
    }
}

/// May `p` change person `target` (their role, whether they may sign in)? Staff whose role
/// outranks the target's, within scope: an org-wide caller for anyone of their organisation, a
/// site-scoped one for people of their site only. Nobody changes themselves (ASVS 8.2.1).
pub fn may_manage_person(
    p: &Principal,
    target: &PersonId,
    standing: &Standing,
) -> Result<(), Denied> {
    let Principal::Person { id, standing: caller, .. } = p else { return Err(Denied::Role) };
    if id == target || !caller.role.may_grant(standing.role) {
        return Err(Denied::Role);
    }
    let in_scope = caller.scope.org == standing.scope.org
        && match (&caller.scope.site, &standing.scope.site) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
        };
    if in_scope { Ok(()) } else { Err(Denied::Scope) }
}

/// Has `p` stepped up: proved a second factor within `window` before `now`? The sensitive
/// actions (remote opens, granting roles with power, issuing carrier keys) ask for it on top of
/// their own rule (ASVS 7.5.3). Only people step up.
pub fn stepped_up(p: &Principal, now: Timestamp, window: Duration) -> Result<(), Denied> {
    match p {
        Principal::Person { second_factor_at: Some(at), .. }
            if *at <= now && at.plus(window) > now =>
        {
            Ok(())
        }
        Principal::Person { .. } => Err(Denied::StepUp),
        Principal::CarrierKey { .. } | Principal::Device { .. } => Err(Denied::Role),
    }
}

/// May `p` take an expired parcel back for its carrier? The parcel's own carrier only.
pub fn may_return_to_carrier(p: &Principal, f: ParcelFacts<'_>) -> Result<(), Denied> {
    may_deposit(p, f.org, f.site, f.carrier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ID_BYTES;
    use crate::person::Scope;

    struct World {
        org: OrgId,
        other_org: OrgId,
        site: SiteId,
        other_site: SiteId,
        carrier: CarrierId,
        other_carrier: CarrierId,
        recipient: PersonId,
        stranger: PersonId,
    }

    fn world() -> World {
        World {
            org: OrgId::from_random([1; ID_BYTES]),
            other_org: OrgId::from_random([2; ID_BYTES]),
            site: SiteId::from_random([3; ID_BYTES]),
            other_site: SiteId::from_random([4; ID_BYTES]),
            carrier: CarrierId::from_random([5; ID_BYTES]),
            other_carrier: CarrierId::from_random([6; ID_BYTES]),
            recipient: PersonId::from_random([7; ID_BYTES]),
            stranger: PersonId::from_random([8; ID_BYTES]),
        }
    }

    fn person(
        id: &PersonId,
        role: Role,
        org: &OrgId,
        site: Option<&SiteId>,
        carrier: Option<&CarrierId>,
    ) -> Principal {
        Principal::Person {
            id: id.clone(),
            standing: Standing {
                role,
                scope: Scope { org: org.clone(), site: site.cloned() },
                carrier: carrier.cloned(),
            },
            second_factor_at: None,
        }
    }

    /// Who may read what staff wrote about `w.recipient` at `w.site`.
    #[test]
    fn statement_reading_table() {
        let w = world();
        let s = &w.stranger;
        let key = Principal::CarrierKey {
            key: ApiKeyId::from_random([9; ID_BYTES]),
            carrier: w.carrier.clone(),
            org: w.org.clone(),
            sites: vec![w.site.clone()],
        };
        let table: Vec<(&str, Principal, Result<(), Denied>)> = vec![
            ("subject", person(&w.recipient, Role::Resident, &w.org, Some(&w.site), None), Ok(())),
            (
                "other resident",
                person(s, Role::Resident, &w.org, Some(&w.site), None),
                Err(Denied::Role),
            ),
            ("site admin", person(s, Role::Admin, &w.org, Some(&w.site), None), Ok(())),
            ("auditor", person(s, Role::Auditor, &w.org, None, None), Ok(())),
            (
                "other site admin",
                person(s, Role::Admin, &w.org, Some(&w.other_site), None),
                Err(Denied::Scope),
            ),
            (
                "other org super-admin",
                person(s, Role::SuperAdmin, &w.other_org, None, None),
                Err(Denied::Scope),
            ),
            (
                "courier of the carrier",
                person(s, Role::Courier, &w.org, Some(&w.site), Some(&w.carrier)),
                Err(Denied::Role),
            ),
            ("carrier key", key, Err(Denied::Role)),
        ];
        for (who, p, want) in table {
            assert_eq!(may_read_statement(&p, &w.org, &w.site, &w.recipient), want, "{who}");
        }
    }

    /// Who may see the parcel of `w.recipient`, delivered by `w.carrier` to `w.site`.
    #[test]
    fn parcel_visibility_table() {
        let w = world();
        let facts = ParcelFacts {
            org: &w.org,
            site: &w.site,
            carrier: &w.carrier,
            recipient: Some(&w.recipient),
        };
        let key = |carrier: &CarrierId, sites: Vec<SiteId>| Principal::CarrierKey {
            key: ApiKeyId::from_random([9; ID_BYTES]),
            carrier: carrier.clone(),
            org: w.org.clone(),
            sites,
        };
        let device = Principal::Device {
            device: DeviceId::from_random([10; ID_BYTES]),
            bank: BankId::from_random([11; ID_BYTES]),
            site: w.site.clone(),
            org: w.org.clone(),
        };
        let s = &w.stranger;
        let table: Vec<(&str, Principal, Result<(), Denied>)> = vec![
            (
                "recipient",
                person(&w.recipient, Role::Resident, &w.org, Some(&w.site), None),
                Ok(()),
            ),
            (
                "other resident",
                person(s, Role::Resident, &w.org, Some(&w.site), None),
                Err(Denied::NotOwner),
            ),
            (
                "courier of carrier",
                person(s, Role::Courier, &w.org, None, Some(&w.carrier)),
                Ok(()),
            ),
            (
                "courier of other carrier",
                person(s, Role::Courier, &w.org, None, Some(&w.other_carrier)),
                Err(Denied::NotOwner),
            ),
            (
                "courier of other site",
                person(s, Role::Courier, &w.org, Some(&w.other_site), Some(&w.carrier)),
                Err(Denied::Scope),
            ),
            ("site admin", person(s, Role::Admin, &w.org, Some(&w.site), None), Ok(())),
            (
                "other site admin",
                person(s, Role::Admin, &w.org, Some(&w.other_site), None),
                Err(Denied::Scope),
            ),
            ("org admin", person(s, Role::Admin, &w.org, None, None), Ok(())),
            (
                "other org super-admin",
                person(s, Role::SuperAdmin, &w.other_org, None, None),
                Err(Denied::Scope),
            ),
            ("auditor", person(s, Role::Auditor, &w.org, None, None), Ok(())),
            ("carrier key", key(&w.carrier, vec![w.site.clone()]), Ok(())),
            (
                "carrier key other site",
                key(&w.carrier, vec![w.other_site.clone()]),
                Err(Denied::Scope),
            ),
            (
                "other carrier key",
                key(&w.other_carrier, vec![w.site.clone()]),
                Err(Denied::NotOwner),
            ),
            ("device", device, Err(Denied::Role)),
        ];
        for (who, p, want) in table {
            assert_eq!(may_view_parcel(&p, facts), want, "{who}");
        }
    }

    /// A parcel nobody is named for is no resident's, and only people other than the carrier's
    /// see who a parcel is for.
    #[test]
    fn who_sees_the_recipient() {
        let w = world();
        let unaddressed =
            ParcelFacts { org: &w.org, site: &w.site, carrier: &w.carrier, recipient: None };
        let resident = person(&w.recipient, Role::Resident, &w.org, Some(&w.site), None);
        assert_eq!(may_view_parcel(&resident, unaddressed), Err(Denied::NotOwner));
        let courier = person(&w.stranger, Role::Courier, &w.org, None, Some(&w.carrier));
        assert_eq!(may_view_parcel(&courier, unaddressed), Ok(()));
        assert_eq!(may_see_recipient(&courier), Err(Denied::Role));
        let key = Principal::CarrierKey {
            key: ApiKeyId::from_random([9; ID_BYTES]),
            carrier: w.carrier.clone(),
            org: w.org.clone(),
            sites: vec![w.site.clone()],
        };
        assert_eq!(may_see_recipient(&key), Err(Denied::Role));
        for role in [Role::Resident, Role::Auditor, Role::Admin, Role::SuperAdmin] {
            let p = person(&w.stranger, role, &w.org, None, None);
            assert_eq!(may_see_recipient(&p), Ok(()), "{role}");
        }
        // Their own part of the chain, never the steps that exist only for a resident.
        assert!(carrier_sees(AuditAction::Deposit) && carrier_sees(AuditAction::ReturnToCarrier));
        for hidden in [
            AuditAction::Notify,
            AuditAction::PickupAttempt,
            AuditAction::PickupReopen,
            AuditAction::ParcelAddress,
            AuditAction::AccessDenied,
        ] {
            assert!(!carrier_sees(hidden), "{hidden}");
        }
    }

    #[test]
    fn only_staff_manage_and_auditors_only_read() {
        let w = world();
        let auditor = person(&w.stranger, Role::Auditor, &w.org, None, None);
        assert_eq!(may_view_site(&auditor, &w.org, &w.site), Ok(()));
        assert_eq!(may_manage_site(&auditor, &w.org, &w.site), Err(Denied::Role));
        let resident = person(&w.recipient, Role::Resident, &w.org, Some(&w.site), None);
        assert_eq!(may_view_site(&resident, &w.org, &w.site), Err(Denied::Role));
        let site_admin = person(&w.stranger, Role::Admin, &w.org, Some(&w.site), None);
        assert_eq!(may_manage_site(&site_admin, &w.org, &w.site), Ok(()));
        assert_eq!(may_manage_org(&site_admin, &w.org), Err(Denied::Scope));
        let org_admin = person(&w.stranger, Role::SuperAdmin, &w.org, None, None);
        assert_eq!(may_manage_org(&org_admin, &w.org), Ok(()));
        assert_eq!(may_manage_org(&org_admin, &w.other_org), Err(Denied::Scope));
    }

    #[test]
    fn deposits_need_the_right_carrier_and_site() {
        let w = world();
        let courier = person(&w.stranger, Role::Courier, &w.org, None, Some(&w.carrier));
        assert_eq!(may_deposit(&courier, &w.org, &w.site, &w.carrier), Ok(()));
        assert_eq!(may_deposit(&courier, &w.org, &w.site, &w.other_carrier), Err(Denied::NotOwner));
        assert_eq!(may_deposit(&courier, &w.other_org, &w.site, &w.carrier), Err(Denied::Scope));
        let admin = person(&w.stranger, Role::Admin, &w.org, None, None);
        assert_eq!(may_deposit(&admin, &w.org, &w.site, &w.carrier), Err(Denied::Role));
    }

    #[test]
    fn a_step_up_lasts_its_window_and_only_people_step_up() {
        let w = world();
        let at = Timestamp::from_millis(1_000_000);
        let window = Duration::from_mins(5);
        let admin = |second_factor_at| Principal::Person {
            id: w.recipient.clone(),
            standing: Standing {
                role: Role::Admin,
                scope: Scope { org: w.org.clone(), site: None },
                carrier: None,
            },
            second_factor_at,
        };
        assert_eq!(
            stepped_up(&admin(Some(at)), Timestamp::from_millis(at.as_millis() + 299_999), window),
            Ok(())
        );
        assert_eq!(stepped_up(&admin(Some(at)), at.plus(window), window), Err(Denied::StepUp));
        assert_eq!(stepped_up(&admin(None), at, window), Err(Denied::StepUp));
        assert_eq!(
            stepped_up(&admin(Some(at.plus(window))), at, window),
            Err(Denied::StepUp),
            "a factor from the future does not count"
        );
        let key = Principal::CarrierKey {
            key: ApiKeyId::from_random([9; ID_BYTES]),
            carrier: w.carrier.clone(),
            org: w.org.clone(),
            sites: vec![w.site.clone()],
        };
        assert_eq!(stepped_up(&key, at, window), Err(Denied::Role));
    }
}
