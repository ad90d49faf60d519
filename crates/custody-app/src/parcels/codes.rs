//! Pickup codes: drawn and sent when a parcel is in its compartment, sent again on request,
//! and the keyed hash each is stored and found under.

use crate::conflicts::ConflictCode;
use crate::parcels::Parcel;
use custody_core::audit::{Actor, AuditAction, Outcome};
use custody_core::code::PickupCode;
use custody_core::compartment::CompartmentNumber;
use custody_core::parcel::{ParcelEvent, ParcelState};
use custody_core::policy::{self, Denied};
use custody_core::throttle::{RESEND_PARCEL, RESEND_RECIPIENT};
use custody_core::token::PickupToken;
use custody_core::{BankId, CodeId, ParcelId, Timestamp};
use custody_store::{CompartmentRow, NewPickupCode, ParcelRow, StoreError, Tx};
use futures_util::FutureExt as _;

use super::{advance, event, parcel_target, state_conflict};
use crate::outbox::{Credentials, pickup_message};
use crate::throttle::Budgets;
use crate::{App, AppError, Caller};

impl App {
    /// Sends the recipient a pickup code for a deposited parcel. A parcel nobody is named for
    /// is left as it is, held for the site's staff (`unaddressed`): there is no one to tell
    /// until they name someone.
    pub async fn notify(&self, parcel: &ParcelId) -> Result<Parcel, AppError> {
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
            .and_then(|p| self.parcel_view(p))
    }

    /// Sends the recipient a new pickup code for a parcel waiting in its compartment, and
    /// retires the old one: for a message lost or deleted. Asked by the recipient or by staff
    /// of the site; the code goes only to the recipient's own address. At most 3 a day per
    /// parcel and 10 a day per recipient, whoever asks, so nobody's mailbox can be flooded.
    pub async fn resend_code(&self, caller: &Caller, parcel: &ParcelId) -> Result<(), AppError> {
        let p = self.parcel_row(caller, parcel).await?;
        // Anyone else who may see the parcel (its carrier, an auditor) is not its owner: to
        // them, as to strangers, there is no code to send.
        self.authorize(caller, AuditAction::Notify, &parcel_target(&p), |pr| {
            policy::is_recipient(pr, p.recipient.as_ref()).or_else(|_| {
                policy::may_manage_site(pr, &p.org, &p.site).map_err(|_| Denied::NotOwner)
            })
        })
        .await?;
        let Some(recipient) = p.recipient.as_ref().filter(|_| p.state == ParcelState::Notified)
        else {
            return Err(AppError::conflict(
                ConflictCode::ParcelState,
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
                            ConflictCode::ParcelState,
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
            return Err(AppError::conflict(
                ConflictCode::ParcelState,
                "parcel without a compartment",
            ));
        };
        let Some(recipient) = &p.recipient else {
            return Err(AppError::conflict(
                ConflictCode::NoRecipient,
                "nobody is named for this parcel yet",
            ));
        };
        let recipient = tx.person(recipient).await?.ok_or(AppError::NotFound)?;
        let recipient = self.person_view(&recipient)?;
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
        Err(AppError::conflict(
            ConflictCode::CodeSpaceExhausted,
            "could not draw an unused pickup code",
        ))
    }

    /// The keyed hash a code is stored and found under: of bank, locker number and code (a
    /// code of the first format has no locker number).
    pub(super) fn code_hash(
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
}
