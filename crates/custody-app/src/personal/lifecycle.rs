//! The lifecycle of personal data at rest: sealing in place what an earlier version stored in
//! clear, re-wrapping every subject's key under a new key-encryption key, retiring the KEKs
//! nothing needs any more, and erasure.

use custody_core::PersonId;
use custody_core::audit::{AuditAction, AuditEvent, Target};
use custody_core::policy::{self, Denied};
use custody_store::{PersonDetails, StoredText, Tx, WrappedKeyRow};
use futures_util::FutureExt as _;

use super::{Field, stored};
use crate::conflicts::ConflictCode;
use crate::{App, AppError, Caller};

impl App {
    /// Erases everything personal held about `person`: their key is destroyed, so what was
    /// sealed under it (their statements in the log, address and name, sessions' origins,
    /// badge hints, words on alerts) can never be read again, and nothing about them is sealed
    /// from now on. Their row keeps only what other records refer to (id, organisation, role,
    /// dates): address, name, blind index and password go, the account is disabled and its
    /// sessions end. Their badges are revoked, their parcels' tracking numbers dropped, their
    /// consents to hear of alerts, with any phone number, deleted, and messages to them not yet
    /// sent given up and wiped. The log itself does not change and still verifies. Org-wide admins only; the last active super-admin of an organisation cannot
    /// be erased. The erasure is audited. Returns `false` if the person had been erased
    /// already.
    pub async fn erase_personal_data(
        &self,
        caller: &Caller,
        person: &PersonId,
    ) -> Result<bool, AppError> {
        let row = self.person_row(person).await?;
        self.authorize(caller, AuditAction::PersonalDataErase, &Target::default(), |p| {
            policy::may_manage_org(p, &row.org)
        })
        .await?;
        // Their address, to find the messages still waiting for them (sealed under the
        // outbox's installation key, not theirs).
        let address = self.open_details(&row)?.map(|(email, _)| email.to_string());
        let (now, actor, person, app) = (self.now(), caller.actor(), person.clone(), self.clone());
        self.store()
            .write(move |tx| {
                async move {
                    if row.disabled_at.is_none() && !tx.disable_person(&row, now).await? {
                        return Err(AppError::conflict(
                            ConflictCode::LastSuperAdmin,
                            "the organisation's last super-admin stays; appoint another first",
                        ));
                    }
                    let erased = tx.erase_subject_key(&person, now).await?;
                    tx.erase_person(&person).await?;
                    // Their badges stop working; their parcels keep their chain of custody
                    // without the carrier's number that led to them.
                    tx.revoke_badges_of(&person, now).await?;
                    tx.drop_tracking_refs_of(&person).await?;
                    // The numbers they gave for alerts' text messages go too.
                    tx.delete_alert_subscriptions_of(&person).await?;
                    // Messages to them not yet sent are given up and wiped.
                    if let Some(address) = &address {
                        app.withdraw_messages_to(tx, address, now).await?;
                    }
                    tx.append_audit(
                        &AuditEvent::success(
                            now,
                            actor,
                            AuditAction::PersonalDataErase,
                            Target::default(),
                        )
                        .because(if erased {
                            format!("subject:{person}")
                        } else {
                            format!("subject:{person} already_erased")
                        }),
                    )?;
                    Ok(erased)
                }
                .boxed()
            })
            .await
    }

    /// Re-wraps every subject key that another KEK wrapped under the current one, `batch` keys
    /// to a unit of work, calling `progress(moved, total)` after each. The operator's, at the
    /// command line, who holds the keys; recorded in the log with the KEK and the count. A run
    /// stopped anywhere leaves every key wrapped under one KEK or the other, both still held,
    /// and the next run carries on: each key is replaced only if it is still the one read, so
    /// a key erased or re-wrapped meanwhile is left as it is. Answers how many keys moved.
    pub async fn rewrap_subject_keys(
        &self,
        caller: &Caller,
        batch: u32,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, AppError> {
        self.authorize(caller, AuditAction::KeysRewrap, &Target::default(), |_| Err(Denied::Role))
            .await?;
        let current = self.keys().keks.current().to_owned();
        // From now on every process wraps new keys under this KEK, or refuses to.
        let named = current.clone();
        self.store()
            .write(move |tx| async move { tx.set_current_kek(&named).await }.boxed())
            .await?;
        let counts = self.subject_keys_by_kek().await?;
        let total: u64 = counts
            .iter()
            .filter(|(kek, _)| *kek != current)
            .map(|(_, n)| u64::try_from(*n).unwrap_or(0))
            .sum();
        let (mut moved, mut after) = (0_u64, String::new());
        loop {
            let (app, kek, from) = (self.clone(), current.clone(), after.clone());
            let limit = i64::from(batch.max(1));
            let done = self
                .store()
                .write(move |tx| {
                    async move {
                        let keys = tx.subject_keys_not_under(&kek, &from, limit).await?;
                        let mut moved = 0_u64;
                        for (subject, old) in &keys {
                            let context = subject.as_str().as_bytes();
                            let new = app.keys().keks.rewrap(context, &stored(old.clone()))?;
                            let new = WrappedKeyRow { kek: new.kek, wrapped: new.bytes };
                            if tx.rewrap_subject_key(subject, old, &new).await? {
                                moved += 1;
                            }
                        }
                        let last = keys.last().map(|(s, _)| s.to_string());
                        Ok::<_, AppError>((moved, last))
                    }
                    .boxed()
                })
                .await?;
            moved += done.0;
            progress(moved, total.max(moved));
            match done.1 {
                Some(last) => after = last,
                None => break,
            }
        }
        let (now, actor) = (self.now(), caller.actor());
        let event = AuditEvent::success(now, actor, AuditAction::KeysRewrap, Target::default())
            .because(format!("kek:{current} moved:{moved}"));
        self.store()
            .write(move |tx| async move { tx.append_audit(&event).map_err(AppError::from) }.boxed())
            .await?;
        Ok(moved)
    }

    /// Seals in place what an earlier version stored in clear, each under its person's own
    /// key: people's addresses and names (writing the address's blind index), the phone numbers
    /// of consents to alerts, badges' hints, people's words on alerts; and parcels' tracking
    /// numbers under the installation's tracking key. `batch` rows to a unit of work, calling
    /// `progress(sealed, total)` after each. Idempotent and resumable: a row is replaced only
    /// while it is still in clear, so a run stopped anywhere loses nothing and the next carries
    /// on. What belongs to someone erased meanwhile is dropped, not sealed. Recorded in the log
    /// with the count when there was anything to seal. Answers how many rows were sealed.
    pub async fn seal_personal_data(
        &self,
        batch: u32,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, AppError> {
        let total = self.store().read(|tx| async move { tx.count_in_clear().await }.boxed());
        let total = u64::try_from(total.await?).unwrap_or(0);
        if total == 0 {
            return Ok(0);
        }
        let mut sealed = 0_u64;
        loop {
            let (app, limit) = (self.clone(), i64::from(batch.max(1)));
            let done = self
                .store()
                .write(move |tx| async move { app.seal_batch(tx, limit).await }.boxed())
                .await?;
            if done == 0 {
                break;
            }
            sealed += done;
            progress(sealed, total.max(sealed));
        }
        let event = AuditEvent::success(
            self.now(),
            Caller::Operator.actor(),
            AuditAction::PersonalDataSeal,
            Target::default(),
        )
        .because(format!("rows:{sealed}"));
        self.store()
            .write(move |tx| async move { tx.append_audit(&event).map_err(AppError::from) }.boxed())
            .await?;
        Ok(sealed)
    }

    /// Seals up to `limit` rows still in clear, people first, then consents, badges, parcels
    /// and people's words on alerts; answers how many (0 when nothing is left).
    async fn seal_batch(&self, tx: &mut Tx, limit: i64) -> Result<u64, AppError> {
        let people = tx.people_in_clear(limit).await?;
        for row in &people {
            let PersonDetails::Clear { email, name } = &row.details else { continue };
            match self.seal_details(tx, &row.id, email, name).await? {
                Some((index, PersonDetails::Sealed { email, name })) => {
                    tx.seal_person(&row.id, &index, &email, &name).await?;
                }
                _ => tx.erase_person(&row.id).await?,
            }
        }
        if !people.is_empty() {
            return Ok(people.len() as u64);
        }
        let consents = tx.subscriptions_in_clear(limit).await?;
        for consent in &consents {
            let Some(StoredText::Clear(phone)) = &consent.phone else { continue };
            match self.subject_sealer(tx, &consent.person).await? {
                Some(sealer) => {
                    tx.seal_subscription_phone(consent, &sealer.seal(Field::Phone, phone)?).await?;
                }
                None => {
                    tx.delete_alert_subscription(&consent.person, &consent.site, consent.channel)
                        .await?;
                }
            }
        }
        if !consents.is_empty() {
            return Ok(consents.len() as u64);
        }
        let badges = tx.badges_in_clear(limit).await?;
        for badge in &badges {
            let StoredText::Clear(hint) = &badge.hint else { continue };
            // An erased holder's hint is dropped: nothing is sealed in its place, and nothing
            // opens it.
            let sealed = match self.subject_sealer(tx, &badge.person).await? {
                Some(sealer) => sealer.seal(Field::BadgeHint, hint)?,
                None => Vec::new(),
            };
            tx.seal_badge_hint(&badge.id, &sealed).await?;
        }
        if !badges.is_empty() {
            return Ok(badges.len() as u64);
        }
        let parcels = tx.parcels_in_clear(limit).await?;
        for parcel in &parcels {
            let Some(stored @ StoredText::Clear(_)) = &parcel.tracking_ref else { continue };
            let tracking = self.open_tracking_ref(&parcel.id, stored)?;
            let StoredText::Sealed(sealed) = self.seal_tracking_ref(&parcel.id, &tracking)? else {
                continue;
            };
            tx.seal_tracking_ref(&parcel.id, &sealed).await?;
        }
        if !parcels.is_empty() {
            return Ok(parcels.len() as u64);
        }
        let notes = tx.alert_notes_in_clear(limit).await?;
        for (alert, seq, writer, words) in &notes {
            let sealed = match self.subject_sealer(tx, writer).await? {
                Some(sealer) => Some(sealer.seal(Field::AlertNote, words)?),
                None => None,
            };
            tx.seal_alert_note(alert, *seq, sealed.as_deref()).await?;
        }
        Ok(notes.len() as u64)
    }

    /// Retires the key-encryption keys nothing needs any more: of `held` (the KEK files this
    /// process holds), each that no stored key names and that is not current, passed to
    /// `remove` (which deletes its file). The operator's, at the command line; refused unless
    /// this process's KEK is the installation's current one. Runs holding the current-KEK row,
    /// so no unit can wrap a key meanwhile; recorded in the log with the KEKs retired.
    /// Answers their ids.
    pub async fn retire_keks(
        &self,
        caller: &Caller,
        held: Vec<String>,
        remove: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Result<Vec<String>, AppError> {
        self.authorize(caller, AuditAction::KeysRetire, &Target::default(), |_| Err(Denied::Role))
            .await?;
        let (mine, now, actor) =
            (self.keys().keks.current().to_owned(), self.now(), caller.actor());
        self.store()
            .write(move |tx| {
                async move {
                    if tx.claim_current_kek(&mine).await? != mine {
                        return Err(AppError::conflict(
                            ConflictCode::KekNotCurrent,
                            "another key-encryption key is current: run `custody admin \
                             rotate-keys --resume` from this data directory first",
                        ));
                    }
                    let in_use: Vec<String> =
                        tx.subject_keys_by_kek().await?.into_iter().map(|(kek, _)| kek).collect();
                    let unused: Vec<String> =
                        held.into_iter().filter(|k| *k != mine && !in_use.contains(k)).collect();
                    for kek in &unused {
                        remove(kek).map_err(AppError::Invalid)?;
                    }
                    if !unused.is_empty() {
                        let event = AuditEvent::success(
                            now,
                            actor,
                            AuditAction::KeysRetire,
                            Target::default(),
                        )
                        .because(format!("retired:{}", unused.join(",")));
                        tx.append_audit(&event)?;
                    }
                    Ok(unused)
                }
                .boxed()
            })
            .await
    }

    /// How many live subject keys each key-encryption key wraps, by KEK id.
    pub async fn subject_keys_by_kek(&self) -> Result<Vec<(String, i64)>, AppError> {
        Ok(self.store().read(|tx| async move { tx.subject_keys_by_kek().await }.boxed()).await?)
    }

    /// The id of the key-encryption key that wraps new keys.
    pub fn current_kek(&self) -> String {
        self.keys().keks.current().to_owned()
    }
}
