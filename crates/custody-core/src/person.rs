//! People, their roles and where those roles apply.

use serde::{Deserialize, Serialize};

use crate::compartment::named_enum;
use crate::{CarrierId, OrgId, SiteId};

named_enum!(
    /// What a person is to the platform. Roles are ordered by [`Role::rank`].
    Role {
        /// Collects their own parcels.
        Resident = "resident",
        /// Delivers parcels for one carrier.
        Courier = "courier",
        /// Reads the audit log and exports; changes nothing.
        Auditor = "auditor",
        /// Runs the sites in their scope: banks, compartments, people, remote opens.
        Admin = "admin",
        /// Runs the organisation, including admins.
        SuperAdmin = "super_admin",
    }
);

impl Role {
    /// Power of the role: a role may grant only roles of lower rank (DESIGN.md §1 "Roles").
    pub const fn rank(self) -> u8 {
        match self {
            Self::Resident | Self::Courier => 0,
            Self::Auditor => 1,
            Self::Admin => 2,
            Self::SuperAdmin => 3,
        }
    }

    /// Whether the role administers sites.
    pub const fn is_staff(self) -> bool {
        matches!(self, Self::Admin | Self::SuperAdmin)
    }

    /// Whether a session of this role reaches anything before a second factor is proven in it
    /// (ASVS 6.3.3): admins and super-admins reach only the second-factor step on a password.
    pub const fn needs_second_factor(self) -> bool {
        self.is_staff()
    }

    /// Whether a second factor of kind `factor` counts for this role. A super-admin holds
    /// every key, so only a phishing-resistant passkey does (ASVS 6.3.3 at level 3); an
    /// authenticator code or recovery code proves who they are well enough to add one.
    pub const fn accepts_second_factor(self, factor: Factor) -> bool {
        !matches!(self, Self::SuperAdmin) || matches!(factor, Factor::Passkey)
    }

    /// Whether someone holding `self` may give another person `granted`.
    pub fn may_grant(self, granted: Role) -> bool {
        self.is_staff() && granted.rank() < self.rank()
    }
}

named_enum!(
    /// A second factor, as proven in a session.
    Factor {
        /// A code from an authenticator app (RFC 6238).
        Totp = "totp",
        /// A passkey (WebAuthn).
        Passkey = "passkey",
        /// One of the person's single-use recovery codes.
        RecoveryCode = "recovery_code",
    }
);

/// Where a person's role applies: the whole organisation, or one site of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// The organisation, always.
    pub org: OrgId,
    /// The site, when the role applies to one site only.
    pub site: Option<SiteId>,
}

impl Scope {
    /// Whether a thing at (`org`, `site`) lies within this scope.
    pub fn covers(&self, org: &OrgId, site: &SiteId) -> bool {
        &self.org == org && self.site.as_ref().is_none_or(|s| s == site)
    }
}

/// A person's standing as the access policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// Their role.
    pub role: Role,
    /// Where it applies.
    pub scope: Scope,
    /// For couriers: the carrier they deliver for.
    pub carrier: Option<CarrierId>,
}

/// Why a password was refused at enrolment (NIST SP 800-63B §5.1.1.2; ASVS 6.2.1, 6.2.5, 6.2.9).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("password must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// Longer than [`MAX_PASSWORD_CHARS`].
    #[error("password must be at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
}

/// Minimum password length. Length, not composition rules, is what makes a password strong.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Maximum password length: generous for pass phrases (ASVS 6.2.9 asks for ≥ 64) and bounded so
/// one login cannot make the server hash megabytes.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Checks a new password against the policy. No composition rules (ASVS 6.2.5).
pub fn check_new_password(password: &str) -> Result<(), PasswordPolicyError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        Err(PasswordPolicyError::TooShort)
    } else if n > MAX_PASSWORD_CHARS {
        Err(PasswordPolicyError::TooLong)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ID_BYTES;

    #[test]
    fn grants_go_only_downwards() {
        use Role::*;
        let table = [
            (SuperAdmin, Admin, true),
            (SuperAdmin, Auditor, true),
            (SuperAdmin, SuperAdmin, false),
            (Admin, Resident, true),
            (Admin, Courier, true),
            (Admin, Auditor, true),
            (Admin, Admin, false),
            (Admin, SuperAdmin, false),
            (Auditor, Resident, false),
            (Resident, Resident, false),
            (Courier, Resident, false),
        ];
        for (granter, granted, ok) in table {
            assert_eq!(granter.may_grant(granted), ok, "{granter} granting {granted}");
        }
    }

    #[test]
    fn scope_covers_its_sites_only() {
        let org = OrgId::from_random([1; ID_BYTES]);
        let other_org = OrgId::from_random([2; ID_BYTES]);
        let a = SiteId::from_random([3; ID_BYTES]);
        let b = SiteId::from_random([4; ID_BYTES]);
        let org_wide = Scope { org: org.clone(), site: None };
        let site_a = Scope { org: org.clone(), site: Some(a.clone()) };
        assert!(org_wide.covers(&org, &a) && org_wide.covers(&org, &b));
        assert!(site_a.covers(&org, &a) && !site_a.covers(&org, &b));
        assert!(!org_wide.covers(&other_org, &a));
    }

    #[test]
    fn password_policy_is_length_only() {
        assert_eq!(check_new_password("short"), Err(PasswordPolicyError::TooShort));
        assert!(check_new_password("correct horse battery").is_ok());
        assert!(check_new_password(&"é".repeat(MIN_PASSWORD_CHARS)).is_ok());
        assert_eq!(check_new_password(&"x".repeat(129)), Err(PasswordPolicyError::TooLong));
    }
}
