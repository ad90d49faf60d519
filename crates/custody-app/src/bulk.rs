//! Bulk opens: staff opening several compartments of a bank at once (cleaning, an inspection,
//! emptying a bank). Each needs a step-up and a reason. More than
//! [`BULK_OPEN_ALONE`] compartments at once need a second person's approval, and whatever the
//! approvals, one person opens at most [`BULK_OPEN_PERSON`]'s budget of compartments an hour.

use crate::conflicts::ConflictCode;
use custody_core::approval::{ApprovalKind, BULK_OPEN_ALONE, BULK_OPEN_MAX};
use custody_core::audit::{Actor, AuditAction, AuditEvent, Outcome, Target};
use custody_core::text::Reason;
use custody_core::throttle::BULK_OPEN_PERSON;
use custody_core::{BankId, OrgId, SiteId, Timestamp, policy};
use custody_store::{CompartmentRow, Tx};
use futures_util::FutureExt as _;

use crate::approvals::new_request;
use crate::parcels::Opening;
use crate::remote_opens::{Charge, Hold, OpenOrAsk};
use crate::{App, AppError, Caller, OpenFor};

/// What a bulk open came to: the commands for the bank's agent, or a request waiting for a
/// second person's approval.
pub type BulkOpening = OpenOrAsk<Vec<Opening>>;

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
        self.authorize(caller, AuditAction::BulkOpen, &target, |p| {
            policy::may_manage_site(p, &plan.org, &plan.site).and_then(|()| self.stepped_up(p))
        })
        .await?;
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
            return Ok(BulkOpening::Pending(Box::new(request.into())));
        }
        self.require_online(&plan.bank)?;
        let (over, place) = (actor.clone(), plan.clone());
        let doors = u32::try_from(numbers.len()).unwrap_or(u32::MAX);
        let opened = self
            .store()
            .write(move |tx| {
                async move {
                    // Small bulk opens add up: past the remote-open budget even one of three
                    // compartments waits for a second person.
                    if let Some(opener) = &person
                        && !app.remote_opens_allow(tx, opener, &plan.bank, doors, now).await?
                    {
                        let hold = Hold {
                            kind: ApprovalKind::BulkOpen,
                            org: &plan.org,
                            subject: plan.bank.to_string(),
                            params: plan.params(),
                            requester: opener,
                            action: AuditAction::BulkOpen,
                            target,
                            reason: (opener, &reason),
                        };
                        let request = app.hold_for_approval(tx, hold, now).await?;
                        return Ok(BulkOpening::Pending(Box::new(request.into())));
                    }
                    let mut e = bulk_event(&actor, target, now, "alone".into());
                    if let Some(subject) = &person {
                        e.personal = app.seal_personal(tx, subject, reason.as_str()).await?;
                    }
                    tx.append_audit(&e)?;
                    let charge = person.as_ref().map_or(Charge::Free, Charge::Alone);
                    let openings =
                        app.run_bulk_open(tx, &plan, charge, &actor, "alone", now).await?;
                    Ok(BulkOpening::Opened(openings))
                }
                .boxed()
            })
            .await;
        match &opened {
            Err(e) => self.if_over_cap(e, &over, &place).await,
            Ok(BulkOpening::Pending(_)) => {
                self.bulk_open_alert(&place.site, &place.bank).await;
            }
            Ok(BulkOpening::Opened(_)) => {}
        }
        opened
    }

    /// A bulk open refused because its opener's hourly cap is spent (the unit that would
    /// have opened was undone): the refusal goes on the record, and the site gets a
    /// `bulk_open` alert, since someone is emptying a bank.
    pub(crate) async fn if_over_cap(&self, error: &AppError, actor: &Actor, plan: &BulkPlan) {
        if !matches!(error, AppError::Conflict { code: ConflictCode::BulkOpenCap, .. }) {
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
        self.bulk_open_alert(&plan.site, &plan.bank).await;
    }

    /// Opens every compartment of `plan` inside the caller's unit of work, charging them to
    /// the opener's hourly cap and to the remote-open budget as `charge` says (the operator at
    /// the command line has neither). Over the cap the unit fails and nothing opens.
    pub(crate) async fn run_bulk_open(
        &self,
        tx: &mut Tx,
        plan: &BulkPlan,
        charge: Charge<'_>,
        actor: &Actor,
        why: &str,
        now: Timestamp,
    ) -> Result<Vec<Opening>, AppError> {
        let opener = match charge {
            Charge::Free => None,
            Charge::Alone(p) | Charge::Approved { opener: p, .. } => Some(p),
        };
        if let Some(opener) = opener {
            let key = format!("bulk:{}:{opener}", BULK_OPEN_PERSON.name);
            let window = BULK_OPEN_PERSON.window_start(now);
            let mut charged = 0;
            for _ in &plan.compartments {
                charged = tx.add_failure(&key, window).await?;
            }
            if charged > BULK_OPEN_PERSON.max_failures {
                return Err(AppError::conflict(
                    ConflictCode::BulkOpenCap,
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
                        charge,
                    },
                )
                .await?;
            openings.push(Opening { compartment: c.clone().into(), command });
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

fn bulk_event(actor: &Actor, target: Target, at: Timestamp, reason: String) -> AuditEvent {
    AuditEvent::success(at, actor.clone(), AuditAction::BulkOpen, target).because(reason)
}
