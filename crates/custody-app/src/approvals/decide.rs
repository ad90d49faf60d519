//! Answering a request: who may (and so whose queue shows it), and what an approved request
//! runs, in the unit of work that records the answer.

use custody_core::approval::{ApprovalKind, ApprovalOutcome};
use custody_core::audit::{AuditAction, AuditEvent, Target};
use custody_core::person::Role;
use custody_core::policy::{Denied, Principal};
use custody_core::{ApprovalId, PersonId, Timestamp};
use custody_store::{ApprovalRow, PersonRow};
use futures_util::FutureExt as _;

use super::{Approval, Decided, digest, grant_params, holds};
use crate::conflicts::ConflictCode;
use crate::lockdown::LiftAsk;
use crate::remote_opens::Charge;
use crate::{App, AppError, Caller};

impl App {
    /// The requests of the caller's organisation still waiting that the caller may answer or
    /// asked for themselves (none, for most people).
    pub async fn pending_approvals(&self, caller: &Caller) -> Result<Vec<Approval>, AppError> {
        let Caller::Principal(p @ Principal::Person { id, standing, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let (org, now) = (standing.scope.org.clone(), self.now());
        let pending = self
            .store()
            .read(move |tx| async move { tx.pending_approvals(&org, now).await }.boxed())
            .await?;
        Ok(pending
            .into_iter()
            .filter(|a| &a.requested_by == id || may_answer(p, a).is_ok())
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
        let withdrawing =
            caller.person() == Some(&request.requested_by) && outcome == ApprovalOutcome::Rejected;
        let decider = self
            .authorize_person(caller, AuditAction::ApprovalDecide, &target, |p| {
                let answerable = if withdrawing { Ok(()) } else { may_answer(p, &request) };
                answerable.and_then(|()| self.stepped_up(p))
            })
            .await?;
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
                let person = self.person_row(&subject).await?;
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

/// Whether `p` may answer `request`: a super-admin of its organisation for a
/// super-admin grant, staff of its site for a bulk open, a remote open or retrieval past the
/// budget, or a lockdown lift.
fn may_answer(p: &Principal, request: &ApprovalRow) -> Result<(), Denied> {
    match request.kind {
        ApprovalKind::GrantSuperAdmin => holds(p, Role::SuperAdmin, &request.org),
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
            match p {
                Principal::Person { .. } => {
                    custody_core::policy::may_manage_site(p, &request.org, &site)
                }
                _ => Err(Denied::Role),
            }
        }
    }
}
