//! Personal-data breaches: declared by staff, the people reached computed from the audit log,
//! the legal clocks started from when the organisation became aware (GDPR Art. 33 and 34,
//! HIPAA §164.404–410, in [`custody_core::breach`]), the notices drafted, and each step in
//! answering it recorded once and audited.

use custody_core::audit::{AuditAction, AuditEvent, Target};
use custody_core::breach::{BreachStep, Deadlines, HHS_PROMPT_FROM};
use custody_core::policy;
use custody_core::{AlertId, BankId, BreachId, OrgId, PersonId, SiteId, Timestamp};
use custody_store::{BreachRow, Tx};
use futures_util::FutureExt as _;

use crate::conflicts::ConflictCode;
use crate::{App, AppError, Caller};

/// The longest account of a breach.
const SUMMARY_MAX: usize = 4000;

/// A breach as staff declare it.
#[derive(Debug, Clone)]
pub struct NewBreach {
    /// Where it happened.
    pub site: SiteId,
    /// The bank, when it was one bank.
    pub bank: Option<BankId>,
    /// The alert that raised it, if one did.
    pub alert: Option<AlertId>,
    /// What happened, in the declarer's words (sealed at rest).
    pub summary: String,
    /// The window of time it covers.
    pub window_from: Timestamp,
    /// To.
    pub window_to: Timestamp,
    /// When the organisation became aware of it.
    pub discovered_at: Timestamp,
}

/// A breach, with its clocks and what has been done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    /// Id.
    pub id: BreachId,
    /// Organisation.
    pub org: OrgId,
    /// Where.
    pub site: SiteId,
    /// Which bank, if one.
    pub bank: Option<BankId>,
    /// The alert that raised it.
    pub alert: Option<AlertId>,
    /// What happened.
    pub summary: String,
    /// The window it covers: from.
    pub window_from: Timestamp,
    /// To.
    pub window_to: Timestamp,
    /// When the organisation became aware of it.
    pub discovered_at: Timestamp,
    /// When it was declared.
    pub declared_at: Timestamp,
    /// Who declared it.
    pub declared_by: PersonId,
    /// How many people the log shows it reached.
    pub affected: u64,
    /// When each notice is due.
    pub deadlines: Deadlines,
    /// What has been done, in order: the step, when, by whom.
    pub steps: Vec<(BreachStep, Timestamp, PersonId)>,
}

impl Breach {
    /// When `step` was recorded, if it was.
    pub fn done(&self, step: BreachStep) -> Option<Timestamp> {
        self.steps.iter().find(|(s, _, _)| *s == step).map(|(_, at, _)| *at)
    }
}

/// One person's notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Whom it is for.
    pub person: PersonId,
    /// Their address; `None` once they were erased (there is nobody left to tell).
    pub email: Option<String>,
    /// The letter.
    pub text: String,
}

/// The drafts a breach calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notices {
    /// To the supervisory authority (GDPR Art. 33(3)); the controller fills in its parts.
    pub authority: String,
    /// To each person reached (GDPR Art. 34(2), HIPAA §164.404(c)).
    pub individuals: Vec<Notice>,
}

impl App {
    /// Declares a breach at a site: the people the log shows there in its window are fixed as
    /// the ones reached, and the clocks start from `discovered_at`. Admins in scope, stepped
    /// up; audited with the count.
    pub async fn declare_breach(
        &self,
        caller: &Caller,
        new: NewBreach,
    ) -> Result<Breach, AppError> {
        let place = self.site(&new.site).await?;
        caller.unless_hidden(|p| policy::may_view_site(p, &place.org, &place.id))?;
        let summary = new.summary.trim().to_owned();
        let now = self.now();
        if summary.is_empty() || summary.chars().count() > SUMMARY_MAX {
            return Err(AppError::Invalid(format!(
                "summary: say what happened, in at most {SUMMARY_MAX} characters"
            )));
        }
        if new.window_from > new.window_to || new.window_to > now {
            return Err(AppError::Invalid(
                "window: from must not be after to, and to not in the future".into(),
            ));
        }
        if new.discovered_at > now {
            return Err(AppError::Invalid("discovered_at: not in the future".into()));
        }
        let target =
            Target { site: Some(place.id.clone()), bank: new.bank.clone(), ..Target::default() };
        self.authorize(caller, AuditAction::BreachDeclare, &target, |p| {
            policy::may_manage_site(p, &place.org, &place.id).and_then(|()| self.stepped_up(p))
        })
        .await?;
        let declared_by = caller.person().cloned().ok_or(AppError::Forbidden)?;
        let id = self.new_id(BreachId::from_random)?;
        let sealed = self.keys().breaches.seal(id.as_str().as_bytes(), summary.as_bytes())?;
        let row = BreachRow {
            id: id.clone(),
            org: place.org.clone(),
            site: place.id.clone(),
            bank: new.bank,
            alert: new.alert,
            summary: sealed,
            window_from: new.window_from,
            window_to: new.window_to,
            discovered_at: new.discovered_at,
            declared_at: now,
            declared_by,
        };
        // Who the log shows there is read first, outside the unit that stores the breach: on a
        // long log it is a scan of the site's entries, which must not hold the writer.
        let (site, bank, from, to) =
            (row.site.clone(), row.bank.clone(), row.window_from, row.window_to);
        let reached = self
            .store()
            .read(move |tx| {
                async move { tx.people_in_the_log(&site, bank.as_ref(), from, to).await }.boxed()
            })
            .await?;
        let (actor, app) = (caller.actor(), self.clone());
        self.store()
            .write(move |tx| {
                async move {
                    if let Some(bank) = &row.bank {
                        let found = tx.bank(bank).await?.ok_or(AppError::NotFound)?;
                        if found.site != row.site {
                            return Err(AppError::Invalid("bank: not at this site".into()));
                        }
                    }
                    if let Some(alert) = &row.alert {
                        let found = tx.alert(alert).await?.ok_or(AppError::NotFound)?;
                        if found.site != row.site {
                            return Err(AppError::Invalid("alert: not at this site".into()));
                        }
                    }
                    tx.insert_breach(&row, &reached).await?;
                    let event = AuditEvent::success(now, actor, AuditAction::BreachDeclare, target)
                        .because(format!("breach:{};affected:{}", row.id, reached.len()));
                    tx.append_audit(&event)?;
                    app.breach_in(tx, &row.id).await
                }
                .boxed()
            })
            .await
    }

    /// A breach with its clocks. Staff and auditors who may see its site.
    pub async fn breach(&self, caller: &Caller, id: &BreachId) -> Result<Breach, AppError> {
        let (app, lookup) = (self.clone(), id.clone());
        let breach = self
            .store()
            .read(move |tx| async move { app.breach_in(tx, &lookup).await }.boxed())
            .await?;
        caller.unless_hidden(|p| policy::may_view_site(p, &breach.org, &breach.site))?;
        Ok(breach)
    }

    /// A site's breaches, newest first. Staff and auditors who may see the site.
    pub async fn breaches_at(
        &self,
        caller: &Caller,
        site: &SiteId,
    ) -> Result<Vec<Breach>, AppError> {
        let place = self.site(site).await?;
        caller.unless_hidden(|p| policy::may_view_site(p, &place.org, &place.id))?;
        let (app, site) = (self.clone(), site.clone());
        self.store()
            .read(move |tx| {
                async move {
                    let mut out = Vec::new();
                    for row in tx.breaches_at(&site).await? {
                        out.push(app.breach_in(tx, &row.id).await?);
                    }
                    Ok(out)
                }
                .boxed()
            })
            .await
    }

    async fn breach_in(&self, tx: &mut Tx, id: &BreachId) -> Result<Breach, AppError> {
        let row = tx.breach(id).await?.ok_or(AppError::NotFound)?;
        let affected = tx.breach_affected(id).await?.len() as u64;
        let steps = tx.breach_steps(id).await?;
        let plain = zeroize::Zeroizing::new(
            self.keys().breaches.open(id.as_str().as_bytes(), &row.summary)?,
        );
        Ok(Breach {
            summary: String::from_utf8_lossy(&plain).into_owned(),
            deadlines: Deadlines::of(row.discovered_at, affected),
            steps: steps.into_iter().map(|s| (s.step, s.at, s.by)).collect(),
            affected,
            id: row.id,
            org: row.org,
            site: row.site,
            bank: row.bank,
            alert: row.alert,
            window_from: row.window_from,
            window_to: row.window_to,
            discovered_at: row.discovered_at,
            declared_at: row.declared_at,
            declared_by: row.declared_by,
        })
    }

    /// The notices a breach calls for, drafted: one to the supervisory authority and one to
    /// each person reached, addressed by name. Admins in scope, stepped up (the drafts open
    /// people's names and addresses); audited.
    pub async fn breach_notices(
        &self,
        caller: &Caller,
        id: &BreachId,
    ) -> Result<Notices, AppError> {
        let breach = self.breach(caller, id).await?;
        let target = Target {
            site: Some(breach.site.clone()),
            bank: breach.bank.clone(),
            ..Target::default()
        };
        self.authorize(caller, AuditAction::BreachNotices, &target, |p| {
            policy::may_manage_site(p, &breach.org, &breach.site).and_then(|()| self.stepped_up(p))
        })
        .await?;
        let site = self.site(&breach.site).await?;
        let (app, lookup) = (self.clone(), id.clone());
        let people = self
            .store()
            .read(move |tx| {
                async move {
                    let mut out = Vec::new();
                    for person in tx.breach_affected(&lookup).await? {
                        let details = match tx.person(&person).await? {
                            Some(row) => app.open_details(&row)?,
                            None => None,
                        };
                        out.push((person, details));
                    }
                    Ok::<_, AppError>(out)
                }
                .boxed()
            })
            .await?;
        let individuals = people
            .into_iter()
            .map(|(person, details)| {
                let (email, name) = match details {
                    Some((email, name)) => (Some(email.to_string()), name.to_string()),
                    None => (None, "resident".to_owned()),
                };
                let text = individual_notice(&breach, &site.name.to_string(), &name);
                Notice { person, email, text }
            })
            .collect();
        let event =
            AuditEvent::success(self.now(), caller.actor(), AuditAction::BreachNotices, target)
                .because(format!("breach:{}", breach.id));
        self.store()
            .write(move |tx| async move { tx.append_audit(&event).map_err(AppError::from) }.boxed())
            .await?;
        Ok(Notices { authority: authority_notice(&breach, &site.name.to_string()), individuals })
    }

    /// Records a step in answering a breach, once. Closing needs the authority told, and the
    /// people reached when there are any. Admins in scope, stepped up; audited.
    pub async fn record_breach_step(
        &self,
        caller: &Caller,
        id: &BreachId,
        step: BreachStep,
    ) -> Result<Breach, AppError> {
        let breach = self.breach(caller, id).await?;
        let target = Target {
            site: Some(breach.site.clone()),
            bank: breach.bank.clone(),
            ..Target::default()
        };
        self.authorize(caller, AuditAction::BreachStep, &target, |p| {
            policy::may_manage_site(p, &breach.org, &breach.site).and_then(|()| self.stepped_up(p))
        })
        .await?;
        if step == BreachStep::Closed {
            let owed = [
                (BreachStep::AuthorityNotified, true),
                (BreachStep::IndividualsNotified, breach.affected > 0),
            ];
            if owed.iter().any(|(s, due)| *due && breach.done(*s).is_none()) {
                return Err(AppError::conflict(
                    ConflictCode::NoticesOutstanding,
                    "tell the authority, and the people reached, before closing",
                ));
            }
        }
        let by = caller.person().cloned().ok_or(AppError::Forbidden)?;
        let (now, actor, app, id) = (self.now(), caller.actor(), self.clone(), id.clone());
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.add_breach_step(&id, step, now, &by).await? {
                        return Err(AppError::conflict(
                            ConflictCode::Exists,
                            format!("{step} was recorded already"),
                        ));
                    }
                    let event = AuditEvent::success(now, actor, AuditAction::BreachStep, target)
                        .because(format!("breach:{id};step:{step}"));
                    tx.append_audit(&event)?;
                    app.breach_in(tx, &id).await
                }
                .boxed()
            })
            .await
    }
}

fn day(t: Timestamp) -> String {
    let secs = t.as_secs();
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let date = custody_core::breach::civil_date(days);
    format!("{date} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}

/// The draft to the supervisory authority: what Custody knows, and the parts the controller
/// must write in brackets (GDPR Art. 33(3)).
fn authority_notice(b: &Breach, site: &str) -> String {
    let hhs = if b.affected >= HHS_PROMPT_FROM {
        "HHS must be told within 60 days (500 or more affected)."
    } else {
        "Fewer than 500 affected: enter it in the yearly log to HHS, if HIPAA applies."
    };
    format!(
        "Personal data breach notification (GDPR Article 33)\n\n\
         Controller: [name, address, registration number]\n\
         Data protection officer: [name and contact]\n\
         Reference: {id}\n\n\
         (a) Nature of the breach: {summary}\n\
         Where: {site}. Period: {from} to {to}. We became aware on {found}.\n\
         Data subjects concerned: about {n} (residents, staff and couriers of the site, \
         as our audit log records them in that period).\n\
         Personal data concerned: names, e-mail addresses, parcel deliveries and collections \
         (times, compartments, tracking numbers) held by our parcel locker system. Pickup \
         codes, passwords and badge numbers are stored only as keyed hashes; names, addresses \
         and tracking numbers are encrypted at rest. [Say which of these the breach reached.]\n\n\
         (b) Contact point for more information: [name and contact]\n\n\
         (c) Likely consequences: [for example, a parcel taken by someone else; disclosure of \
         when a person receives deliveries]\n\n\
         (d) Measures taken or proposed: [what was done, and what will be]\n\n\
         Due to the authority by {authority} (72 hours from awareness). {hhs}\n",
        id = b.id,
        summary = b.summary,
        from = day(b.window_from),
        to = day(b.window_to),
        found = day(b.discovered_at),
        n = b.affected,
        authority = day(b.deadlines.authority),
    )
}

/// The draft to one person (GDPR Art. 34(2), HIPAA §164.404(c)).
fn individual_notice(b: &Breach, site: &str, name: &str) -> String {
    format!(
        "Dear {name},\n\n\
         We are writing to tell you about an incident that may have involved your personal \
         data in the parcel lockers at {site}.\n\n\
         What happened: {summary}\n\
         When: between {from} and {to}; we discovered it on {found}.\n\
         What information was involved: your name and e-mail address, and the times and \
         places of your parcel deliveries and collections, as our locker system records them. \
         Your pickup codes and any password are stored only in a form that cannot be turned \
         back into them.\n\
         What we are doing: [what was done to stop it and to prevent it happening again]\n\
         What you can do: check that every parcel you expected reached you, and tell us of any \
         you did not receive. Be wary of messages asking for a pickup code or a password: we \
         never ask for them.\n\
         For more information: [contact name, telephone number (toll-free where HIPAA \
         applies), e-mail address, postal address]\n\n\
         Reference: {id}\n",
        summary = b.summary,
        from = day(b.window_from),
        to = day(b.window_to),
        found = day(b.discovered_at),
        id = b.id,
    )
}
