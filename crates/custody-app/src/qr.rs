//! QR pickup: signed tokens for the kiosk's scanner, issued with every pickup code and shown
//! in the resident's app.
//!
//! A token (`custody_core::token`) names the pickup code record it stands for, so it is
//! redeemed by the same conditional update as the typed code: one of any number of concurrent
//! scans opens, and a token dies with its code on pickup, expiry or re-send. The agent checks
//! the signature offline before it asks; the server checks everything again here.

use crate::conflicts::ConflictCode;
use std::time::Duration;

use custody_core::audit::{AuditAction, Outcome, Target};
use custody_core::parcel::ParcelState;
use custody_core::policy::{self, Principal};
use custody_core::time::minutes;
use custody_core::token::{PickupToken, QR_TOKEN_DOMAIN, ScannedToken};
use custody_core::{BankId, ParcelId, Timestamp};
use custody_store::{CodeRefusal, CodeRefused};
use futures_util::FutureExt as _;

use crate::parcels::{AtBank, PickupOutcome};
use crate::throttle::Budgets;
use crate::{App, AppError, Caller};

/// How long a token shown in the app works. The app asks for a fresh one while it is open;
/// a screenshot is worth ten minutes.
pub const APP_TOKEN_LIFETIME: Duration = minutes(10);

/// A token for the resident's app.
#[derive(Clone, PartialEq, Eq)]
pub struct ShownToken {
    /// The token's text, for the QR code.
    pub text: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for ShownToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShownToken").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

impl App {
    /// The text of `token` signed with the command key under the QR domain.
    pub(crate) fn sign_pickup_token(&self, token: &PickupToken) -> String {
        token.encode(&self.keys().command.sign(QR_TOKEN_DOMAIN, &token.signed_bytes()))
    }

    /// Checks a scanned token for `bank` at `now`; on failure, the reason for the audit log.
    fn check_token(
        &self,
        bank: &BankId,
        now: Timestamp,
        scanned: &str,
    ) -> Result<PickupToken, &'static str> {
        let scanned = ScannedToken::decode(scanned).map_err(|_| "qr_malformed")?;
        self.command_public_key()
            .verify(QR_TOKEN_DOMAIN, scanned.signed_bytes(), scanned.signature())
            .map_err(|_| "qr_bad_signature")?;
        let token = scanned.token;
        if &token.bank != bank {
            return Err("qr_other_bank");
        }
        if now >= token.expires_at {
            return Err("qr_expired");
        }
        Ok(token)
    }

    /// A fresh token for the recipient's own parcel, waiting for pickup, to show as a QR code
    /// in the app. Nobody else gets one, staff included (staff open doors by remote open, which
    /// is audited as theirs).
    pub async fn pickup_qr(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
    ) -> Result<ShownToken, AppError> {
        let p = self.parcel_row(caller, parcel).await?;
        let target =
            Target { parcel: Some(p.id.clone()), site: Some(p.site.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::Notify, &target, |pr| {
            policy::is_recipient(pr, p.recipient.as_ref())
        })
        .await?;
        if p.state != ParcelState::Notified {
            return Err(AppError::conflict(
                ConflictCode::ParcelState,
                "only a parcel waiting for pickup can be opened with a QR code",
            ));
        }
        let (now, id) = (self.now(), p.id.clone());
        let found = self
            .store()
            .read(move |tx| {
                async move {
                    let Some(code) = tx.active_pickup_code(&id, now).await? else {
                        return Ok(None);
                    };
                    let compartment = tx.compartment(&code.compartment).await?;
                    Ok::<_, AppError>(compartment.map(|c| (code, c.number)))
                }
                .boxed()
            })
            .await?;
        let Some((code, number)) = found else {
            return Err(AppError::conflict(
                ConflictCode::NoCode,
                "this parcel has no working pickup code: ask for it to be sent again",
            ));
        };
        let token = PickupToken {
            bank: code.bank,
            compartment: number,
            parcel: p.id,
            code: code.id,
            expires_at: now.plus(APP_TOKEN_LIFETIME).min(code.expires_at),
        };
        Ok(ShownToken { text: self.sign_pickup_token(&token), expires_at: token.expires_at })
    }

    /// A QR token scanned at the kiosk of the calling device's bank. Every scan is audited with
    /// its outcome; every failure looks the same to the kiosk. Scans spend the kiosk's budget,
    /// refunded on success, but not the bank's: a token cannot be guessed.
    #[tracing::instrument(skip(self, caller, scanned))]
    pub async fn redeem_qr(
        &self,
        caller: &Caller,
        scanned: &str,
    ) -> Result<PickupOutcome, AppError> {
        let Caller::Principal(Principal::Device { device, bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let (now, actor, app) = (self.now(), caller.actor(), self.clone());
        let (device, bank, site) = (device.clone(), bank.clone(), site.clone());
        let checked = self.check_token(&bank, now, scanned);
        self.store()
            .write(move |tx| {
                async move {
                    let at = AtBank { bank: &bank, site: &site, actor: &actor, now };
                    let budgets = Budgets::kiosk_scan(&device);
                    // Scans spend only the kiosk's budget, so they are refused, never paused.
                    if let Some(answer) = at.admit(tx, &budgets, "qr").await? {
                        return Ok(answer);
                    }
                    let token = match checked {
                        Ok(token) => token,
                        Err(reason) => {
                            tx.append_audit(&at.attempt(Outcome::Failure, reason, at.target()))?;
                            return Ok(PickupOutcome::Refused);
                        }
                    };
                    // The token is ours; its code record must still be the one it names.
                    let record = match tx.pickup_code_hash(&bank, &token.code).await? {
                        Some((hash, code)) if code.parcel == token.parcel => Some((hash, code)),
                        _ => None,
                    };
                    let Some((hash, code)) = record else {
                        let refused = CodeRefused { reason: CodeRefusal::Unknown, code: None };
                        at.refused(tx, "qr", &refused)?;
                        return Ok(PickupOutcome::Refused);
                    };
                    let number = tx.compartment(&code.compartment).await?.map(|c| c.number);
                    if number != Some(token.compartment) {
                        let target = Target { parcel: Some(code.parcel.clone()), ..at.target() };
                        tx.append_audit(&at.attempt(Outcome::Failure, "qr_mismatch", target))?;
                        return Ok(PickupOutcome::Refused);
                    }
                    let redeemed = match tx.redeem_pickup_code(&bank, &hash, now).await? {
                        Ok(r) => r,
                        Err(refused) => {
                            at.refused(tx, "qr", &refused)?;
                            return Ok(PickupOutcome::Refused);
                        }
                    };
                    budgets.refund(tx, now).await?;
                    app.hand_over(tx, &at, &redeemed, "qr_accepted")
                        .await
                        .map(PickupOutcome::accepted)
                }
                .boxed()
            })
            .await
    }
}
