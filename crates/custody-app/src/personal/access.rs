//! Subject access and portability (GDPR Art. 15 and 20): everything Custody holds about one
//! person, opened for them, as one document.

use custody_core::PersonId;
use custody_core::audit::{AuditAction, AuditEvent, Target};
use custody_core::policy::{self, Principal};
use futures_util::FutureExt as _;

use super::Statement;
use crate::audit::AuditRecord;
use crate::badges::Badge;
use crate::fanout::{ConsentChange, Subscription};
use crate::parcels::Parcel;
use crate::people::{Person, standing_of};
use crate::sessions::Session;
use crate::{App, AppError, Caller};

/// The most parcels and log entries one export lists.
const EXPORT_LIMIT: u32 = 10_000;

/// Everything Custody holds about one person, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalData {
    /// Who they are: address, name, role, where.
    pub person: Person,
    /// Their sessions, with where each was started from.
    pub sessions: Vec<Session>,
    /// Their consents to hear of alerts, with any phone number.
    pub consents: Vec<Subscription>,
    /// Every consent they gave or withdrew, oldest first.
    pub consent_history: Vec<ConsentChange>,
    /// Their badges, with each one's hint.
    pub badges: Vec<Badge>,
    /// Their parcels, with tracking numbers.
    pub parcels: Vec<Parcel>,
    /// The audit log's entries about them: those about their parcels, and those holding words
    /// about them (with the words).
    pub statements: Vec<(AuditRecord, Statement)>,
}

impl App {
    /// Everything held about `person`, for the person themselves or for staff who may manage
    /// them (answering a request made to the site); refusals look like "not found". Each export
    /// is audited.
    pub async fn personal_data(
        &self,
        caller: &Caller,
        person: &PersonId,
    ) -> Result<PersonalData, AppError> {
        let row = self.person_row(person).await?;
        let standing = standing_of(&row);
        let target = Target { site: row.site.clone(), ..Target::default() };
        self.authorize_sight(caller, AuditAction::PersonalDataExport, &target, |p| match p {
            Principal::Person { id, .. } if *id == row.id => Ok(()),
            _ => policy::may_manage_person(p, &row.id, &standing),
        })
        .await?;
        let view = self.person_view(&row)?;
        let (app, id) = (self.clone(), row.id.clone());
        let data = self
            .store()
            .read(move |tx| {
                async move {
                    let sealer = app.existing_subject_sealer(tx, &id).await?;
                    let Some(sealer) = sealer else { return Err(AppError::NotFound) };
                    let sessions = tx.sessions_of(&id).await?;
                    let consents = tx.alert_subscriptions(Some(&id), None).await?;
                    let consent_history = tx.consent_history(&id).await?;
                    let badges = tx.badges_of_person(&id).await?;
                    let parcels = tx.parcels_for_recipient(&id, EXPORT_LIMIT).await?;
                    let entries = tx.audit_about(&id, EXPORT_LIMIT).await?;
                    let mut statements = Vec::with_capacity(entries.len());
                    for entry in entries {
                        let words = match &entry.event.personal {
                            Some(words) if words.subject == id => {
                                Statement::Shown(sealer.open_statement(&words.ciphertext)?)
                            }
                            _ => Statement::None,
                        };
                        statements.push((AuditRecord::from(entry), words));
                    }
                    let sessions: Vec<Session> = sessions
                        .into_iter()
                        .map(|s| Session::open(s, &sealer))
                        .collect::<Result<_, _>>()?;
                    let consents: Vec<Subscription> = consents
                        .into_iter()
                        .map(|c| Subscription::open(c, Some(&sealer)))
                        .collect::<Result<_, _>>()?;
                    Ok(PersonalData {
                        person: view,
                        sessions,
                        consents,
                        consent_history: crate::views(consent_history),
                        badges: app.badge_views(tx, badges).await?,
                        parcels: app.parcel_views(parcels)?,
                        statements,
                    })
                }
                .boxed()
            })
            .await?;
        let event = AuditEvent::success(
            self.now(),
            caller.actor(),
            AuditAction::PersonalDataExport,
            target,
        )
        .because(format!("subject:{}", row.id));
        self.store()
            .write(move |tx| async move { tx.append_audit(&event).map_err(AppError::from) }.boxed())
            .await?;
        Ok(data)
    }
}
