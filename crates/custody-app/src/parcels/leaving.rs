//! Leaving other than by pickup: expiry, the carrier taking a parcel back, and staff taking
//! it out with a reason (past the remote-open budget, with a second person).

use crate::conflicts::ConflictCode;
use crate::parcels::Parcel;
use custody_core::approval::ApprovalKind;
use custody_core::audit::{Actor, AuditAction};
use custody_core::parcel::ParcelEvent;
use custody_core::policy;
use custody_core::text::Reason;
use custody_core::{BankId, CompartmentId, ParcelId, Timestamp};
use custody_store::{ApprovalRow, ParcelRow, StoreError, Tx};
use futures_util::FutureExt as _;

use super::{Opening, advance, event, facts, parcel_target, state_conflict, vacate};
use crate::remote_opens::{Charge, Hold, OpenOrAsk, reason_sha256};
use crate::{App, AppError, Caller, OpenFor};

/// How a parcel leaves its compartment other than by pickup.
struct TakeOut {
    how: ParcelEvent,
    action: AuditAction,
    purpose: &'static str,
}

/// A retrieval request's exact parameters, canonical: what its digest covers and what must
/// still hold when it is approved (the parcel, in the compartment it was in).
fn retrieve_params(p: &ParcelRow, reason_sha256: &str) -> String {
    serde_json::json!({
        "bank": p.bank.as_ref().map(BankId::as_str),
        "compartment": p.compartment.as_ref().map(CompartmentId::as_str),
        "parcel": p.id.as_str(),
        "reason_sha256": reason_sha256,
        "site": p.site.as_str(),
        "state": p.state.as_str(),
    })
    .to_string()
}

impl App {
    /// Expires parcels whose pickup window has passed; their codes stop working. Returns how
    /// many expired.
    pub async fn expire_due(&self) -> Result<usize, AppError> {
        let now = self.now();
        let mut expired = 0;
        loop {
            let due = self
                .store()
                .read(move |tx| async move { tx.parcels_due_to_expire(now, 100).await }.boxed())
                .await?;
            if due.is_empty() {
                return Ok(expired);
            }
            let batch = due.len();
            for p in due {
                let done = self
                    .store()
                    .write(move |tx| {
                        async move {
                            advance(tx, &p, ParcelEvent::Expire, now, None).await?;
                            tx.revoke_pickup_codes(&p.id, now).await?;
                            tx.append_audit(&event(
                                &Actor::system(),
                                AuditAction::Expire,
                                parcel_target(&p),
                                now,
                                None,
                            ))?;
                            Ok::<_, AppError>(())
                        }
                        .boxed()
                    })
                    .await;
                match done {
                    Ok(()) => expired += 1,
                    // Picked up or retrieved meanwhile: nothing to expire.
                    Err(AppError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if batch < 100 {
                return Ok(expired);
            }
        }
    }

    /// The carrier takes an expired parcel back. Not counted against the remote-open
    /// budget: the carrier's key opens only its own expired parcel's compartment.
    pub async fn return_to_carrier(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
    ) -> Result<(Parcel, Opening), AppError> {
        let p = self.parcel_row(caller, parcel).await?;
        self.authorize(caller, AuditAction::ReturnToCarrier, &parcel_target(&p), |pr| {
            policy::may_return_to_carrier(pr, facts(&p))
        })
        .await?;
        let action = AuditAction::ReturnToCarrier;
        self.refuse_if_locked_down(&caller.actor(), action, &parcel_target(&p)).await?;
        let (now, actor, app) = (self.now(), caller.actor(), self.clone());
        let out = TakeOut { how: ParcelEvent::ReturnToCarrier, action, purpose: "return" };
        self.store()
            .write(move |tx| {
                async move { app.take_out(tx, &p.id, &out, &actor, Charge::Free, None, now).await }
                    .boxed()
            })
            .await
            .and_then(|(parcel, opening)| Ok((self.parcel_view(parcel)?, opening)))
    }

    /// Staff take a parcel out of the locker, saying why. Past the remote-open budget this
    /// becomes a request another member of the site's staff approves.
    pub async fn retrieve(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
        reason: &str,
    ) -> Result<OpenOrAsk<(Parcel, Opening)>, AppError> {
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        let p = self.parcel_row(caller, parcel).await?;
        self.authorize(caller, AuditAction::Retrieve, &parcel_target(&p), |pr| {
            policy::may_manage_site(pr, &p.org, &p.site)
        })
        .await?;
        let bank = p.bank.clone().ok_or_else(|| {
            AppError::conflict(ConflictCode::ParcelState, "the parcel is not in a locker")
        })?;
        self.require_online(&bank)?;
        let action = AuditAction::Retrieve;
        self.refuse_if_locked_down(&caller.actor(), action, &parcel_target(&p)).await?;
        let (now, actor, app) = (self.now(), caller.actor(), self.clone());
        let (person, place) = (caller.person().cloned(), (p.site.clone(), bank.clone()));
        let out = TakeOut { how: ParcelEvent::Retrieve, action, purpose: "retrieve" };
        let asked = self
            .store()
            .write(move |tx| {
                async move {
                    if let Some(opener) = &person
                        && !app.remote_opens_allow(tx, opener, &bank, 1, now).await?
                    {
                        let hold = Hold {
                            kind: ApprovalKind::Retrieve,
                            org: &p.org,
                            subject: p.id.to_string(),
                            params: retrieve_params(&p, &reason_sha256(&reason)),
                            requester: opener,
                            action,
                            target: parcel_target(&p),
                            reason: (p.recipient.as_ref().unwrap_or(opener), &reason),
                        };
                        let request = app.hold_for_approval(tx, hold, now).await?;
                        return Ok::<_, AppError>(OpenOrAsk::Pending(Box::new(request.into())));
                    }
                    let charge = person.as_ref().map_or(Charge::Free, Charge::Alone);
                    let words = Some(reason.as_str().to_owned());
                    let (taken, opening) =
                        app.take_out(tx, &p.id, &out, &actor, charge, words, now).await?;
                    Ok(OpenOrAsk::Opened((app.parcel_view(taken)?, opening)))
                }
                .boxed()
            })
            .await?;
        if matches!(asked, OpenOrAsk::Pending(_)) {
            self.bulk_open_alert(&place.0, &place.1).await;
        }
        Ok(asked)
    }

    /// What an approved retrieval will take out, read before the unit that runs it: the
    /// parcel the request named, if it is still where it was.
    pub(crate) async fn prepare_retrieve(
        &self,
        request: &ApprovalRow,
    ) -> Result<ParcelId, AppError> {
        let corrupt = || AppError::Store(StoreError::Corrupt("approvals.subject"));
        let id = ParcelId::parse(&request.subject).map_err(|_| corrupt())?;
        let lookup = id.clone();
        let p = self
            .store()
            .read(move |tx| async move { tx.parcel(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        let digest = serde_json::from_str::<serde_json::Value>(&request.params)
            .ok()
            .and_then(|v| v.get("reason_sha256")?.as_str().map(str::to_owned))
            .ok_or_else(corrupt)?;
        if retrieve_params(&p, &digest) != request.params {
            return Err(AppError::conflict(
                ConflictCode::ApprovalStale,
                "the parcel moved since the request was made; ask again",
            ));
        }
        self.require_online(p.bank.as_ref().ok_or(AppError::NotFound)?)?;
        Ok(id)
    }

    /// Runs an approved retrieval inside the unit that records its approval.
    pub(crate) async fn run_retrieve(
        &self,
        tx: &mut Tx,
        parcel: &ParcelId,
        request: &ApprovalRow,
        approver: &Actor,
        now: Timestamp,
    ) -> Result<Opening, AppError> {
        let out = TakeOut {
            how: ParcelEvent::Retrieve,
            action: AuditAction::Retrieve,
            purpose: "retrieve",
        };
        let charge = Charge::Approved { opener: &request.requested_by, approver };
        let why = format!("ran:{}:requested_by:{}", request.id, request.requested_by);
        let (_, opening) =
            self.take_out(tx, parcel, &out, approver, charge, Some(why), now).await?;
        Ok(opening)
    }

    /// Takes parcel `parcel` out of its compartment inside the caller's unit: the compartment
    /// vacated, the parcel moved on, its codes revoked, audited, and the door's command
    /// signed. `words` are sealed to the recipient, except an approval's note, which names
    /// no one and is kept as the entry's reason.
    #[allow(clippy::too_many_arguments, reason = "one unit's inputs, each needed")]
    async fn take_out(
        &self,
        tx: &mut Tx,
        parcel: &ParcelId,
        out: &TakeOut,
        actor: &Actor,
        charge: Charge<'_>,
        words: Option<String>,
        now: Timestamp,
    ) -> Result<(ParcelRow, Opening), AppError> {
        let p = tx.parcel(parcel).await?.ok_or(AppError::NotFound)?;
        p.state.apply(out.how).map_err(|_| state_conflict(&p, out.how))?;
        let compartment = vacate(tx, &p, now).await?;
        advance(tx, &p, out.how, now, None).await?;
        tx.revoke_pickup_codes(&p.id, now).await?;
        let mut e = event(actor, out.action, parcel_target(&p), now, None);
        match (words, charge) {
            (Some(note), Charge::Approved { .. }) => e.reason = Some(note),
            // Words about the parcel's recipient, or, for a parcel nobody is named for yet,
            // about the member of staff who gave them; never kept in the clear.
            (Some(words), Charge::Alone(giver)) => {
                let subject = p.recipient.as_ref().unwrap_or(giver);
                e.personal = self.seal_personal(tx, subject, &words).await?;
            }
            (Some(words), Charge::Free) => {
                if let Some(subject) = &p.recipient {
                    e.personal = self.seal_personal(tx, subject, &words).await?;
                }
            }
            (None, _) => {}
        }
        tx.append_audit(&e)?;
        let for_ = OpenFor {
            site: &p.site,
            compartment: &compartment,
            parcel: Some(&p.id),
            purpose: out.purpose,
            charge,
        };
        let command = self.issue_open(tx, actor, now, for_).await?;
        let p = tx.parcel(&p.id).await?.ok_or(AppError::NotFound)?;
        Ok((p, Opening { compartment: compartment.into(), command }))
    }
}
