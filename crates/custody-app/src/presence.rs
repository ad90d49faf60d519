//! Opening from the app, with proof of presence at the bank.
//!
//! A signed-in resident may open their own compartment from the phone, but only while standing
//! at the bank: the app sends the six-digit code the kiosk shows, which changes every 30 seconds
//! (RFC 6238 under the bank's presence key, which the kiosk receives over the device link). So
//! nobody opens a door from afar, for a thief who stands there, without someone reading the
//! screen. The open redeems the parcel's pickup code, so code, QR token and app open are one
//! credential that works once.

use crate::conflicts::ConflictCode;
use custody_core::audit::{AuditAction, Outcome, Target};
use custody_core::compartment::CompartmentNumber;
use custody_core::parcel::ParcelState;
use custody_core::policy;
use custody_core::throttle::{APP_OPEN, APP_OPEN_DAY};
use custody_core::{BankId, ParcelId};
use custody_crypto::totp::{SEED_LEN, TotpSeed};
use custody_proto::device::{PresenceKey, SignedOpenCommand};
use custody_store::{CodeRefusal, CodeRefused};
use data_encoding::BASE64;
use futures_util::FutureExt as _;

use crate::lockdown::locked_down;
use crate::parcels::AtBank;
use crate::throttle::Budgets;
use crate::{App, AppError, Caller};

/// A compartment opening for its recipient, from the app.
#[derive(Debug, Clone)]
pub struct AppOpening {
    /// The compartment that opens.
    pub compartment: CompartmentNumber,
    /// The command, for the bank's agent.
    pub command: SignedOpenCommand,
}

/// The answer to a presence code that does not match the kiosk's.
fn not_present() -> AppError {
    AppError::conflict(
        ConflictCode::PresenceCode,
        "that is not the code on the locker's screen: type the six digits it shows now",
    )
}

impl App {
    /// The bank's presence seed, derived from the master key and the bank.
    fn presence_seed(&self, bank: &BankId) -> Result<TotpSeed, AppError> {
        let key = self.keys().presence.hash(&[bank.as_str().as_bytes()]);
        let seed = key.get(..SEED_LEN).ok_or(AppError::Invalid("presence key".into()))?;
        Ok(TotpSeed::from_bytes(seed)?)
    }

    /// The bank's presence key for its agent, sent in the welcome.
    pub fn presence_key(&self, bank: &BankId) -> Result<PresenceKey, AppError> {
        Ok(PresenceKey(BASE64.encode(self.presence_seed(bank)?.expose_bytes())))
    }

    /// The recipient opens their own compartment from the app with the code `presence` that
    /// the bank's kiosk shows. Wrong codes are throttled per person (5 per 15 minutes, 20 a
    /// day); every attempt is audited.
    pub async fn open_from_app(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
        presence: &str,
    ) -> Result<AppOpening, AppError> {
        let p = self.parcel_row(caller, parcel).await?;
        let target =
            Target { parcel: Some(p.id.clone()), site: Some(p.site.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::PickupAttempt, &target, |pr| {
            policy::is_recipient(pr, p.recipient.as_ref())
        })
        .await?;
        let (Some(bank), ParcelState::Notified) = (p.bank.clone(), p.state) else {
            return Err(AppError::conflict(
                ConflictCode::ParcelState,
                "only a parcel waiting for pickup can be opened from the app",
            ));
        };
        // A door that cannot hear the command must not be recorded as opened.
        self.require_online(&bank)?;
        let Some(person) = caller.person().cloned() else { return Err(AppError::Forbidden) };
        let budgets = Budgets::new(
            "app_open",
            [(APP_OPEN, person.to_string()), (APP_OPEN_DAY, person.to_string())],
        );
        let (now, actor) = (self.now(), caller.actor());
        let at = AtBank { bank: &bank, site: &p.site, actor: &actor, now };
        self.spend_or_throttle(&budgets, at.attempt(Outcome::Denied, "app", target)).await?;
        let present = self.presence_seed(&bank)?.accept(presence, now.as_millis(), None).is_some();
        let (app, site, id) = (self.clone(), p.site.clone(), p.id.clone());
        self.store()
            .write(move |tx| {
                async move {
                    let at = AtBank { bank: &bank, site: &site, actor: &actor, now };
                    let target = Target { parcel: Some(id.clone()), ..at.target() };
                    if tx.lockdown(&bank).await?.is_some() {
                        at.locked_down(tx, "app", target)?;
                        return Ok(Err(locked_down()));
                    }
                    if !present {
                        let reason = "app_presence_wrong";
                        tx.append_audit(&at.attempt(Outcome::Failure, reason, target))?;
                        return Ok(Err(not_present()));
                    }
                    let code = match tx.active_pickup_code(&id, now).await? {
                        Some(code) => tx.pickup_code_hash(&bank, &code.id).await?,
                        None => None,
                    };
                    let refused = |reason| CodeRefused { reason, code: None };
                    let redeemed = match code {
                        Some((hash, _)) => tx.redeem_pickup_code(&bank, &hash, now).await?,
                        None => Err(refused(CodeRefusal::Unknown)),
                    };
                    let redeemed = match redeemed {
                        Ok(r) => r,
                        Err(refused) => {
                            at.refused(tx, "app", &refused)?;
                            return Ok(Err(AppError::conflict(
                                ConflictCode::ParcelState,
                                "this parcel cannot be opened from the app any more",
                            )));
                        }
                    };
                    budgets.refund(tx, now).await?;
                    let (compartment, command) =
                        app.hand_over(tx, &at, &redeemed, "app_accepted").await?;
                    Ok::<_, AppError>(Ok(AppOpening { compartment, command }))
                }
                .boxed()
            })
            .await?
    }
}
