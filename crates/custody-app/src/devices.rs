//! Enrolling agents: single-use tokens, a certificate for a key made on the device, one live
//! identity per bank.

use crate::alerts::AlertAt;
use crate::{App, AppError, Caller};
use custody_core::alert::AlertKind;
use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Target};
use custody_core::policy::Principal;
use custody_core::{BankId, DeviceId, TokenId, policy};
use custody_crypto::pki::first_cert_der;
use custody_crypto::pki::{CertificateInfo, certificate_info};
use custody_store::{DeviceRow, NewEnrolmentToken};
use data_encoding::BASE32_NOPAD;
use futures_util::FutureExt as _;
use std::time::Duration;
use zeroize::Zeroizing;

use custody_core::Timestamp;

view! {
    /// An enrolled device.
    Device from DeviceRow {
        /// Id (its certificate's common name).
        id: DeviceId,
        /// Bank it runs.
        bank: BankId,
        /// Serial of its current certificate, hex.
        cert_serial: String,
        /// SHA-256 of its public key.
        spki_sha256: Vec<u8>,
        /// Enrolled.
        enrolled_at: Timestamp,
        /// Certificate end of validity.
        cert_expires_at: Timestamp,
        /// Revoked.
        revoked_at: Option<Timestamp>,
        /// Last connection.
        last_seen_at: Option<Timestamp>,
    }
}

/// What a device gets at enrolment.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The device record.
    pub device: Device,
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
        self.authorize(caller, AuditAction::EnrolmentTokenCreate, &target, |p| {
            policy::may_manage_site(p, &site.org, &site.id)
        })
        .await?;
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
        let event =
            AuditEvent::success(now, caller.actor(), AuditAction::EnrolmentTokenCreate, target);
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
                        tx.append_audit(
                            &AuditEvent::denied(
                                now,
                                Actor::anonymous(),
                                AuditAction::DeviceEnrol,
                                Target::default(),
                            )
                            .because("bad_enrolment_token"),
                        )?;
                        return Ok(Err(AppError::AuthenticationFailed));
                    };
                    let (bank_row, site) = crate::bank_site(tx, &bank).await?;
                    let device = DeviceRow { bank: bank_row.id.clone(), ..device };
                    tx.insert_device(&device).await?;
                    tx.revoke_devices_of_bank(&bank_row.id, &device.id, now).await?;
                    tx.append_audit(&AuditEvent::success(
                        now,
                        Actor { kind: ActorKind::Device, id: Some(device.id.to_string()) },
                        AuditAction::DeviceEnrol,
                        Target {
                            site: Some(site.id),
                            bank: Some(bank_row.id),
                            ..Target::default()
                        },
                    ))?;
                    Ok::<_, AppError>(Ok(device))
                }
                .boxed()
            })
            .await??;
        Ok(Enrolment { device: device.into(), certificate_pem })
    }

    /// Records that a device connected.
    pub async fn device_connected(&self, caller: &Caller) -> Result<(), AppError> {
        let Caller::Principal(Principal::Device { device, bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let (now, device, bank, site, actor) =
            (self.now(), device.clone(), bank.clone(), site.clone(), caller.actor());
        self.store()
            .write(move |tx| {
                async move {
                    tx.touch_device(&device, now).await?;
                    tx.append_audit(&AuditEvent::success(
                        now,
                        actor,
                        AuditAction::DeviceConnect,
                        Target { site: Some(site), bank: Some(bank), ..Target::default() },
                    ))?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await
    }
}

impl App {
    /// The devices of a bank, newest first, revoked ones included. Staff who may see its site.
    pub async fn devices(&self, caller: &Caller, bank: &BankId) -> Result<Vec<Device>, AppError> {
        let (bank_row, site) = self.bank_and_site(bank).await?;
        caller.unless_hidden(|p| policy::may_view_site(p, &site.org, &site.id))?;
        let id = bank_row.id;
        self.store()
            .read(move |tx| async move { Ok(tx.devices_of_bank(&id).await?) }.boxed())
            .await
            .map(crate::views)
    }

    /// Revokes a device's identity, saying why: its certificate is refused at the next
    /// handshake, and the caller ends its live link. Staff in scope, stepped up. The bank
    /// enrols again with a new token, under a new identity.
    pub async fn revoke_device(
        &self,
        caller: &Caller,
        id: &DeviceId,
        reason: &str,
    ) -> Result<Device, AppError> {
        let reason = custody_core::text::Reason::parse(reason).map_err(AppError::invalid)?;
        let lookup = id.clone();
        let device = self
            .store()
            .read(move |tx| async move { Ok::<_, AppError>(tx.device(&lookup).await?) }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        let (_, site) = self.bank_and_site(&device.bank).await?;
        let target = Target {
            site: Some(site.id.clone()),
            bank: Some(device.bank.clone()),
            ..Target::default()
        };
        caller.unless_hidden(|p| policy::may_view_site(p, &site.org, &site.id))?;
        self.authorize(caller, AuditAction::DeviceRevoke, &target, |p| {
            policy::may_manage_site(p, &site.org, &site.id).and_then(|()| self.stepped_up(p))
        })
        .await?;
        let (now, actor, app, person) =
            (self.now(), caller.actor(), self.clone(), caller.person().cloned());
        let device_id = device.id.clone();
        self.store()
            .write(move |tx| {
                async move {
                    if tx.revoke_device(&device_id, now).await? {
                        let mut e =
                            AuditEvent::success(now, actor, AuditAction::DeviceRevoke, target)
                                .because(device_id.to_string());
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
        let lookup = id.clone();
        self.store()
            .read(move |tx| async move { Ok::<_, AppError>(tx.device(&lookup).await?) }.boxed())
            .await?
            .map(Device::from)
            .ok_or(AppError::NotFound)
    }

    /// Serial numbers of revoked device certificates not yet expired: what the gateway refuses
    /// at the handshake.
    pub async fn revoked_device_serials(&self) -> Result<Vec<String>, AppError> {
        let now = self.now();
        self.store()
            .read(move |tx| async move { Ok(tx.revoked_device_serials(now).await?) }.boxed())
            .await
    }

    /// Records that the calling device's identity is in use from two places at once (`first`
    /// and `second`, the two addresses): an anomaly, since one agent keeps one link. Audited,
    /// and raised as an `identity_in_two_places` alert.
    pub async fn device_conflict(
        &self,
        caller: &Caller,
        first: &str,
        second: &str,
    ) -> Result<(), AppError> {
        let Caller::Principal(Principal::Device { bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let event = AuditEvent::failure(
            self.now(),
            caller.actor(),
            AuditAction::DeviceConflict,
            Target { site: Some(site.clone()), bank: Some(bank.clone()), ..Target::default() },
        )
        .because(format!("connected_from_two_places:{first}:{second}"));
        self.store()
            .write(move |tx| async move { Ok::<_, AppError>(tx.append_audit(&event)?) }.boxed())
            .await?;
        let place = AlertAt { site: site.clone(), bank: Some(bank.clone()), compartment: None };
        self.raise_alert(AlertKind::IdentityInTwoPlaces, place).await.map(|_| ())
    }
}

impl App {
    /// Signs a new certificate for the calling device, for the key in `csr_pem` (made on the
    /// device, never sent): the device's record takes the new key and serial, so the old
    /// certificate is refused from then on. Audited.
    pub async fn renew_device(&self, caller: &Caller, csr_pem: &str) -> Result<String, AppError> {
        let Caller::Principal(Principal::Device { device, bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let now = self.now();
        let certificate_pem = self
            .keys()
            .ca
            .sign_device_csr(
                csr_pem,
                device.as_str(),
                self.rng().bytes()?,
                now,
                self.config().device_cert_lifetime,
            )
            .map_err(|e| AppError::Invalid(format!("certificate signing request refused: {e}")))?;
        let info = certificate_info(&first_cert_der(&certificate_pem)?)?;
        let event = AuditEvent::success(
            now,
            caller.actor(),
            AuditAction::DeviceRenew,
            Target { site: Some(site.clone()), bank: Some(bank.clone()), ..Target::default() },
        )
        .because(info.serial_hex.clone());
        let device = device.clone();
        let renewed = self
            .store()
            .write(move |tx| {
                async move {
                    let live = tx
                        .renew_device(&device, &info.serial_hex, &info.spki_sha256, info.not_after)
                        .await?;
                    if live {
                        tx.append_audit(&event)?;
                    }
                    Ok::<_, AppError>(live)
                }
                .boxed()
            })
            .await?;
        if !renewed {
            return Err(AppError::AuthenticationFailed);
        }
        Ok(certificate_pem)
    }
}

impl App {
    /// The device behind a verified client certificate, if it is enrolled, not revoked, and
    /// presents the key it enrolled with.
    pub async fn authenticate_device(&self, cert: &CertificateInfo) -> Result<Caller, AppError> {
        let id = DeviceId::parse(&cert.common_name).map_err(|_| AppError::AuthenticationFailed)?;
        let now = self.now();
        let found = self
            .store()
            .read(move |tx| {
                async move {
                    let Some(device) = tx.device(&id).await? else {
                        return Ok::<_, AppError>(None);
                    };
                    let (bank, site) = crate::bank_site(tx, &device.bank).await?;
                    Ok(Some((device, bank, site)))
                }
                .boxed()
            })
            .await?;
        let Some((device, bank, site)) = found else { return Err(AppError::AuthenticationFailed) };
        if device.revoked_at.is_some()
            || !custody_crypto::constant_time_eq(&device.spki_sha256, &cert.spki_sha256)
            || cert.not_after <= now
        {
            return Err(AppError::AuthenticationFailed);
        }
        Ok(Caller::Principal(Principal::Device {
            device: device.id,
            bank: bank.id,
            site: site.id,
            org: site.org,
        }))
    }
}
