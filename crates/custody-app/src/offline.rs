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
//!
//! Couriers deposit offline too. A courier's code comes from the courier and the UTC day, so
//! the server can work out today's and tomorrow's ahead: the list carries, for each courier
//! whose carrier has parcels announced for the bank's site, an Argon2id verifier of each code
//! salted by bank and day ([`custody_crypto::secret::offline_courier_verifier`]; a courier code
//! works at every bank of its sites, so it must not be recoverable from one agent's disk), with
//! those parcels and the bank's free compartments. Returns need the server. A deposit made
//! offline is reconciled as the kiosk would have done it online: the compartment reserved for
//! the parcel, then, once the courier confirmed, the parcel deposited and its recipient
//! notified. A deposit the record disagrees with is audited as
//! `parcel.deposit.offline_conflict` and changes nothing else: a parcel in a compartment the
//! record does not expect is for staff to sort out, not for the server to guess.

use std::time::Duration;

use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Outcome, Target};
use custody_core::code::PickupCode;
use custody_core::compartment::{CompartmentNumber, CompartmentState};
use custody_core::parcel::{ParcelEvent, ParcelState};
use custody_core::person::Role;
use custody_core::policy::Principal;
use custody_core::{BankId, CodeId, ParcelId, PersonId, Timestamp};
use custody_crypto::secret::{offline_code_verifier, offline_courier_verifier};
use custody_proto::device::{
    KioskParcel, OfflineCode, OfflineCompartment, OfflineCourier, OfflineList, OfflineParcel,
    OfflineUse, OfflineWhat,
};
use custody_store::{CodeRefusal, CompartmentRow, ParcelRow, PersonRow, StoreError, Tx};
use data_encoding::BASE64;
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

use crate::parcels::{AtBank, advance, picked_up};
use crate::{App, AppError, Caller};

/// The methods an offline use may name.
const METHODS: [&str; 3] = ["code", "qr", "courier"];

/// Days of courier codes in a list: today's and tomorrow's, so that a list made before
/// midnight still serves couriers after it.
const COURIER_DAYS: i64 = 2;

/// How a deposit made offline is named in the audit log.
const OFFLINE_DEPOSIT: &str = "courier_code_offline";

/// What a bank's couriers may do there offline, as the store has it now.
struct DepositWork {
    /// Couriers in scope whose carrier has parcels announced for the site.
    couriers: Vec<PersonRow>,
    /// Those parcels.
    expected: Vec<ParcelRow>,
    /// The bank's free compartments.
    free: Vec<CompartmentRow>,
}

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

    /// What `bank`'s agent may open while it cannot reach the server: the bank's offline key,
    /// the verifier of every code that works there now, and what its couriers may deposit,
    /// valid until the sync deadline.
    pub async fn offline_list(&self, bank: &BankId) -> Result<OfflineList, AppError> {
        let (now, id) = (self.now(), bank.clone());
        let (codes, work) = self
            .store()
            .read(move |tx| {
                async move {
                    let codes = tx.offline_codes(&id, now).await?;
                    Ok::<_, AppError>((codes, deposit_work(tx, &id).await?))
                }
                .boxed()
            })
            .await?;
        let couriers = self.courier_verifiers(bank, &work.couriers, now).await?;
        let mut expected = Vec::with_capacity(work.expected.len());
        for p in &work.expected {
            let tracking = match &p.tracking_ref {
                Some(stored) => self.open_tracking_ref(&p.id, stored)?.to_string(),
                None => String::new(),
            };
            expected.push(OfflineParcel {
                parcel: KioskParcel {
                    id: p.id.to_string(),
                    tracking_ref: tracking,
                    size: p.size.as_str().to_owned(),
                },
                carrier: p.carrier.to_string(),
                accessible: p.needs_accessible,
                refrigerated: p.needs_refrigerated,
            });
        }
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
            couriers,
            expected,
            free: work
                .free
                .iter()
                .map(|c| OfflineCompartment {
                    compartment: c.number.get(),
                    size: c.size.as_str().to_owned(),
                    accessible: c.accessible,
                    refrigerated: c.refrigerated,
                })
                .collect(),
        })
    }

    /// The verifiers of today's and tomorrow's codes of `couriers` at `bank`. Each is Argon2id,
    /// worked out once and kept until its day is past, on a blocking thread under the cap that
    /// password hashes share. A code two couriers drew on the same day is left out: offline
    /// nobody could tell whose it is, and online it is the first holder's.
    async fn courier_verifiers(
        &self,
        bank: &BankId,
        couriers: &[PersonRow],
        now: Timestamp,
    ) -> Result<Vec<OfflineCourier>, AppError> {
        let today = now.utc_day();
        let key = self.offline_key(bank);
        let mut out = Vec::new();
        for courier in couriers {
            let Some(carrier) = &courier.carrier else { continue };
            for day in today..today + COURIER_DAYS {
                let verifier = self.courier_verifier(bank, &key, &courier.id, day).await?;
                out.push(OfflineCourier {
                    courier: courier.id.to_string(),
                    carrier: carrier.to_string(),
                    day,
                    verifier: BASE64.encode(&verifier),
                });
            }
        }
        self.courier_cache().retain(|(_, _, day), _| *day >= today);
        let shared = |o: &OfflineCourier| {
            out.iter().filter(|x| x.day == o.day && x.verifier == o.verifier).count() > 1
        };
        let unique: Vec<bool> = out.iter().map(|o| !shared(o)).collect();
        let mut keep = unique.into_iter();
        out.retain(|_| keep.next().unwrap_or(false));
        Ok(out)
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
        let deposit = Settle {
            now,
            reserved_until: now.plus(self.config().reservation_ttl),
            window: self.site(site).await?.pickup_window.get(),
        };
        let (actor, device, bank, site) =
            (caller.actor(), device.clone(), bank.clone(), site.clone());
        let deposited = self
            .store()
            .write(move |tx| {
                async move {
                    if !tx.record_offline_use(&device, &used.id, now).await? {
                        return Ok(None);
                    }
                    let at = AtBank { bank: &bank, site: &site, actor: &actor, now: when };
                    match used.what {
                        OfflineWhat::Refused { method } => {
                            let method = known(&method);
                            let reason = format!("{method}_refused_offline");
                            tx.append_audit(&at.attempt(Outcome::Failure, &reason, at.target()))?;
                            Ok(None)
                        }
                        OfflineWhat::Opened { code, compartment, method } => {
                            opened(tx, &at, &code, compartment, known(&method)).await.map(|()| None)
                        }
                        OfflineWhat::Deposited { courier, parcel, compartment } => {
                            reserved(tx, &at, &deposit, (&courier, &parcel), compartment)
                                .await
                                .map(|()| None)
                        }
                        OfflineWhat::Confirmed { courier, parcel } => {
                            confirmed(tx, &at, &deposit, &courier, &parcel).await
                        }
                    }
                }
                .boxed()
            })
            .await?;
        // The recipient is told as after a deposit confirmed online; if that cannot be queued
        // now, the sweeper does it.
        if let Some(parcel) = deposited
            && let Err(e) = self.notify(&parcel).await
        {
            tracing::warn!(%parcel, error = %e, "notification deferred");
        }
        Ok(())
    }

    /// The verifier of `courier`'s code on `day` at `bank`, worked out unless it was already.
    async fn courier_verifier(
        &self,
        bank: &BankId,
        key: &[u8; 32],
        courier: &PersonId,
        day: i64,
    ) -> Result<[u8; 32], AppError> {
        let slot = (bank.clone(), courier.clone(), day);
        if let Some(v) = self.courier_cache().get(&slot) {
            return Ok(*v);
        }
        let digits = Zeroizing::new(self.courier_code_on(courier, day).replace(' ', ""));
        let key = *key;
        let _permit = self.0.hash_permits.acquire().await.map_err(|_| AppError::Throttled)?;
        let verifier = tokio::task::spawn_blocking(move || {
            offline_courier_verifier(&key, day, digits.as_bytes())
        })
        .await
        .map_err(|_| AppError::Crypto(custody_crypto::CryptoError::PasswordHash))??;
        self.courier_cache().insert(slot, verifier);
        Ok(verifier)
    }

    /// The verifiers of couriers' codes worked out so far, by bank, courier and day.
    fn courier_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(BankId, PersonId, i64), [u8; 32]>>
    {
        self.0.courier_verifiers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        return conflict(tx, at, PICKUP, at.target(), "unknown_code").map_err(Into::into);
    };
    let p = tx.parcel(&found.parcel).await?.ok_or(AppError::NotFound)?;
    let target = Target {
        compartment: Some(found.compartment.clone()),
        parcel: Some(p.id.clone()),
        ..at.target()
    };
    let compartment = tx.compartment(&found.compartment).await?.ok_or(AppError::NotFound)?;
    if compartment.number.get() != number {
        return conflict(tx, at, PICKUP, target, "other_compartment").map_err(Into::into);
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
        Ok(_) => conflict(tx, at, PICKUP, target, "parcel_not_waiting")?,
        Err(refused) => {
            let why = refused.reason.as_str();
            conflict(tx, at, PICKUP, target, why)?;
            if waiting && refused.reason != CodeRefusal::Unknown {
                tx.revoke_pickup_codes(&p.id, at.now).await?;
                picked_up(tx, at, &p, &accepted).await?;
            }
        }
    }
    Ok(())
}

const PICKUP: AuditAction = AuditAction::PickupOfflineConflict;
const DEPOSIT: AuditAction = AuditAction::DepositOfflineConflict;

/// The server's side of settling a deposit made offline.
struct Settle {
    /// Now, by the server's clock.
    now: Timestamp,
    /// Until when the compartment stays reserved for a deposit not yet confirmed.
    reserved_until: Timestamp,
    /// The site's pickup window, from the confirmation.
    window: Duration,
}

/// What a bank's couriers may do there offline: the couriers in scope whose carrier has parcels
/// announced for its site and not yet at a bank, those parcels, and the free compartments.
async fn deposit_work(tx: &mut Tx, bank: &BankId) -> Result<DepositWork, AppError> {
    let (_, site) = crate::bank_site(tx, bank).await?;
    let mut couriers: Vec<PersonRow> = tx
        .people(&site.org)
        .await?
        .into_iter()
        .filter(|p| {
            p.disabled_at.is_none()
                && p.role == Role::Courier
                && crate::people::standing_of(p).scope.covers(&site.org, &site.id)
        })
        .collect();
    let mut carriers: Vec<_> = couriers.iter().filter_map(|p| p.carrier.clone()).collect();
    carriers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    carriers.dedup();
    let mut expected = Vec::new();
    for carrier in &carriers {
        expected.extend(
            tx.parcels_for_carrier(carrier, 500).await?.into_iter().filter(|p| {
                p.site == site.id && p.state == ParcelState::Expected && p.bank.is_none()
            }),
        );
    }
    couriers.retain(|c| expected.iter().any(|p| c.carrier.as_ref() == Some(&p.carrier)));
    let free =
        tx.compartments(bank).await?.into_iter().filter(|c| c.state == CompartmentState::Free);
    Ok(DepositWork { couriers, expected, free: free.collect() })
}

/// The parcel an offline deposit names, and the courier who made it as the audit log's actor
/// if they may still deposit it: enabled, a courier of its carrier, in scope.
async fn deposit_of(
    tx: &mut Tx,
    courier: &str,
    parcel: &str,
) -> Result<(Option<ParcelRow>, Option<Actor>), AppError> {
    let Some(p) = (match ParcelId::parse(parcel) {
        Ok(id) => tx.parcel(&id).await?,
        Err(_) => None,
    }) else {
        return Ok((None, None));
    };
    let person = match PersonId::parse(courier) {
        Ok(id) => tx.person(&id).await?,
        Err(_) => None,
    };
    let actor = person
        .filter(|c| {
            c.disabled_at.is_none()
                && c.role == Role::Courier
                && c.carrier.as_ref() == Some(&p.carrier)
                && crate::people::standing_of(c).scope.covers(&p.org, &p.site)
        })
        .map(|c| Actor { kind: ActorKind::Person, id: Some(c.id.to_string()) });
    Ok((Some(p), actor))
}

/// A courier's code opened `number` offline to deposit a parcel: the compartment is reserved
/// for it, as a deposit begun online would be.
async fn reserved(
    tx: &mut Tx,
    at: &AtBank<'_>,
    settle: &Settle,
    (courier, parcel): (&str, &str),
    number: u16,
) -> Result<(), AppError> {
    let (p, actor) = deposit_of(tx, courier, parcel).await?;
    let Some(p) = p else {
        return conflict(tx, at, DEPOSIT, at.target(), "unknown_parcel").map_err(Into::into);
    };
    let target = Target { parcel: Some(p.id.clone()), ..at.target() };
    let Some(actor) = actor else {
        return conflict(tx, at, DEPOSIT, target, "courier_not_allowed").map_err(Into::into);
    };
    if p.state != ParcelState::Expected || p.bank.is_some() || &p.site != at.site {
        return conflict(tx, at, DEPOSIT, target, "parcel_not_expected").map_err(Into::into);
    }
    let c = match CompartmentNumber::new(number) {
        Ok(n) => tx.compartment_by_number(at.bank, n).await?,
        Err(_) => None,
    };
    let Some(c) = c else {
        return conflict(tx, at, DEPOSIT, target, "unknown_compartment").map_err(Into::into);
    };
    let target = Target { compartment: Some(c.id.clone()), ..target };
    if !tx.reserve_this_compartment(&c.id, &p.id, settle.reserved_until, settle.now).await? {
        return conflict(tx, at, DEPOSIT, target, "compartment_not_free").map_err(Into::into);
    }
    tx.assign_compartment(&p.id, at.bank, Some(&c.id), settle.now).await?;
    tx.append_audit(
        &AuditEvent::success(at.now, actor, AuditAction::DepositReserve, target)
            .because(OFFLINE_DEPOSIT),
    )?;
    Ok(())
}

/// The courier confirmed offline that `parcel` is in and the door shut: it is deposited, and
/// returned so its recipient is notified once this unit has committed.
async fn confirmed(
    tx: &mut Tx,
    at: &AtBank<'_>,
    settle: &Settle,
    courier: &str,
    parcel: &str,
) -> Result<Option<ParcelId>, AppError> {
    let (p, actor) = deposit_of(tx, courier, parcel).await?;
    let Some(p) = p else {
        conflict(tx, at, DEPOSIT, at.target(), "unknown_parcel")?;
        return Ok(None);
    };
    let target =
        Target { parcel: Some(p.id.clone()), compartment: p.compartment.clone(), ..at.target() };
    let Some(actor) = actor else {
        conflict(tx, at, DEPOSIT, target, "courier_not_allowed")?;
        return Ok(None);
    };
    let under_way = p.state == ParcelState::Expected && p.bank.as_ref() == Some(at.bank);
    let Some(cid) = p.compartment.clone().filter(|_| under_way) else {
        conflict(tx, at, DEPOSIT, target, "no_deposit_under_way")?;
        return Ok(None);
    };
    let occupied = CompartmentState::Occupied;
    if !tx
        .move_compartment(&cid, CompartmentState::Reserved, occupied, Some(&p.id), settle.now)
        .await?
    {
        // The reservation lapsed before the confirmation reached the server.
        conflict(tx, at, DEPOSIT, target, "no_deposit_under_way")?;
        return Ok(None);
    }
    advance(tx, &p, ParcelEvent::Deposit, at.now, Some(settle.now.plus(settle.window))).await?;
    tx.append_audit(
        &AuditEvent::success(at.now, actor, AuditAction::Deposit, target).because(OFFLINE_DEPOSIT),
    )?;
    Ok(Some(p.id))
}

/// Audits an offline use the record disagrees with (`action` says whether a pickup or a
/// deposit), and why.
fn conflict(
    tx: &mut Tx,
    at: &AtBank<'_>,
    action: AuditAction,
    target: Target,
    why: &str,
) -> Result<(), StoreError> {
    tx.append_audit(&AuditEvent::failure(at.now, at.actor.clone(), action, target).because(why))
}
