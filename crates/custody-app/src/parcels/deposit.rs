//! Depositing: reserving the best free compartment and opening it, confirming once the
//! door is shut, abandoning, and releasing reservations whose time ran out.

use crate::conflicts::ConflictCode;
use crate::parcels::Parcel;
use custody_core::audit::{Actor, AuditAction, Target};
use custody_core::compartment::{CompartmentState, DoorState, SizeClass};
use custody_core::parcel::{ParcelEvent, ParcelState};
use custody_core::policy;
use custody_core::{BankId, ParcelId, Timestamp};
use custody_store::{CompartmentNeeds, ParcelRow, Tx};
use futures_util::FutureExt as _;

use super::{Deposit, advance, event, parcel_target};
use crate::remote_opens::Charge;
use crate::{App, AppError, Caller, OpenFor};

/// Ends a deposit under way: the compartment is free again and the parcel waits for another
/// deposit.
async fn release(
    tx: &mut Tx,
    parcel: &ParcelId,
    actor: &Actor,
    now: Timestamp,
    why: &str,
) -> Result<ParcelRow, AppError> {
    let p = tx.parcel(parcel).await?.ok_or(AppError::NotFound)?;
    let Some(cid) = p.compartment.clone().filter(|_| p.state == ParcelState::Expected) else {
        return Err(AppError::conflict(
            ConflictCode::ParcelState,
            "the parcel has no deposit under way",
        ));
    };
    if !tx
        .move_compartment(&cid, CompartmentState::Reserved, CompartmentState::Free, None, now)
        .await?
    {
        return Err(AppError::conflict(
            ConflictCode::CompartmentState,
            "the compartment is no longer reserved",
        ));
    }
    let bank =
        p.bank.clone().ok_or_else(|| AppError::conflict(ConflictCode::ParcelState, "no bank"))?;
    tx.assign_compartment(&p.id, &bank, None, now).await?;
    tx.append_audit(&event(
        actor,
        AuditAction::DepositCancel,
        parcel_target(&p),
        now,
        Some(why.to_owned()),
    ))?;
    tx.parcel(parcel).await?.ok_or(AppError::NotFound)
}

impl App {
    /// Starts depositing an announced parcel at a bank: reserves the best free compartment
    /// and opens it.
    pub async fn start_deposit(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
        bank: &BankId,
    ) -> Result<Deposit, AppError> {
        self.start_deposit_sized(caller, parcel, bank, None).await
    }

    /// [`App::start_deposit`] into a compartment of at least `at_least`, for a parcel that does not
    /// fit its announced size. Only ever larger: a smaller size is ignored. The parcel's other
    /// needs (an accessible or refrigerated compartment) stand, and a compartment that is not
    /// free, whoever's parcel it holds, is never chosen. A larger choice is audited.
    pub async fn start_deposit_sized(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
        bank: &BankId,
        at_least: Option<SizeClass>,
    ) -> Result<Deposit, AppError> {
        let p = self.parcel_row(caller, parcel).await?;
        self.authorize(caller, AuditAction::DepositReserve, &parcel_target(&p), |pr| {
            policy::may_deposit(pr, &p.org, &p.site, &p.carrier)
        })
        .await?;
        let into = Target { bank: Some(bank.clone()), ..parcel_target(&p) };
        self.refuse_if_locked_down(&caller.actor(), AuditAction::DepositReserve, &into).await?;
        let (now, actor, app, bank) = (self.now(), caller.actor(), self.clone(), bank.clone());
        let until = now.plus(self.config().reservation_ttl);
        self.store()
            .write(move |tx| {
                async move {
                    let p = tx.parcel(&p.id).await?.ok_or(AppError::NotFound)?;
                    if p.state != ParcelState::Expected || p.compartment.is_some() {
                        return Err(AppError::conflict(
                            ConflictCode::ParcelState,
                            "the parcel is not waiting for a deposit",
                        ));
                    }
                    let (bank_row, site) = crate::bank_site(tx, &bank).await?;
                    if bank_row.site != p.site {
                        return Err(AppError::Invalid(
                            "that bank is not at the parcel's site".into(),
                        ));
                    }
                    let fits = at_least.map_or(p.size, |s| s.max(p.size));
                    let needs = CompartmentNeeds {
                        size: fits,
                        accessible: p.needs_accessible,
                        refrigerated: p.needs_refrigerated,
                    };
                    let compartment = tx
                        .reserve_compartment(&bank, needs, &p.id, until, now)
                        .await?
                        .ok_or_else(|| {
                            AppError::conflict(
                                ConflictCode::NoFreeCompartment,
                                "no free compartment of that size in this bank",
                            )
                        })?;
                    tx.assign_compartment(&p.id, &bank, Some(&compartment.id), now).await?;
                    let p = tx.parcel(&p.id).await?.ok_or(AppError::NotFound)?;
                    let larger = (fits != p.size).then(|| format!("larger:{}", fits.as_str()));
                    tx.append_audit(&event(
                        &actor,
                        AuditAction::DepositReserve,
                        parcel_target(&p),
                        now,
                        larger,
                    ))?;
                    let command = app
                        .issue_open(
                            tx,
                            &actor,
                            now,
                            OpenFor {
                                site: &site.id,
                                compartment: &compartment,
                                parcel: Some(&p.id),
                                purpose: "deposit",
                                charge: Charge::Free,
                            },
                        )
                        .await?;
                    let parcel = app.parcel_view(p)?;
                    Ok(Deposit { parcel, compartment: compartment.into(), command })
                }
                .boxed()
            })
            .await
    }

    /// Confirms a deposit once the door sensor reports the compartment closed again; the parcel
    /// is then in custody of the locker and its pickup window starts.
    pub async fn confirm_deposit(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
    ) -> Result<Parcel, AppError> {
        let p = self.parcel_row(caller, parcel).await?;
        self.authorize(caller, AuditAction::Deposit, &parcel_target(&p), |pr| {
            policy::may_deposit(pr, &p.org, &p.site, &p.carrier)
        })
        .await?;
        let (now, actor) = (self.now(), caller.actor());
        let window = self.site(&p.site).await?.pickup_window.get();
        self.store()
            .write(move |tx| {
                async move {
                    let p = tx.parcel(&p.id).await?.ok_or(AppError::NotFound)?;
                    let Some(cid) =
                        p.compartment.clone().filter(|_| p.state == ParcelState::Expected)
                    else {
                        return Err(AppError::conflict(
                            ConflictCode::ParcelState,
                            "the parcel has no deposit under way",
                        ));
                    };
                    let c = tx.compartment(&cid).await?.ok_or(AppError::NotFound)?;
                    if c.door != DoorState::Closed {
                        return Err(AppError::conflict(
                            ConflictCode::DoorNotClosed,
                            format!(
                                "close compartment {} first; its sensor does not report it closed",
                                c.number
                            ),
                        ));
                    }
                    if !tx
                        .move_compartment(
                            &cid,
                            CompartmentState::Reserved,
                            CompartmentState::Occupied,
                            Some(&p.id),
                            now,
                        )
                        .await?
                    {
                        return Err(AppError::conflict(
                            ConflictCode::ReservationLapsed,
                            "the reservation ran out; start the deposit again",
                        ));
                    }
                    advance(tx, &p, ParcelEvent::Deposit, now, Some(now.plus(window))).await?;
                    let p = tx.parcel(&p.id).await?.ok_or(AppError::NotFound)?;
                    tx.append_audit(&event(
                        &actor,
                        AuditAction::Deposit,
                        parcel_target(&p),
                        now,
                        None,
                    ))?;
                    Ok(p)
                }
                .boxed()
            })
            .await
            .and_then(|p| self.parcel_view(p))
    }

    /// Confirms a deposit and notifies the recipient at once, wherever the courier confirms
    /// (the API or the kiosk). The notification is its own unit: if it cannot be queued now,
    /// the sweeper retries it.
    pub async fn confirm_and_notify(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
    ) -> Result<Parcel, AppError> {
        self.confirm_deposit(caller, parcel).await?;
        match self.notify(parcel).await {
            Ok(p) => Ok(p),
            Err(e) => {
                tracing::warn!(%parcel, error = %e, "notification deferred");
                self.parcel(caller, parcel).await
            }
        }
    }

    /// Abandons a deposit under way and frees its compartment.
    pub async fn cancel_deposit(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
    ) -> Result<Parcel, AppError> {
        let p = self.parcel_row(caller, parcel).await?;
        self.authorize(caller, AuditAction::DepositCancel, &parcel_target(&p), |pr| {
            policy::may_deposit(pr, &p.org, &p.site, &p.carrier)
        })
        .await?;
        let (now, actor) = (self.now(), caller.actor());
        self.store()
            .write(move |tx| {
                async move { release(tx, &p.id, &actor, now, "cancelled").await }.boxed()
            })
            .await
            .and_then(|p| self.parcel_view(p))
    }

    /// Releases reservations whose time ran out (housekeeping). Returns how many.
    pub async fn release_stale_reservations(&self) -> Result<usize, AppError> {
        let now = self.now();
        let stale = self
            .store()
            .read(move |tx| async move { tx.stale_reservations(now, 100).await }.boxed())
            .await?;
        let mut released = 0;
        for c in stale {
            let Some(parcel) = c.parcel.clone() else { continue };
            let done = self
                .store()
                .write(move |tx| {
                    async move {
                        release(tx, &parcel, &Actor::system(), now, "reservation_expired").await
                    }
                    .boxed()
                })
                .await;
            if done.is_ok() {
                released += 1;
            }
        }
        Ok(released)
    }
}
