//! Carriers' API keys: issued for some sites, rotated with an overlap, revoked, and proven on
//! every request.
//!
//! The secret is shown once and stored only as a keyed hash, compared in constant time.

use crate::conflicts::ConflictCode;
use crate::{App, AppError, Caller};
use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Target};
use custody_core::policy::{self, Principal};
use custody_core::text::{Name, Reason};
use custody_core::{ApiKeyId, CarrierId, OrgId, SiteId};
use custody_store::ApiKeyRow;
use data_encoding::BASE32_NOPAD;
use futures_util::FutureExt as _;
use std::time::Duration;
use zeroize::Zeroizing;

use custody_core::Timestamp;

view! {
    /// A carrier's API key, without its secret's hash.
    ApiKey from ApiKeyRow {
        /// Id: the public half of the key.
        id: ApiKeyId,
        /// Carrier.
        carrier: CarrierId,
        /// The carrier's organisation.
        org: OrgId,
        /// What the issuer called it.
        label: Name,
        /// Sites it may deliver to.
        sites: Vec<SiteId>,
        /// Created.
        created_at: Timestamp,
        /// Last authenticated use.
        last_used_at: Option<Timestamp>,
        /// When it stops (or stopped) working: revoked, or retired by a rotation.
        revoked_at: Option<Timestamp>,
    }
}

/// The longest a rotated-out key keeps working beside its successor.
pub const MAX_KEY_OVERLAP: Duration = custody_core::time::days(7);

/// A freshly issued API key. The secret is shown once and never stored in clear.
#[derive(Debug)]
pub struct IssuedApiKey {
    /// The key's record.
    pub key: ApiKey,
    /// The whole token to give the carrier: `<id>.<secret>`.
    pub token: Zeroizing<String>,
}

impl App {
    /// Issues an API key for a carrier, limited to `sites` of the carrier's organisation.
    /// Needs a step-up.
    pub async fn issue_api_key(
        &self,
        caller: &Caller,
        carrier: &CarrierId,
        sites: &[SiteId],
        label: &str,
        reason: &str,
    ) -> Result<IssuedApiKey, AppError> {
        let label = Name::parse(label).map_err(AppError::invalid)?;
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        if sites.is_empty() {
            return Err(AppError::Invalid("an API key needs at least one site".into()));
        }
        let carrier_id = carrier.clone();
        let carrier_row = self
            .store()
            .read(move |tx| {
                async move { tx.carrier(&carrier_id).await?.ok_or(AppError::NotFound) }.boxed()
            })
            .await?;
        self.may_handle_keys_for(caller, &carrier_row.org, sites, AuditAction::ApiKeyCreate)
            .await?;
        let key = NewKey { carrier: &carrier_row.id, org: &carrier_row.org, sites, label, reason };
        self.new_api_key(caller, key, None).await
    }

    /// Staff of every one of `sites` (in the carrier's organisation), stepped up: who may
    /// issue, rotate or revoke a key for them. Refusals are audited as `action`.
    async fn may_handle_keys_for(
        &self,
        caller: &Caller,
        org: &OrgId,
        sites: &[SiteId],
        action: AuditAction,
    ) -> Result<(), AppError> {
        for site in sites {
            let s = self.site(site).await?;
            if &s.org != org {
                return Err(AppError::NotFound);
            }
            let target = Target { site: Some(s.id.clone()), ..Target::default() };
            self.authorize(caller, action, &target, |p| {
                policy::may_manage_site(p, &s.org, &s.id).and_then(|()| self.stepped_up(p))
            })
            .await?;
        }
        Ok(())
    }

    /// Stores a new key (and retires `replaces` at its time, in the same unit). The reason
    /// given is sealed to the person who gave it.
    async fn new_api_key(
        &self,
        caller: &Caller,
        new: NewKey<'_>,
        replaces: Option<(ApiKeyId, Timestamp)>,
    ) -> Result<IssuedApiKey, AppError> {
        let NewKey { carrier, org, sites, label, reason } = new;
        let id = self.new_id(ApiKeyId::from_random)?;
        let secret: [u8; 32] = self.rng().bytes()?;
        let secret_text = Zeroizing::new(BASE32_NOPAD.encode(&secret).to_lowercase());
        let key = ApiKeyRow {
            id: id.clone(),
            carrier: carrier.clone(),
            org: org.clone(),
            label,
            secret_hash: self
                .keys()
                .api_keys
                .hash(&[id.as_str().as_bytes(), secret_text.as_bytes()])
                .to_vec(),
            sites: sites.to_vec(),
            created_at: self.now(),
            last_used_at: None,
            revoked_at: None,
        };
        let mut created = AuditEvent::success(
            key.created_at,
            caller.actor(),
            AuditAction::ApiKeyCreate,
            Target::default(),
        );
        let retired = replaces.as_ref().map(|(old, at)| {
            created.reason = Some(format!("rotation_of:{old}"));
            created
                .clone()
                .as_action(AuditAction::ApiKeyRevoke, Target::default())
                .because(format!("{old}:rotated_to:{id}:until:{}", at.as_millis()))
        });
        let (row, app, person) = (key.clone(), self.clone(), caller.person().cloned());
        self.store()
            .write(move |tx| {
                async move {
                    if let Some(person) = &person {
                        created.personal = app.seal_personal(tx, person, reason.as_str()).await?;
                    }
                    if let Some((old, at)) = &replaces
                        && !tx.retire_api_key(old, *at).await?
                    {
                        return Err(AppError::conflict(
                            ConflictCode::KeyRetired,
                            "that key is revoked or retiring already; rotate its successor",
                        ));
                    }
                    tx.insert_api_key(&row).await?;
                    tx.append_audit(&created)?;
                    if let Some(retired) = &retired {
                        tx.append_audit(retired)?;
                    }
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        let token = Zeroizing::new(format!("{id}.{}", secret_text.as_str()));
        Ok(IssuedApiKey { key: key.into(), token })
    }

    /// A key by id, for a change by `caller`.
    async fn api_key_to_change(&self, id: &ApiKeyId) -> Result<ApiKeyRow, AppError> {
        let id = id.clone();
        self.store()
            .read(move |tx| async move { tx.api_key(&id).await?.ok_or(AppError::NotFound) }.boxed())
            .await
    }

    /// Rotates a key: a new key with the same carrier, sites and label, while the old one keeps
    /// working for `overlap` (at most a week) so the carrier can switch without a gap. Needs a
    /// step-up.
    pub async fn rotate_api_key(
        &self,
        caller: &Caller,
        id: &ApiKeyId,
        overlap: Duration,
        reason: &str,
    ) -> Result<IssuedApiKey, AppError> {
        let reason = Reason::parse(reason).map_err(AppError::invalid)?;
        if overlap > MAX_KEY_OVERLAP {
            return Err(AppError::Invalid("the overlap is at most a week (168 hours)".into()));
        }
        let old = self.api_key_to_change(id).await?;
        self.may_handle_keys_for(caller, &old.org, &old.sites, AuditAction::ApiKeyCreate).await?;
        let retire_at = self.now().plus(overlap);
        let key = NewKey {
            carrier: &old.carrier,
            org: &old.org,
            sites: &old.sites,
            label: old.label.clone(),
            reason,
        };
        self.new_api_key(caller, key, Some((old.id.clone(), retire_at))).await
    }

    /// Revokes a key at once. Needs a step-up.
    pub async fn revoke_api_key(&self, caller: &Caller, id: &ApiKeyId) -> Result<(), AppError> {
        let key = self.api_key_to_change(id).await?;
        self.may_handle_keys_for(caller, &key.org, &key.sites, AuditAction::ApiKeyRevoke).await?;
        let now = self.now();
        let mut event =
            AuditEvent::success(now, caller.actor(), AuditAction::ApiKeyRevoke, Target::default());
        event.reason = Some(key.id.to_string());
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.retire_api_key(&key.id, now).await? {
                        return Err(AppError::conflict(
                            ConflictCode::KeyRetired,
                            "that key is revoked already",
                        ));
                    }
                    tx.append_audit(&event)?;
                    Ok(())
                }
                .boxed()
            })
            .await
    }

    /// A carrier's keys that `caller` may see (staff of every site a key serves), newest
    /// first, with their last use. Never their secrets.
    pub async fn api_keys(
        &self,
        caller: &Caller,
        carrier: &CarrierId,
    ) -> Result<Vec<ApiKey>, AppError> {
        let carrier = carrier.clone();
        let keys = self
            .store()
            .read(move |tx| async move { tx.api_keys_of(&carrier).await }.boxed())
            .await?;
        Ok(keys
            .into_iter()
            .filter(|k| {
                k.sites
                    .iter()
                    .all(|s| caller.check(|p| policy::may_manage_site(p, &k.org, s)).is_ok())
            })
            .map(ApiKey::from)
            .collect())
    }

    /// The carrier behind an API key token (`<key id>.<secret>`), if it is live.
    pub async fn authenticate_api_key(&self, token: &str) -> Result<Caller, AppError> {
        let now = self.now();
        let parsed = token
            .split_once('.')
            .filter(|(_, secret)| secret.len() <= 128)
            .and_then(|(id, secret)| ApiKeyId::parse(id).ok().map(|id| (id, secret)));
        let found = match &parsed {
            Some((id, _)) => {
                let lookup = id.clone();
                self.store()
                    .read(move |tx| async move { tx.api_key(&lookup).await }.boxed())
                    .await?
            }
            None => None,
        };
        let live = match (&parsed, found) {
            (Some((id, secret)), Some(k)) => {
                let matches = self
                    .keys()
                    .api_keys
                    .verify(&[id.as_str().as_bytes(), secret.as_bytes()], &k.secret_hash);
                (matches && k.revoked_at.is_none_or(|end| end > now)).then_some(k)
            }
            _ => None,
        };
        let Some(key) = live else {
            // Every refused key is recorded: unknown, malformed, wrong secret, revoked.
            let event = AuditEvent::denied(
                now,
                Actor { kind: ActorKind::CarrierKey, id: parsed.map(|(id, _)| id.to_string()) },
                AuditAction::ApiKeyReject,
                Target::default(),
            )
            .because("bad_api_key");
            self.store().write(move |tx| async move { tx.append_audit(&event) }.boxed()).await?;
            return Err(AppError::AuthenticationFailed);
        };
        if key
            .last_used_at
            .is_none_or(|t| now.as_millis() - t.as_millis() >= crate::sessions::TOUCH_EVERY_MS)
        {
            let kid = key.id.clone();
            self.store()
                .write(move |tx| async move { tx.touch_api_key(&kid, now).await }.boxed())
                .await?;
        }
        Ok(Caller::Principal(Principal::CarrierKey {
            key: key.id,
            carrier: key.carrier,
            org: key.org,
            sites: key.sites,
        }))
    }
}

/// A key about to be issued.
struct NewKey<'a> {
    carrier: &'a CarrierId,
    org: &'a OrgId,
    sites: &'a [SiteId],
    label: Name,
    reason: Reason,
}
