//! Failure budgets: the throttles of `custody_core::throttle` applied in a unit of work.
//!
//! An attempt first spends one failure from every budget it falls under (one kiosk, one bank;
//! one account, one source address) and is refused unchecked if any budget was already spent.
//! Spending before checking makes the check and the count one atomic step, so concurrent
//! attempts cannot slip past the limit together. A successful attempt refunds what it spent.

use custody_core::Timestamp;
use custody_core::audit::AuditEvent;
use custody_core::throttle::ThrottleRule;
use custody_store::{StoreError, Tx};
use futures_util::FutureExt as _;

use crate::{App, AppError};

/// The budgets one attempt draws on.
#[derive(Debug, Clone)]
pub(crate) struct Budgets(Vec<(ThrottleRule, String)>);

impl Budgets {
    /// The budgets a code typed at `device`'s kiosk of `bank` draws on, pickup or courier
    /// code alike: the kiosk's, the bank's hourly and the bank's daily.
    pub(crate) fn kiosk(device: &custody_core::DeviceId, bank: &custody_core::BankId) -> Self {
        use custody_core::throttle::{BANK_PICKUP, BANK_PICKUP_DAY, KIOSK_PICKUP};
        Self::new(
            "pickup",
            [
                (KIOSK_PICKUP, device.to_string()),
                (BANK_PICKUP, bank.to_string()),
                (BANK_PICKUP_DAY, bank.to_string()),
            ],
        )
    }

    /// A scanned QR token spends only the kiosk's budget, which typed codes share: a token is
    /// not guessable, so scans do not draw on the bank's budget for typed codes.
    pub(crate) fn kiosk_scan(device: &custody_core::DeviceId) -> Self {
        Self::new("pickup", [(custody_core::throttle::KIOSK_PICKUP, device.to_string())])
    }

    /// Budgets for `(rule, subject)` pairs; the store key is `<scope>:<rule name>:<subject>`.
    pub(crate) fn new(
        scope: &str,
        items: impl IntoIterator<Item = (ThrottleRule, String)>,
    ) -> Self {
        Self(
            items
                .into_iter()
                .map(|(rule, subject)| (rule, format!("{scope}:{}:{subject}", rule.name)))
                .collect(),
        )
    }

    /// Spends one attempt from every budget. Returns the name of the first budget that was
    /// already exhausted, if any; the attempt must then be refused without being checked.
    pub(crate) async fn spend(
        &self,
        tx: &mut Tx,
        now: Timestamp,
    ) -> Result<Option<&'static str>, StoreError> {
        let mut exhausted = None;
        for (rule, key) in &self.0 {
            let spent = tx.add_failure(key, rule.window_start(now)).await?;
            if !rule.allows(spent.saturating_sub(1)) && exhausted.is_none() {
                exhausted = Some(rule.name);
            }
        }
        Ok(exhausted)
    }

    /// Gives back what [`Budgets::spend`] took, after a successful attempt.
    pub(crate) async fn refund(&self, tx: &mut Tx, now: Timestamp) -> Result<(), StoreError> {
        for (rule, key) in &self.0 {
            tx.refund_failure(key, rule.window_start(now)).await?;
        }
        Ok(())
    }
}

impl App {
    /// How a budget's subject that names or reaches a person (an address typed at sign-in, a
    /// network address) is kept in the throttle's key: a keyed hash, so the counters show
    /// neither and an unkeyed hash cannot be reversed by trying likely addresses.
    pub(crate) fn throttle_subject(&self, subject: &str) -> String {
        data_encoding::HEXLOWER.encode(&self.keys().throttle.hash(&[subject.as_bytes()]))
    }

    /// Spends one attempt from every budget in a unit of its own. When one was spent already,
    /// records `denied` with `throttled:<budget>` as its reason, after the method `denied`'s
    /// reason names if any (`code_throttled:kiosk`; the spend and the record
    /// commit either way) and answers `Throttled`.
    pub(crate) async fn spend_or_throttle(
        &self,
        budgets: &Budgets,
        denied: AuditEvent,
    ) -> Result<(), AppError> {
        let (spend, now) = (budgets.clone(), self.now());
        let over = self
            .store()
            .write(move |tx| {
                async move {
                    let over = spend.spend(tx, now).await?;
                    if let Some(name) = over {
                        // A method in `denied`'s reason (`code`, `badge`, `app`) names it.
                        let reason = match denied.reason.as_deref() {
                            Some(method) if !method.is_empty() => {
                                format!("{method}_throttled:{name}")
                            }
                            _ => format!("throttled:{name}"),
                        };
                        tx.append_audit(&denied.because(reason))?;
                    }
                    Ok::<_, AppError>(over)
                }
                .boxed()
            })
            .await?;
        match over {
            Some(_) => Err(AppError::Throttled),
            None => Ok(()),
        }
    }
}
