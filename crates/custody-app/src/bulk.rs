//! Bulk opens: staff opening several compartments of a bank at once (cleaning, an inspection,
//! emptying a bank). Each needs a step-up and a reason. More than
//! [`BULK_OPEN_ALONE`] compartments at once need a second person's approval, and whatever the
//! approvals, one person opens at most [`BULK_OPEN_PERSON`]'s budget of compartments an hour.

use custody_core::approval::{ApprovalKind, BULK_OPEN_ALONE, BULK_OPEN_MAX};
use custody_core::audit::{Actor, AuditAction, AuditEvent, Outcome, Target};
use custody_core::text::Reason;
use custody_core::throttle::BULK_OPEN_PERSON;
use custody_core::{BankId, OrgId, PersonId, SiteId, Timestamp, policy};
use custody_store::{ApprovalRow, CompartmentRow, Tx};
use futures_util::FutureExt as _;

use crate::approvals::new_request;
use crate::parcels::Opening;
use crate::{App, AppError, Caller, OpenFor};

/// What a bulk open came to.
#[derive(Debug, Clone)]
pub enum BulkOpening {
    /// Opened: the commands for the bank's agent.
    Opened(Vec<Opening>),
    /// Waiting for a second person's approval.
    Pending(ApprovalRow),
}

/// The compartments a bulk open names, as they stand.
#[derive(Debug, Clone)]
pub(crate) struct BulkPlan {
    pub(crate) bank: BankId,
    site: SiteId,
    org: OrgId,
    compartments: Vec<CompartmentRow>,
    reason_sha256: String,
}

/// What a stored request asked for.
pub(crate) struct BulkAsk {
    pub(crate) bank: BankId,
    pub(crate) numbers: Vec<u16>,
    pub(crate) reason_sha256: String,
}

impl BulkPlan {
    /// The request's exact parameters, canonical (sorted keys, compartments by number): what
    /// its digest covers and what must still hold when it is approved.
    pub(crate) fn params(&self) -> String {
        serde_json::json!({
            "bank": self.bank.as_str(),
            "site": self.site.as_str(),
            "compartments": self.compartments.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            "numbers": self.compartments.iter().map(|c| c.number.get()).collect::<Vec<_>>(),
            "reason_sha256": self.reason_sha256,
        })
        .to_string()
    }

    /// The site a stored request concerns.
    pub(crate) fn site_of(params: &str) -> Option<SiteId> {
        let v: serde_json::Value = serde_json::from_str(params).ok()?;
        SiteId::parse(v.get("site")?.as_str()?).ok()
    }
}

impl BulkAsk {
    pub(crate) fn from_params(params: &str) -> Result<Self, AppError> {
        let corrupt = || AppError::Store(custody_store::StoreError::Corrupt("approvals.params"));
        let v: serde_json::Value = serde_json::from_str(params).map_err(|_| corrupt())?;
        let field = |name: &str| v.get(name).ok_or_else(corrupt);
        let bank =
            field("bank")?.as_str().and_then(|b| BankId::parse(b).ok()).ok_or_else(corrupt)?;
        let numbers = field("numbers")?
            .as_array()
            .ok_or_else(corrupt)?
            .iter()
            .map(|n| n.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(corrupt))
            .collect::<Result<_, _>>()?;
        let reason_sha256 = field("reason_sha256")?.as_str().ok_or_else(corrupt)?.to_owned();
        Ok(Self { bank, numbers, reason_sha256 })
    }
}

impl App {
    /// The compartments `numbers` of `bank`, as they stand; `NotFound` when one is missing.
    pub(crate) async fn bulk_plan(
        &self,
        bank: &BankId,
        numbers: &[u16],
        reason_sha256: String,
    ) -> Result<BulkPlan, AppError> {
        let (bank, numbers) = (bank.clone(), numbers.to_vec());
        self.store()
            .read(move |tx| {
                async move {
                    let (_, site) = crate::bank_site(tx, &bank).await?;
                    let mut compartments = Vec::with_capacity(numbers.len());
                    for n in numbers {
                        let n = custody_core::compartment::CompartmentNumber::new(n)
                            .map_err(AppError::invalid)?;
                        compartments.push(
                            tx.compartment_by_number(&bank, n).await?.ok_or(AppError::NotFound)?,
                        );
                    }
                    compartments.sort_by_key(|c| c.number.get());
                    Ok(BulkPlan { bank, site: site.id, org: site.org, compartments, reason_sha256 })
                }
                .boxed()
            })
            .await
    }

    /// Opens compartments `numbers` of `bank` at once, for `reason`. Staff of the bank's site,
    /// stepped up. Up to [`BULK_OPEN_ALONE`] compartments open at once; more become a request
    /// another member of the site's staff must approve. Either way the opener's hourly cap
    /// holds. Refusals are audited.
    pub async fn bulk_open(
        &self,
        caller: &Caller,
        bank: &BankId,
        numbers: &[u16],
        reason: &str,
    ) -> Result<BulkOpening, AppError> {
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        let mut numbers = numbers.to_vec();
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.len() < 2 || numbers.len() > BULK_OPEN_MAX {
            return Err(AppError::Invalid(format!(
                "a bulk open names 2 to {BULK_OPEN_MAX} compartments; open one remotely instead"
            )));
        }
        let digest =
            data_encoding::HEXLOWER.encode(&custody_crypto::sha256(reason.as_str().as_bytes()));
        let plan = self.bulk_plan(bank, &numbers, digest).await?;
        let target = Target {
            site: Some(plan.site.clone()),
            bank: Some(plan.bank.clone()),
            ..Target::default()
        };
        if let Err(d) = caller
            .check(|p| policy::may_manage_site(p, &plan.org, &plan.site))
            .and_then(|()| self.require_step_up(caller))
        {
            return Err(self.refuse(caller, AuditAction::BulkOpen, target, d).await);
        }
        self.refuse_if_locked_down(&caller.actor(), AuditAction::BulkOpen, &target).await?;
        let now = self.now();
        let (actor, person, app) = (caller.actor(), caller.person().cloned(), self.clone());
        if let (Some(requester), true) = (&person, numbers.len() > BULK_OPEN_ALONE) {
            let request = new_request(
                self,
                ApprovalKind::BulkOpen,
                &plan.org,
                plan.bank.as_str(),
                plan.params(),
                requester.clone(),
            )?;
            let stored = request.clone();
            let requester = requester.clone();
            self.store()
                .write(move |tx| {
                    async move {
                        tx.insert_approval(&stored).await?;
                        let mut e = bulk_event(&actor, target, now, format!("asked:{}", stored.id));
                        e.personal = app.seal_personal(tx, &requester, reason.as_str()).await?;
                        tx.append_audit(&e)?;
                        Ok::<_, AppError>(())
                    }
                    .boxed()
                })
                .await?;
            return Ok(BulkOpening::Pending(request));
        }
        self.require_online(&plan.bank)?;
        let (over, place) = (actor.clone(), plan.clone());
        let openings = self
            .store()
            .write(move |tx| {
                async move {
                    let mut e = bulk_event(&actor, target, now, "alone".into());
                    if let Some(subject) = &person {
                        e.personal = app.seal_personal(tx, subject, reason.as_str()).await?;
                    }
                    tx.append_audit(&e)?;
                    app.run_bulk_open(tx, &plan, person.as_ref(), &actor, "alone", now).await
                }
                .boxed()
            })
            .await;
        if let Err(e) = &openings {
            self.if_over_cap(e, &over, &place).await;
        }
        Ok(BulkOpening::Opened(openings?))
    }

    /// A bulk open refused because its opener's hourly cap is spent (the unit that would
    /// have opened was undone): the refusal goes on the record, and the site gets a
    /// `bulk_open` alert, since someone is emptying a bank.
    pub(crate) async fn if_over_cap(&self, error: &AppError, actor: &Actor, plan: &BulkPlan) {
        if !matches!(error, AppError::Conflict { code: OVER_CAP, .. }) {
            return;
        }
        let target = Target {
            site: Some(plan.site.clone()),
            bank: Some(plan.bank.clone()),
            ..Target::default()
        };
        let mut e =
            bulk_event(actor, target, self.now(), format!("over_cap:{}", plan.compartments.len()));
        e.outcome = Outcome::Denied;
        let written =
            self.store().write(move |tx| async move { tx.append_audit(&e) }.boxed()).await;
        if let Err(e) = written {
            tracing::error!(error = %e, "a bulk open over the cap was not audited");
        }
        self.bulk_cap_hit(&plan.site, &plan.bank).await;
    }

    /// Opens every compartment of `plan` inside the caller's unit of work, charging them to
    /// `opener`'s hourly cap (the operator at the command line has none). Over the cap the
    /// unit fails and nothing opens.
    pub(crate) async fn run_bulk_open(
        &self,
        tx: &mut Tx,
        plan: &BulkPlan,
        opener: Option<&PersonId>,
        actor: &Actor,
        why: &str,
        now: Timestamp,
    ) -> Result<Vec<Opening>, AppError> {
        if let Some(opener) = opener {
            let key = format!("bulk:{}:{opener}", BULK_OPEN_PERSON.name);
            let window = BULK_OPEN_PERSON.window_start(now);
            let mut charged = 0;
            for _ in &plan.compartments {
                charged = tx.add_failure(&key, window).await?;
            }
            if charged > BULK_OPEN_PERSON.max_failures {
                return Err(AppError::conflict(
                    OVER_CAP,
                    format!(
                        "one person opens at most {} compartments an hour by bulk opens; \
                         ask someone else or wait",
                        BULK_OPEN_PERSON.max_failures
                    ),
                ));
            }
        }
        let mut openings = Vec::with_capacity(plan.compartments.len());
        for c in &plan.compartments {
            let command = self
                .issue_open(
                    tx,
                    actor,
                    now,
                    OpenFor {
                        site: &plan.site,
                        compartment: c,
                        parcel: c.parcel.as_ref(),
                        purpose: "bulk_open",
                    },
                )
                .await?;
            openings.push(Opening { compartment: c.clone(), command });
        }
        let ran = format!("ran:{why}:{}", plan.compartments.len());
        let target = Target {
            site: Some(plan.site.clone()),
            bank: Some(plan.bank.clone()),
            ..Target::default()
        };
        tx.append_audit(&bulk_event(actor, target, now, ran))?;
        Ok(openings)
    }
}

/// The conflict a bulk open over its opener's hourly cap answers.
const OVER_CAP: &str = "bulk_open_cap";

fn bulk_event(actor: &Actor, target: Target, at: Timestamp, reason: String) -> AuditEvent {
    AuditEvent {
        at,
        actor: actor.clone(),
        action: AuditAction::BulkOpen,
        target,
        outcome: Outcome::Success,
        reason: Some(reason),
        personal: None,
    }
}
