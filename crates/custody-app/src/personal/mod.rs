//! Personal data at rest: sealed under a key of its subject's own, readable while that key
//! exists, erased for good by destroying it (crypto-shredding). A person's address and name,
//! where their sessions came from, their phone number, badge hints and words on alerts, and
//! the words about them in the audit log; people are found by a blind index of their address.
//! Parcels' tracking numbers are sealed under an installation key, bound to the parcel.
//!
//! The log's hashes cover the ciphertext, so an erasure changes no byte of the log and every
//! proof still verifies. Each subject's key is random, stored only wrapped under a
//! key-encryption key (whose id is stored beside it) and bound to the subject's id; erasing the
//! subject deletes the wrapped copy and records that nothing about them may be sealed again.
//! The lifecycle (sealing in place, rotation, retirement, erasure) is in `lifecycle`; the
//! export of everything about one person in `access`.

use custody_core::audit::SealedText;
use custody_core::policy;
use custody_core::text::{Email, Name, TrackingRef};
use custody_core::{OrgId, ParcelId, PersonId, SiteId};
use custody_crypto::CryptoError;
use custody_crypto::kek::{SubjectKey, Wrapped};
use custody_crypto::seal::Sealer;
use custody_store::{AuditRow, PersonDetails, PersonRow, StoredText, Tx, WrappedKeyRow};
use futures_util::FutureExt as _;

use crate::{App, AppError, Caller};

mod access;
mod lifecycle;

pub use access::PersonalData;

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

/// The fields sealed under their subject's key, each bound to its column.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field {
    /// A person's e-mail address.
    Email,
    /// A person's name.
    Name,
    /// Where a session was started from: the address and the browser's name for itself.
    SessionClient,
    /// The phone number a person gave for alerts by text message.
    Phone,
    /// The last four hex digits of a badge's number.
    BadgeHint,
    /// A person's words on an alert: a note, or why they acknowledged or resolved it.
    AlertNote,
}

impl Field {
    const fn column(self) -> &'static [u8] {
        match self {
            Self::Email => b"email",
            Self::Name => b"name",
            Self::SessionClient => b"session-client",
            Self::Phone => b"phone",
            Self::BadgeHint => b"badge-hint",
            Self::AlertNote => b"alert-note",
        }
    }
}

/// A subject's own key, opened: it seals and opens that subject's fields, each bound to the
/// subject and its column, so that a ciphertext moved to another row or field does not open.
pub(crate) struct SubjectSealer {
    subject: PersonId,
    sealer: Sealer,
}

impl SubjectSealer {
    fn context(&self, field: Field) -> Vec<u8> {
        [b"custody-person:".as_slice(), field.column(), b":", self.subject.as_str().as_bytes()]
            .concat()
    }

    /// `text`, sealed as `field` of this subject.
    pub(crate) fn seal(&self, field: Field, text: &str) -> Result<Vec<u8>, AppError> {
        Ok(self.sealer.seal(&self.context(field), text.as_bytes())?)
    }

    /// `sealed` opened as `field` of this subject; an error if it was sealed as another field,
    /// for another subject, or altered.
    pub(crate) fn open(&self, field: Field, sealed: &[u8]) -> Result<String, AppError> {
        let plain = self.sealer.open(&self.context(field), sealed)?;
        String::from_utf8(plain).map_err(|_| AppError::Crypto(CryptoError::Verification))
    }

    /// Words about this subject in the audit log, opened.
    pub(crate) fn open_statement(&self, ciphertext: &[u8]) -> Result<String, AppError> {
        let plain = self.sealer.open(&context(&self.subject), ciphertext)?;
        Ok(String::from_utf8_lossy(&plain).into_owned())
    }

    /// A stored text of this subject's, opened if it is sealed (a clear one from before it
    /// was sealed reads as it is, until it is sealed in place).
    pub(crate) fn read(&self, field: Field, stored: &StoredText) -> Result<String, AppError> {
        match stored {
            StoredText::Sealed(bytes) => self.open(field, bytes),
            StoredText::Clear(text) => Ok(text.clone()),
        }
    }
}

/// Binds a sealed tracking number to its parcel.
fn tracking_context(parcel: &ParcelId) -> Vec<u8> {
    [b"custody-parcel:tracking:".as_slice(), parcel.as_str().as_bytes()].concat()
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
                // Wrap only under the installation's current KEK: a process started before a
                // rotation holds an older one, which may be retired once its keys are moved.
                if tx.claim_current_kek(keks.current()).await? != keks.current() {
                    return Err(AppError::Crypto(CryptoError::InvalidKey(
                        "a newer key-encryption key is current: restart this process to load it",
                    )));
                }
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

    /// `subject`'s fields' sealer, their key created on first use in this unit of work; `None`
    /// once they have been erased.
    pub(crate) async fn subject_sealer(
        &self,
        tx: &mut Tx,
        subject: &PersonId,
    ) -> Result<Option<SubjectSealer>, AppError> {
        let Some(key) = self.subject_key(tx, subject).await? else { return Ok(None) };
        Ok(Some(SubjectSealer { subject: subject.clone(), sealer: key.sealer()? }))
    }

    /// `subject`'s fields' sealer for reading: `None` if they have no key (nothing of theirs
    /// was sealed) or have been erased. Creates nothing.
    pub(crate) async fn existing_subject_sealer(
        &self,
        tx: &mut Tx,
        subject: &PersonId,
    ) -> Result<Option<SubjectSealer>, AppError> {
        match tx.subject_key(subject).await? {
            Some(Some(wrapped)) => self.sealer_from(subject, &wrapped).map(Some),
            _ => Ok(None),
        }
    }

    /// The sealer of `subject`'s fields from their wrapped key as stored.
    pub(crate) fn sealer_from(
        &self,
        subject: &PersonId,
        wrapped: &WrappedKeyRow,
    ) -> Result<SubjectSealer, AppError> {
        let key =
            SubjectKey::unwrap(&self.keys().keks, subject.as_str(), &stored(wrapped.clone()))?;
        Ok(SubjectSealer { subject: subject.clone(), sealer: key.sealer()? })
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

    /// A parcel's tracking number sealed under the installation's tracking key, bound to the
    /// parcel.
    pub(crate) fn seal_tracking_ref(
        &self,
        parcel: &ParcelId,
        tracking: &TrackingRef,
    ) -> Result<StoredText, AppError> {
        let sealed =
            self.keys().tracking.seal(&tracking_context(parcel), tracking.as_str().as_bytes())?;
        Ok(StoredText::Sealed(sealed))
    }

    /// A parcel's stored tracking number, opened (a clear one from before it was sealed reads
    /// as it is, until it is sealed in place).
    pub(crate) fn open_tracking_ref(
        &self,
        parcel: &ParcelId,
        stored: &StoredText,
    ) -> Result<TrackingRef, AppError> {
        let text = match stored {
            StoredText::Sealed(bytes) => {
                let plain = self.keys().tracking.open(&tracking_context(parcel), bytes)?;
                String::from_utf8(plain).map_err(|_| AppError::Crypto(CryptoError::Verification))?
            }
            StoredText::Clear(text) => text.clone(),
        };
        TrackingRef::parse(&text).map_err(AppError::invalid)
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
        let Some(sealer) = self.subject_sealer(tx, person).await? else { return Ok(None) };
        let details = PersonDetails::Sealed {
            email: sealer.seal(Field::Email, email.as_str())?,
            name: sealer.seal(Field::Name, name.as_str())?,
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
        let sealer = self.sealer_from(&row.id, wrapped)?;
        let email = Email::parse(&sealer.open(Field::Email, email)?).map_err(AppError::invalid)?;
        let name = Name::parse(&sealer.open(Field::Name, name)?).map_err(AppError::invalid)?;
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
            let words = self.sealer_from(&sealed.subject, &wrapped)?;
            out.push(Statement::Shown(words.open_statement(&sealed.ciphertext)?));
        }
        Ok(out)
    }
}
