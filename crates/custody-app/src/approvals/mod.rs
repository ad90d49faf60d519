//! Second approvers: the most dangerous requests run only when a different person, with the
//! right role and scope and themselves stepped up, approves exactly what was asked
//! (ASVS 2.3.5): granting super-admin, bulk opens beyond the limit, remote opens and
//! retrievals past the remote-open budget, lifting a lockdown.

use crate::conflicts::ConflictCode;
use custody_core::approval::{APPROVAL_TTL, ApprovalKind, ApprovalOutcome};
use custody_core::audit::{AuditAction, AuditEvent, Target};
use custody_core::person::Role;
use custody_core::policy::{Denied, Principal};
use custody_core::{ApprovalId, PersonId};
use custody_store::{ApprovalRow, PersonRow};
use futures_util::FutureExt as _;

use crate::lockdown::LiftAsk;
use crate::remote_opens::Charge;
use crate::{App, AppError, Caller};

use custody_core::{OrgId, Timestamp};

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

/// The caller's id when they hold `role` in `org`, org-wide.
fn holder<'a>(caller: &'a Caller, role: Role, org: &OrgId) -> Result<&'a PersonId, Denied> {
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
        reason: custody_core::text::Reason,
    ) -> Result<Approval, AppError> {
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

    /// The requests of the caller's organisation still waiting that the caller may answer or
    /// asked for themselves (none, for most people).
    pub async fn pending_approvals(&self, caller: &Caller) -> Result<Vec<Approval>, AppError> {
        let Caller::Principal(Principal::Person { id, standing, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let (org, now) = (standing.scope.org.clone(), self.now());
        let pending = self
            .store()
            .read(move |tx| async move { tx.pending_approvals(&org, now).await }.boxed())
            .await?;
        Ok(pending
            .into_iter()
            .filter(|a| &a.requested_by == id || may_answer(caller, a).is_ok())
            .map(Approval::from)
            .collect())
    }

    /// Answers a request. Approving runs it in the same unit of work: only a different person
    /// than the one who asked, who may answer that kind of request in its scope, stepped up,
    /// while it waits; and only if what it would do still matches what was asked. The person
    /// who asked may withdraw it (a rejection). Refusals are audited. A bulk open that runs
    /// returns its open commands, for the bank's agent.
    pub async fn decide_approval(
        &self,
        caller: &Caller,
        id: &ApprovalId,
        outcome: ApprovalOutcome,
    ) -> Result<Decided, AppError> {
        let lookup = id.clone();
        let request = self
            .store()
            .read(move |tx| async move { tx.approval(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        let target = Target::default();
        let asker = caller.person() == Some(&request.requested_by);
        let answerable = if asker && outcome == ApprovalOutcome::Rejected {
            Ok(request.requested_by.clone())
        } else {
            may_answer(caller, &request)
        };
        let decider = match answerable.and_then(|id| self.require_step_up(caller).map(|()| id)) {
            Ok(id) => id,
            Err(d) => {
                return Err(self.refuse(caller, AuditAction::ApprovalDecide, target, d).await);
            }
        };
        if outcome == ApprovalOutcome::Approved && decider == request.requested_by {
            let refused = self.refuse(caller, AuditAction::ApprovalDecide, target, Denied::Role);
            return Err(match refused.await {
                AppError::Forbidden => AppError::conflict(
                    ConflictCode::SamePerson,
                    "a request needs a second person: someone else must approve it",
                ),
                other => other,
            });
        }
        if digest(request.kind, &request.subject, &request.params) != request.digest {
            return Err(AppError::Store(custody_store::StoreError::Corrupt("approvals.digest")));
        }
        let now = self.now();
        let answered =
            AuditEvent::success(now, caller.actor(), AuditAction::ApprovalDecide, target)
                .because(format!("{}:{}", request.id, outcome));
        let run = if outcome == ApprovalOutcome::Approved {
            Some(self.prepare(&request, &answered).await?)
        } else {
            None
        };
        let bulk = match &run {
            Some(Run::BulkOpen { plan, .. }) => Some(plan.clone()),
            _ => None,
        };
        let (id, by, app, actor) = (request.id.clone(), decider, self.clone(), caller.actor());
        let openings = self
            .store()
            .write(move |tx| {
                async move {
                    if !tx.decide_approval(&id, &by, now, outcome).await? {
                        return Err(AppError::conflict(
                            ConflictCode::ApprovalClosed,
                            "that request was answered already or has lapsed; ask again",
                        ));
                    }
                    tx.append_audit(&answered)?;
                    match run {
                        Some(run) => app.run_approved(tx, run, &answered.actor, now).await,
                        None => Ok(Vec::new()),
                    }
                }
                .boxed()
            })
            .await;
        if let (Err(e), Some(plan)) = (&openings, &bulk) {
            self.if_over_cap(e, &actor, plan).await;
        }
        let openings = openings?;
        // An approved lift: the bank's agent releases its interlock now.
        if outcome == ApprovalOutcome::Approved
            && request.kind == ApprovalKind::LiftLockdown
            && let Ok(bank) = request.subject.parse::<custody_core::BankId>()
        {
            self.lockdown_changed(&bank, false);
        }
        let lookup = request.id.clone();
        let request = self
            .store()
            .read(move |tx| async move { tx.approval(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        Ok(Decided { request: request.into(), openings })
    }

    /// What an approved request will run, read before the unit that runs it.
    async fn prepare(&self, request: &ApprovalRow, answered: &AuditEvent) -> Result<Run, AppError> {
        match request.kind {
            ApprovalKind::GrantSuperAdmin => {
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
                let granted = answered
                    .clone()
                    .as_action(
                        AuditAction::PersonRoleChange,
                        Target { site: person.site.clone(), ..Target::default() },
                    )
                    .because(format!(
                        "{}:{}>super_admin:requested_by:{}",
                        person.id, person.role, request.requested_by
                    ));
                Ok(Run::Grant { person: Box::new(person), still_asked, granted: Box::new(granted) })
            }
            ApprovalKind::BulkOpen => {
                let ask = crate::bulk::BulkAsk::from_params(&request.params)?;
                let plan = self.bulk_plan(&ask.bank, &ask.numbers, ask.reason_sha256).await?;
                if plan.params() != request.params {
                    return Err(AppError::conflict(
                        ConflictCode::ApprovalStale,
                        "the bank changed since the request was made; ask again",
                    ));
                }
                self.require_online(&plan.bank)?;
                Ok(Run::BulkOpen {
                    plan,
                    requester: request.requested_by.clone(),
                    request: request.id.clone(),
                })
            }
            ApprovalKind::LiftLockdown => {
                let (ask, _) = LiftAsk::from_params(&request.params).ok_or(AppError::Store(
                    custody_store::StoreError::Corrupt("approvals.params"),
                ))?;
                let target = Target {
                    site: Some(ask.site.clone()),
                    bank: Some(ask.bank.clone()),
                    ..Target::default()
                };
                let lifted = answered
                    .clone()
                    .as_action(AuditAction::LockdownLift, target)
                    .because(format!("{}:requested_by:{}", request.id, request.requested_by));
                Ok(Run::Lift { ask, lifted: Box::new(lifted) })
            }
            ApprovalKind::RemoteOpen => Ok(Run::RemoteOpen {
                what: Box::new(self.prepare_remote_open(request).await?),
                request: Box::new(request.clone()),
            }),
            ApprovalKind::Retrieve => Ok(Run::Retrieve {
                parcel: self.prepare_retrieve(request).await?,
                request: Box::new(request.clone()),
            }),
        }
    }

    /// Runs an approved request inside the unit that records its approval.
    async fn run_approved(
        &self,
        tx: &mut custody_store::Tx,
        run: Run,
        approver: &custody_core::audit::Actor,
        now: Timestamp,
    ) -> Result<Vec<crate::parcels::Opening>, AppError> {
        match run {
            Run::Grant { person, still_asked, granted } => {
                if !still_asked || !tx.set_role(&person, person.role, Role::SuperAdmin).await? {
                    return Err(AppError::conflict(
                        ConflictCode::ApprovalStale,
                        "the person changed since the request was made; ask again",
                    ));
                }
                tx.append_audit(&granted)?;
                Ok(Vec::new())
            }
            Run::BulkOpen { plan, requester, request } => {
                let why = format!("{request}:requested_by:{requester}");
                let charge = Charge::Approved { opener: &requester, approver };
                self.run_bulk_open(tx, &plan, charge, approver, &why, now).await
            }
            Run::RemoteOpen { what, request } => {
                Ok(vec![self.run_remote_open(tx, *what, &request, approver, now).await?])
            }
            Run::Retrieve { parcel, request } => {
                Ok(vec![self.run_retrieve(tx, &parcel, &request, approver, now).await?])
            }
            Run::Lift { ask, lifted } => {
                crate::lockdown::lift(tx, &ask, *lifted).await?;
                Ok(Vec::new())
            }
        }
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

/// What an approval runs.
enum Run {
    Grant {
        person: Box<PersonRow>,
        still_asked: bool,
        granted: Box<AuditEvent>,
    },
    BulkOpen {
        plan: crate::bulk::BulkPlan,
        requester: PersonId,
        request: ApprovalId,
    },
    Lift {
        ask: LiftAsk,
        lifted: Box<AuditEvent>,
    },
    RemoteOpen {
        what: Box<(custody_store::CompartmentRow, custody_core::SiteId)>,
        request: Box<ApprovalRow>,
    },
    Retrieve {
        parcel: custody_core::ParcelId,
        request: Box<ApprovalRow>,
    },
}

/// Whether `caller` may answer `request`, as who: a super-admin of its organisation for a
/// super-admin grant, staff of its site for a bulk open, a remote open or retrieval past the
/// budget, or a lockdown lift.
fn may_answer(caller: &Caller, request: &ApprovalRow) -> Result<PersonId, Denied> {
    match request.kind {
        ApprovalKind::GrantSuperAdmin => holder(caller, Role::SuperAdmin, &request.org).cloned(),
        ApprovalKind::BulkOpen
        | ApprovalKind::LiftLockdown
        | ApprovalKind::RemoteOpen
        | ApprovalKind::Retrieve => {
            let site = match request.kind {
                ApprovalKind::BulkOpen => crate::bulk::BulkPlan::site_of(&request.params),
                ApprovalKind::RemoteOpen | ApprovalKind::Retrieve => {
                    crate::remote_opens::site_of(&request.params)
                }
                _ => LiftAsk::from_params(&request.params).map(|(ask, _)| ask.site),
            }
            .ok_or(Denied::Scope)?;
            match caller {
                Caller::Principal(p @ Principal::Person { id, .. }) => {
                    custody_core::policy::may_manage_site(p, &request.org, &site)?;
                    Ok(id.clone())
                }
                _ => Err(Denied::Role),
            }
        }
    }
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
