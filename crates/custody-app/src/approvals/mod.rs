//! Second approvers: the most dangerous requests run only when a different person, with the
//! right role and scope and themselves stepped up, approves exactly what was asked
//! (ASVS 2.3.5): granting super-admin, bulk opens beyond the limit, remote opens and
//! retrievals past the remote-open budget, lifting a lockdown.
//!
//! Here: the request as it is stored and shown, and how each kind of request is asked for
//! (`new_request`, which the asking use cases call). Answering, and running what was
//! approved, is `decide`.

use custody_core::approval::{APPROVAL_TTL, ApprovalKind, ApprovalOutcome};
use custody_core::audit::{AuditAction, AuditEvent, Target};
use custody_core::person::Role;
use custody_core::policy::{Denied, Principal};
use custody_core::{ApprovalId, OrgId, PersonId, Timestamp};
use custody_store::{ApprovalRow, PersonRow};
use futures_util::FutureExt as _;

use crate::{App, AppError, Caller};

mod decide;

view! {
    /// A request waiting for (or answered by) a second person.
    Approval from ApprovalRow {
        /// Id.
        id: ApprovalId,
        /// The organisation it concerns.
        org: OrgId,
        /// What it would do.
        kind: ApprovalKind,
        /// Whom or what it would do it to (a person id for role grants).
        subject: String,
        /// Its exact parameters, as canonical JSON.
        params: String,
        /// SHA-256 of kind, subject and parameters.
        digest: Vec<u8>,
        /// Who asked.
        requested_by: PersonId,
        /// When.
        requested_at: Timestamp,
        /// Unanswered past this, it lapses.
        expires_at: Timestamp,
        /// Who answered, when, and how.
        decision: Option<(PersonId, Timestamp, ApprovalOutcome)>,
    }
}

/// The exact parameters of a super-admin grant, canonical: what the digest covers.
fn grant_params(person: &PersonRow) -> String {
    serde_json::json!({"person": person.id.as_str(), "from": person.role.as_str(), "to": "super_admin"})
        .to_string()
}

fn digest(kind: ApprovalKind, subject: &str, params: &str) -> Vec<u8> {
    custody_crypto::sha256(format!("{}\n{subject}\n{params}", kind.as_str()).as_bytes()).to_vec()
}

/// The principal is a person holding `role` in `org`, org-wide.
fn holds(p: &Principal, role: Role, org: &OrgId) -> Result<(), Denied> {
    match p {
        Principal::Person { standing, .. } => {
            if standing.role != role {
                Err(Denied::Role)
            } else if &standing.scope.org != org || standing.scope.site.is_some() {
                Err(Denied::Scope)
            } else {
                Ok(())
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
        reason: custody_core::text::Reason,
    ) -> Result<Approval, AppError> {
        let target = Target { site: person.site.clone(), ..Target::default() };
        let requester = self
            .authorize_person(caller, AuditAction::ApprovalRequest, &target, |p| {
                holds(p, Role::SuperAdmin, &person.org).and_then(|()| self.stepped_up(p))
            })
            .await?;
        let kind = ApprovalKind::GrantSuperAdmin;
        let now = self.now();
        let row = new_request(
            self,
            kind,
            &person.org,
            person.id.as_str(),
            grant_params(&person),
            requester,
        )?;
        let mut event =
            AuditEvent::success(now, caller.actor(), AuditAction::ApprovalRequest, target)
                .because(format!("{}:{}:{}", row.id, kind, person.id));
        let (stored, app, subject) = (row.clone(), self.clone(), person.id.clone());
        self.store()
            .write(move |tx| {
                async move {
                    event.personal = app.seal_personal(tx, &subject, reason.as_str()).await?;
                    tx.insert_approval(&stored).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(row.into())
    }
}

/// An answered request, and the open commands an approved bulk open issued.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The request as it now stands.
    pub request: Approval,
    /// For a bulk open that ran: the commands for the bank's agent.
    pub openings: Vec<crate::parcels::Opening>,
}

/// Stores a request for approval (the caller's own unit of work).
pub(crate) fn new_request(
    app: &App,
    kind: ApprovalKind,
    org: &OrgId,
    subject: &str,
    params: String,
    requester: PersonId,
) -> Result<ApprovalRow, AppError> {
    let now = app.now();
    Ok(ApprovalRow {
        id: app.new_id(ApprovalId::from_random)?,
        org: org.clone(),
        kind,
        subject: subject.to_owned(),
        digest: digest(kind, subject, &params),
        params,
        requested_by: requester,
        requested_at: now,
        expires_at: now.plus(APPROVAL_TTL),
        decision: None,
    })
}
