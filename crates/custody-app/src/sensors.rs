//! A bank's sensor settings and the policy its agent applies (`docs/design/0007-incidents.md`):
//! how many readings of each kind within how long count as one, how long a door may stand
//! open, and the site's lockdown rules, which the agent applies to its own readings so that a
//! pry locks the bank down even while the server is unreachable.
//!
//! Staff and auditors in scope read a bank's settings; admins in scope change them with a
//! step-up, since a higher threshold can hide an attack. Every change is audited and reaches the
//! bank's agent at once.

use custody_core::BankId;
use custody_core::alert::SensorSettings;
use custody_core::audit::{AuditAction, Target};
use custody_core::policy;
use futures_util::FutureExt as _;

use crate::{App, AppError, Caller};

/// What a bank's agent applies to its own readings: the bank's sensor settings and its site's
/// lockdown rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankPolicy {
    /// The bank's sensor settings.
    pub sensors: SensorSettings,
    /// Its site's lockdown rules.
    pub lockdown: Vec<custody_core::alert::LockdownRule>,
}

impl App {
    /// The policy for `bank`'s own agent (the device link has proved who is asking, so no
    /// caller is checked).
    pub async fn bank_policy(&self, bank: &BankId) -> Result<BankPolicy, AppError> {
        let bank = bank.clone();
        self.store()
            .read(move |tx| {
                async move {
                    let (_, site) = crate::bank_site(tx, &bank).await?;
                    let sensors = tx.sensor_settings(&bank).await?;
                    let lockdown = tx.lockdown_rules(&site.id).await?;
                    Ok::<_, AppError>(BankPolicy { sensors, lockdown })
                }
                .boxed()
            })
            .await
    }

    /// A bank's sensor settings. Staff and auditors in scope; out of scope the bank does not
    /// exist.
    pub async fn sensor_settings(
        &self,
        caller: &Caller,
        bank: &BankId,
    ) -> Result<SensorSettings, AppError> {
        let (org, site) = self.bank_place(bank).await?;
        caller.unless_hidden(|p| policy::may_view_site(p, &org, &site))?;
        let bank = bank.clone();
        let settings =
            self.store().read(move |tx| async move { tx.sensor_settings(&bank).await }.boxed());
        Ok(settings.await?)
    }

    /// Replaces a bank's sensor settings. Admins in scope, stepped up; audited, and sent to the
    /// bank's agent at once.
    pub async fn set_sensor_settings(
        &self,
        caller: &Caller,
        bank: &BankId,
        settings: SensorSettings,
    ) -> Result<SensorSettings, AppError> {
        let (org, site) = self.bank_place(bank).await?;
        caller.unless_hidden(|p| policy::may_view_site(p, &org, &site))?;
        let target =
            Target { site: Some(site.clone()), bank: Some(bank.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::SensorSettings, &target, |p| {
            policy::may_manage_site(p, &org, &site).and_then(|()| self.stepped_up(p))
        })
        .await?;
        let what = describe(&settings);
        let (now, actor, lookup) = (self.now(), caller.actor(), bank.clone());
        let stored = self
            .store()
            .write(move |tx| {
                async move {
                    tx.put_sensor_settings(&lookup, &settings, now).await?;
                    tx.append_audit(
                        &custody_core::audit::AuditEvent::success(
                            now,
                            actor,
                            AuditAction::SensorSettings,
                            target,
                        )
                        .because(what),
                    )?;
                    tx.sensor_settings(&lookup).await
                }
                .boxed()
            })
            .await?;
        self.policy_changed(bank);
        Ok(stored)
    }
}

/// The settings in one line, for the audit entry: `door:<s>` then `<kind>:<n>/<ms>/<ms>`.
fn describe(settings: &SensorSettings) -> String {
    let rules = settings.debounce.iter().map(|(kind, rule)| {
        format!(";{kind}:{}/{}/{}", rule.threshold, rule.window.as_millis(), rule.quiet.as_millis())
    });
    std::iter::once(format!("door:{}", settings.door_left_open_after.as_secs()))
        .chain(rules)
        .collect()
}
