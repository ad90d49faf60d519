//! Picking up at the kiosk: a typed code, throttled per kiosk and bank, with its grace
//! re-open; and the hand-over every way of picking up ends in.

use custody_core::audit::{AuditAction, Outcome, Target};
use custody_core::code::{GRACE_REOPEN, PickupCode, PickupEntry};
use custody_core::compartment::{CompartmentNumber, CompartmentState, DoorState};
use custody_core::parcel::ParcelState;
use custody_core::policy::Principal;
use custody_proto::device::SignedOpenCommand;
use custody_store::{CodeRefusal, RedeemedCode, Tx};
use futures_util::FutureExt as _;

use super::{AtBank, PickupOutcome, event, parcel_target, picked_up};
use crate::remote_opens::Charge;
use crate::throttle::Budgets;
use crate::{App, AppError, Caller, OpenFor};

impl App {
    /// The grace re-open: a code used within [`GRACE_REOPEN`] opens its compartment once
    /// more, if the compartment is still empty and its door was shut again since the pickup
    /// (so a code typed twice in a row, or by fifty hands at once, still opens once). A
    /// compartment that took another parcel meanwhile never opens for the old code. `None`
    /// when it may not (the caller refuses).
    async fn grace_reopen(
        &self,
        tx: &mut Tx,
        at: &AtBank<'_>,
        hash: &[u8],
        used: &RedeemedCode,
    ) -> Result<Option<PickupOutcome>, AppError> {
        let Some(c) = tx.compartment(&used.compartment).await? else { return Ok(None) };
        let Some(p) = tx.parcel(&used.parcel).await? else { return Ok(None) };
        let empty =
            c.state == CompartmentState::Free && c.parcel.is_none() && c.door == DoorState::Closed;
        if p.state != ParcelState::PickedUp
            || !empty
            || !tx.reopen_pickup_code(at.bank, hash, at.now.minus(GRACE_REOPEN), at.now).await?
        {
            return Ok(None);
        }
        let target = Target { compartment: Some(c.id.clone()), ..parcel_target(&p) };
        tx.append_audit(&at.attempt(Outcome::Success, "code_reopen", target.clone()))?;
        tx.append_audit(&event(at.actor, AuditAction::PickupReopen, target, at.now, None))?;
        let open = OpenFor {
            site: at.site,
            compartment: &c,
            parcel: Some(&p.id),
            purpose: "reopen",
            charge: Charge::Free,
        };
        let command = self.issue_open(tx, at.actor, at.now, open).await?;
        Ok(Some(PickupOutcome::Accepted { compartment: c.number, command }))
    }

    /// A code typed at the kiosk of the calling device's bank. Throttled per kiosk and per bank;
    /// every attempt is audited with its outcome; every failure looks the same to the kiosk.
    #[tracing::instrument(skip(self, caller, typed))]
    pub async fn redeem_code(
        &self,
        caller: &Caller,
        typed: &str,
    ) -> Result<PickupOutcome, AppError> {
        let Caller::Principal(Principal::Device { device, bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let (now, actor, app) = (self.now(), caller.actor(), self.clone());
        let (device, bank, site) = (device.clone(), bank.clone(), site.clone());
        let place = (site.clone(), bank.clone());
        // A malformed entry is hashed and looked up like any other, as a ten-digit code without
        // a locker, which no record can have: every failure does the same work, so none is
        // answered sooner (DESIGN.md §4 invariant 5; `custody bench kiosk` measures it).
        let (hash, malformed) = match PickupEntry::parse(typed) {
            Ok(PickupEntry::Current { locker, code }) => {
                (self.code_hash(&bank, Some(locker), &code), false)
            }
            Ok(PickupEntry::Legacy(code)) => (self.code_hash(&bank, None, &code), false),
            Err(_) => {
                let nothing = PickupCode::from_index(0).ok_or(AppError::Invalid("code".into()))?;
                (self.code_hash(&bank, None, &nothing), true)
            }
        };
        let outcome = self
            .store()
            .write(move |tx| {
                async move {
                    let at = AtBank { bank: &bank, site: &site, actor: &actor, now };
                    let budgets = Budgets::kiosk(&device, &bank);
                    // A spent bank budget pauses typed codes (QR codes still work).
                    if let Some(answer) = at.admit(tx, &budgets, "code").await? {
                        return Ok(answer);
                    }
                    let redeemed = match tx.redeem_pickup_code(&bank, &hash, now).await? {
                        Ok(r) => r,
                        Err(_) if malformed => {
                            let target = at.target();
                            tx.append_audit(&at.attempt(
                                Outcome::Failure,
                                "code_malformed",
                                target,
                            ))?;
                            return Ok(PickupOutcome::Refused);
                        }
                        Err(refused) => {
                            if let (CodeRefusal::Used, Some(used)) = (refused.reason, &refused.code)
                                && let Some(reopened) =
                                    app.grace_reopen(tx, &at, &hash, used).await?
                            {
                                budgets.refund(tx, now).await?;
                                return Ok(reopened);
                            }
                            at.refused(tx, "code", &refused)?;
                            return Ok(PickupOutcome::Refused);
                        }
                    };
                    budgets.refund(tx, now).await?;
                    app.hand_over(tx, &at, &redeemed, "code_accepted")
                        .await
                        .map(PickupOutcome::accepted)
                }
                .boxed()
            })
            .await?;
        if matches!(outcome, PickupOutcome::Paused) {
            self.budget_spent(&place.0, &place.1).await;
        }
        Ok(outcome)
    }

    /// Hands a parcel over at the kiosk once its pickup credential (`accepted`: which one) is
    /// redeemed: the compartment is vacated, the parcel picked up, both audited, and the open
    /// command issued, all in the caller's unit of work.
    pub(crate) async fn hand_over(
        &self,
        tx: &mut Tx,
        at: &AtBank<'_>,
        redeemed: &RedeemedCode,
        accepted: &str,
    ) -> Result<(CompartmentNumber, SignedOpenCommand), AppError> {
        let p = tx.parcel(&redeemed.parcel).await?.ok_or(AppError::NotFound)?;
        let compartment = picked_up(tx, at, &p, accepted).await?;
        let open = OpenFor {
            site: at.site,
            compartment: &compartment,
            parcel: Some(&p.id),
            purpose: "pickup",
            charge: Charge::Free,
        };
        let command = self.issue_open(tx, at.actor, at.now, open).await?;
        Ok((compartment.number, command))
    }
}
