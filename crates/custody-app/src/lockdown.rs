//! Lockdowns: a bank whose every compartment refuses every credential and every command
//! (DESIGN.md §4 invariant 9). Staff in scope lock a bank down at once, with a reason; locking
//! is the safe direction and needs nothing more. Lifting needs a step-up and a reason and, unless
//! the installation turns it off ([`crate::AppConfig::lockdown_lift_needs_approval`]), a second
//! person's approval. While a bank is locked down the server issues no open command for it;
//! every refused attempt is audited.

use crate::approvals::Approval;
use crate::conflicts::ConflictCode;
use custody_core::alert::{ANY_KIND, AlertKind, LockdownRule};
use custody_core::approval::ApprovalKind;
use custody_core::audit::{Actor, AuditAction, AuditEvent, Outcome, Target};
use custody_core::text::Reason;
use custody_core::{BankId, OrgId, SiteId, Timestamp, policy};
use futures_util::FutureExt as _;

use crate::approvals::new_request;
use crate::{App, AppError, Caller};

/// The answer to anything that would open a compartment of a locked-down bank.
pub(crate) fn locked_down() -> AppError {
    AppError::conflict(
        ConflictCode::LockedDown,
        "this bank is locked down: nothing opens until an admin lifts the lockdown",
    )
}

/// A bank's lockdown as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockdown {
    /// The bank.
    pub bank: BankId,
    /// When it was engaged.
    pub engaged_at: Timestamp,
    /// Who engaged it (an actor id).
    pub engaged_by: String,
}

/// What a request to lift a lockdown came to.
#[derive(Debug, Clone)]
pub enum Lift {
    /// Lifted.
    Lifted,
    /// Waiting for a second person's approval.
    Pending(Box<Approval>),
}

/// A lift as asked: what its approval's digest covers and what must still hold when approved.
pub(crate) struct LiftAsk {
    pub(crate) bank: BankId,
    pub(crate) site: SiteId,
    pub(crate) engaged_at: Timestamp,
}

impl LiftAsk {
    /// The request's exact parameters, canonical.
    pub(crate) fn params(&self, reason_sha256: &str) -> String {
        serde_json::json!({
            "bank": self.bank.as_str(),
            "engaged_at": self.engaged_at.as_millis(),
            "reason_sha256": reason_sha256,
            "site": self.site.as_str(),
        })
        .to_string()
    }

    /// What a stored request asked for.
    pub(crate) fn from_params(params: &str) -> Option<(Self, String)> {
        let v: serde_json::Value = serde_json::from_str(params).ok()?;
        let ask = Self {
            bank: v.get("bank")?.as_str()?.parse().ok()?,
            site: v.get("site")?.as_str()?.parse().ok()?,
            engaged_at: Timestamp::from_millis(v.get("engaged_at")?.as_i64()?),
        };
        Some((ask, v.get("reason_sha256")?.as_str()?.to_owned()))
    }
}

impl App {
    pub(crate) async fn bank_place(&self, bank: &BankId) -> Result<(OrgId, SiteId), AppError> {
        let bank = bank.clone();
        let (_, site) = self
            .store()
            .read(move |tx| async move { crate::bank_site(tx, &bank).await }.boxed())
            .await?;
        Ok((site.org, site.id))
    }

    /// The bank's lockdown, if it is locked down. For anyone who may see its site.
    pub async fn lockdown(
        &self,
        caller: &Caller,
        bank: &BankId,
    ) -> Result<Option<Lockdown>, AppError> {
        let (org, site) = self.bank_place(bank).await?;
        caller.unless_hidden(|p| policy::may_view_site(p, &org, &site))?;
        let lookup = bank.clone();
        let row =
            self.store().read(move |tx| async move { tx.lockdown(&lookup).await }.boxed()).await?;
        Ok(row.map(|(engaged_at, engaged_by)| Lockdown {
            bank: bank.clone(),
            engaged_at,
            engaged_by,
        }))
    }

    /// Whether `bank` is locked down: what its own agent is told (the device link has proved
    /// who is asking, so no caller is checked).
    pub async fn is_locked_down(&self, bank: &BankId) -> Result<bool, AppError> {
        let lookup = bank.clone();
        let row =
            self.store().read(move |tx| async move { tx.lockdown(&lookup).await }.boxed()).await?;
        Ok(row.is_some())
    }

    /// Locks a bank down, saying why: from now on none of its compartments opens, whatever
    /// the credential or the caller. Staff in scope; no step-up, because locking down is what
    /// someone does in a hurry and only ever closes doors. Engaging it twice changes nothing.
    pub async fn engage_lockdown(
        &self,
        caller: &Caller,
        bank: &BankId,
        reason: &str,
    ) -> Result<Lockdown, AppError> {
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        let (org, site) = self.bank_place(bank).await?;
        let target =
            Target { site: Some(site.clone()), bank: Some(bank.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::LockdownEngage, &target, |p| {
            policy::may_manage_site(p, &org, &site)
        })
        .await?;
        let (now, actor, app, person) =
            (self.now(), caller.actor(), self.clone(), caller.person().cloned());
        let by = actor.id.clone().unwrap_or_else(|| actor.kind.as_str().to_owned());
        let bank_id = bank.clone();
        self.store()
            .write(move |tx| {
                async move {
                    if tx.engage_lockdown(&bank_id, &by, now).await? {
                        let mut e = AuditEvent::success(
                            now,
                            actor.clone(),
                            AuditAction::LockdownEngage,
                            target,
                        );
                        if let Some(person) = person {
                            e.personal = app.seal_personal(tx, &person, reason.as_str()).await?;
                        }
                        tx.append_audit(&e)?;
                    }
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        self.lockdown_changed(bank, true);
        self.lockdown(caller, bank).await?.ok_or(AppError::NotFound)
    }

    /// A site's lockdown rules: which alerts lock its banks down as they are raised. Staff and
    /// auditors in scope.
    pub async fn lockdown_rules(
        &self,
        caller: &Caller,
        site: &SiteId,
    ) -> Result<Vec<LockdownRule>, AppError> {
        self.viewable_site(caller, site).await?;
        let site = site.clone();
        let rules =
            self.store().read(move |tx| async move { tx.lockdown_rules(&site).await }.boxed());
        Ok(rules.await?)
    }

    /// Sets the site's rule for its kind (or any kind), replacing the one it had. Admins in
    /// scope, without a step-up: a rule only ever closes doors. Audited.
    pub async fn set_lockdown_rule(
        &self,
        caller: &Caller,
        site: &SiteId,
        rule: LockdownRule,
    ) -> Result<Vec<LockdownRule>, AppError> {
        let kind = rule.kind_str();
        let what = format!("set:{kind}:{}:{}", rule.min_severity, rule.scope);
        self.change_rules(caller, site, what, false, move |tx, site, now| {
            async move { tx.put_lockdown_rule(site, &rule, now).await.map(|()| true) }.boxed()
        })
        .await
    }

    /// Removes the site's rule for `kind` (`None`: the one for any kind). Admins in scope with
    /// a step-up, since it lets doors stay open that would have closed. Audited.
    pub async fn remove_lockdown_rule(
        &self,
        caller: &Caller,
        site: &SiteId,
        kind: Option<AlertKind>,
    ) -> Result<Vec<LockdownRule>, AppError> {
        let what = format!("removed:{}", kind.map_or(ANY_KIND, AlertKind::as_str));
        self.change_rules(caller, site, what, true, move |tx, site, _| {
            async move { tx.delete_lockdown_rule(site, kind).await }.boxed()
        })
        .await
    }

    async fn change_rules<F>(
        &self,
        caller: &Caller,
        site: &SiteId,
        what: String,
        step_up: bool,
        change: F,
    ) -> Result<Vec<LockdownRule>, AppError>
    where
        F: for<'t> FnOnce(
                &'t mut custody_store::Tx,
                &'t SiteId,
                Timestamp,
            ) -> futures_util::future::BoxFuture<
                't,
                Result<bool, custody_store::StoreError>,
            > + Send
            + 'static,
    {
        let org = self.site(site).await?.org;
        let target = Target { site: Some(site.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::LockdownRule, &target, |p| {
            policy::may_manage_site(p, &org, site)
                .and_then(|()| if step_up { self.stepped_up(p) } else { Ok(()) })
        })
        .await?;
        let (now, actor, site) = (self.now(), caller.actor(), site.clone());
        let (rules, banks) = self
            .store()
            .write(move |tx| {
                async move {
                    if !change(tx, &site, now).await? {
                        return Err(AppError::NotFound);
                    }
                    let mut e =
                        AuditEvent::success(now, actor.clone(), AuditAction::LockdownRule, target);
                    e.reason = Some(what);
                    tx.append_audit(&e)?;
                    let banks = tx.banks(&site).await?;
                    Ok((tx.lockdown_rules(&site).await?, banks))
                }
                .boxed()
            })
            .await?;
        // Each agent applies the rules to its own readings, offline too.
        for bank in &banks {
            self.policy_changed(&bank.id);
        }
        Ok(rules)
    }

    /// Asks to lift a bank's lockdown, saying why: staff in scope, stepped up. With
    /// approvals on (the default) it becomes a request that another member of staff of the
    /// site approves; otherwise it is lifted at once.
    pub async fn lift_lockdown(
        &self,
        caller: &Caller,
        bank: &BankId,
        reason: &str,
    ) -> Result<Lift, AppError> {
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        let (org, site) = self.bank_place(bank).await?;
        let target =
            Target { site: Some(site.clone()), bank: Some(bank.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::LockdownLift, &target, |p| {
            policy::may_manage_site(p, &org, &site).and_then(|()| self.stepped_up(p))
        })
        .await?;
        let lookup = bank.clone();
        let Some((engaged_at, _)) =
            self.store().read(move |tx| async move { tx.lockdown(&lookup).await }.boxed()).await?
        else {
            return Err(AppError::conflict(
                ConflictCode::NotLockedDown,
                "that bank is not locked down",
            ));
        };
        let ask = LiftAsk { bank: bank.clone(), site: site.clone(), engaged_at };
        let (now, actor, app, person) =
            (self.now(), caller.actor(), self.clone(), caller.person().cloned());
        let needs_approval = self.config().lockdown_lift_needs_approval;
        if let (Some(requester), true) = (&person, needs_approval) {
            let digest =
                data_encoding::HEXLOWER.encode(&custody_crypto::sha256(reason.as_str().as_bytes()));
            let request = new_request(
                self,
                ApprovalKind::LiftLockdown,
                &org,
                bank.as_str(),
                ask.params(&digest),
                requester.clone(),
            )?;
            let (stored, requester) = (request.clone(), requester.clone());
            self.store()
                .write(move |tx| {
                    async move {
                        tx.insert_approval(&stored).await?;
                        let mut e = AuditEvent::success(
                            now,
                            actor.clone(),
                            AuditAction::ApprovalRequest,
                            target,
                        );
                        e.reason =
                            Some(format!("{}:{}:{}", stored.id, stored.kind, stored.subject));
                        e.personal = app.seal_personal(tx, &requester, reason.as_str()).await?;
                        tx.append_audit(&e)?;
                        Ok::<_, AppError>(())
                    }
                    .boxed()
                })
                .await?;
            return Ok(Lift::Pending(Box::new(request.into())));
        }
        self.store()
            .write(move |tx| {
                async move {
                    let mut e =
                        AuditEvent::success(now, actor.clone(), AuditAction::LockdownLift, target);
                    if let Some(person) = person {
                        e.personal = app.seal_personal(tx, &person, reason.as_str()).await?;
                    }
                    lift(tx, &ask, e).await
                }
                .boxed()
            })
            .await?;
        self.lockdown_changed(bank, false);
        Ok(Lift::Lifted)
    }

    /// Refuses, and audits, an attempt to open a compartment of `target`'s bank while it is
    /// locked down. Use cases call it before their unit of work, so the refusal is on the
    /// record; `issue_open` checks again inside the unit.
    pub(crate) async fn refuse_if_locked_down(
        &self,
        actor: &Actor,
        action: AuditAction,
        target: &Target,
    ) -> Result<(), AppError> {
        let Some(bank) = target.bank.clone() else { return Ok(()) };
        let locked = self
            .store()
            .read(move |tx| async move { tx.lockdown(&bank).await }.boxed())
            .await?
            .is_some();
        if !locked {
            return Ok(());
        }
        let mut e = AuditEvent::success(self.now(), actor.clone(), action, target.clone());
        e.outcome = Outcome::Denied;
        e.reason = Some("locked_down".into());
        self.store().write(move |tx| async move { tx.append_audit(&e) }.boxed()).await?;
        Err(locked_down())
    }
}

/// Lifts the lockdown `ask` read, recording `lifted`; a conflict when it is no longer the
/// lockdown that was asked about (lifted meanwhile, or lifted and engaged again).
pub(crate) async fn lift(
    tx: &mut custody_store::Tx,
    ask: &LiftAsk,
    lifted: AuditEvent,
) -> Result<(), AppError> {
    if !tx.lift_lockdown(&ask.bank, ask.engaged_at).await? {
        return Err(AppError::conflict(
            ConflictCode::ApprovalStale,
            "the lockdown changed since the request was made; look again",
        ));
    }
    tx.append_audit(&lifted)?;
    Ok(())
}
