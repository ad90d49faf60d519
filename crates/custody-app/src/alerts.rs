//! Alerts (`docs/design/0007-incidents.md`): raised by a bank's agent from its sensors, or by
//! the server from what it sees itself. A reading of something already live (open or
//! acknowledged, same bank, compartment and kind) joins that alert instead of raising another.
//! Staff in scope see them; admins in scope acknowledge (and so own), note and resolve them.
//! Every step is on the alert's timeline and in the audit log, in the same unit of work.
//!
//! A site's lockdown rules ([`App::set_lockdown_rule`]) say which new alerts lock down their
//! bank, or the whole site, in the unit of work that raises them; the agents are told at once.
//! Lifting is as ever: an admin with a step-up and a reason, and a second person's approval.

use crate::conflicts::ConflictCode;
use std::collections::{BTreeMap, BTreeSet};

use custody_core::alert::{AlertKind, AlertStep, LockdownScope};
use custody_core::audit::{Actor, AuditAction, AuditEvent, Target};
use custody_core::compartment::CompartmentNumber;
use custody_core::policy::{self, Principal};
use custody_core::text::Reason;
use custody_core::{AlertId, BankId, DeviceId, PersonId, SiteId, Timestamp};
use custody_store::{AlertEventRow, AlertRow, NewAlert, Tx};
use futures_util::FutureExt as _;

use crate::personal::Field;
use crate::{App, AppError, Caller};

use custody_core::OrgId;
use custody_core::alert::{AlertState, Severity};

view! {
    /// An alert.
    Alert from AlertRow {
        /// Id.
        id: AlertId,
        /// Organisation.
        org: OrgId,
        /// Site.
        site: SiteId,
        /// Bank, unless it concerns the site as a whole.
        bank: Option<BankId>,
        /// Compartment number, unless it concerns the bank as a whole.
        compartment: Option<u16>,
        /// What it is about.
        kind: AlertKind,
        /// How serious.
        severity: Severity,
        /// Where it stands.
        state: AlertState,
        /// Who acknowledged it.
        owner: Option<PersonId>,
        /// Readings that raised it or joined it.
        readings: u64,
        /// Raised.
        raised_at: Timestamp,
        /// Last changed.
        updated_at: Timestamp,
    }
}
/// One entry of an alert's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    /// Its place in the timeline, from 1.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// Who (an actor id: a person, a device, `system`).
    pub actor: String,
    /// What: `raised`, `reading`, `acknowledged`, `note`, `resolved`.
    pub what: String,
    /// The note or reason given, if any (a person's words are gone once they are erased).
    pub note: Option<String>,
}

/// How many alerts a list shows at most.
const LIST_LIMIT: u32 = 200;

/// An alert with its timeline.
#[derive(Debug, Clone)]
pub struct AlertTimeline {
    /// The alert.
    pub alert: Alert,
    /// What happened to it, in order.
    pub timeline: Vec<AlertEvent>,
}

/// Alerts, with what a person needs to read them.
#[derive(Debug, Clone)]
pub struct AlertBoard {
    /// The alerts (a board's: the live ones, newest first).
    pub alerts: Vec<Alert>,
    /// The names of their sites' banks.
    pub banks: BTreeMap<BankId, String>,
    /// The names of the alerts' owners.
    pub owners: BTreeMap<PersonId, String>,
}

/// Where an alert is raised.
#[derive(Debug, Clone)]
pub struct AlertAt {
    /// The site.
    pub site: SiteId,
    /// The bank, unless it concerns the site as a whole.
    pub bank: Option<BankId>,
    /// The compartment's number, unless it concerns the bank as a whole.
    pub compartment: Option<CompartmentNumber>,
}

impl App {
    /// A reading the calling device's sensors made at `at` (its clock, never later than now),
    /// journaled there under `counter`: raises an alert of `kind` for its bank, or joins the
    /// live one. Only sensor kinds, and only compartments of its own bank. A reading sent again
    /// (its acknowledgement was lost) is taken once: `None` the second time.
    pub async fn sensor_reading(
        &self,
        caller: &Caller,
        kind: AlertKind,
        compartment: Option<u16>,
        at: Timestamp,
        counter: u64,
    ) -> Result<Option<AlertId>, AppError> {
        let Caller::Principal(Principal::Device { device, bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let counter = i64::try_from(counter)
            .map_err(|_| AppError::Invalid("a journal counter out of range".into()))?;
        if !kind.from_sensor() {
            return Err(AppError::Invalid(format!("a device does not report {kind}")));
        }
        let compartment = match compartment {
            Some(n) => {
                let n = CompartmentNumber::new(n).map_err(|e| AppError::Invalid(e.to_string()))?;
                if !self.bank_compartment_numbers(bank).await?.contains(&n.get()) {
                    return Err(AppError::Invalid(format!("bank has no compartment {n}")));
                }
                Some(n)
            }
            None => None,
        };
        let place = AlertAt { site: site.clone(), bank: Some(bank.clone()), compartment };
        let at = Timestamp::from_millis(at.as_millis().min(self.now().as_millis()));
        self.raise(&caller.actor(), kind, place, at, Some((device.clone(), counter))).await
    }

    /// Raises an alert the server noticed itself (`device_offline`, `brute_force`, …), or joins
    /// the live one.
    pub async fn raise_alert(&self, kind: AlertKind, place: AlertAt) -> Result<AlertId, AppError> {
        let raised = self.raise(&Actor::system(), kind, place, self.now(), None).await?;
        raised.ok_or_else(|| {
            AppError::Invalid("an alert the server raises is never taken twice".into())
        })
    }

    /// A bank's budget for typed credentials is spent: someone is guessing there. Raised (or
    /// joined) after the refusal is on the record; a failure to raise it is logged, never
    /// turned into another answer at the kiosk.
    pub(crate) async fn budget_spent(&self, site: &SiteId, bank: &BankId) {
        let place = AlertAt { site: site.clone(), bank: Some(bank.clone()), compartment: None };
        if let Err(e) = self.raise_alert(AlertKind::BruteForce, place).await {
            tracing::error!(error = %e, %bank, "could not raise a brute-force alert");
        }
    }

    /// Banks with an enrolled device, with their sites: whose agents should be connected.
    pub async fn enrolled_banks(&self) -> Result<Vec<(BankId, SiteId)>, AppError> {
        let banks = self.store().read(|tx| async move { tx.enrolled_banks().await }.boxed());
        Ok(banks.await?)
    }

    /// A bank's agent is connected again after an outage long enough to raise
    /// `device_offline`: the live alert says so on its timeline (and in the audit log), for
    /// whoever is looking into it. The alert stays for them to resolve.
    pub async fn device_back(&self, site: &SiteId, bank: &BankId) -> Result<(), AppError> {
        let key = custody_store::live_key(site, Some(bank), None, AlertKind::DeviceOffline);
        let now = self.now();
        let target =
            Target { site: Some(site.clone()), bank: Some(bank.clone()), ..Target::default() };
        let noted = self
            .store()
            .write(move |tx| {
                async move {
                    let Some(id) = tx.live_alert(&key).await? else { return Ok(false) };
                    tx.add_alert_event(&id, now, "system", "back_online", None).await?;
                    tx.append_audit(
                        &AuditEvent::success(now, Actor::system(), AuditAction::AlertNote, target)
                            .because(format!("{id}:back_online")),
                    )?;
                    Ok::<_, AppError>(true)
                }
                .boxed()
            })
            .await?;
        if noted {
            self.alert_changed(site);
        }
        Ok(())
    }

    /// Someone opens many doors of a bank: past the remote-open budget (an open now waits for
    /// a second person) or over the hourly cap of bulk opens (refused). Raised (or joined)
    /// after the unit that held or refused it; a failure to raise it is logged.
    pub(crate) async fn bulk_open_alert(&self, site: &SiteId, bank: &BankId) {
        let place = AlertAt { site: site.clone(), bank: Some(bank.clone()), compartment: None };
        if let Err(e) = self.raise_alert(AlertKind::BulkOpen, place).await {
            tracing::error!(error = %e, %bank, "could not raise a bulk-open alert");
        }
    }

    async fn raise(
        &self,
        actor: &Actor,
        kind: AlertKind,
        place: AlertAt,
        at: Timestamp,
        reading: Option<(DeviceId, i64)>,
    ) -> Result<Option<AlertId>, AppError> {
        let id = self.new_id(AlertId::from_random)?;
        let now = self.now();
        let (actor, app, site) = (actor.clone(), self.clone(), place.site.clone());
        let raised = self
            .store()
            .write(move |tx| {
                async move {
                    if let Some((device, counter)) = &reading
                        && !tx.note_sensor_reading(device, *counter, now).await?
                    {
                        return Ok(None);
                    }
                    let site = tx.site(&place.site).await?.ok_or(AppError::NotFound)?;
                    let alert = NewAlert {
                        id,
                        org: site.org.clone(),
                        site: site.id.clone(),
                        bank: place.bank.clone(),
                        compartment: place.compartment.map(CompartmentNumber::get),
                        kind,
                        severity: kind.default_severity(),
                    };
                    let (id, new) = tx.raise_alert(&alert, now).await?;
                    let what = if new { "raised" } else { "reading" };
                    let who = actor.id.clone().unwrap_or_else(|| "system".to_owned());
                    tx.add_alert_event(&id, at, &who, what, None).await?;
                    let target = target_of(tx, &place).await?;
                    tx.append_audit(
                        &AuditEvent::success(at, actor, AuditAction::AlertRaise, target)
                            .because(format!("{id}:{kind}:{what}")),
                    )?;
                    let locked = if new {
                        app.queue_notifications(tx, &id, &alert.site, alert.severity, now).await?;
                        lock_by_rule(tx, &alert, &id, now).await?
                    } else {
                        Vec::new()
                    };
                    Ok::<_, AppError>(Some((id, locked)))
                }
                .boxed()
            })
            .await?;
        let Some((id, locked)) = raised else { return Ok(None) };
        self.alert_changed(&site);
        for bank in &locked {
            self.lockdown_changed(bank, true);
        }
        Ok(Some(id))
    }

    /// A site's alerts, newest first; with `live_only`, those not resolved. Staff and auditors
    /// in scope.
    pub async fn alerts(
        &self,
        caller: &Caller,
        site: &SiteId,
        live_only: bool,
    ) -> Result<Vec<Alert>, AppError> {
        self.viewable_site(caller, site).await?;
        let site = site.clone();
        self.store()
            .read(move |tx| {
                async move { tx.alerts_of_site(&site, live_only, LIST_LIMIT).await }.boxed()
            })
            .await
            .map(crate::views)
            .map_err(Into::into)
    }

    /// A site's live alerts for a board (the portal's live list), with the names of their banks
    /// and owners. Staff and auditors in scope.
    pub async fn alert_board(
        &self,
        caller: &Caller,
        site: &SiteId,
    ) -> Result<AlertBoard, AppError> {
        let alerts = self.alerts(caller, site, true).await?;
        self.name_alerts(alerts).await
    }

    /// `alerts`, which the caller was allowed to read, with the names of their banks and owners.
    pub async fn name_alerts(&self, alerts: Vec<Alert>) -> Result<AlertBoard, AppError> {
        let sites: BTreeSet<SiteId> = alerts.iter().map(|a| a.site.clone()).collect();
        let owners: BTreeSet<PersonId> = alerts.iter().filter_map(|a| a.owner.clone()).collect();
        let app = self.clone();
        let (banks, owners) = self
            .store()
            .read(move |tx| {
                async move {
                    let mut banks = BTreeMap::new();
                    for site in sites {
                        banks.extend(
                            tx.banks(&site).await?.into_iter().map(|b| (b.id, b.name.to_string())),
                        );
                    }
                    let mut names = BTreeMap::new();
                    for id in owners {
                        let row = tx.person(&id).await?;
                        if let Some((_, name)) =
                            row.map(|p| app.open_details(&p)).transpose()?.flatten()
                        {
                            names.insert(id, name.to_string());
                        }
                    }
                    Ok::<_, AppError>((banks, names))
                }
                .boxed()
            })
            .await?;
        Ok(AlertBoard { alerts, banks, owners })
    }

    /// One alert with its timeline. Staff and auditors in scope; out of scope it does not exist.
    pub async fn alert(&self, caller: &Caller, id: &AlertId) -> Result<AlertTimeline, AppError> {
        let (lookup, app) = (id.clone(), self.clone());
        let found = self
            .store()
            .read(move |tx| {
                async move {
                    let Some(alert) = tx.alert(&lookup).await? else { return Ok(None) };
                    let rows = tx.alert_events(&lookup).await?;
                    let timeline = app.alert_events(tx, rows).await?;
                    Ok::<_, AppError>(Some(AlertTimeline { alert: alert.into(), timeline }))
                }
                .boxed()
            })
            .await?
            .ok_or(AppError::NotFound)?;
        let (org, site) = (&found.alert.org, &found.alert.site);
        let target = Target { site: Some(site.clone()), ..Target::default() };
        self.authorize_sight(caller, AuditAction::AccessDenied, &target, |p| {
            policy::may_view_site(p, org, site)
        })
        .await?;
        Ok(found)
    }

    /// An admin in scope takes an alert: it is theirs from now on.
    pub async fn acknowledge_alert(
        &self,
        caller: &Caller,
        id: &AlertId,
    ) -> Result<Alert, AppError> {
        self.step(caller, id, AlertStep::Acknowledge, None).await.map(Into::into)
    }

    /// An admin in scope closes an alert, saying what it was.
    pub async fn resolve_alert(
        &self,
        caller: &Caller,
        id: &AlertId,
        reason: &str,
    ) -> Result<Alert, AppError> {
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        self.step(caller, id, AlertStep::Resolve, Some(reason)).await.map(Into::into)
    }

    /// An admin in scope adds a note to an alert's timeline, resolved or not.
    pub async fn note_alert(
        &self,
        caller: &Caller,
        id: &AlertId,
        note: &str,
    ) -> Result<Alert, AppError> {
        let note = Reason::parse(note).map_err(AppError::invalid)?;
        let found = self.manageable(caller, id, AuditAction::AlertNote).await?;
        let (now, actor, id, site) = (self.now(), caller.actor(), id.clone(), found.site.clone());
        let (writer, app) = (caller.person().cloned(), self.clone());
        let noted = self
            .store()
            .write(move |tx| {
                async move {
                    let who = actor.id.clone().unwrap_or_default();
                    let words = Some(note.as_str());
                    app.add_words(tx, (&id, now, &who, "note"), writer.as_ref(), words).await?;
                    tx.append_audit(&alert_event(&found, &actor, AuditAction::AlertNote, now))?;
                    tx.alert(&id).await?.ok_or(AppError::NotFound)
                }
                .boxed()
            })
            .await?;
        self.alert_changed(&site);
        Ok(noted.into())
    }

    /// The alert, if the caller may act on it (an admin in scope); a refusal is audited.
    async fn manageable(
        &self,
        caller: &Caller,
        id: &AlertId,
        action: AuditAction,
    ) -> Result<Alert, AppError> {
        let found = self.alert(caller, id).await?.alert;
        let target = Target { site: Some(found.site.clone()), ..Target::default() };
        self.authorize(caller, action, &target, |p| {
            policy::may_manage_site(p, &found.org, &found.site)
        })
        .await?;
        Ok(found)
    }

    async fn step(
        &self,
        caller: &Caller,
        id: &AlertId,
        step: AlertStep,
        reason: Option<Reason>,
    ) -> Result<AlertRow, AppError> {
        let action = match step {
            AlertStep::Acknowledge => AuditAction::AlertAcknowledge,
            AlertStep::Resolve => AuditAction::AlertResolve,
        };
        let found = self.manageable(caller, id, action).await?;
        let to = found
            .state
            .apply(step)
            .map_err(|e| AppError::conflict(ConflictCode::AlertState, e.to_string()))?;
        let (now, actor, id, person) =
            (self.now(), caller.actor(), id.clone(), caller.person().cloned());
        let (app, site) = (self.clone(), found.site.clone());
        let moved = self
            .store()
            .write(move |tx| {
                async move {
                    let owner =
                        (step == AlertStep::Acknowledge).then_some(person.as_ref()).flatten();
                    if !tx.move_alert(&id, found.state, to, owner, now).await? {
                        return Err(AppError::conflict(
                            ConflictCode::AlertState,
                            "the alert changed meanwhile; look again",
                        ));
                    }
                    let what = match step {
                        AlertStep::Acknowledge => "acknowledged",
                        AlertStep::Resolve => "resolved",
                    };
                    let who = actor.id.clone().unwrap_or_default();
                    let note = reason.as_ref().map(Reason::as_str);
                    app.add_words(tx, (&id, now, &who, what), person.as_ref(), note).await?;
                    let mut e = alert_event(&found, &actor, action, now);
                    if let (Some(person), Some(reason)) = (&person, &reason) {
                        e.personal = app.seal_personal(tx, person, reason.as_str()).await?;
                    }
                    tx.append_audit(&e)?;
                    tx.alert(&id).await?.ok_or(AppError::NotFound)
                }
                .boxed()
            })
            .await?;
        self.alert_changed(&site);
        Ok(moved)
    }
}

/// Locks down what the site's rules say a new `alert` locks down, in the unit that raises it:
/// its bank, or every bank of its site. Each lockdown engaged is audited and on the alert's
/// timeline; returns the banks locked down by it (not those locked down already).
async fn lock_by_rule(
    tx: &mut Tx,
    alert: &NewAlert,
    id: &AlertId,
    now: Timestamp,
) -> Result<Vec<BankId>, AppError> {
    let rules = tx.lockdown_rules(&alert.site).await?;
    let scope =
        rules.iter().filter(|r| r.matches(alert.kind, alert.severity)).map(|r| r.scope).max();
    let banks = match scope {
        None => return Ok(Vec::new()),
        Some(LockdownScope::Site) => {
            tx.banks(&alert.site).await?.into_iter().map(|b| b.id).collect()
        }
        Some(LockdownScope::Bank) => alert.bank.iter().cloned().collect::<Vec<_>>(),
    };
    let by = format!("alert:{id}");
    let mut locked = Vec::new();
    for bank in banks {
        if !tx.engage_lockdown(&bank, &by, now).await? {
            continue;
        }
        tx.add_alert_event(id, now, "system", "locked_down", Some(bank.as_str())).await?;
        tx.append_audit(
            &AuditEvent::success(
                now,
                Actor::system(),
                AuditAction::LockdownEngage,
                Target {
                    site: Some(alert.site.clone()),
                    bank: Some(bank.clone()),
                    ..Target::default()
                },
            )
            .because(format!("{by}:{}", alert.kind)),
        )?;
        locked.push(bank);
    }
    Ok(locked)
}

/// The audit entry of a step on `alert` by `actor`.
/// Where a timeline entry goes: the alert, when, who (an actor id), what.
type Entry<'a> = (&'a AlertId, Timestamp, &'a str, &'a str);

impl App {
    /// Adds a timeline entry with the words given: sealed under the writer's own key when a
    /// person wrote them (none are kept for someone erased), as they are otherwise.
    async fn add_words(
        &self,
        tx: &mut Tx,
        (alert, at, actor, what): Entry<'_>,
        writer: Option<&PersonId>,
        words: Option<&str>,
    ) -> Result<(), AppError> {
        let (Some(person), Some(words)) = (writer, words) else {
            return Ok(tx.add_alert_event(alert, at, actor, what, words).await?);
        };
        match self.subject_sealer(tx, person).await? {
            Some(key) => {
                let sealed = key.seal(Field::AlertNote, words)?;
                tx.add_sealed_alert_event(alert, at, actor, what, &sealed).await?;
            }
            None => tx.add_alert_event(alert, at, actor, what, None).await?,
        }
        Ok(())
    }

    /// A timeline as its view: each person's words opened with their key.
    async fn alert_events(
        &self,
        tx: &mut Tx,
        rows: Vec<AlertEventRow>,
    ) -> Result<Vec<AlertEvent>, AppError> {
        let mut sealers = BTreeMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let note = match (&row.note_sealed, PersonId::parse(&row.actor)) {
                (Some(words), Ok(writer)) => {
                    if !sealers.contains_key(&writer) {
                        let key = self.existing_subject_sealer(tx, &writer).await?;
                        sealers.insert(writer.clone(), key);
                    }
                    match sealers.get(&writer) {
                        Some(Some(key)) => Some(key.open(Field::AlertNote, words)?),
                        _ => None,
                    }
                }
                _ => row.note,
            };
            out.push(AlertEvent {
                seq: row.seq,
                at: row.at,
                actor: row.actor,
                what: row.what,
                note,
            });
        }
        Ok(out)
    }
}

fn alert_event(alert: &Alert, actor: &Actor, action: AuditAction, at: Timestamp) -> AuditEvent {
    AuditEvent::success(
        at,
        actor.clone(),
        action,
        Target { site: Some(alert.site.clone()), bank: alert.bank.clone(), ..Target::default() },
    )
    .because(format!("{}:{}", alert.id, alert.kind))
}

/// The audit target of an alert raised at `place`: its site, bank and compartment.
async fn target_of(tx: &mut Tx, place: &AlertAt) -> Result<Target, AppError> {
    let compartment = match (&place.bank, place.compartment) {
        (Some(bank), Some(n)) => tx.compartment_by_number(bank, n).await?.map(|c| c.id),
        _ => None,
    };
    Ok(Target {
        site: Some(place.site.clone()),
        bank: place.bank.clone(),
        compartment,
        ..Target::default()
    })
}
