//! Enrolling agents: single-use tokens, a certificate for a key made on the device, one live
//! identity per bank.

use std::time::Duration;

use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Outcome, Target};
use custody_core::policy;
use custody_core::{BankId, DeviceId, TokenId};
use custody_crypto::pki::certificate_info;
use custody_crypto::tls::first_cert_der;
use custody_store::{DeviceRow, NewEnrolmentToken};
use data_encoding::BASE32_NOPAD;
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

use crate::{App, AppError, Caller};

/// What a device gets at enrolment.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The device record.
    pub device: DeviceRow,
    /// Its client certificate, PEM.
    pub certificate_pem: String,
}

impl App {
    /// Issues a single-use enrolment token for a bank. Shown once; stored only as a keyed hash.
    pub async fn create_enrolment_token(
        &self,
        caller: &Caller,
        bank: &BankId,
    ) -> Result<Zeroizing<String>, AppError> {
        let (bank_row, site) = self.bank_and_site(bank).await?;
        let target = Target {
            site: Some(site.id.clone()),
            bank: Some(bank_row.id.clone()),
            ..Target::default()
        };
        if let Err(d) = caller.check(|p| policy::may_manage_site(p, &site.org, &site.id)) {
            return Err(self.refuse(caller, AuditAction::EnrolmentTokenCreate, target, d).await);
        }
        let secret: [u8; 20] = self.rng().bytes()?;
        let token = Zeroizing::new(BASE32_NOPAD.encode(&secret).to_lowercase());
        let now = self.now();
        let record = NewEnrolmentToken {
            id: TokenId::from_random(self.rng().bytes()?),
            bank: bank_row.id,
            token_hash: self.keys().enrolment.hash(&[token.as_bytes()]).to_vec(),
            created_at: now,
            expires_at: now.plus(self.config().enrolment_token_ttl),
        };
        let event = AuditEvent {
            at: now,
            actor: caller.actor(),
            action: AuditAction::EnrolmentTokenCreate,
            target,
            outcome: Outcome::Success,
            reason: None,
            personal: None,
        };
        self.store()
            .write(move |tx| {
                async move {
                    tx.insert_enrolment_token(&record).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(token)
    }

    /// Enrols a device: uses the token once and signs the device's CSR. Any earlier device of
    /// the bank is revoked, so a bank has one live identity.
    pub async fn enrol(&self, token: &str, csr_pem: &str) -> Result<Enrolment, AppError> {
        if token.len() > 128 {
            return Err(AppError::AuthenticationFailed);
        }
        let now = self.now();
        let hash = self.keys().enrolment.hash(&[token.trim().as_bytes()]).to_vec();
        let device_id = DeviceId::from_random(self.rng().bytes()?);
        let lifetime: Duration = self.config().device_cert_lifetime;
        let certificate_pem = self
            .keys()
            .ca
            .sign_device_csr(csr_pem, device_id.as_str(), self.rng().bytes()?, now, lifetime)
            .map_err(|e| AppError::Invalid(format!("certificate signing request refused: {e}")))?;
        let info = certificate_info(&first_cert_der(&certificate_pem)?)?;
        let device = DeviceRow {
            id: device_id.clone(),
            // Replaced below by the token's bank; the token decides, not the request.
            bank: BankId::from_random([0; 16]),
            cert_serial: info.serial_hex,
            spki_sha256: info.spki_sha256.to_vec(),
            enrolled_at: now,
            cert_expires_at: info.not_after,
            revoked_at: None,
            last_seen_at: None,
        };
        let device = self
            .store()
            .write(move |tx| {
                async move {
                    let Some(bank) = tx.consume_enrolment_token(&hash, now).await? else {
                        tx.append_audit(&AuditEvent {
                            at: now,
                            actor: Actor::anonymous(),
                            action: AuditAction::DeviceEnrol,
                            target: Target::default(),
                            outcome: Outcome::Denied,
                            reason: Some("bad_enrolment_token".into()),
                            personal: None,
                        })?;
                        return Ok(Err(AppError::AuthenticationFailed));
                    };
                    let (bank_row, site) = crate::bank_site(tx, &bank).await?;
                    let device = DeviceRow { bank: bank_row.id.clone(), ..device };
                    tx.insert_device(&device).await?;
                    tx.revoke_devices_of_bank(&bank_row.id, &device.id, now).await?;
                    tx.append_audit(&AuditEvent {
                        at: now,
                        actor: Actor { kind: ActorKind::Device, id: Some(device.id.to_string()) },
                        action: AuditAction::DeviceEnrol,
                        target: Target {
                            site: Some(site.id),
                            bank: Some(bank_row.id),
                            ..Target::default()
                        },
                        outcome: Outcome::Success,
                        reason: None,
                        personal: None,
                    })?;
                    Ok::<_, AppError>(Ok(device))
                }
                .boxed()
            })
            .await??;
        Ok(Enrolment { device, certificate_pem })
    }

    /// Records that a device connected.
    pub async fn device_connected(&self, caller: &Caller) -> Result<(), AppError> {
        let Caller::Principal(policy::Principal::Device { device, bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let (now, device, bank, site, actor) =
            (self.now(), device.clone(), bank.clone(), site.clone(), caller.actor());
        self.store()
            .write(move |tx| {
                async move {
                    tx.touch_device(&device, now).await?;
                    tx.append_audit(&AuditEvent {
                        at: now,
                        actor,
                        action: AuditAction::DeviceConnect,
                        target: Target { site: Some(site), bank: Some(bank), ..Target::default() },
                        outcome: Outcome::Success,
                        reason: None,
                        personal: None,
                    })?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await
    }
}
