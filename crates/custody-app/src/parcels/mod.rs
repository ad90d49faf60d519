//! The chain of custody: announce, deposit, notify, pick up, expire, return and retrieve.
//! Opening a compartment remotely is in `remote_opens`, beside the budget it spends.
//!
//! Here: the announcement, reading parcels, and what every use case shares (moving a parcel
//! from the state it was read in, the audit targets). Each other use case has its file:
//! `deposit`, `codes` (drawing and sending pickup codes), `pickup`, `leaving` (expiry, return,
//! retrieval) and `doors` (what the agent reports).
//!
//! Every method is one unit of work: the state change, the compartment change, the open command
//! and the audit entries commit together or not at all.

use crate::audit::AuditRecord;
use crate::compartments::Compartment;
use crate::conflicts::ConflictCode;
use crate::sites::Site;
use custody_core::audit::{Actor, AuditAction, AuditEvent, Outcome, Target};
use custody_core::compartment::{CompartmentNumber, CompartmentState, SizeClass};
use custody_core::parcel::{ParcelEvent, ParcelState};
use custody_core::person::Role;
use custody_core::policy::{self, ParcelFacts, Principal};
use custody_core::text::{Email, TrackingRef};
use custody_core::throttle::{BANK_PICKUP, BANK_PICKUP_DAY};
use custody_core::{BankId, CarrierId, ParcelId, SiteId, Timestamp};
use custody_proto::device::SignedOpenCommand;
use custody_store::{CodeRefused, CompartmentRow, ParcelRow, PersonRow, StoreError, Tx};
use futures_util::FutureExt as _;

use crate::personal::Statement;
use crate::throttle::Budgets;
use crate::{App, AppError, Caller};

use custody_core::{CompartmentId, OrgId, PersonId};

/// A parcel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parcel {
    /// Id.
    pub id: ParcelId,
    /// Organisation.
    pub org: OrgId,
    /// Site.
    pub site: SiteId,
    /// Bank, once a compartment is assigned.
    pub bank: Option<BankId>,
    /// Compartment, once assigned.
    pub compartment: Option<CompartmentId>,
    /// Delivering carrier.
    pub carrier: CarrierId,
    /// Who may collect it: none for a parcel announced for an address that matched no resident
    /// of the site, until the site's staff name one.
    pub recipient: Option<PersonId>,
    /// The carrier's tracking number; `None` once the recipient has been erased.
    pub tracking_ref: Option<TrackingRef>,
    /// Size class.
    pub size: SizeClass,
    /// Needs an accessible compartment.
    pub needs_accessible: bool,
    /// Needs a refrigerated compartment.
    pub needs_refrigerated: bool,
    /// Lifecycle state.
    pub state: ParcelState,
    /// Announced.
    pub created_at: Timestamp,
    /// Deposited.
    pub deposited_at: Option<Timestamp>,
    /// Recipient notified.
    pub notified_at: Option<Timestamp>,
    /// End of the pickup window.
    pub expires_at: Option<Timestamp>,
    /// Left the locker for good (picked up, returned, retrieved).
    pub closed_at: Option<Timestamp>,
    /// Last change.
    pub updated_at: Timestamp,
}

impl App {
    /// A stored parcel as its view: its tracking number opened (it is sealed under the
    /// installation's tracking key, bound to the parcel).
    pub(crate) fn parcel_view(&self, row: ParcelRow) -> Result<Parcel, AppError> {
        let tracking_ref = match &row.tracking_ref {
            Some(stored) => Some(self.open_tracking_ref(&row.id, stored)?),
            None => None,
        };
        Ok(Parcel {
            id: row.id,
            org: row.org,
            site: row.site,
            bank: row.bank,
            compartment: row.compartment,
            carrier: row.carrier,
            recipient: row.recipient,
            tracking_ref,
            size: row.size,
            needs_accessible: row.needs_accessible,
            needs_refrigerated: row.needs_refrigerated,
            state: row.state,
            created_at: row.created_at,
            deposited_at: row.deposited_at,
            notified_at: row.notified_at,
            expires_at: row.expires_at,
            closed_at: row.closed_at,
            updated_at: row.updated_at,
        })
    }

    /// Stored parcels as their views.
    pub(crate) fn parcel_views(&self, rows: Vec<ParcelRow>) -> Result<Vec<Parcel>, AppError> {
        rows.into_iter().map(|row| self.parcel_view(row)).collect()
    }
}

mod custody;

pub use custody::ProvenEvent;
mod codes;
mod deposit;
mod doors;
mod leaving;
mod pickup;

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
    pub parcel: Parcel,
    /// The reserved compartment.
    pub compartment: Compartment,
    /// The command that opens it, for the bank's agent.
    pub command: SignedOpenCommand,
}

/// A compartment being opened for a reason other than a pickup.
#[derive(Debug, Clone)]
pub struct Opening {
    /// The compartment.
    pub compartment: Compartment,
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
pub(crate) fn lives_at(person: &PersonRow, site: &Site) -> bool {
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
        Err(e) => AppError::conflict(ConflictCode::ParcelState, e.to_string()),
        Ok(_) => AppError::conflict(
            ConflictCode::ParcelState,
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
    let id = p.compartment.clone().ok_or_else(|| {
        AppError::conflict(ConflictCode::ParcelState, "parcel has no compartment")
    })?;
    let c = tx.compartment(&id).await?.ok_or(AppError::NotFound)?;
    if !tx
        .move_compartment(&id, CompartmentState::Occupied, CompartmentState::Free, None, now)
        .await?
    {
        return Err(AppError::conflict(
            ConflictCode::CompartmentState,
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
        AuditEvent::ended(outcome, self.now, self.actor.clone(), AuditAction::PickupAttempt, target)
            .because(reason)
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
    AuditEvent::success(now, actor.clone(), action, target).with_reason(reason)
}

// What each caller may see of a parcel they may see at all.
//
// A carrier announces parcels by e-mail address, and an address that matches no resident is
// accepted like any other (`unaddressed`), so what a carrier sees of any parcel must be the
// same whether or not a resident was found: never who it is for, nor whether and when they
// were told. The recipient, the site's staff and its auditors see the parcel as it is.

/// How a parcel with no recipient names its recipient to those who may see it.
pub const UNADDRESSED: &str = "nobody named yet (held for the site's staff)";

/// A parcel as `caller`, already allowed to see it, may see it. A carrier's couriers and keys
/// see neither who it is for nor whether and when anyone was told: a parcel waiting for its
/// recipient reads `deposited` to them, as does a parcel nobody could be told about.
pub fn as_seen_by(caller: &Caller, mut p: Parcel) -> Parcel {
    if caller.check(policy::may_see_recipient).is_err() {
        p.recipient = None;
        p.notified_at = None;
        if p.state == ParcelState::Notified {
            p.state = ParcelState::Deposited;
        }
    }
    p
}

/// The entries of a parcel's chain of custody `caller` may see: all of them, except that a
/// carrier sees only its own part ([`policy::carrier_sees`]).
pub(crate) fn entries_seen_by<T>(
    caller: &Caller,
    entries: Vec<T>,
    action: impl Fn(&T) -> AuditAction,
) -> Vec<T> {
    if caller.check(policy::may_see_recipient).is_ok() {
        return entries;
    }
    entries.into_iter().filter(|e| policy::carrier_sees(action(e))).collect()
}

impl App {
    /// Loads a parcel the caller may see. A parcel the caller may not see is `NotFound`, the
    /// same as one that does not exist (and the attempt is audited).
    pub async fn parcel(&self, caller: &Caller, id: &ParcelId) -> Result<Parcel, AppError> {
        self.parcel_row(caller, id).await.and_then(|row| self.parcel_view(row))
    }

    /// [`App::parcel`] as stored, for the use cases that go on to change it.
    pub(crate) async fn parcel_row(
        &self,
        caller: &Caller,
        id: &ParcelId,
    ) -> Result<ParcelRow, AppError> {
        let lookup = id.clone();
        let parcel = self
            .store()
            .read(move |tx| async move { tx.parcel(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        let target = Target { parcel: Some(id.clone()), ..Target::default() };
        self.authorize_sight(caller, AuditAction::AccessDenied, &target, |p| {
            policy::may_view_parcel(p, facts(&parcel))
        })
        .await?;
        Ok(parcel)
    }

    /// A parcel and its chain of custody, oldest event first, each event with the words given
    /// for it as the caller may see them.
    pub async fn parcel_history(
        &self,
        caller: &Caller,
        id: &ParcelId,
    ) -> Result<(Parcel, Vec<(AuditRecord, Statement)>), AppError> {
        let parcel = self.parcel_row(caller, id).await?;
        let pid = parcel.id.clone();
        let history = self
            .store()
            .read(move |tx| async move { tx.audit_for_parcel(&pid).await }.boxed())
            .await?;
        let history = entries_seen_by(caller, history, |row| row.event.action);
        let statements = self.statements(caller, &parcel.org, &parcel.site, &history).await?;
        let history = history.into_iter().map(AuditRecord::from).zip(statements).collect();
        Ok((as_seen_by(caller, self.parcel_view(parcel)?), history))
    }

    /// The parcels the caller may see: a resident's own, a carrier's (within its sites), or a
    /// site's for staff and auditors.
    pub async fn visible_parcels(
        &self,
        caller: &Caller,
        site: Option<&SiteId>,
        limit: u32,
    ) -> Result<Vec<Parcel>, AppError> {
        let limit = limit.clamp(1, 500);
        match (caller, site) {
            (Caller::Principal(Principal::Person { id, standing, .. }), None)
                if standing.role == Role::Resident =>
            {
                let id = id.clone();
                self.parcel_views(
                    self.store()
                        .read(move |tx| {
                            async move { tx.parcels_for_recipient(&id, limit).await }.boxed()
                        })
                        .await?,
                )
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
                all.into_iter()
                    .filter(|parcel| policy::may_view_parcel(p, facts(parcel)).is_ok())
                    .map(|parcel| Ok(as_seen_by(caller, self.parcel_view(parcel)?)))
                    .collect()
            }
            (_, Some(site)) => {
                self.viewable_site(caller, site).await?;
                let site = site.clone();
                self.parcel_views(
                    self.store()
                        .read(move |tx| {
                            async move { tx.parcels_at_site(&site, limit).await }.boxed()
                        })
                        .await?,
                )
            }
            _ => Err(AppError::Invalid("name a site".into())),
        }
    }

    /// A carrier announces a parcel for a resident of a site.
    pub async fn expect_parcel(
        &self,
        caller: &Caller,
        spec: ParcelSpec,
    ) -> Result<Parcel, AppError> {
        let site = self.site(&spec.site).await?;
        let target = Target { site: Some(site.id.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::ParcelExpect, &target, |p| {
            policy::may_deposit(p, &site.org, &site.id, &spec.carrier)
        })
        .await?;
        let email = Email::parse(&spec.recipient_email).map_err(AppError::invalid)?;
        let index = self.email_index(&email);
        let tracking_ref = TrackingRef::parse(&spec.tracking_ref).map_err(AppError::invalid)?;
        let now = self.now();
        let id = ParcelId::from_random(self.rng().bytes()?);
        let (actor, app) = (caller.actor(), self.clone());
        self.store()
            .write(move |tx| {
                async move {
                    let carrier = tx.carrier(&spec.carrier).await?.ok_or(AppError::NotFound)?;
                    // An address that matches no resident is accepted all the same and the
                    // parcel held for the site's staff: a distinct answer would tell any
                    // carrier key who lives where.
                    let recipient =
                        tx.person_by_email_index(&index).await?.filter(|p| lives_at(p, &site));
                    if carrier.org != site.org {
                        return Err(AppError::NotFound);
                    }
                    let tracking_ref = Some(app.seal_tracking_ref(&id, &tracking_ref)?);
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
            .and_then(|p| self.parcel_view(p))
    }
}

impl App {
    /// The names of a parcel's carrier and recipient ("who delivered it, who may collect it"),
    /// for a caller already allowed to see the parcel.
    pub async fn parcel_parties(&self, p: &Parcel) -> Result<(String, String), AppError> {
        let (carrier, recipient, app) = (p.carrier.clone(), p.recipient.clone(), self.clone());
        self.store()
            .read(move |tx| {
                async move {
                    let carrier = tx
                        .carrier(&carrier)
                        .await?
                        .map_or_else(|| carrier.to_string(), |c| c.name.to_string());
                    let recipient = match recipient {
                        Some(id) => {
                            let row = tx.person(&id).await?;
                            let details = row.map(|r| app.open_details(&r)).transpose()?.flatten();
                            // Someone erased is named by their id alone.
                            details.map_or_else(|| id.to_string(), |(_, name)| name.to_string())
                        }
                        None => UNADDRESSED.to_owned(),
                    };
                    Ok::<_, AppError>((carrier, recipient))
                }
                .boxed()
            })
            .await
    }
}
