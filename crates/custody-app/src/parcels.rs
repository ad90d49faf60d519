//! The chain of custody: announce, deposit, notify, pick up, expire, return and retrieve.
//! Opening a compartment remotely is in `remote_opens`, beside the budget it spends.
//!
//! Every method is one unit of work: the state change, the compartment change, the open command
//! and the audit entries commit together or not at all.

use custody_core::approval::ApprovalKind;
use custody_core::audit::{Actor, AuditAction, AuditEvent, Outcome, Target};
use custody_core::code::{GRACE_REOPEN, PickupCode, PickupEntry};
use custody_core::compartment::{CompartmentNumber, CompartmentState, DoorState, SizeClass};
use custody_core::parcel::{ParcelEvent, ParcelState};
use custody_core::person::Role;
use custody_core::policy::{self, Denied, ParcelFacts, Principal};
use custody_core::text::{Email, Reason, TrackingRef};
use custody_core::throttle::{BANK_PICKUP, BANK_PICKUP_DAY, RESEND_PARCEL, RESEND_RECIPIENT};
use custody_core::token::PickupToken;
use custody_core::{BankId, CarrierId, CodeId, CompartmentId, ParcelId, SiteId, Timestamp};
use custody_proto::device::{CommandOutcome as C, DoorReading, SignedOpenCommand};
use custody_store::{
    ApprovalRow, AuditRow, CodeRefusal, CodeRefused, CompartmentNeeds, CompartmentRow,
    NewPickupCode, ParcelRow, PersonRow, RedeemedCode, SiteRow, StoreError, Tx,
};
use futures_util::FutureExt as _;

use crate::outbox::{Credentials, pickup_message};
use crate::personal::Statement;
use crate::remote_opens::{Charge, Hold, OpenOrAsk, reason_sha256};
use crate::sight::{as_seen_by, entries_seen_by};
use crate::throttle::Budgets;
use crate::{App, AppError, Caller, OpenFor};

/// What a carrier announces.
#[derive(Debug, Clone)]
pub struct ParcelSpec {
    /// Destination site.
    pub site: SiteId,
    /// Delivering carrier.
    pub carrier: CarrierId,
    /// The recipient's e-mail address, as registered at the site.
    pub recipient_email: String,
    /// Carrier's tracking reference.
    pub tracking_ref: String,
    /// Size class.
    pub size: SizeClass,
    /// Needs an accessible-height compartment.
    pub accessible: bool,
    /// Needs a refrigerated compartment.
    pub refrigerated: bool,
}

/// A deposit under way: the compartment is reserved and its door is being opened.
#[derive(Debug, Clone)]
pub struct Deposit {
    /// The parcel.
    pub parcel: ParcelRow,
    /// The reserved compartment.
    pub compartment: CompartmentRow,
    /// The command that opens it, for the bank's agent.
    pub command: SignedOpenCommand,
}

/// A compartment being opened for a reason other than a pickup.
#[derive(Debug, Clone)]
pub struct Opening {
    /// The compartment.
    pub compartment: CompartmentRow,
    /// The command that opens it, for the bank's agent.
    pub command: SignedOpenCommand,
}

/// How a pickup attempt at the kiosk ended.
#[derive(Debug, Clone)]
pub enum PickupOutcome {
    /// The code worked; send the command.
    Accepted {
        /// The compartment that opens.
        compartment: CompartmentNumber,
        /// The command.
        command: SignedOpenCommand,
    },
    /// The code did not work (the reason is in the audit log only).
    Refused,
    /// The bank's budget for typed codes is spent: typed codes are paused there until it
    /// renews. Says nothing about the code.
    Paused,
}

impl PickupOutcome {
    /// Accepted: this compartment opens with this command.
    pub(crate) fn accepted((compartment, command): (CompartmentNumber, SignedOpenCommand)) -> Self {
        Self::Accepted { compartment, command }
    }
}

fn facts(p: &ParcelRow) -> ParcelFacts<'_> {
    ParcelFacts { org: &p.org, site: &p.site, carrier: &p.carrier, recipient: p.recipient.as_ref() }
}

/// Whether `person` is someone a parcel for `site` may be addressed to: an enabled resident
/// of that site.
pub(crate) fn lives_at(person: &PersonRow, site: &SiteRow) -> bool {
    person.role == Role::Resident
        && person.org == site.org
        && person.site.as_ref() == Some(&site.id)
        && person.disabled_at.is_none()
}

pub(crate) fn parcel_target(p: &ParcelRow) -> Target {
    Target {
        site: Some(p.site.clone()),
        bank: p.bank.clone(),
        compartment: p.compartment.clone(),
        parcel: Some(p.id.clone()),
    }
}

fn state_conflict(p: &ParcelRow, event: ParcelEvent) -> AppError {
    match p.state.apply(event) {
        Err(e) => AppError::conflict("parcel_state", e.to_string()),
        Ok(_) => AppError::conflict(
            "parcel_state",
            format!("parcel changed while being {event}ed; try again"),
        ),
    }
}

/// Moves a parcel by `event` from the state it was read in, or fails if it changed meanwhile.
pub(crate) async fn advance(
    tx: &mut Tx,
    p: &ParcelRow,
    event: ParcelEvent,
    now: Timestamp,
    expires_at: Option<Timestamp>,
) -> Result<ParcelState, AppError> {
    let next = p.state.apply(event).map_err(|_| state_conflict(p, event))?;
    if !tx.move_parcel(&p.id, p.state, next, now, expires_at).await? {
        return Err(state_conflict(p, event));
    }
    Ok(next)
}

/// Frees the compartment a parcel leaves.
async fn vacate(tx: &mut Tx, p: &ParcelRow, now: Timestamp) -> Result<CompartmentRow, AppError> {
    let id = p
        .compartment
        .clone()
        .ok_or_else(|| AppError::conflict("parcel_state", "parcel has no compartment"))?;
    let c = tx.compartment(&id).await?.ok_or(AppError::NotFound)?;
    if !tx
        .move_compartment(&id, CompartmentState::Occupied, CompartmentState::Free, None, now)
        .await?
    {
        return Err(AppError::conflict(
            "compartment_state",
            format!("compartment {} is not occupied", c.number),
        ));
    }
    Ok(c)
}

/// Records parcel `p` picked up from its compartment at the kiosk with the credential
/// `accepted` names: the compartment vacated, the parcel moved on, both audited, in the caller's
/// unit of work. The door is opened by the caller (or already was, offline).
pub(crate) async fn picked_up(
    tx: &mut Tx,
    at: &AtBank<'_>,
    p: &ParcelRow,
    accepted: &str,
) -> Result<CompartmentRow, AppError> {
    let compartment = vacate(tx, p, at.now).await?;
    advance(tx, p, ParcelEvent::PickUp, at.now, None).await?;
    let target = parcel_target(p);
    tx.append_audit(&at.attempt(Outcome::Success, accepted, target.clone()))?;
    tx.append_audit(&event(at.actor, AuditAction::PickUp, target, at.now, None))?;
    Ok(compartment)
}

/// Where, when and by whom a pickup credential is used: a code typed or a QR code scanned at
/// the kiosk, or the code on its screen sent from the app.
pub(crate) struct AtBank<'a> {
    pub(crate) bank: &'a BankId,
    pub(crate) site: &'a SiteId,
    pub(crate) actor: &'a Actor,
    pub(crate) now: Timestamp,
}

impl AtBank<'_> {
    /// The bank and site, for attempts that name no parcel.
    pub(crate) fn target(&self) -> Target {
        Target { site: Some(self.site.clone()), bank: Some(self.bank.clone()), ..Target::default() }
    }

    /// A pickup attempt at this kiosk, with its outcome and reason.
    pub(crate) fn attempt(&self, outcome: Outcome, reason: &str, target: Target) -> AuditEvent {
        AuditEvent {
            at: self.now,
            actor: self.actor.clone(),
            action: AuditAction::PickupAttempt,
            target,
            outcome,
            reason: Some(reason.to_owned()),
            personal: None,
        }
    }

    /// What every credential at the kiosk passes first, in the caller's unit: the budgets are
    /// spent, then a locked-down bank refuses. `Some(answer)`, audited with `method`, when the
    /// attempt stops here: `Paused` when the bank's budget for typed credentials is spent (the
    /// kiosk says so; it says nothing about the credential), else `Refused`.
    pub(crate) async fn admit(
        &self,
        tx: &mut Tx,
        budgets: &Budgets,
        method: &str,
    ) -> Result<Option<PickupOutcome>, AppError> {
        if let Some(name) = budgets.spend(tx, self.now).await? {
            self.throttled(tx, method, name)?;
            let bank_wide = [BANK_PICKUP.name, BANK_PICKUP_DAY.name].contains(&name);
            return Ok(Some(if bank_wide {
                PickupOutcome::Paused
            } else {
                PickupOutcome::Refused
            }));
        }
        // Locked down: the kiosk shows the same refusal as for any other failure.
        if tx.lockdown(self.bank).await?.is_some() {
            self.locked_down(tx, method, self.target())?;
            return Ok(Some(PickupOutcome::Refused));
        }
        Ok(None)
    }

    /// Audits an attempt with `method` (`code`, `qr`, `badge`) refused unchecked because the
    /// budget `name` is spent: `<method>_throttled:<name>`.
    pub(crate) fn throttled(
        &self,
        tx: &mut Tx,
        method: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let reason = format!("{method}_throttled:{name}");
        tx.append_audit(&self.attempt(Outcome::Denied, &reason, self.target()))
    }

    /// Audits an attempt with `method` refused because the bank is locked down:
    /// `<method>_locked_down`.
    pub(crate) fn locked_down(
        &self,
        tx: &mut Tx,
        method: &str,
        target: Target,
    ) -> Result<(), StoreError> {
        let reason = format!("{method}_locked_down");
        tx.append_audit(&self.attempt(Outcome::Denied, &reason, target))
    }

    /// Audits a credential the store refused, with the reason after its `method` (`code` or
    /// `qr`). A code that exists names its parcel, so the parcel's
    /// chain of custody shows every attempt on it.
    pub(crate) fn refused(
        &self,
        tx: &mut Tx,
        method: &str,
        refused: &CodeRefused,
    ) -> Result<(), StoreError> {
        let target = Target {
            compartment: refused.code.as_ref().map(|c| c.compartment.clone()),
            parcel: refused.code.as_ref().map(|c| c.parcel.clone()),
            ..self.target()
        };
        let reason = format!("{method}_{}", refused.reason.as_str());
        tx.append_audit(&self.attempt(Outcome::Failure, &reason, target))
    }
}

pub(crate) fn event(
    actor: &Actor,
    action: AuditAction,
    target: Target,
    now: Timestamp,
    reason: Option<String>,
) -> AuditEvent {
    AuditEvent {
        at: now,
        actor: actor.clone(),
        action,
        target,
        outcome: Outcome::Success,
        reason,
        personal: None,
    }
}

impl App {
    /// Loads a parcel the caller may see. A parcel the caller may not see is `NotFound`, the
    /// same as one that does not exist (and the attempt is audited).
    pub async fn parcel(&self, caller: &Caller, id: &ParcelId) -> Result<ParcelRow, AppError> {
        let lookup = id.clone();
        let parcel = self
            .store()
            .read(move |tx| async move { tx.parcel(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        if let Err(d) = caller.check(|p| policy::may_view_parcel(p, facts(&parcel))) {
            // Out of reach looks exactly like absent.
            let d = if d == Denied::Role { Denied::Scope } else { d };
            return Err(self
                .refuse(
                    caller,
                    AuditAction::AccessDenied,
                    Target { parcel: Some(id.clone()), ..Target::default() },
                    d,
                )
                .await);
        }
        Ok(parcel)
    }

    /// A parcel and its chain of custody, oldest event first, each event with the words given
    /// for it as the caller may see them.
    pub async fn parcel_history(
        &self,
        caller: &Caller,
        id: &ParcelId,
    ) -> Result<(ParcelRow, Vec<(AuditRow, Statement)>), AppError> {
        let parcel = self.parcel(caller, id).await?;
        let pid = parcel.id.clone();
        let history = self
            .store()
            .read(move |tx| async move { tx.audit_for_parcel(&pid).await }.boxed())
            .await?;
        let history = entries_seen_by(caller, history, |row| row.event.action);
        let statements = self.statements(caller, &parcel.org, &parcel.site, &history).await?;
        Ok((as_seen_by(caller, parcel), history.into_iter().zip(statements).collect()))
    }

    /// The parcels the caller may see: a resident's own, a carrier's (within its sites), or a
    /// site's for staff and auditors.
    pub async fn visible_parcels(
        &self,
        caller: &Caller,
        site: Option<&SiteId>,
        limit: u32,
    ) -> Result<Vec<ParcelRow>, AppError> {
        let limit = limit.clamp(1, 500);
        match (caller, site) {
            (Caller::Principal(Principal::Person { id, standing, .. }), None)
                if standing.role == Role::Resident =>
            {
                let id = id.clone();
                Ok(self
                    .store()
                    .read(move |tx| {
                        async move { tx.parcels_for_recipient(&id, limit).await }.boxed()
                    })
                    .await?)
            }
            (
                Caller::Principal(p @ (Principal::CarrierKey { .. } | Principal::Person { .. })),
                None,
            ) if matches!(p, Principal::CarrierKey { .. })
                || matches!(p, Principal::Person { standing, .. } if standing.role == Role::Courier) =>
            {
                let carrier = match p {
                    Principal::CarrierKey { carrier, .. } => carrier.clone(),
                    Principal::Person { standing, .. } => {
                        standing.carrier.clone().ok_or(AppError::Forbidden)?
                    }
                    Principal::Device { .. } => return Err(AppError::Forbidden),
                };
                let all = self
                    .store()
                    .read(move |tx| {
                        async move { tx.parcels_for_carrier(&carrier, limit).await }.boxed()
                    })
                    .await?;
                Ok(all
                    .into_iter()
                    .filter(|parcel| policy::may_view_parcel(p, facts(parcel)).is_ok())
                    .map(|parcel| as_seen_by(caller, parcel))
                    .collect())
            }
            (_, Some(site)) => {
                let s = self.site(site).await?;
                if let Err(d) = caller.check(|p| policy::may_view_site(p, &s.org, &s.id)) {
                    return Err(self
                        .refuse(
                            caller,
                            AuditAction::AccessDenied,
                            Target { site: Some(site.clone()), ..Target::default() },
                            d,
                        )
                        .await);
                }
                let site = site.clone();
                Ok(self
                    .store()
                    .read(move |tx| async move { tx.parcels_at_site(&site, limit).await }.boxed())
                    .await?)
            }
            _ => Err(AppError::Invalid("name a site".into())),
        }
    }

    /// A carrier announces a parcel for a resident of a site.
    pub async fn expect_parcel(
        &self,
        caller: &Caller,
        spec: ParcelSpec,
    ) -> Result<ParcelRow, AppError> {
        let site = self.site(&spec.site).await?;
        let target = Target { site: Some(site.id.clone()), ..Target::default() };
        if let Err(d) = caller.check(|p| policy::may_deposit(p, &site.org, &site.id, &spec.carrier))
        {
            return Err(self.refuse(caller, AuditAction::ParcelExpect, target, d).await);
        }
        let email = Email::parse(&spec.recipient_email).map_err(AppError::invalid)?;
        let tracking_ref = TrackingRef::parse(&spec.tracking_ref).map_err(AppError::invalid)?;
        let now = self.now();
        let id = ParcelId::from_random(self.rng().bytes()?);
        let actor = caller.actor();
        self.store()
            .write(move |tx| {
                async move {
                    let carrier = tx.carrier(&spec.carrier).await?.ok_or(AppError::NotFound)?;
                    // An address that matches no resident is accepted all the same and the
                    // parcel held for the site's staff: a distinct answer would tell any
                    // carrier key who lives where.
                    let recipient =
                        tx.person_by_email(&email).await?.filter(|p| lives_at(p, &site));
                    if carrier.org != site.org {
                        return Err(AppError::NotFound);
                    }
                    let parcel = ParcelRow {
                        id,
                        org: site.org.clone(),
                        site: site.id.clone(),
                        bank: None,
                        compartment: None,
                        carrier: carrier.id,
                        recipient: recipient.map(|r| r.id),
                        tracking_ref,
                        size: spec.size,
                        needs_accessible: spec.accessible,
                        needs_refrigerated: spec.refrigerated,
                        state: ParcelState::Expected,
                        created_at: now,
                        deposited_at: None,
                        notified_at: None,
                        expires_at: None,
                        closed_at: None,
                        updated_at: now,
                    };
                    tx.insert_parcel(&parcel).await?;
                    tx.append_audit(&event(
                        &actor,
                        AuditAction::ParcelExpect,
                        parcel_target(&parcel),
                        now,
                        None,
                    ))?;
                    Ok(parcel)
                }
                .boxed()
            })
            .await
    }

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
        let p = self.parcel(caller, parcel).await?;
        if let Err(d) = caller.check(|pr| policy::may_deposit(pr, &p.org, &p.site, &p.carrier)) {
            return Err(self
                .refuse(caller, AuditAction::DepositReserve, parcel_target(&p), d)
                .await);
        }
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
                            "parcel_state",
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
                                "no_free_compartment",
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
                    Ok(Deposit { parcel: p, compartment, command })
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
    ) -> Result<ParcelRow, AppError> {
        let p = self.parcel(caller, parcel).await?;
        if let Err(d) = caller.check(|pr| policy::may_deposit(pr, &p.org, &p.site, &p.carrier)) {
            return Err(self.refuse(caller, AuditAction::Deposit, parcel_target(&p), d).await);
        }
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
                            "parcel_state",
                            "the parcel has no deposit under way",
                        ));
                    };
                    let c = tx.compartment(&cid).await?.ok_or(AppError::NotFound)?;
                    if c.door != DoorState::Closed {
                        return Err(AppError::conflict(
                            "door_not_closed",
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
                            "reservation_lapsed",
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
    }

    /// Confirms a deposit and notifies the recipient at once, wherever the courier confirms
    /// (the API or the kiosk). The notification is its own unit: if it cannot be queued now,
    /// the sweeper retries it.
    pub async fn confirm_and_notify(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
    ) -> Result<ParcelRow, AppError> {
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
    ) -> Result<ParcelRow, AppError> {
        let p = self.parcel(caller, parcel).await?;
        if let Err(d) = caller.check(|pr| policy::may_deposit(pr, &p.org, &p.site, &p.carrier)) {
            return Err(self
                .refuse(caller, AuditAction::DepositCancel, parcel_target(&p), d)
                .await);
        }
        let (now, actor) = (self.now(), caller.actor());
        self.store()
            .write(move |tx| {
                async move { release(tx, &p.id, &actor, now, "cancelled").await }.boxed()
            })
            .await
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

    /// Sends the recipient a pickup code for a deposited parcel. A parcel nobody is named for
    /// is left as it is, held for the site's staff (`unaddressed`): there is no one to tell
    /// until they name someone.
    pub async fn notify(&self, parcel: &ParcelId) -> Result<ParcelRow, AppError> {
        let (now, app, id) = (self.now(), self.clone(), parcel.clone());
        self.store()
            .write(move |tx| {
                async move {
                    let p = tx.parcel(&id).await?.ok_or(AppError::NotFound)?;
                    if p.state != ParcelState::Deposited {
                        return Err(state_conflict(&p, ParcelEvent::Notify));
                    }
                    if p.recipient.is_none() {
                        return Ok(p);
                    }
                    app.send_new_code(tx, &p, now).await?;
                    advance(tx, &p, ParcelEvent::Notify, now, None).await?;
                    tx.append_audit(&event(
                        &Actor::system(),
                        AuditAction::Notify,
                        parcel_target(&p),
                        now,
                        None,
                    ))?;
                    tx.parcel(&id).await?.ok_or(AppError::NotFound)
                }
                .boxed()
            })
            .await
            .inspect(|p| {
                if let Some(bank) = &p.bank {
                    self.codes_changed(bank);
                }
            })
    }

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

    /// Sends the recipient a new pickup code for a parcel waiting in its compartment, and
    /// retires the old one: for a message lost or deleted. Asked by the recipient or by staff
    /// of the site; the code goes only to the recipient's own address. At most 3 a day per
    /// parcel and 10 a day per recipient, whoever asks, so nobody's mailbox can be flooded.
    pub async fn resend_code(&self, caller: &Caller, parcel: &ParcelId) -> Result<(), AppError> {
        let p = self.parcel(caller, parcel).await?;
        // Anyone else who may see the parcel (its carrier, an auditor) is not its owner: to
        // them, as to strangers, there is no code to send.
        let allowed = caller.check(|pr| match pr {
            Principal::Person { id, .. } if p.recipient.as_ref() == Some(id) => Ok(()),
            other => policy::may_manage_site(other, &p.org, &p.site).map_err(|_| Denied::NotOwner),
        });
        if let Err(d) = allowed {
            return Err(self.refuse(caller, AuditAction::Notify, parcel_target(&p), d).await);
        }
        let Some(recipient) = p.recipient.as_ref().filter(|_| p.state == ParcelState::Notified)
        else {
            return Err(AppError::conflict(
                "parcel_state",
                "only a parcel waiting for pickup has a code to send again",
            ));
        };
        let budgets = Budgets::new(
            "resend",
            [(RESEND_PARCEL, p.id.to_string()), (RESEND_RECIPIENT, recipient.to_string())],
        );
        let mut denied =
            event(&caller.actor(), AuditAction::Notify, parcel_target(&p), self.now(), None);
        denied.outcome = Outcome::Denied;
        self.spend_or_throttle(&budgets, denied).await?;
        let (now, app, actor, id) = (self.now(), self.clone(), caller.actor(), p.id.clone());
        self.store()
            .write(move |tx| {
                async move {
                    let p = tx.parcel(&id).await?.ok_or(AppError::NotFound)?;
                    if p.state != ParcelState::Notified {
                        return Err(AppError::conflict(
                            "parcel_state",
                            "only a parcel waiting for pickup has a code to send again",
                        ));
                    }
                    tx.revoke_pickup_codes(&p.id, now).await?;
                    app.send_new_code(tx, &p, now).await?;
                    let resent = Some("resent".to_owned());
                    tx.append_audit(&event(
                        &actor,
                        AuditAction::Notify,
                        parcel_target(&p),
                        now,
                        resent,
                    ))?;
                    Ok(())
                }
                .boxed()
            })
            .await?;
        if let Some(bank) = &p.bank {
            self.codes_changed(bank);
        }
        Ok(())
    }

    /// Draws a new pickup code for a parcel in its compartment and queues the message that
    /// carries it to the recipient, in the caller's unit of work.
    async fn send_new_code(
        &self,
        tx: &mut Tx,
        p: &ParcelRow,
        now: Timestamp,
    ) -> Result<(), AppError> {
        let (Some(bank), Some(cid), Some(expires_at)) =
            (p.bank.clone(), p.compartment.clone(), p.expires_at)
        else {
            return Err(AppError::conflict("parcel_state", "parcel without a compartment"));
        };
        let Some(recipient) = &p.recipient else {
            return Err(AppError::conflict("no_recipient", "nobody is named for this parcel yet"));
        };
        let recipient = tx.person(recipient).await?.ok_or(AppError::NotFound)?;
        let compartment = tx.compartment(&cid).await?.ok_or(AppError::NotFound)?;
        let (bank_row, site) = crate::bank_site(tx, &bank).await?;
        let (code, record) = self.new_pickup_code(tx, p, &compartment, expires_at, now).await?;
        let token = PickupToken {
            bank: bank.clone(),
            compartment: compartment.number,
            parcel: p.id.clone(),
            code: record,
            expires_at,
        };
        let qr = self.sign_pickup_token(&token);
        let message = pickup_message(
            self,
            &recipient,
            &site,
            &bank_row,
            &compartment,
            Credentials { code: &code, qr: &qr },
            expires_at,
        );
        self.enqueue(tx, &message, Some(&p.id), now).await?;
        Ok(())
    }

    async fn new_pickup_code(
        &self,
        tx: &mut Tx,
        p: &ParcelRow,
        compartment: &CompartmentRow,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(PickupCode, CodeId), AppError> {
        for _ in 0..8 {
            let code = self.rng().pickup_code()?;
            let id = CodeId::from_random(self.rng().bytes()?);
            let record = NewPickupCode {
                id: id.clone(),
                parcel: p.id.clone(),
                bank: compartment.bank.clone(),
                compartment: compartment.id.clone(),
                code_hash: self
                    .code_hash(&compartment.bank, Some(compartment.number), &code)
                    .to_vec(),
                offline_verifier: self
                    .offline_verifier(&compartment.bank, compartment.number, &code)
                    .to_vec(),
                created_at: now,
                expires_at,
            };
            match tx.insert_pickup_code(&record).await {
                Ok(()) => return Ok((code, id)),
                // The bank already has this code: draw again.
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::conflict("code_space_exhausted", "could not draw an unused pickup code"))
    }

    /// The keyed hash a code is stored and found under: of bank, locker number and code (a
    /// code of the first format has no locker number).
    fn code_hash(
        &self,
        bank: &BankId,
        locker: Option<CompartmentNumber>,
        code: &PickupCode,
    ) -> [u8; 32] {
        let (bank, code) = (bank.as_str().as_bytes(), code.expose().as_bytes());
        match locker {
            Some(n) => self.keys().codes.hash(&[bank, b"locker", &n.get().to_be_bytes(), code]),
            None => self.keys().codes.hash(&[bank, code]),
        }
    }

    /// Sends notifications for deposited parcels whose notification did not go out (retry).
    pub async fn notify_pending(&self) -> Result<usize, AppError> {
        let pending = self
            .store()
            .read(|tx| async move { tx.parcels_awaiting_notification(100).await }.boxed())
            .await?;
        let mut sent = 0;
        for p in pending {
            match self.notify(&p.id).await {
                Ok(_) => sent += 1,
                Err(e) => {
                    tracing::warn!(parcel = %p.id, error = %e, "notification could not be queued");
                }
            }
        }
        Ok(sent)
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
    ) -> Result<(ParcelRow, Opening), AppError> {
        let p = self.parcel(caller, parcel).await?;
        if let Err(d) = caller.check(|pr| policy::may_return_to_carrier(pr, facts(&p))) {
            return Err(self
                .refuse(caller, AuditAction::ReturnToCarrier, parcel_target(&p), d)
                .await);
        }
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
    }

    /// Staff take a parcel out of the locker, saying why. Past the remote-open budget this
    /// becomes a request another member of the site's staff approves.
    pub async fn retrieve(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
        reason: &str,
    ) -> Result<OpenOrAsk<(ParcelRow, Opening)>, AppError> {
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        let p = self.parcel(caller, parcel).await?;
        if let Err(d) = caller.check(|pr| policy::may_manage_site(pr, &p.org, &p.site)) {
            return Err(self.refuse(caller, AuditAction::Retrieve, parcel_target(&p), d).await);
        }
        let bank = p
            .bank
            .clone()
            .ok_or_else(|| AppError::conflict("parcel_state", "the parcel is not in a locker"))?;
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
                        return Ok::<_, AppError>(OpenOrAsk::Pending(Box::new(request)));
                    }
                    let charge = person.as_ref().map_or(Charge::Free, Charge::Alone);
                    let words = Some(reason.as_str().to_owned());
                    let taken = app.take_out(tx, &p.id, &out, &actor, charge, words, now).await?;
                    Ok(OpenOrAsk::Opened(taken))
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
                "approval_stale",
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
        Ok((p, Opening { compartment, command }))
    }

    /// A door sensor reading from the calling device.
    pub async fn door_report(
        &self,
        caller: &Caller,
        number: u16,
        reading: DoorReading,
    ) -> Result<(), AppError> {
        let Caller::Principal(Principal::Device { bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let number = CompartmentNumber::new(number).map_err(AppError::invalid)?;
        let door = match reading {
            DoorReading::Open => DoorState::Open,
            DoorReading::Closed => DoorState::Closed,
            DoorReading::Unknown => DoorState::Unknown,
        };
        let (now, actor, bank, site) = (self.now(), caller.actor(), bank.clone(), site.clone());
        self.store()
            .write(move |tx| {
                async move {
                    let c =
                        tx.compartment_by_number(&bank, number).await?.ok_or(AppError::NotFound)?;
                    tx.set_door(&c.id, door, now).await?;
                    let target = Target {
                        site: Some(site),
                        bank: Some(bank),
                        compartment: Some(c.id.clone()),
                        parcel: c.parcel.clone(),
                    };
                    tx.append_audit(&event(
                        &actor,
                        AuditAction::DoorReport,
                        target,
                        now,
                        Some(format!("door_{door}")),
                    ))?;
                    Ok(())
                }
                .boxed()
            })
            .await
    }

    /// How the calling device dealt with an open command (audited; a refusal or a hardware
    /// failure is an incident for staff to look at).
    pub async fn command_result(
        &self,
        caller: &Caller,
        nonce: &str,
        outcome: &C,
    ) -> Result<(), AppError> {
        let Caller::Principal(Principal::Device { bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let (result, why) = match outcome {
            C::Unlocked => (Outcome::Success, "unlocked".to_owned()),
            C::Refused { reason } => (Outcome::Denied, format!("agent_refused:{}", clip(reason))),
            C::Failed { reason } => (Outcome::Failure, format!("agent_failed:{}", clip(reason))),
        };
        let nonce = clip(nonce);
        let e = AuditEvent {
            at: self.now(),
            actor: caller.actor(),
            action: AuditAction::OpenCommand,
            target: Target {
                site: Some(site.clone()),
                bank: Some(bank.clone()),
                ..Target::default()
            },
            outcome: result,
            reason: Some(format!("{why} nonce:{nonce}")),
            personal: None,
        };
        self.store().write(move |tx| async move { tx.append_audit(&e) }.boxed()).await?;
        Ok(())
    }
}

/// Text from a device, cut to a sane length and stripped of control characters before it goes
/// into the audit log.
fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

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
        return Err(AppError::conflict("parcel_state", "the parcel has no deposit under way"));
    };
    if !tx
        .move_compartment(&cid, CompartmentState::Reserved, CompartmentState::Free, None, now)
        .await?
    {
        return Err(AppError::conflict(
            "compartment_state",
            "the compartment is no longer reserved",
        ));
    }
    let bank = p.bank.clone().ok_or_else(|| AppError::conflict("parcel_state", "no bank"))?;
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
    /// The names of a parcel's carrier and recipient ("who delivered it, who may collect it"),
    /// for a caller already allowed to see the parcel.
    pub async fn parcel_parties(&self, p: &ParcelRow) -> Result<(String, String), AppError> {
        let (carrier, recipient) = (p.carrier.clone(), p.recipient.clone());
        self.store()
            .read(move |tx| {
                async move {
                    let carrier = tx
                        .carrier(&carrier)
                        .await?
                        .map_or_else(|| carrier.to_string(), |c| c.name.to_string());
                    let recipient = match recipient {
                        Some(id) => tx
                            .person(&id)
                            .await?
                            .map_or_else(|| id.to_string(), |r| r.name.to_string()),
                        None => crate::sight::UNADDRESSED.to_owned(),
                    };
                    Ok::<_, AppError>((carrier, recipient))
                }
                .boxed()
            })
            .await
    }
}

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
