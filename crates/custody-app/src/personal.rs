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
use custody_core::{OrgId, PersonId, SiteId};
use custody_crypto::kek::Wrapped;
use custody_crypto::seal::SubjectKey;
use custody_store::{AuditRow, Tx, WrappedKeyRow};
use futures_util::FutureExt as _;

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

/// Binds a sealed text to its subject, so that it cannot be passed off as someone else's.
fn context(subject: &PersonId) -> Vec<u8> {
    [b"custody-audit-personal:".as_slice(), subject.as_str().as_bytes()].concat()
}

impl App {
    /// `text` about `subject`, sealed under the subject's own key (created on first use, in
    /// this unit of work). `None` once the subject has been erased: nothing new about them is
    /// kept.
    pub(crate) async fn seal_personal(
        &self,
        tx: &mut Tx,
        subject: &PersonId,
        text: &str,
    ) -> Result<Option<SealedText>, AppError> {
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
        let key = SubjectKey::unwrap(keks, subject.as_str(), &stored(wrapped))?;
        let ciphertext = key.sealer()?.seal(&context(subject), text.as_bytes())?;
        Ok(Some(SealedText { subject: subject.clone(), ciphertext }))
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

    /// Erases everything personal the audit log holds about `person`: their key is destroyed,
    /// so what was sealed under it can never be read again, and nothing about them is sealed
    /// from now on. Their consents to hear of alerts, with any phone number, are deleted. The log itself does not change and still verifies. Org-wide admins only;
    /// the erasure is audited. Returns `false` if the person had been erased already.
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
                    let erased = tx.erase_subject_key(&person, now).await?;
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

    /// How many live subject keys each key-encryption key wraps, by KEK id.
    pub async fn subject_keys_by_kek(&self) -> Result<Vec<(String, i64)>, AppError> {
        Ok(self.store().read(|tx| async move { tx.subject_keys_by_kek().await }.boxed()).await?)
    }

    /// The id of the key-encryption key that wraps new keys.
    pub fn current_kek(&self) -> String {
        self.keys().keks.current().to_owned()
    }
}
