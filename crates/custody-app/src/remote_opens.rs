//! Opening many doors needs two people, however it is asked (DESIGN.md §4 invariant 11).
//!
//! Every door staff open without a parcel's own credential — a remote open, each compartment
//! of a bulk open, a retrieval — is counted per opener and per bank over a sliding window
//! ([`RemoteOpenBudget`], `[security] remote_opens_*`). Within the budget a stepped-up member of
//! staff opens alone; past it every further open becomes a request that another member of the
//! site's staff approves, and the site gets a `bulk_open` alert. So one person with a fresh
//! second factor cannot empty a bank one door at a time, nor by many small bulk opens.
//!
//! The budget is charged where the open command is signed (`App::issue_open`, from the
//! [`Charge`] its caller names), inside the unit that opens: a route that forgot to ask first
//! is refused there, not let through. Counting locks the opener's and the bank's heads, so two
//! units cannot both find the last door of the budget free.
//!
//! Deposits (into a compartment reserved empty), pickups and their grace re-open (the parcel's
//! own code, token or badge) and a carrier's return (its own expired parcel, by the key it
//! deposited with) are not counted. The operator at the command line holds the keys and is not
//! counted either.

use crate::approvals::Approval;
use crate::conflicts::ConflictCode;
use custody_core::approval::{ApprovalKind, RemoteOpenBudget};
use custody_core::audit::{Actor, AuditAction, AuditEvent, Target};
use custody_core::text::Reason;
use custody_core::{BankId, CompartmentId, OrgId, PersonId, SiteId, Timestamp, policy};
use custody_store::{ApprovalRow, CompartmentRow, Tx};
use futures_util::FutureExt as _;

use crate::approvals::new_request;
use crate::parcels::Opening;
use crate::{App, AppError, Caller, OpenFor};

/// What asking to open came to: opened at once, or waiting for a second person.
#[derive(Debug, Clone)]
pub enum OpenOrAsk<T> {
    /// Opened: what the bank's agent is sent.
    Opened(T),
    /// Past the budget (or, for a bulk open, past what one person opens alone): a request
    /// another member of the site's staff must approve.
    Pending(Box<Approval>),
}

impl<T> OpenOrAsk<T> {
    /// What opened, or the request that waits instead.
    pub fn opened(self) -> Result<T, Box<Approval>> {
        match self {
            Self::Opened(t) => Ok(t),
            Self::Pending(request) => Err(request),
        }
    }
}

/// How an open command counts against the remote-open budget.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Charge<'a> {
    /// Opened with the parcel's own credential, into an empty compartment, or by the operator.
    Free,
    /// Opened by this person alone: counted, and refused past the budget.
    Alone(&'a PersonId),
    /// Opened for the person who asked, approved by another: counted, never refused.
    Approved {
        /// Who asked.
        opener: &'a PersonId,
        /// Who approved.
        approver: &'a Actor,
    },
}

fn second_person_required(budget: &RemoteOpenBudget) -> AppError {
    AppError::conflict(
        ConflictCode::SecondPersonRequired,
        format!(
            "one person opens at most {} doors and a bank at most {} without a parcel's own \
             credential in {} hours; ask another member of staff to approve",
            budget.per_opener,
            budget.per_bank,
            budget.window.as_secs() / 3600
        ),
    )
}

/// A request held for approval, as its unit of work records it.
pub(crate) struct Hold<'a> {
    pub(crate) kind: ApprovalKind,
    pub(crate) org: &'a OrgId,
    pub(crate) subject: String,
    pub(crate) params: String,
    pub(crate) requester: &'a PersonId,
    pub(crate) action: AuditAction,
    pub(crate) target: Target,
    /// The reason, sealed in the request's audit entry to the person it concerns.
    pub(crate) reason: (&'a PersonId, &'a Reason),
}

impl App {
    /// Whether `doors` more may open alone for `opener` at `bank`. Holds both heads for the
    /// rest of the unit, so the answer stays true until it commits.
    pub(crate) async fn remote_opens_allow(
        &self,
        tx: &mut Tx,
        opener: &PersonId,
        bank: &BankId,
        doors: u32,
        now: Timestamp,
    ) -> Result<bool, AppError> {
        let budget = self.config().remote_opens;
        let counts = tx.remote_opens_since(opener.as_str(), bank, now.minus(budget.window)).await?;
        Ok(budget.allows(counts.opener, counts.bank, doors))
    }

    /// Charges one door of `bank` as `charge` says, inside the unit that signs its command.
    pub(crate) async fn charge_open(
        &self,
        tx: &mut Tx,
        bank: &BankId,
        charge: Charge<'_>,
        now: Timestamp,
    ) -> Result<(), AppError> {
        match charge {
            Charge::Free => Ok(()),
            Charge::Alone(opener) => {
                if !self.remote_opens_allow(tx, opener, bank, 1, now).await? {
                    return Err(second_person_required(&self.config().remote_opens));
                }
                Ok(tx.record_remote_open(opener.as_str(), bank, now, None).await?)
            }
            Charge::Approved { opener, approver } => {
                let by = approver.id.as_deref().unwrap_or("operator");
                Ok(tx.record_remote_open(opener.as_str(), bank, now, Some(by)).await?)
            }
        }
    }

    /// Stores a request for a second person's approval in the caller's unit, with its audit
    /// entry (`over_budget:asked:<request>`).
    pub(crate) async fn hold_for_approval(
        &self,
        tx: &mut Tx,
        hold: Hold<'_>,
        now: Timestamp,
    ) -> Result<ApprovalRow, AppError> {
        let request = new_request(
            self,
            hold.kind,
            hold.org,
            &hold.subject,
            hold.params,
            hold.requester.clone(),
        )?;
        tx.insert_approval(&request).await?;
        let (subject, reason) = hold.reason;
        let personal = self.seal_personal(tx, subject, reason.as_str()).await?;
        tx.append_audit(
            &AuditEvent::success(
                now,
                Actor {
                    kind: custody_core::audit::ActorKind::Person,
                    id: Some(hold.requester.to_string()),
                },
                hold.action,
                hold.target,
            )
            .because(format!("over_budget:asked:{}", request.id))
            .with_personal(personal),
        )?;
        Ok(request)
    }

    /// Forgets counted doors older than the longest window a site may set (housekeeping);
    /// the audit log keeps each of them. Returns how many.
    pub async fn prune_remote_opens(&self) -> Result<u64, AppError> {
        let before = self.now().minus(custody_core::time::hours(24 * 7));
        let pruned = self
            .store()
            .write(move |tx| async move { tx.prune_remote_opens(before).await }.boxed())
            .await?;
        Ok(pruned)
    }

    /// Staff open a compartment from afar, saying why. Nothing about its parcel changes; the
    /// opening and its reason are in the audit log. Past the remote-open budget the open
    /// becomes a request another member of the site's staff approves.
    pub async fn remote_open(
        &self,
        caller: &Caller,
        compartment: &CompartmentId,
        reason: &str,
    ) -> Result<OpenOrAsk<Opening>, AppError> {
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        let (c, site) = self.compartment_and_site(compartment).await?;
        let target = Target {
            site: Some(site.id.clone()),
            bank: Some(c.bank.clone()),
            compartment: Some(c.id.clone()),
            parcel: c.parcel.clone(),
        };
        self.authorize(caller, AuditAction::RemoteOpen, &target, |p| {
            policy::may_manage_site(p, &site.org, &site.id).and_then(|()| self.stepped_up(p))
        })
        .await?;
        self.refuse_if_locked_down(&caller.actor(), AuditAction::RemoteOpen, &target).await?;
        self.require_online(&c.bank)?;
        let (now, actor, app) = (self.now(), caller.actor(), self.clone());
        let (person, place) = (caller.person().cloned(), (site.id.clone(), c.bank.clone()));
        let digest = reason_sha256(&reason);
        let asked = self
            .store()
            .write(move |tx| {
                async move {
                    // The words are about the parcel's recipient when the compartment holds
                    // one, else about the person who gave them.
                    let subject = match (&c.parcel, &person) {
                        (Some(parcel), person) => {
                            tx.parcel(parcel).await?.and_then(|p| p.recipient).or(person.clone())
                        }
                        (None, person) => person.clone(),
                    };
                    if let Some(opener) = &person
                        && !app.remote_opens_allow(tx, opener, &c.bank, 1, now).await?
                    {
                        let params = RemoteOpenAsk::params(&site.id, &c, &digest);
                        let hold = Hold {
                            kind: ApprovalKind::RemoteOpen,
                            org: &site.org,
                            subject: c.id.to_string(),
                            params,
                            requester: opener,
                            action: AuditAction::RemoteOpen,
                            target,
                            reason: (subject.as_ref().unwrap_or(opener), &reason),
                        };
                        let request = app.hold_for_approval(tx, hold, now).await?;
                        return Ok::<_, AppError>(OpenOrAsk::Pending(Box::new(request.into())));
                    }
                    let mut e =
                        AuditEvent::success(now, actor.clone(), AuditAction::RemoteOpen, target);
                    if let Some(subject) = subject {
                        e.personal = app.seal_personal(tx, &subject, reason.as_str()).await?;
                    }
                    tx.append_audit(&e)?;
                    let charge = person.as_ref().map_or(Charge::Free, Charge::Alone);
                    let for_ = OpenFor {
                        site: &site.id,
                        compartment: &c,
                        parcel: c.parcel.as_ref(),
                        purpose: "remote_open",
                        charge,
                    };
                    let command = app.issue_open(tx, &actor, now, for_).await?;
                    Ok(OpenOrAsk::Opened(Opening { compartment: c.into(), command }))
                }
                .boxed()
            })
            .await?;
        if matches!(asked, OpenOrAsk::Pending(_)) {
            self.bulk_open_alert(&place.0, &place.1).await;
        }
        Ok(asked)
    }

    async fn compartment_and_site(
        &self,
        id: &CompartmentId,
    ) -> Result<(CompartmentRow, custody_store::SiteRow), AppError> {
        let id = id.clone();
        self.store()
            .read(move |tx| {
                async move {
                    let c = tx.compartment(&id).await?.ok_or(AppError::NotFound)?;
                    let (_, site) = crate::bank_site(tx, &c.bank).await?;
                    Ok::<_, AppError>((c, site))
                }
                .boxed()
            })
            .await
    }

    /// What an approved remote open will open, read before the unit that runs it: the
    /// compartment the request named, if it is still the one it named.
    pub(crate) async fn prepare_remote_open(
        &self,
        request: &ApprovalRow,
    ) -> Result<(CompartmentRow, SiteId), AppError> {
        let ask = RemoteOpenAsk::from_params(&request.params)?;
        let (c, site) = self.compartment_and_site(&ask.compartment).await?;
        if RemoteOpenAsk::params(&site.id, &c, &ask.reason_sha256) != request.params {
            return Err(AppError::conflict(
                ConflictCode::ApprovalStale,
                "the compartment changed since the request was made; ask again",
            ));
        }
        self.require_online(&c.bank)?;
        Ok((c, site.id))
    }

    /// Runs an approved remote open inside the unit that records its approval.
    pub(crate) async fn run_remote_open(
        &self,
        tx: &mut Tx,
        (c, site): (CompartmentRow, SiteId),
        request: &ApprovalRow,
        approver: &Actor,
        now: Timestamp,
    ) -> Result<Opening, AppError> {
        tx.append_audit(
            &AuditEvent::success(
                now,
                approver.clone(),
                AuditAction::RemoteOpen,
                Target {
                    site: Some(site.clone()),
                    bank: Some(c.bank.clone()),
                    compartment: Some(c.id.clone()),
                    parcel: c.parcel.clone(),
                },
            )
            .because(format!("ran:{}:requested_by:{}", request.id, request.requested_by)),
        )?;
        let charge = Charge::Approved { opener: &request.requested_by, approver };
        let for_ = OpenFor {
            site: &site,
            compartment: &c,
            parcel: c.parcel.as_ref(),
            purpose: "remote_open",
            charge,
        };
        let command = self.issue_open(tx, approver, now, for_).await?;
        Ok(Opening { compartment: c.into(), command })
    }
}

/// The SHA-256 of a reason, as a request names it (the words themselves are sealed in its
/// audit entry).
pub(crate) fn reason_sha256(reason: &Reason) -> String {
    data_encoding::HEXLOWER.encode(&custody_crypto::sha256(reason.as_str().as_bytes()))
}

/// What a stored remote-open request asked for.
struct RemoteOpenAsk {
    compartment: CompartmentId,
    reason_sha256: String,
}

impl RemoteOpenAsk {
    /// The request's exact parameters, canonical: what its digest covers and what must still
    /// hold when it is approved (the compartment, where it is and what it holds).
    fn params(site: &SiteId, c: &CompartmentRow, reason_sha256: &str) -> String {
        serde_json::json!({
            "bank": c.bank.as_str(),
            "compartment": c.id.as_str(),
            "number": c.number.get(),
            "parcel": c.parcel.as_ref().map(custody_core::ParcelId::as_str),
            "reason_sha256": reason_sha256,
            "site": site.as_str(),
        })
        .to_string()
    }

    fn from_params(params: &str) -> Result<Self, AppError> {
        let corrupt = || AppError::Store(custody_store::StoreError::Corrupt("approvals.params"));
        let v: serde_json::Value = serde_json::from_str(params).map_err(|_| corrupt())?;
        let compartment = v
            .get("compartment")
            .and_then(serde_json::Value::as_str)
            .and_then(|s| CompartmentId::parse(s).ok())
            .ok_or_else(corrupt)?;
        let reason_sha256 =
            v.get("reason_sha256").and_then(serde_json::Value::as_str).ok_or_else(corrupt)?;
        Ok(Self { compartment, reason_sha256: reason_sha256.to_owned() })
    }
}

/// The site a stored remote-open or retrieval request concerns: who may approve it.
pub(crate) fn site_of(params: &str) -> Option<SiteId> {
    let v: serde_json::Value = serde_json::from_str(params).ok()?;
    SiteId::parse(v.get("site")?.as_str()?).ok()
}
