//! Offline operation: what a bank's agent may open while it cannot reach the server, and how
//! what it did meanwhile is taken into the record when it is back.
//!
//! When a pickup code is drawn, the server computes a second keyed hash of it, of locker number
//! and code under the bank's own offline key (derived from the master key and the bank), and
//! stores it beside the code's hash. Its agent is sent the offline key and the verifiers of
//! every code that works there ([`App::offline_list`]), after every welcome and every minute.
//! The clear code is never kept anywhere. Whoever reads the agent's disk holds the key and can
//! try the ten-digit space per locker for that bank's codes. That gains nothing at that bank
//! beyond what holding its controller gives (it drives the locks), and a code works nowhere
//! else.
//!
//! The list carries a sync deadline ([`crate::AppConfig::offline_list_ttl`]): past it the agent
//! opens nothing offline. A code revoked on the server therefore stops working at the kiosk at
//! the next sync while the bank is online, and by the deadline at the latest while it is not.
//!
//! The agent journals each offline use and reports it after every welcome until it is
//! acknowledged. [`App::reconcile_offline`] records each report once, by the agent's id for
//! it, and consumes the code once. A use the server's record disagrees with is a conflict: it is
//! audited as `parcel.pickup.offline_conflict` with what was found. The door did open; when the
//! parcel is still waiting in that compartment (its code was revoked by a resend, say, after
//! the agent's last sync), the pickup is recorded too, since that is where the parcel went.

use custody_core::audit::{AuditAction, AuditEvent, Outcome, Target};
use custody_core::code::PickupCode;
use custody_core::compartment::{CompartmentNumber, CompartmentState};
use custody_core::parcel::ParcelState;
use custody_core::policy::Principal;
use custody_core::{BankId, CodeId, Timestamp};
use custody_crypto::secret::offline_code_verifier;
use custody_proto::device::{OfflineCode, OfflineList, OfflineUse, OfflineWhat};
use custody_store::{CodeRefusal, StoreError, Tx};
use data_encoding::BASE64;
use futures_util::FutureExt as _;

use crate::parcels::{AtBank, picked_up};
use crate::{App, AppError, Caller};

/// The methods an offline use may name.
const METHODS: [&str; 2] = ["code", "qr"];

impl App {
    /// The bank's offline key: what its codes' verifiers are computed under, here and at its
    /// kiosk.
    fn offline_key(&self, bank: &BankId) -> [u8; 32] {
        self.keys().offline.hash(&[b"bank", bank.as_str().as_bytes()])
    }

    /// The verifier of `code` for `locker` at `bank`, computed when the code is drawn.
    pub(crate) fn offline_verifier(
        &self,
        bank: &BankId,
        locker: CompartmentNumber,
        code: &PickupCode,
    ) -> [u8; 32] {
        offline_code_verifier(&self.offline_key(bank), locker.get(), code.expose().as_bytes())
    }

    /// What `bank`'s agent may open while it cannot reach the server: the bank's offline key
    /// and the verifier of every code that works there now, valid until the sync deadline.
    pub async fn offline_list(&self, bank: &BankId) -> Result<OfflineList, AppError> {
        let (now, id) = (self.now(), bank.clone());
        let codes = self
            .store()
            .read(move |tx| async move { tx.offline_codes(&id, now).await }.boxed())
            .await?;
        Ok(OfflineList {
            key: BASE64.encode(&self.offline_key(bank)),
            issued_at_ms: now.as_millis(),
            valid_until_ms: now.plus(self.config().offline_list_ttl).as_millis(),
            codes: codes
                .into_iter()
                .map(|c| OfflineCode {
                    id: c.id.as_str().to_owned(),
                    compartment: c.compartment.get(),
                    verifier: BASE64.encode(&c.verifier),
                    expires_at_ms: c.expires_at.as_millis(),
                })
                .collect(),
        })
    }

    /// Takes one use the calling device's kiosk made while offline into the record, once:
    /// a report already recorded changes nothing. Audited with the time the agent gives (never
    /// later than now); a use the record disagrees with is audited as a conflict.
    #[tracing::instrument(skip(self, caller, used), fields(id = %used.id))]
    pub async fn reconcile_offline(
        &self,
        caller: &Caller,
        used: OfflineUse,
    ) -> Result<(), AppError> {
        let Caller::Principal(Principal::Device { device, bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        if used.id.is_empty() || used.id.len() > 64 {
            return Err(AppError::Invalid("offline use id".into()));
        }
        let now = self.now();
        let when = Timestamp::from_millis(used.at_ms.min(now.as_millis()));
        let (actor, device, bank, site) =
            (caller.actor(), device.clone(), bank.clone(), site.clone());
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.record_offline_use(&device, &used.id, now).await? {
                        return Ok(());
                    }
                    let at = AtBank { bank: &bank, site: &site, actor: &actor, now: when };
                    match used.what {
                        OfflineWhat::Refused { method } => {
                            let method = known(&method);
                            let reason = format!("{method}_refused_offline");
                            tx.append_audit(&at.attempt(Outcome::Failure, &reason, at.target()))?;
                            Ok(())
                        }
                        OfflineWhat::Opened { code, compartment, method } => {
                            opened(tx, &at, &code, compartment, known(&method)).await
                        }
                    }
                }
                .boxed()
            })
            .await
    }
}

/// The method as reported, if it is one the agent can report.
fn known(method: &str) -> &'static str {
    METHODS.into_iter().find(|m| *m == method).unwrap_or("unknown")
}

/// A code (typed or scanned) that opened `number` offline.
async fn opened(
    tx: &mut Tx,
    at: &AtBank<'_>,
    code: &str,
    number: u16,
    method: &str,
) -> Result<(), AppError> {
    let record = match CodeId::parse(code) {
        Ok(id) => tx.pickup_code_hash(at.bank, &id).await?,
        Err(_) => None,
    };
    let Some((hash, found)) = record else {
        return conflict(tx, at, at.target(), "unknown_code").map_err(Into::into);
    };
    let p = tx.parcel(&found.parcel).await?.ok_or(AppError::NotFound)?;
    let target = Target {
        compartment: Some(found.compartment.clone()),
        parcel: Some(p.id.clone()),
        ..at.target()
    };
    let compartment = tx.compartment(&found.compartment).await?.ok_or(AppError::NotFound)?;
    if compartment.number.get() != number {
        return conflict(tx, at, target, "other_compartment").map_err(Into::into);
    }
    // Still waiting in that compartment: the door opened on it, so that is where it went. (A
    // compartment taken out of service meanwhile is left to staff: the use is a conflict, not
    // an error, which would leave it unacknowledged and reported at every welcome for ever.)
    let waiting = p.state == ParcelState::Notified
        && p.compartment.as_ref() == Some(&found.compartment)
        && compartment.state == CompartmentState::Occupied;
    let accepted = format!("{method}_accepted_offline");
    match tx.redeem_pickup_code(at.bank, &hash, at.now).await? {
        Ok(_) if waiting => {
            picked_up(tx, at, &p, &accepted).await?;
        }
        Ok(_) => conflict(tx, at, target, "parcel_not_waiting")?,
        Err(refused) => {
            let why = refused.reason.as_str();
            conflict(tx, at, target, why)?;
            if waiting && refused.reason != CodeRefusal::Unknown {
                tx.revoke_pickup_codes(&p.id, at.now).await?;
                picked_up(tx, at, &p, &accepted).await?;
            }
        }
    }
    Ok(())
}

/// Audits an offline use the record disagrees with, and why.
fn conflict(tx: &mut Tx, at: &AtBank<'_>, target: Target, why: &str) -> Result<(), StoreError> {
    tx.append_audit(&AuditEvent {
        at: at.now,
        actor: at.actor.clone(),
        action: AuditAction::PickupOfflineConflict,
        target,
        outcome: Outcome::Failure,
        reason: Some(why.to_owned()),
        personal: None,
    })
}
