//! Personal data in the audit log: sealed under a key of its subject's own, readable while
//! that key exists, erased for good by destroying it (crypto-shredding).
//!
//! The log's hashes cover the ciphertext, so an erasure changes no byte of the log and every
//! proof still verifies. Each subject's key is random, stored only wrapped under a
//! key-encryption key (whose id is stored beside it) and bound to the subject's id; erasing the
//! subject deletes the wrapped copy and records that nothing about them may be sealed again.
//! A rotation re-wraps every key under the KEK now current.

use custody_core::audit::{AuditAction, AuditEvent, SealedText, Target};
use custody_core::policy::{self, Denied};
use custody_core::text::{Email, Name};
use custody_core::{OrgId, PersonId, SiteId};
use custody_crypto::CryptoError;
use custody_crypto::kek::Wrapped;
use custody_crypto::seal::SubjectKey;
use custody_store::{AuditRow, PersonDetails, PersonRow, Tx, WrappedKeyRow};
use futures_util::FutureExt as _;

use crate::conflicts::ConflictCode;
use crate::{App, AppError, Caller};

/// The words a person gave for an action, as one reader may see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// No words were given.
    None,
    /// The words, for a reader allowed to see them.
    Shown(String),
    /// Words were given; this reader may not see them.
    Withheld,
    /// Words were given; their subject has been erased and nobody can read them.
    Erased,
}

/// A subject key as the store keeps it, as the key-encryption keys read it.
fn stored(row: WrappedKeyRow) -> Wrapped {
    Wrapped { kek: row.kek, bytes: row.wrapped }
}

/// The fields of a person's row sealed under their key.
#[derive(Debug, Clone, Copy)]
enum Field {
    Email,
    Name,
}

/// Binds a sealed field to its person and its column, so that it cannot be moved to another
/// row or read as another field.
fn field(field: Field, person: &PersonId) -> Vec<u8> {
    let column: &[u8] = match field {
        Field::Email => b"email",
        Field::Name => b"name",
    };
    [b"custody-person:".as_slice(), column, b":", person.as_str().as_bytes()].concat()
}

/// Binds a sealed text to its subject, so that it cannot be passed off as someone else's.
fn context(subject: &PersonId) -> Vec<u8> {
    [b"custody-audit-personal:".as_slice(), subject.as_str().as_bytes()].concat()
}

impl App {
    /// `subject`'s own data key, created on first use in this unit of work; `None` once the
    /// subject has been erased: nothing new about them is kept.
    pub(crate) async fn subject_key(
        &self,
        tx: &mut Tx,
        subject: &PersonId,
    ) -> Result<Option<SubjectKey>, AppError> {
        let keks = &self.keys().keks;
        let wrapped = match tx.subject_key(subject).await? {
            Some(Some(wrapped)) => wrapped,
            Some(None) => return Ok(None),
            None => {
                let key = SubjectKey::generate(self.rng())?;
                let wrapped = key.wrap(keks, subject.as_str())?;
                let row = WrappedKeyRow { kek: wrapped.kek, wrapped: wrapped.bytes };
                tx.insert_subject_key(subject, &row, self.now()).await?;
                // Read back: a concurrent unit may have created the subject's key first.
                match tx.subject_key(subject).await? {
                    Some(Some(wrapped)) => wrapped,
                    _ => return Ok(None),
                }
            }
        };
        Ok(Some(SubjectKey::unwrap(keks, subject.as_str(), &stored(wrapped))?))
    }

    /// `text` about `subject`, sealed under the subject's own key (created on first use, in
    /// this unit of work). `None` once the subject has been erased.
    pub(crate) async fn seal_personal(
        &self,
        tx: &mut Tx,
        subject: &PersonId,
        text: &str,
    ) -> Result<Option<SealedText>, AppError> {
        let Some(key) = self.subject_key(tx, subject).await? else { return Ok(None) };
        let ciphertext = key.sealer()?.seal(&context(subject), text.as_bytes())?;
        Ok(Some(SealedText { subject: subject.clone(), ciphertext }))
    }

    /// The blind index of an e-mail address: a keyed hash only the master key computes, by
    /// which a person is found without their address being stored in clear.
    pub(crate) fn email_index(&self, email: &Email) -> Vec<u8> {
        self.keys().email_index.hash(&[email.as_str().as_bytes()]).to_vec()
    }

    /// A person's address and name sealed under their own key (created in this unit if they
    /// have none), with the address's blind index. `None` if the person has been erased.
    pub(crate) async fn seal_details(
        &self,
        tx: &mut Tx,
        person: &PersonId,
        email: &Email,
        name: &Name,
    ) -> Result<Option<(Vec<u8>, PersonDetails)>, AppError> {
        let Some(key) = self.subject_key(tx, person).await? else { return Ok(None) };
        let sealer = key.sealer()?;
        let details = PersonDetails::Sealed {
            email: sealer.seal(&field(Field::Email, person), email.as_str().as_bytes())?,
            name: sealer.seal(&field(Field::Name, person), name.as_str().as_bytes())?,
        };
        Ok(Some((self.email_index(email), details)))
    }

    /// A stored person's address and name, opened with their key (read with the row). `None`
    /// once they have been erased; an error if a sealed field does not open (it was moved from
    /// another row or altered).
    pub(crate) fn open_details(&self, row: &PersonRow) -> Result<Option<(Email, Name)>, AppError> {
        let (email, name) = match &row.details {
            PersonDetails::Erased => return Ok(None),
            PersonDetails::Clear { email, name } => return Ok(Some((email.clone(), name.clone()))),
            PersonDetails::Sealed { email, name } => (email, name),
        };
        let Some(wrapped) = &row.key else { return Ok(None) };
        let key = SubjectKey::unwrap(&self.keys().keks, row.id.as_str(), &stored(wrapped.clone()))?;
        let sealer = key.sealer()?;
        let text = |f: Field, sealed: &[u8]| -> Result<String, AppError> {
            let plain = sealer.open(&field(f, &row.id), sealed)?;
            String::from_utf8(plain).map_err(|_| AppError::Crypto(CryptoError::Verification))
        };
        let email = Email::parse(&text(Field::Email, email)?).map_err(AppError::invalid)?;
        let name = Name::parse(&text(Field::Name, name)?).map_err(AppError::invalid)?;
        Ok(Some((email, name)))
    }

    /// The statements of `rows` (events at `site` of `org`) as `caller` may see them.
    pub(crate) async fn statements(
        &self,
        caller: &Caller,
        org: &OrgId,
        site: &SiteId,
        rows: &[AuditRow],
    ) -> Result<Vec<Statement>, AppError> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(sealed) = &row.event.personal else {
                out.push(Statement::None);
                continue;
            };
            if caller.check(|p| policy::may_read_statement(p, org, site, &sealed.subject)).is_err()
            {
                out.push(Statement::Withheld);
                continue;
            }
            let subject = sealed.subject.clone();
            let wrapped = self
                .store()
                .read(move |tx| async move { tx.subject_key(&subject).await }.boxed())
                .await?;
            let Some(Some(wrapped)) = wrapped else {
                out.push(Statement::Erased);
                continue;
            };
            let keks = &self.keys().keks;
            let key = SubjectKey::unwrap(keks, sealed.subject.as_str(), &stored(wrapped))?;
            let plain = key.sealer()?.open(&context(&sealed.subject), &sealed.ciphertext)?;
            out.push(Statement::Shown(String::from_utf8_lossy(&plain).into_owned()));
        }
        Ok(out)
    }

    /// Erases everything personal held about `person`: their key is destroyed, so what was
    /// sealed under it (their statements in the log, their address and name) can never be read
    /// again, and nothing about them is sealed from now on. Their row keeps only what other
    /// records refer to (id, organisation, role, dates): address, name, blind index and
    /// password go, the account is disabled and its sessions end. Their consents to hear of
    /// alerts, with any phone number, are deleted. The log itself does not change and still
    /// verifies. Org-wide admins only; the last active super-admin of an organisation cannot
    /// be erased. The erasure is audited. Returns `false` if the person had been erased
    /// already.
    pub async fn erase_personal_data(
        &self,
        caller: &Caller,
        person: &PersonId,
    ) -> Result<bool, AppError> {
        let lookup = person.clone();
        let row = self
            .store()
            .read(move |tx| async move { tx.person(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        self.authorize(caller, AuditAction::PersonalDataErase, &Target::default(), |p| {
            policy::may_manage_org(p, &row.org)
        })
        .await?;
        let (now, actor, person) = (self.now(), caller.actor(), person.clone());
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
                    // The numbers they gave for alerts' text messages go too.
                    tx.delete_alert_subscriptions_of(&person).await?;
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

    /// Seals in place what an earlier version stored in clear: each person's address and name,
    /// under their own key, with the address's blind index, `batch` people to a unit of work,
    /// calling `progress(sealed, total)` after each. Idempotent and resumable: a row is
    /// replaced only while it is still in clear, so a run stopped anywhere loses nothing and
    /// the next carries on. A person erased meanwhile keeps nothing. Recorded in the log with
    /// the count when there was anything to seal. Answers how many rows were sealed.
    pub async fn seal_personal_data(
        &self,
        batch: u32,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, AppError> {
        let total = self.store().read(|tx| async move { tx.count_people_in_clear().await }.boxed());
        let total = u64::try_from(total.await?).unwrap_or(0);
        if total == 0 {
            return Ok(0);
        }
        let mut sealed = 0_u64;
        loop {
            let (app, limit) = (self.clone(), i64::from(batch.max(1)));
            let done = self
                .store()
                .write(move |tx| {
                    async move {
                        let rows = tx.people_in_clear(limit).await?;
                        for row in &rows {
                            let PersonDetails::Clear { email, name } = &row.details else {
                                continue;
                            };
                            match app.seal_details(tx, &row.id, email, name).await? {
                                Some((index, PersonDetails::Sealed { email, name })) => {
                                    tx.seal_person(&row.id, &index, &email, &name).await?;
                                }
                                _ => tx.erase_person(&row.id).await?,
                            }
                        }
                        Ok::<_, AppError>(rows.len() as u64)
                    }
                    .boxed()
                })
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
        .because(format!("people:{sealed}"));
        self.store()
            .write(move |tx| async move { tx.append_audit(&event).map_err(AppError::from) }.boxed())
            .await?;
        Ok(sealed)
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
