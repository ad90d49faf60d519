//! What the bank's agent reports: doors opening and closing, and how open commands ended.

use custody_core::audit::{AuditAction, AuditEvent, Outcome, Target};
use custody_core::compartment::{CompartmentNumber, DoorState};
use custody_core::policy::Principal;
use custody_proto::device::{CommandOutcome as C, DoorReading};
use futures_util::FutureExt as _;

use super::event;
use crate::{App, AppError, Caller};

/// Text from a device, cut to a sane length and stripped of control characters before it goes
/// into the audit log.
fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

impl App {
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
        let e = AuditEvent::ended(
            result,
            self.now(),
            caller.actor(),
            AuditAction::OpenCommand,
            Target { site: Some(site.clone()), bank: Some(bank.clone()), ..Target::default() },
        )
        .because(format!("{why} nonce:{nonce}"));
        self.store().write(move |tx| async move { tx.append_audit(&e) }.boxed()).await?;
        Ok(())
    }
}
