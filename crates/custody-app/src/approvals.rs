//! Second approvers: the most dangerous requests run only when a different person, with the
//! right role and scope and themselves stepped up, approves exactly what was asked
//! (ASVS 2.3.5). Granting super-admin is the first such request; bulk opens and lifting a
//! lockdown will follow the same path.

use custody_core::approval::{APPROVAL_TTL, ApprovalKind, ApprovalOutcome};
use custody_core::audit::{AuditAction, AuditEvent, Outcome, Target};
use custody_core::person::Role;
use custody_core::policy::{Denied, Principal};
use custody_core::{ApprovalId, PersonId};
use custody_store::{ApprovalRow, PersonRow};
use futures_util::FutureExt as _;

use crate::{App, AppError, Caller};

/// What a request to change a role came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleChange {
    /// Done.
    Changed(PersonRow),
    /// Waiting for a second person's approval.
    Pending(ApprovalRow),
}

/// The exact parameters of a super-admin grant, canonical: what the digest covers.
fn grant_params(person: &PersonRow) -> String {
    serde_json::json!({"person": person.id.as_str(), "from": person.role.as_str(), "to": "super_admin"})
        .to_string()
}

fn digest(kind: ApprovalKind, subject: &str, params: &str) -> Vec<u8> {
    custody_crypto::sha256(format!("{}\n{subject}\n{params}", kind.as_str()).as_bytes()).to_vec()
}

/// The caller's id when they hold `role` in `org`, org-wide.
fn holder<'a>(
    caller: &'a Caller,
    role: Role,
    org: &custody_core::OrgId,
) -> Result<&'a PersonId, Denied> {
    match caller {
        Caller::Principal(Principal::Person { id, standing, .. }) => {
            if standing.role != role {
                Err(Denied::Role)
            } else if &standing.scope.org != org || standing.scope.site.is_some() {
                Err(Denied::Scope)
            } else {
                Ok(id)
            }
        }
        _ => Err(Denied::Role),
    }
}

impl App {
    /// A super-admin asks to make `person` super-admin: stored as a request that another
    /// super-admin of the organisation must approve within [`APPROVAL_TTL`]. Needs a step-up.
    pub(crate) async fn request_super_admin_grant(
        &self,
        caller: &Caller,
        person: PersonRow,
    ) -> Result<RoleChange, AppError> {
        let target = Target { site: person.site.clone(), ..Target::default() };
        let requester = match holder(caller, Role::SuperAdmin, &person.org)
            .and_then(|id| self.require_step_up(caller).map(|()| id.clone()))
        {
            Ok(id) => id,
            Err(d) => {
                return Err(self.refuse(caller, AuditAction::ApprovalRequest, target, d).await);
            }
        };
        let kind = ApprovalKind::GrantSuperAdmin;
        let params = grant_params(&person);
        let now = self.now();
        let row = ApprovalRow {
            id: self.new_id(ApprovalId::from_random)?,
            org: person.org.clone(),
            kind,
            subject: person.id.to_string(),
            digest: digest(kind, person.id.as_str(), &params),
            params,
            requested_by: requester,
            requested_at: now,
            expires_at: now.plus(APPROVAL_TTL),
            decision: None,
        };
        let event = AuditEvent {
            at: now,
            actor: caller.actor(),
            action: AuditAction::ApprovalRequest,
            target,
            outcome: Outcome::Success,
            reason: Some(format!("{}:{}:{}", row.id, kind, person.id)),
            personal: None,
        };
        let stored = row.clone();
        self.store()
            .write(move |tx| {
                async move {
                    tx.insert_approval(&stored).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(RoleChange::Pending(row))
    }

    /// The requests of the caller's organisation still waiting that the caller may answer or
    /// asked for themselves (none, for most people).
    pub async fn pending_approvals(&self, caller: &Caller) -> Result<Vec<ApprovalRow>, AppError> {
        let Caller::Principal(Principal::Person { id, standing, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let (org, now) = (standing.scope.org.clone(), self.now());
        let pending = self
            .store()
            .read(move |tx| async move { tx.pending_approvals(&org, now).await }.boxed())
            .await?;
        let org_wide = standing.scope.site.is_none();
        Ok(pending
            .into_iter()
            .filter(|a| {
                &a.requested_by == id || (org_wide && a.kind.approver_role() == standing.role)
            })
            .collect())
    }

    /// Answers a request. Approving runs it in the same unit of work: only a different person
    /// than the one who asked, with the role the request needs in its organisation, stepped up,
    /// while it waits; and only if what it would do still matches what was asked. The person
    /// who asked may withdraw it (a rejection). Refusals are audited.
    pub async fn decide_approval(
        &self,
        caller: &Caller,
        id: &ApprovalId,
        outcome: ApprovalOutcome,
    ) -> Result<ApprovalRow, AppError> {
        let lookup = id.clone();
        let request = self
            .store()
            .read(move |tx| async move { tx.approval(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        let target = Target::default();
        let decider = match holder(caller, request.kind.approver_role(), &request.org)
            .and_then(|id| self.require_step_up(caller).map(|()| id.clone()))
        {
            Ok(id) => id,
            Err(d) => {
                return Err(self.refuse(caller, AuditAction::ApprovalDecide, target, d).await);
            }
        };
        if outcome == ApprovalOutcome::Approved && decider == request.requested_by {
            let refused = self.refuse(caller, AuditAction::ApprovalDecide, target, Denied::Role);
            return Err(match refused.await {
                AppError::Forbidden => AppError::conflict(
                    "same_person",
                    "a request needs a second person: someone else must approve it",
                ),
                other => other,
            });
        }
        if digest(request.kind, &request.subject, &request.params) != request.digest {
            return Err(AppError::Store(custody_store::StoreError::Corrupt("approvals.digest")));
        }
        let now = self.now();
        let subject = PersonId::parse(&request.subject).map_err(|_| {
            AppError::Store(custody_store::StoreError::Corrupt("approvals.subject"))
        })?;
        let lookup = subject.clone();
        let person = self
            .store()
            .read(move |tx| async move { tx.person(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        let still_asked = grant_params(&person) == request.params;
        let answered = AuditEvent {
            at: now,
            actor: caller.actor(),
            action: AuditAction::ApprovalDecide,
            target: Target { site: person.site.clone(), ..Target::default() },
            outcome: Outcome::Success,
            reason: Some(format!("{}:{}", request.id, outcome)),
            personal: None,
        };
        let granted = AuditEvent {
            action: AuditAction::PersonRoleChange,
            reason: Some(format!(
                "{}:{}>super_admin:requested_by:{}",
                person.id, person.role, request.requested_by
            )),
            ..answered.clone()
        };
        let (id, by) = (request.id.clone(), decider);
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.decide_approval(&id, &by, now, outcome).await? {
                        return Err(AppError::conflict(
                            "approval_closed",
                            "that request was answered already or has lapsed; ask again",
                        ));
                    }
                    tx.append_audit(&answered)?;
                    if outcome == ApprovalOutcome::Approved {
                        if !still_asked
                            || !tx.set_role(&person, person.role, Role::SuperAdmin).await?
                        {
                            return Err(AppError::conflict(
                                "approval_stale",
                                "the person changed since the request was made; ask again",
                            ));
                        }
                        tx.append_audit(&granted)?;
                    }
                    Ok(())
                }
                .boxed()
            })
            .await?;
        let lookup = request.id.clone();
        self.store()
            .read(move |tx| async move { tx.approval(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)
    }
}
