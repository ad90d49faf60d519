//! Fan-out of alerts (`docs/design/0007-incidents.md`): each new alert queues one delivery per
//! target in the unit of work that raises it, so none is lost to a crash, and the server's
//! worker sends them with retries on a back-off. One that fails every try is left in the
//! dead-letter list, where an admin sees why and sends it again.
//!
//! Targets are a site's endpoints, webhooks (signed per Standard Webhooks) and syslog
//! receivers, each taking alerts from a least severity: admins in scope add and remove them
//! with a step-up, since an endpoint receives what happens at the site, and a webhook's signing
//! secret is shown once, then kept sealed. And people: staff and auditors who agreed to hear of
//! a site's alerts by e-mail or text message, each from a least severity of their own; a low
//! alert is quiet (e-mail only), and a withdrawn consent stops what was queued.

use crate::alerts::Alert;
use crate::conflicts::ConflictCode;
use std::time::Duration;

use custody_core::alert::{Channel, Severity};
use custody_core::audit::{Actor, AuditAction, AuditEvent, Outcome, Target};
use custody_core::{AlertId, DeliveryId, EndpointId, PersonId, SiteId, Timestamp, policy};
use custody_crypto::webhook::WebhookSecret;
use custody_store::{
    AlertRow, ConsentEventRow, DeliveryRow, EndpointRow, StoredText, SubscriptionRow, Tx,
};
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

use crate::personal::{Field, SubjectSealer};
use crate::{App, AppError, Caller};

view! {
    /// Where a site's alerts are sent besides its staff: a webhook or a syslog receiver. Its
    /// signing secret never leaves the app but sealed, inside [`Due`].
    Endpoint from EndpointRow {
        /// Id.
        id: EndpointId,
        /// The site whose alerts it gets.
        site: SiteId,
        /// `webhook` or `syslog`.
        channel: Channel,
        /// The URL, or `host:port`.
        target: String,
        /// The least severity it gets.
        min_severity: Severity,
        /// Added.
        created_at: Timestamp,
    }
}
view! {
    /// One notification of an alert to one target.
    Delivery from DeliveryRow {
        /// Id: the `webhook-id` of a webhook, the same on every try.
        id: DeliveryId,
        /// The alert.
        alert: AlertId,
        /// Its site.
        site: SiteId,
        /// How it goes.
        channel: Channel,
        /// The site's endpoint it goes to, for webhooks and syslog.
        endpoint: Option<EndpointId>,
        /// The person it goes to, for e-mail and text messages.
        person: Option<PersonId>,
        /// What it says happened (`raised`, `escalated`).
        event: String,
        /// Queued.
        created_at: Timestamp,
        /// Next try.
        next_attempt_at: Timestamp,
        /// Tries so far.
        attempts: u32,
        /// Why the last try failed.
        last_error: Option<String>,
        /// Delivered.
        delivered_at: Option<Timestamp>,
        /// Given up: in the dead-letter list.
        dead_at: Option<Timestamp>,
    }
}
/// A person's consent to hear of a site's alerts on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Who.
    pub person: PersonId,
    /// Which site's alerts.
    pub site: SiteId,
    /// `email` or `sms`.
    pub channel: Channel,
    /// The number for text messages (E.164).
    pub phone: Option<String>,
    /// The least severity they hear of.
    pub min_severity: Severity,
    /// When they agreed.
    pub consented_at: Timestamp,
}

impl Subscription {
    /// A stored consent, its number opened with its person's key (`None` once erased).
    pub(crate) fn open(
        row: SubscriptionRow,
        sealer: Option<&SubjectSealer>,
    ) -> Result<Self, AppError> {
        let phone = match (&row.phone, sealer) {
            (Some(stored), Some(sealer)) => Some(sealer.read(Field::Phone, stored)?),
            _ => None,
        };
        Ok(Self {
            person: row.person,
            site: row.site,
            channel: row.channel,
            phone,
            min_severity: row.min_severity,
            consented_at: row.consented_at,
        })
    }
}

/// A consent given or withdrawn, in its person's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    /// Which site's alerts.
    pub site: SiteId,
    /// `email` or `sms`.
    pub channel: Channel,
    /// Given, with the least severity agreed to; `None` when withdrawn.
    pub given: Option<Severity>,
    /// When.
    pub at: Timestamp,
}

impl From<ConsentEventRow> for ConsentChange {
    fn from(r: ConsentEventRow) -> Self {
        Self { site: r.site, channel: r.channel, given: r.given, at: r.at }
    }
}

/// Tries before a notification is left in the dead-letter list: about 45 minutes of trying.
pub const ALERT_ATTEMPTS: u32 = 10;

/// Wait before try `attempt + 1`: ten seconds, doubling, at most ten minutes. An alert is
/// urgent, so the first tries come quickly.
pub fn alert_backoff(attempt: u32) -> Duration {
    let seconds = 10u64 << attempt.saturating_sub(1).min(6);
    Duration::from_secs(seconds.min(600))
}

/// How many notifications a list shows at most.
const LIST_LIMIT: u32 = 200;

/// An endpoint to add.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// `webhook` or `syslog`.
    pub channel: Channel,
    /// The URL (checked by the server's egress guard before it gets here), or `host:port`.
    pub target: String,
    /// The least severity it gets.
    pub min_severity: Severity,
}

/// An endpoint just added, with its signing secret, shown this once.
pub struct AddedEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// A webhook's secret (`whsec_…`).
    pub secret: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for AddedEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddedEndpoint").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// A notification due now, with what it needs to go out.
#[derive(Debug)]
pub struct Due {
    /// The notification.
    pub delivery: Delivery,
    /// The alert, as it stands now.
    pub alert: Alert,
    /// The endpoint, unless it was removed meanwhile.
    pub endpoint: Option<Endpoint>,
    /// A webhook's signing secret.
    pub secret: Option<WebhookSecret>,
    /// A person's address for this channel (e-mail address, phone number), while they consent.
    pub to: Option<String>,
    /// What to tell a person: a subject, a body, and a text message's words.
    pub words: Words,
}

/// An alert in words, for people.
#[derive(Debug, Clone, Default)]
pub struct Words {
    /// E-mail subject.
    pub subject: String,
    /// E-mail body.
    pub body: String,
    /// A text message: one line, with the link.
    pub short: String,
}

/// Whether `phone` is an E.164 number: `+`, then 8 to 15 digits.
fn e164(phone: &str) -> bool {
    phone
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The host of an endpoint's target, for the audit log (a path or query may hold a token).
fn host_of(target: &str) -> &str {
    let rest = target.split_once("://").map_or(target, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

impl App {
    /// A site's alert endpoints. Staff and auditors in scope; secrets never leave.
    pub async fn alert_endpoints(
        &self,
        caller: &Caller,
        site: &SiteId,
    ) -> Result<Vec<Endpoint>, AppError> {
        self.viewable_site(caller, site).await?;
        let site = site.clone();
        let rows =
            self.store().read(move |tx| async move { tx.alert_endpoints(&site).await }.boxed());
        Ok(crate::views(rows.await?))
    }

    /// Adds an endpoint for a site's alerts. Admins in scope, stepped up; audited with the
    /// target's host only.
    pub async fn add_alert_endpoint(
        &self,
        caller: &Caller,
        site: &SiteId,
        new: NewEndpoint,
    ) -> Result<AddedEndpoint, AppError> {
        if !matches!(new.channel, Channel::Webhook | Channel::Syslog) {
            return Err(AppError::Invalid("an endpoint is a webhook or a syslog receiver".into()));
        }
        if new.target.is_empty()
            || new.target.len() > 2000
            || new.target.chars().any(char::is_control)
        {
            return Err(AppError::Invalid(
                "target: a URL or host:port of at most 2000 characters".into(),
            ));
        }
        let target = self.manageable_site(caller, site, AuditAction::AlertEndpoint).await?;
        let id = self.new_id(EndpointId::from_random)?;
        let secret = match new.channel {
            Channel::Webhook => Some(WebhookSecret::generate(self.rng())?),
            _ => None,
        };
        let sealed = match &secret {
            Some(s) => Some(self.keys().webhooks.seal(id.as_str().as_bytes(), s.expose_bytes())?),
            None => None,
        };
        let now = self.now();
        let endpoint = EndpointRow {
            id,
            site: site.clone(),
            channel: new.channel,
            target: new.target,
            secret: sealed,
            min_severity: new.min_severity,
            created_at: now,
        };
        let (stored, actor) = (endpoint.clone(), caller.actor());
        self.store()
            .write(move |tx| {
                async move {
                    tx.insert_alert_endpoint(&stored).await?;
                    let reason = format!(
                        "added:{}:{}:{}:{}",
                        stored.id,
                        stored.channel,
                        host_of(&stored.target),
                        stored.min_severity
                    );
                    tx.append_audit(&audit(
                        &actor,
                        AuditAction::AlertEndpoint,
                        target,
                        now,
                        reason,
                    ))?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(AddedEndpoint { endpoint: endpoint.into(), secret: secret.map(|s| s.to_text()) })
    }

    /// Removes an endpoint: nothing more goes to it. Admins in scope, stepped up; audited.
    /// Returns the site's endpoints left.
    pub async fn remove_alert_endpoint(
        &self,
        caller: &Caller,
        id: &EndpointId,
    ) -> Result<Vec<Endpoint>, AppError> {
        let lookup = id.clone();
        let found = self
            .store()
            .read(move |tx| async move { tx.alert_endpoint(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        let target = self.manageable_site(caller, &found.site, AuditAction::AlertEndpoint).await?;
        let (now, actor, id) = (self.now(), caller.actor(), id.clone());
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.remove_alert_endpoint(&id, now).await? {
                        return Err(AppError::NotFound);
                    }
                    let reason = format!("removed:{id}");
                    tx.append_audit(&audit(
                        &actor,
                        AuditAction::AlertEndpoint,
                        target,
                        now,
                        reason,
                    ))?;
                    Ok(tx.alert_endpoints(&found.site).await?)
                }
                .boxed()
            })
            .await
            .map(crate::views)
    }

    /// A site's notifications, newest first; with `dead_only`, the dead-letter list. Staff and
    /// auditors in scope.
    pub async fn alert_deliveries(
        &self,
        caller: &Caller,
        site: &SiteId,
        dead_only: bool,
    ) -> Result<Vec<Delivery>, AppError> {
        self.viewable_site(caller, site).await?;
        let site = site.clone();
        let rows = self.store().read(move |tx| {
            async move { tx.alert_deliveries(&site, dead_only, LIST_LIMIT).await }.boxed()
        });
        Ok(crate::views(rows.await?))
    }

    /// Sends a notification from the dead-letter list again, with its tries counted afresh.
    /// Admins in scope; audited.
    pub async fn retry_alert_delivery(
        &self,
        caller: &Caller,
        id: &DeliveryId,
    ) -> Result<Delivery, AppError> {
        let lookup = id.clone();
        let found = self
            .store()
            .read(move |tx| async move { tx.alert_delivery(&lookup).await }.boxed())
            .await?
            .ok_or(AppError::NotFound)?;
        let target = self.manageable_site(caller, &found.site, AuditAction::AlertNotify).await?;
        let (now, actor, id) = (self.now(), caller.actor(), id.clone());
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.retry_alert_delivery(&id, now).await? {
                        return Err(AppError::conflict(
                            ConflictCode::DeliveryState,
                            "only a notification in the dead-letter list is sent again",
                        ));
                    }
                    let reason = format!("{}:retry:{id}", found.alert);
                    tx.append_audit(&audit(&actor, AuditAction::AlertNotify, target, now, reason))?;
                    tx.alert_delivery(&id).await?.ok_or(AppError::NotFound)
                }
                .boxed()
            })
            .await
            .map(Delivery::from)
    }

    /// Takes due notifications for the worker, each leased for two minutes, with the alert
    /// and the endpoint they go to.
    pub async fn lease_alert_deliveries(&self, limit: u32) -> Result<Vec<Due>, AppError> {
        let now = self.now();
        let until = now.plus(custody_core::time::minutes(2));
        let app = self.clone();
        let leased = self
            .store()
            .write(move |tx| {
                async move {
                    let mut due = Vec::new();
                    for delivery in tx.lease_alert_deliveries(now, until, limit).await? {
                        let alert = tx.alert(&delivery.alert).await?.ok_or(AppError::NotFound)?;
                        let endpoint = match &delivery.endpoint {
                            Some(id) => tx.alert_endpoint(id).await?,
                            None => None,
                        };
                        let to = match &delivery.person {
                            Some(person) => address(&app, tx, person, &delivery).await?,
                            None => None,
                        };
                        let site = tx.site(&alert.site).await?.map(|s| s.name.to_string());
                        let bank = match &alert.bank {
                            Some(b) => tx.bank(b).await?.map(|b| b.name.to_string()),
                            None => None,
                        };
                        let place = Place { site: site.unwrap_or_default(), bank };
                        due.push((delivery, alert, endpoint, to, place));
                    }
                    Ok::<_, AppError>(due)
                }
                .boxed()
            })
            .await?;
        let public_url = self.config().public_url.clone();
        leased
            .into_iter()
            .map(|(delivery, alert, endpoint, to, place)| {
                let secret = match endpoint.as_ref().and_then(|e| e.secret.as_ref().map(|s| (e, s)))
                {
                    Some((e, sealed)) => Some(WebhookSecret::from_bytes(&Zeroizing::new(
                        self.keys().webhooks.open(e.id.as_str().as_bytes(), sealed)?,
                    ))),
                    None => None,
                };
                let words = words(&alert, &delivery.event, &place, &public_url);
                Ok(Due {
                    delivery: delivery.into(),
                    alert: alert.into(),
                    endpoint: endpoint.map(Endpoint::from),
                    secret,
                    to,
                    words,
                })
            })
            .collect()
    }

    /// Records a delivery: on the alert's timeline (`notified`) and in the audit log.
    pub async fn alert_delivered(&self, due: &Due) -> Result<(), AppError> {
        let (now, d) = (self.now(), due.delivery.clone());
        let target = alert_target(&due.alert.site, due.alert.bank.as_ref());
        self.store()
            .write(move |tx| {
                async move {
                    tx.alert_delivered(&d.id, now).await?;
                    let to = d.channel.as_str();
                    tx.add_alert_event(&d.alert, now, "system", "notified", Some(to)).await?;
                    let reason = format!("{}:{}:delivered:{}", d.alert, d.channel, d.id);
                    tx.append_audit(&audit(
                        &Actor::system(),
                        AuditAction::AlertNotify,
                        target,
                        now,
                        reason,
                    ))?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await
    }

    /// Records a failed try: again after [`alert_backoff`], or, after [`ALERT_ATTEMPTS`], into
    /// the dead-letter list, on the alert's timeline and in the audit log.
    pub async fn alert_delivery_failed(&self, due: &Due, error: &str) -> Result<(), AppError> {
        let now = self.now();
        let attempt = due.delivery.attempts + 1;
        // A person who withdrew their consent meanwhile is not tried again.
        let withdrawn = due.delivery.person.is_some() && due.to.is_none();
        let retry_at =
            (attempt < ALERT_ATTEMPTS && !withdrawn).then(|| now.plus(alert_backoff(attempt)));
        let error: String = error.chars().filter(|c| !c.is_control()).take(300).collect();
        let (d, target) =
            (due.delivery.clone(), alert_target(&due.alert.site, due.alert.bank.as_ref()));
        self.store()
            .write(move |tx| {
                async move {
                    tx.alert_delivery_failed(&d.id, &error, retry_at, now).await?;
                    if retry_at.is_none() {
                        let to = d.channel.as_str();
                        tx.add_alert_event(&d.alert, now, "system", "notify_failed", Some(to))
                            .await?;
                        let reason =
                            format!("{}:{}:dead_after:{attempt}:{}", d.alert, d.channel, d.id);
                        let mut e =
                            audit(&Actor::system(), AuditAction::AlertNotify, target, now, reason);
                        e.outcome = Outcome::Failure;
                        tx.append_audit(&e)?;
                    }
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await
    }

    /// A site whose alerting the caller may change: an admin in scope, stepped up. A refusal
    /// is audited as `action`. Returns the audit target.
    async fn manageable_site(
        &self,
        caller: &Caller,
        site: &SiteId,
        action: AuditAction,
    ) -> Result<Target, AppError> {
        let org = self.site(site).await?.org;
        let target = Target { site: Some(site.clone()), ..Target::default() };
        self.authorize(caller, action, &target, |p| {
            policy::may_manage_site(p, &org, site).and_then(|()| self.stepped_up(p))
        })
        .await?;
        Ok(target)
    }

    /// The caller's consents to hear of alerts.
    pub async fn my_alert_subscriptions(
        &self,
        caller: &Caller,
    ) -> Result<Vec<Subscription>, AppError> {
        let (person, app) = (caller.person().cloned().ok_or(AppError::Forbidden)?, self.clone());
        self.store()
            .read(move |tx| {
                async move {
                    let rows = tx.alert_subscriptions(Some(&person), None).await?;
                    let sealer = app.existing_subject_sealer(tx, &person).await?;
                    rows.into_iter().map(|r| Subscription::open(r, sealer.as_ref())).collect()
                }
                .boxed()
            })
            .await
    }

    /// The caller agrees to hear of a site's alerts on `channel` from `min_severity` up: e-mail
    /// to their account's address, or text messages to `phone` (E.164). Staff and auditors who
    /// may see the site; audited (the number is not). Text messages never carry low-severity
    /// alerts, whatever the least severity chosen.
    pub async fn subscribe_alerts(
        &self,
        caller: &Caller,
        site: &SiteId,
        channel: Channel,
        phone: Option<&str>,
        min_severity: Severity,
    ) -> Result<Subscription, AppError> {
        let person = caller.person().cloned().ok_or(AppError::Forbidden)?;
        let phone = match (channel, phone) {
            (Channel::Email, None) => None,
            (Channel::Sms, Some(p)) if e164(p) => Some(p.to_owned()),
            (Channel::Sms, _) => {
                return Err(AppError::Invalid(
                    "phone: the number in international form, such as +447700900123".into(),
                ));
            }
            (Channel::Email, Some(_)) => {
                return Err(AppError::Invalid(
                    "e-mail goes to your account's address; give no phone".into(),
                ));
            }
            _ => return Err(AppError::Invalid("channel: email or sms".into())),
        };
        self.viewable_site(caller, site).await?;
        let consent = Subscription {
            person,
            site: site.clone(),
            channel,
            phone,
            min_severity,
            consented_at: self.now(),
        };
        let (given, actor, app) = (consent.clone(), caller.actor(), self.clone());
        let target = Target { site: Some(site.clone()), ..Target::default() };
        self.store()
            .write(move |tx| {
                async move {
                    // The number is sealed under the person's own key: erased with them.
                    let phone = match &given.phone {
                        Some(number) => {
                            let sealer = app.subject_sealer(tx, &given.person).await?;
                            let sealer = sealer.ok_or(AppError::Forbidden)?;
                            Some(StoredText::Sealed(sealer.seal(Field::Phone, number)?))
                        }
                        None => None,
                    };
                    let stored = SubscriptionRow {
                        person: given.person,
                        site: given.site,
                        channel: given.channel,
                        phone,
                        min_severity: given.min_severity,
                        consented_at: given.consented_at,
                    };
                    tx.put_alert_subscription(&stored).await?;
                    tx.add_consent_event(&ConsentEventRow {
                        person: stored.person.clone(),
                        site: stored.site.clone(),
                        channel: stored.channel,
                        given: Some(stored.min_severity),
                        at: stored.consented_at,
                    })
                    .await?;
                    let reason = format!("agreed:{}:{}", stored.channel, stored.min_severity);
                    let at = stored.consented_at;
                    tx.append_audit(&audit(&actor, AuditAction::AlertConsent, target, at, reason))?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(consent)
    }

    /// The caller withdraws a consent: nothing more reaches them that way, queued or not.
    pub async fn unsubscribe_alerts(
        &self,
        caller: &Caller,
        site: &SiteId,
        channel: Channel,
    ) -> Result<(), AppError> {
        let person = caller.person().cloned().ok_or(AppError::Forbidden)?;
        let (now, actor, site) = (self.now(), caller.actor(), site.clone());
        self.store()
            .write(move |tx| {
                async move {
                    if !tx.delete_alert_subscription(&person, &site, channel).await? {
                        return Err(AppError::NotFound);
                    }
                    let withdrawn = ConsentEventRow {
                        person: person.clone(),
                        site: site.clone(),
                        channel,
                        given: None,
                        at: now,
                    };
                    tx.add_consent_event(&withdrawn).await?;
                    let target = Target { site: Some(site.clone()), ..Target::default() };
                    let reason = format!("withdrew:{channel}");
                    tx.append_audit(&audit(
                        &actor,
                        AuditAction::AlertConsent,
                        target,
                        now,
                        reason,
                    ))?;
                    Ok(())
                }
                .boxed()
            })
            .await
    }

    /// Escalates every alert of medium severity or above left open (unacknowledged) for
    /// [`crate::AppConfig::alert_escalation`]: once each, to every endpoint and everyone who
    /// agreed to hear of its site's alerts, whatever the least severity they chose; on its
    /// timeline and in the audit log. Low alerts stay quiet. Returns how many were escalated.
    pub async fn escalate_due(&self) -> Result<usize, AppError> {
        let now = self.now();
        let before = now.minus(self.config().alert_escalation);
        let due = self
            .store()
            .read(move |tx| async move { tx.alerts_to_escalate(before, 100).await }.boxed())
            .await?;
        let mut escalated = 0;
        for alert in due {
            let (app, site) = (self.clone(), alert.site.clone());
            let done = self
                .store()
                .write(move |tx| {
                    async move {
                        if !tx.mark_escalated(&alert.id, now).await? {
                            return Ok(false);
                        }
                        tx.add_alert_event(&alert.id, now, "system", "escalated", None).await?;
                        let reason = format!("{}:{}", alert.id, alert.kind);
                        let target = alert_target(&alert.site, alert.bank.as_ref());
                        let e = audit(
                            &Actor::system(),
                            AuditAction::AlertEscalate,
                            target,
                            now,
                            reason,
                        );
                        tx.append_audit(&e)?;
                        app.queue(tx, &alert.id, &alert.site, alert.severity, "escalated", now)
                            .await?;
                        Ok::<_, AppError>(true)
                    }
                    .boxed()
                })
                .await?;
            if done {
                self.alert_changed(&site);
            }
            escalated += usize::from(done);
        }
        Ok(escalated)
    }

    /// Queues the notifications of a new alert in the unit that raises it: one for each of the
    /// site's endpoints, and each person who agreed, that takes its severity.
    pub(crate) async fn queue_notifications(
        &self,
        tx: &mut Tx,
        alert: &AlertId,
        site: &SiteId,
        severity: Severity,
        now: Timestamp,
    ) -> Result<(), AppError> {
        self.queue(tx, alert, site, severity, "raised", now).await
    }

    /// Queues an alert's notifications of `event`. A new alert (`raised`) goes to those who take
    /// its severity; an escalation goes to all. A text message never carries a low alert.
    async fn queue(
        &self,
        tx: &mut Tx,
        alert: &AlertId,
        site: &SiteId,
        severity: Severity,
        event: &str,
        now: Timestamp,
    ) -> Result<(), AppError> {
        let everyone = event == "escalated";
        let endpoints = tx.alert_endpoints(site).await?;
        let people = tx.alert_subscriptions(None, Some(site)).await?;
        let targets = endpoints
            .into_iter()
            .filter(|e| everyone || severity >= e.min_severity)
            .map(|e| (e.channel, Some(e.id), None))
            .chain(
                people
                    .into_iter()
                    // Low severity is quiet: e-mail, never a text message.
                    .filter(|s| {
                        (everyone || severity >= s.min_severity)
                            && !(s.channel == Channel::Sms && severity == Severity::Low)
                    })
                    .map(|s| (s.channel, None, Some(s.person))),
            );
        for (channel, endpoint, person) in targets {
            tx.enqueue_alert_delivery(&DeliveryRow {
                id: self.new_id(DeliveryId::from_random)?,
                alert: alert.clone(),
                site: site.clone(),
                channel,
                endpoint,
                person,
                event: event.to_owned(),
                created_at: now,
                next_attempt_at: now,
                attempts: 0,
                last_error: None,
                delivered_at: None,
                dead_at: None,
            })
            .await?;
        }
        Ok(())
    }
}

/// Where an alert is, by name.
struct Place {
    site: String,
    bank: Option<String>,
}

/// The address a person's notification goes to, while they consent to it.
async fn address(
    app: &App,
    tx: &mut Tx,
    person: &PersonId,
    d: &DeliveryRow,
) -> Result<Option<String>, AppError> {
    let consents = tx.alert_subscriptions(Some(person), Some(&d.site)).await?;
    let Some(consent) = consents.into_iter().find(|s| s.channel == d.channel) else {
        return Ok(None);
    };
    Ok(match d.channel {
        Channel::Sms => match (&consent.phone, app.existing_subject_sealer(tx, person).await?) {
            (Some(stored), Some(sealer)) => Some(sealer.read(Field::Phone, stored)?),
            _ => None,
        },
        _ => match tx.person(person).await? {
            Some(row) => app.open_details(&row)?.map(|(email, _)| email.to_string()),
            None => None,
        },
    })
}

/// An alert in words for people: what, how serious, where, and the link to it.
fn words(alert: &AlertRow, event: &str, place: &Place, public_url: &str) -> Words {
    let severity = alert.severity.as_str().to_uppercase();
    let kind = alert.kind.as_str().replace('_', " ");
    let mut at = place.bank.clone().unwrap_or_default();
    if let Some(n) = alert.compartment {
        at = format!("{at}, locker {n}");
    }
    let place = if at.is_empty() { place.site.clone() } else { format!("{at} at {}", place.site) };
    let link = format!("{}/portal/alerts/{}", public_url.trim_end_matches('/'), alert.id);
    let what = if event == "raised" { String::new() } else { format!(" ({event})") };
    Words {
        subject: format!("[Custody] {severity}: {kind} at {place}{what}"),
        body: format!(
            "A {severity} alert{what}: {kind} at {place}.\n\n\
             {readings} reading(s) so far; now {state}.\n\n\
             Take it, note what you find and resolve it here:\n{link}\n\n\
             You get this because you agreed to hear of this site's alerts by e-mail; you can \
             stop that in your account.\n",
            readings = alert.readings,
            state = alert.state,
        ),
        short: format!("Custody {severity}: {kind} at {place}{what}. {link}"),
    }
}

fn alert_target(site: &SiteId, bank: Option<&custody_core::BankId>) -> Target {
    Target { site: Some(site.clone()), bank: bank.cloned(), ..Target::default() }
}

fn audit(
    actor: &Actor,
    action: AuditAction,
    target: Target,
    at: Timestamp,
    reason: String,
) -> AuditEvent {
    AuditEvent::success(at, actor.clone(), action, target).because(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_come_quickly_then_settle_at_ten_minutes() {
        let waits: Vec<u64> = (1..=ALERT_ATTEMPTS).map(|a| alert_backoff(a).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 600, 600, 600, 600]);
    }

    #[test]
    fn the_audit_log_gets_the_host_alone() {
        assert_eq!(host_of("https://hooks.example.org/t/SECRET?k=1"), "hooks.example.org");
        assert_eq!(host_of("siem.example.org:6514"), "siem.example.org:6514");
    }
}
