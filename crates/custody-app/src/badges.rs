//! RFID badges: registered to people by a site's admins (one at a time, or as a CSV export from
//! the site's access-control system), read at the kiosk, and checked here.
//!
//! A badge picks up its holder's own parcels at the bank, one compartment a tap, through the
//! parcel's pickup code record: code, QR token, app open and badge are one credential that works
//! once. A courier's badge, read by a reader with OSDP Secure Channel, identifies the courier
//! as their daily code does. That is all a badge does. It never opens anything for staff (they
//! open remotely, with a step-up and a reason), because a badge number can be copied from the
//! card (DESIGN.md §1: a UID alone never authorises a privileged action).
//!
//! Numbers are at least 48 bits and a site holds at most 25,000 badges, so a guessed number
//! opens no more often than a guessed pickup code; reads spend the budgets typed codes spend
//! (`docs/SECURITY.md`, "Badges"). Only each number's keyed hash is stored, under the site's
//! badge key, which its agents also receive with the list of hashes: the kiosk refuses an
//! unknown or revoked badge itself, from the next sync on.

use crate::conflicts::ConflictCode;
use custody_core::audit::{AuditAction, AuditEvent, Outcome, Target};
use custody_core::badge::{BadgeNumber, MAX_SITE_BADGES, ReaderKind};
use custody_core::policy::{self, Principal};
use custody_core::text::Email;
use custody_core::{BadgeId, PersonId, SiteId};
use custody_crypto::secret::badge_verifier;
use custody_proto::device::BadgeList;
use custody_store::{BadgeRow, NewBadge, StoreError, Tx};
use data_encoding::BASE64;
use futures_util::FutureExt as _;

use crate::parcels::{AtBank, PickupOutcome};
use crate::personal::Field;
use crate::throttle::Budgets;
use crate::{App, AppError, Caller};

use custody_core::Timestamp;

/// A badge registered to a person, without its number or the number's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Badge {
    /// Id.
    pub id: BadgeId,
    /// The site it works at.
    pub site: SiteId,
    /// Whose it is.
    pub person: PersonId,
    /// The number's last four hex digits; `None` once the holder has been erased.
    pub hint: Option<String>,
    /// Registered.
    pub created_at: Timestamp,
    /// Revoked, if it is.
    pub revoked_at: Option<Timestamp>,
}

/// The most rows one CSV import takes.
pub const MAX_IMPORT_ROWS: usize = 5_000;

/// A badge to register: whose (by e-mail address) and its number in hexadecimal.
#[derive(Debug, Clone)]
pub struct BadgeSpec {
    /// The holder's e-mail address, as registered at the site.
    pub email: String,
    /// The number, as the reader reports it, in hexadecimal.
    pub number: String,
}

/// A line of a CSV import that cannot be registered, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProblem {
    /// The line in the file (the header is line 1).
    pub line: usize,
    /// What is wrong, in words the admin can act on.
    pub problem: String,
}

/// Reads an access-control export: a header naming an `email` column and a `badge` column
/// (also `card`, `card_number` or `uid`), in any order, among any others, which are ignored.
pub fn parse_badge_csv(csv: &str) -> Result<Vec<(usize, BadgeSpec)>, Vec<ImportProblem>> {
    let problem = |line, problem: &str| ImportProblem { line, problem: problem.to_owned() };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(csv.trim_start_matches('\u{feff}').as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.iter().map(str::to_ascii_lowercase).collect::<Vec<_>>(),
        Err(e) => return Err(vec![problem(1, &format!("the header cannot be read: {e}"))]),
    };
    let column = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
    let (Some(email), Some(badge)) =
        (column(&["email", "e-mail"]), column(&["badge", "card", "card_number", "uid"]))
    else {
        return Err(vec![problem(1, "the header must name an `email` and a `badge` column")]);
    };
    let (mut specs, mut problems) = (Vec::new(), Vec::new());
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        if specs.len() + problems.len() >= MAX_IMPORT_ROWS {
            problems.push(problem(line, "at most 5000 badges per import: split the file"));
            break;
        }
        match record {
            Ok(r) => specs.push((
                line,
                BadgeSpec {
                    email: r.get(email).unwrap_or_default().to_owned(),
                    number: r.get(badge).unwrap_or_default().to_owned(),
                },
            )),
            Err(e) => problems.push(problem(line, &format!("this line cannot be read: {e}"))),
        }
    }
    if problems.is_empty() { Ok(specs) } else { Err(problems) }
}

impl App {
    /// The site's badge key: what its numbers are hashed under, here and at its kiosks.
    fn badge_key(&self, site: &SiteId) -> [u8; 32] {
        self.keys().badges.hash(&[b"site", site.as_str().as_bytes()])
    }

    /// The site's badges as its kiosks check a read: its badge key and the hash of every badge
    /// not revoked. Sent after the welcome and whenever the site's badges change.
    pub async fn badge_list(&self, site: &SiteId) -> Result<BadgeList, AppError> {
        let site = site.clone();
        let key = self.badge_key(&site);
        let verifiers = self
            .store()
            .read(move |tx| async move { tx.active_badge_verifiers(&site).await }.boxed())
            .await?;
        Ok(BadgeList {
            key: BASE64.encode(&key),
            verifiers: verifiers.iter().map(|v| BASE64.encode(v)).collect(),
        })
    }

    /// The site's badges, revoked ones too, for its admins and auditors.
    pub async fn badges(&self, caller: &Caller, site: &SiteId) -> Result<Vec<Badge>, AppError> {
        let s = self.site(site).await?;
        // A read: outside the caller's reach the site is not there, as for other reads.
        caller.unless_hidden(|p| policy::may_view_site(p, &s.org, &s.id))?;
        let (site, app) = (site.clone(), self.clone());
        self.store()
            .read(move |tx| {
                async move {
                    let rows = tx.badges_of_site(&site, 50_000).await?;
                    app.badge_views(tx, rows).await
                }
                .boxed()
            })
            .await
    }

    /// Badges as their views, each hint opened with its holder's key.
    pub(crate) async fn badge_views(
        &self,
        tx: &mut Tx,
        rows: Vec<BadgeRow>,
    ) -> Result<Vec<Badge>, AppError> {
        let mut sealers = std::collections::BTreeMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for b in rows {
            if !sealers.contains_key(&b.person) {
                let sealer = self.existing_subject_sealer(tx, &b.person).await?;
                sealers.insert(b.person.clone(), sealer);
            }
            let hint = match sealers.get(&b.person) {
                Some(Some(sealer)) => Some(sealer.read(Field::BadgeHint, &b.hint)?),
                _ => None,
            };
            out.push(Badge {
                id: b.id,
                site: b.site,
                person: b.person,
                hint,
                created_at: b.created_at,
                revoked_at: b.revoked_at,
            });
        }
        Ok(out)
    }

    /// Registers one badge to the person with that e-mail address at the site.
    pub async fn register_badge(
        &self,
        caller: &Caller,
        site: &SiteId,
        spec: BadgeSpec,
    ) -> Result<Badge, AppError> {
        let mut rows =
            self.register_badges(caller, site, vec![(1, spec)]).await.map_err(|problems| {
                match problems {
                    Registration::Refused(e) => e,
                    Registration::Problems(p) => AppError::Invalid(
                        p.into_iter().map(|p| p.problem).collect::<Vec<_>>().join("; "),
                    ),
                }
            })?;
        rows.pop().ok_or(AppError::NotFound)
    }

    /// Registers every badge of an access-control export, or none: one line that cannot be
    /// registered (unknown person, number too short, a number twice) stops the import, and the
    /// answer lists every such line.
    pub async fn import_badges(
        &self,
        caller: &Caller,
        site: &SiteId,
        csv: &str,
    ) -> Result<Vec<Badge>, Registration> {
        let specs = parse_badge_csv(csv).map_err(Registration::Problems)?;
        self.register_badges(caller, site, specs).await
    }

    async fn register_badges(
        &self,
        caller: &Caller,
        site: &SiteId,
        specs: Vec<(usize, BadgeSpec)>,
    ) -> Result<Vec<Badge>, Registration> {
        let s = self.site(site).await.map_err(Registration::Refused)?;
        let target = Target { site: Some(site.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::BadgeRegister, &target, |p| {
            policy::may_manage_site(p, &s.org, &s.id)
        })
        .await
        .map_err(Registration::Refused)?;
        let key = self.badge_key(site);
        let mut problems = Vec::new();
        let mut parsed = Vec::with_capacity(specs.len());
        for (line, spec) in specs {
            let number = BadgeNumber::parse(&spec.number);
            let email = Email::parse(&spec.email);
            match (email, number) {
                (Ok(email), Ok(number)) => parsed.push((line, email, number)),
                (Err(e), _) => problems.push(ImportProblem { line, problem: e.to_string() }),
                (_, Err(e)) => problems.push(ImportProblem { line, problem: e.to_string() }),
            }
        }
        let mut new = Vec::with_capacity(parsed.len());
        for (line, email, number) in parsed {
            new.push(Pending {
                line,
                email_index: self.email_index(&email),
                email,
                id: self.new_id(BadgeId::from_random).map_err(Registration::Refused)?,
                verifier: badge_verifier(&key, number.as_bytes()).to_vec(),
                hint: number.hint(),
            });
        }
        let now = self.now();
        let (actor, org, site, app) = (caller.actor(), s.org.clone(), site.clone(), self.clone());
        let written = self
            .store()
            .write(move |tx| {
                async move {
                    match insert_badges(&app, tx, &org, &site, new, problems, &actor, now).await? {
                        Ok(rows) => Ok(Ok(app.badge_views(tx, rows).await?)),
                        Err(problems) => Ok(Err(problems)),
                    }
                }
                .boxed()
            })
            .await
            .map_err(Registration::Refused)?;
        written.map_err(Registration::Problems)
    }

    /// Revokes a badge: it stops working at the server at once, and at the kiosks from the next
    /// sync (the server sends the site's list again as soon as the revocation commits).
    pub async fn revoke_badge(&self, caller: &Caller, id: &BadgeId) -> Result<Badge, AppError> {
        let id = id.clone();
        let badge = {
            let id = id.clone();
            self.store().read(move |tx| async move { tx.badge(&id).await }.boxed()).await?
        }
        .ok_or(AppError::NotFound)?;
        let s = self.site(&badge.site).await?;
        let target = Target { site: Some(badge.site.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::BadgeRevoke, &target, |p| {
            policy::may_manage_site(p, &s.org, &s.id)
        })
        .await?;
        let event =
            AuditEvent::success(self.now(), caller.actor(), AuditAction::BadgeRevoke, target)
                .because(format!("{}:{}", badge.id, badge.person));
        let (now, app) = (self.now(), self.clone());
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.revoke_badge(&id, now).await? {
                        return Err(AppError::conflict(
                            ConflictCode::BadgeRevoked,
                            "the badge is revoked already",
                        ));
                    }
                    tx.append_audit(&event)?;
                    let row = tx.badge(&id).await?.ok_or(AppError::NotFound)?;
                    app.badge_views(tx, vec![row]).await?.pop().ok_or(AppError::NotFound)
                }
                .boxed()
            })
            .await
    }

    /// The badge read at the calling device's kiosk with `number` from a `reader`: the holder's
    /// own parcel at this bank opens, the oldest first, one a tap. Reads spend the budgets
    /// typed codes spend; every read is audited with its outcome; every failure looks the same
    /// to the kiosk.
    #[tracing::instrument(skip(self, caller, number))]
    pub async fn redeem_badge(
        &self,
        caller: &Caller,
        number: &str,
        reader: &str,
    ) -> Result<PickupOutcome, AppError> {
        let Caller::Principal(Principal::Device { device, bank, site, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        let (now, actor, app) = (self.now(), caller.actor(), self.clone());
        let (device, bank, site) = (device.clone(), bank.clone(), site.clone());
        let reader = ReaderKind::parse(reader);
        let verifier = BadgeNumber::parse(number)
            .ok()
            .map(|n| badge_verifier(&self.badge_key(&site), n.as_bytes()));
        let place = (site.clone(), bank.clone());
        let outcome = self
            .store()
            .write(move |tx| {
                async move {
                    let at = AtBank { bank: &bank, site: &site, actor: &actor, now };
                    let budgets = Budgets::kiosk(&device, &bank);
                    if let Some(answer) = at.admit(tx, &budgets, "badge").await? {
                        return Ok(answer);
                    }
                    let fail = |tx: &mut Tx, reason: &str| {
                        tx.append_audit(&at.attempt(Outcome::Failure, reason, at.target()))
                    };
                    let (Some(verifier), Some(reader)) = (verifier, reader) else {
                        fail(tx, "badge_malformed")?;
                        return Ok(PickupOutcome::Refused);
                    };
                    let Some(badge) = tx.badge_by_verifier(&site, &verifier).await? else {
                        fail(tx, "badge_unknown")?;
                        return Ok(PickupOutcome::Refused);
                    };
                    let holder = tx.person(&badge.person).await?;
                    if holder.is_none_or(|p| p.disabled_at.is_some()) {
                        fail(tx, "badge_holder_disabled")?;
                        return Ok(PickupOutcome::Refused);
                    }
                    let Some(code) = oldest_waiting(tx, &badge.person, &bank, now).await? else {
                        fail(tx, "badge_no_parcel")?;
                        return Ok(PickupOutcome::Refused);
                    };
                    let redeemed = match tx.redeem_pickup_code(&bank, &code, now).await? {
                        Ok(r) => r,
                        Err(refused) => {
                            at.refused(tx, "badge", &refused)?;
                            return Ok(PickupOutcome::Refused);
                        }
                    };
                    budgets.refund(tx, now).await?;
                    let accepted = format!("badge_accepted:{reader}");
                    app.hand_over(tx, &at, &redeemed, &accepted).await.map(PickupOutcome::accepted)
                }
                .boxed()
            })
            .await?;
        if matches!(outcome, PickupOutcome::Paused) {
            self.budget_spent(&place.0, &place.1).await;
        }
        Ok(outcome)
    }

    /// The courier whose badge was read at the calling device's site: only from a reader with
    /// Secure Channel, since a courier's work opens compartments for other people's parcels.
    /// `Err(reason)` for the audit log otherwise.
    pub(crate) async fn courier_by_badge(
        &self,
        site: &SiteId,
        number: &str,
        reader: &str,
    ) -> Result<Result<PersonId, &'static str>, AppError> {
        let Ok(number) = BadgeNumber::parse(number) else { return Ok(Err("badge_malformed")) };
        match ReaderKind::parse(reader) {
            None => return Ok(Err("badge_malformed")),
            Some(kind) if !kind.is_trusted() => return Ok(Err("badge_low_trust")),
            Some(_) => {}
        }
        let verifier = badge_verifier(&self.badge_key(site), number.as_bytes());
        let site = site.clone();
        let badge = self
            .store()
            .read(move |tx| async move { tx.badge_by_verifier(&site, &verifier).await }.boxed())
            .await?;
        Ok(badge.map(|b| b.person).ok_or("badge_unknown"))
    }
}

/// Why badges were not registered.
#[derive(Debug)]
pub enum Registration {
    /// Not allowed, or the store failed.
    Refused(AppError),
    /// These lines cannot be registered; nothing was.
    Problems(Vec<ImportProblem>),
}

impl From<AppError> for Registration {
    fn from(e: AppError) -> Self {
        Self::Refused(e)
    }
}

/// A badge about to be registered, once its holder is found.
struct Pending {
    line: usize,
    email: Email,
    /// The address's blind index, by which its holder is found.
    email_index: Vec<u8>,
    id: BadgeId,
    verifier: Vec<u8>,
    hint: String,
}

/// Inserts the badges with their audit entries, in the caller's unit of work, once every line
/// names a person of the site and a number it has not registered. `Ok(Err(problems))` when any
/// line fails: then nothing is written.
#[expect(clippy::too_many_arguments, reason = "one unit of work's inputs, each needed")]
async fn insert_badges(
    app: &App,
    tx: &mut Tx,
    org: &custody_core::OrgId,
    site: &SiteId,
    new: Vec<Pending>,
    mut problems: Vec<ImportProblem>,
    actor: &custody_core::audit::Actor,
    now: Timestamp,
) -> Result<Result<Vec<BadgeRow>, Vec<ImportProblem>>, AppError> {
    let active = tx.count_active_badges(site).await?;
    if active + new.len() as u64 > MAX_SITE_BADGES {
        problems.push(ImportProblem {
            line: 1,
            problem: format!(
                "a site holds at most {MAX_SITE_BADGES} badges ({active} now): revoke unused ones first"
            ),
        });
    }
    let mut seen = std::collections::BTreeMap::new();
    let mut ready = Vec::with_capacity(new.len());
    for Pending { line, email, email_index, id, verifier, hint } in new {
        if let Some(first) = seen.insert(verifier.clone(), line) {
            problems.push(ImportProblem {
                line,
                problem: format!("the same badge number as line {first}"),
            });
            continue;
        }
        let person = tx.person_by_email_index(&email_index).await?.filter(|p| {
            &p.org == org && p.site.as_ref().is_none_or(|s| s == site) && p.disabled_at.is_none()
        });
        let Some(person) = person else {
            problems.push(ImportProblem {
                line,
                problem: format!("nobody at this site has the address {email}"),
            });
            continue;
        };
        if tx.badge_by_verifier(site, &verifier).await?.is_some() {
            problems.push(ImportProblem {
                line,
                problem: "this badge number is registered already; revoke it first".into(),
            });
            continue;
        }
        // The hint is sealed under the holder's own key: erased with them.
        let Some(sealer) = app.subject_sealer(tx, &person.id).await? else {
            problems.push(ImportProblem {
                line,
                problem: format!("nobody at this site has the address {email}"),
            });
            continue;
        };
        ready.push(NewBadge {
            id,
            site: site.clone(),
            person: person.id,
            verifier,
            hint: sealer.seal(Field::BadgeHint, &hint)?,
            created_at: now,
        });
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return Ok(Err(problems));
    }
    let mut rows = Vec::with_capacity(ready.len());
    for badge in ready {
        tx.insert_badge(&badge).await.map_err(|e| match e {
            StoreError::Conflict => AppError::conflict(
                ConflictCode::BadgeExists,
                "a badge with this number was registered meanwhile; try again",
            ),
            other => other.into(),
        })?;
        tx.append_audit(
            &AuditEvent::success(
                badge.created_at,
                actor.clone(),
                AuditAction::BadgeRegister,
                Target { site: Some(site.clone()), ..Target::default() },
            )
            .because(format!("{}:{}", badge.id, badge.person)),
        )?;
        rows.push(tx.badge(&badge.id).await?.ok_or(AppError::NotFound)?);
    }
    Ok(Ok(rows))
}

/// The pickup code record (its keyed hash) of `person`'s parcel that has waited longest in
/// `bank`, if any still works.
async fn oldest_waiting(
    tx: &mut Tx,
    person: &PersonId,
    bank: &custody_core::BankId,
    now: Timestamp,
) -> Result<Option<Vec<u8>>, AppError> {
    let mut waiting = tx
        .parcels_for_recipient(person, 500)
        .await?
        .into_iter()
        .filter(|p| p.bank.as_ref() == Some(bank))
        .collect::<Vec<_>>();
    waiting.sort_by_key(|p| (p.deposited_at, p.created_at));
    for p in waiting {
        let Some(code) = tx.active_pickup_code(&p.id, now).await? else { continue };
        if &code.bank != bank {
            continue;
        }
        if let Some((hash, _)) = tx.pickup_code_hash(bank, &code.id).await? {
            return Ok(Some(hash));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_export_is_read_in_any_column_order_with_quotes() {
        let csv = "\"Card\",\"Name\",\"E-Mail\"\n\"04 A2 B3 C4 D5 E6\",\"Ann, Resident\",ann@harbour.example\n";
        let specs = parse_badge_csv(csv).unwrap();
        assert_eq!(specs.len(), 1);
        let (line, spec) = &specs[0];
        assert_eq!(
            (*line, spec.email.as_str(), spec.number.as_str()),
            (2, "ann@harbour.example", "04 A2 B3 C4 D5 E6")
        );
        let ragged = parse_badge_csv("email,badge\nann@harbour.example\n").unwrap_err();
        assert_eq!(ragged[0].line, 2, "{ragged:?}");
    }

    proptest! {
        #[test]
        fn any_text_is_read_or_refused_by_line(csv in "(.|\n){0,400}") {
            match parse_badge_csv(&csv) {
                Ok(specs) => {
                    for (line, _) in specs {
                        prop_assert!(line >= 2);
                    }
                }
                Err(problems) => {
                    prop_assert!(!problems.is_empty() && problems.iter().all(|p| p.line >= 1));
                }
            }
        }
    }
}
