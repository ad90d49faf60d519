//! Sends alerts' notifications from their outbox (`custody_app::notify`): each due delivery is
//! leased, sent, and recorded as delivered or failed (retried on a back-off, then left in the
//! dead-letter list).
//!
//! A webhook is an HTTPS `POST` of the alert as JSON, signed per Standard Webhooks: the
//! `webhook-id` header is the delivery's id (the same on every try, so a receiver can drop a
//! repeat), `webhook-timestamp` the time of this try in Unix seconds, and `webhook-signature`
//! `v1,<HMAC-SHA256 of id.timestamp.body>` under the endpoint's secret. It goes through the
//! egress guard ([`crate::egress`]): no private addresses, no redirects. A syslog receiver
//! gets RFC 5424 over TLS with a CEF payload ([`crate::syslog`]). People get e-mail through the
//! server's transport and text messages through the SMS provider ([`crate::sms`]).

use custody_app::App;
use custody_app::alerts::Alert;
use custody_app::fanout::Due;
use custody_core::Timestamp;
use custody_core::alert::Channel;

use crate::egress::{Allowed, Egress};
use crate::outbox::Transport;
use crate::refusals::Edge;
use crate::sms::SmsSender;
use crate::syslog::SyslogSender;

/// The body of an alert's webhook: `{"type", "timestamp", "data"}`, as Standard Webhooks
/// suggests. `type` is `alert.<event>` (`alert.raised`); `data` is the alert as it stands.
pub fn webhook_body(alert: &Alert, event: &str, public_url: &str, at: Timestamp) -> Vec<u8> {
    let body = serde_json::json!({
        "type": format!("alert.{event}"),
        "timestamp": crate::views::rfc3339(at),
        "data": {
            "id": alert.id.as_str(),
            "kind": alert.kind.as_str(),
            "severity": alert.severity.as_str(),
            "state": alert.state.as_str(),
            "site": alert.site.as_str(),
            "bank": alert.bank.as_ref().map(custody_core::BankId::as_str),
            "compartment": alert.compartment,
            "readings": alert.readings,
            "raised_at": crate::views::rfc3339(alert.raised_at),
            "url": format!("{}/portal/alerts/{}", public_url.trim_end_matches('/'), alert.id),
        },
    });
    body.to_string().into_bytes()
}

/// How notifications leave the server.
#[derive(Debug, Clone)]
pub struct Senders {
    /// Webhooks, through the egress guard.
    pub webhooks: Egress,
    /// Syslog receivers over TLS.
    pub syslog: SyslogSender,
    /// E-mail to people, when the server sends e-mail.
    pub email: Option<Transport>,
    /// Text messages to people, when an SMS provider is configured.
    pub sms: Option<SmsSender>,
    /// Where targets the egress guard refuses at delivery are counted for the audit log (the
    /// server sets it as it starts).
    pub refusals: Option<crate::refusals::Refusals>,
}

impl Senders {
    /// Both senders, for the operator's `allowed` private hosts, trusting `ca_pem` (the
    /// system's roots and the operator's CA file) besides.
    pub fn new(allowed: &Allowed, ca_pem: &str) -> Result<Self, String> {
        Ok(Self {
            webhooks: Egress::new(allowed.clone(), Some(ca_pem))?,
            syslog: SyslogSender::new(ca_pem, allowed.clone())?,
            email: None,
            sms: None,
            refusals: None,
        })
    }
}

/// Sends one notification.
async fn send(app: &App, senders: &Senders, due: &Due) -> Result<(), String> {
    let egress = &senders.webhooks;
    match due.delivery.channel {
        Channel::Webhook => {
            let endpoint = due.endpoint.as_ref().ok_or("the endpoint was removed")?;
            let secret = due.secret.as_ref().ok_or("the endpoint has no signing secret")?;
            let now = app.now();
            let body = webhook_body(&due.alert, &due.delivery.event, &app.config().public_url, now);
            let id = due.delivery.id.as_str();
            let timestamp = now.as_secs();
            let headers = [
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", secret.sign(id, timestamp, &body)),
            ];
            egress.post(&endpoint.target, &headers, body).await
        }
        Channel::Syslog => {
            let endpoint = due.endpoint.as_ref().ok_or("the endpoint was removed")?;
            let public_url = &app.config().public_url;
            let message =
                crate::syslog::message(&due.alert, &due.delivery.event, public_url, app.now());
            senders.syslog.send(&endpoint.target, &message).await
        }
        Channel::Email => {
            let transport = senders.email.as_ref().ok_or("this server sends no e-mail")?;
            let to = due.to.clone().ok_or("the person withdrew their consent")?;
            let words = &due.words;
            let message = custody_app::outbox::Message {
                to,
                subject: words.subject.clone(),
                body: words.body.clone(),
                qr: None,
            };
            transport.send(due.delivery.id.as_str(), &message).await.map_err(|e| e.to_string())
        }
        Channel::Sms => {
            let sms = senders.sms.as_ref().ok_or("this server has no SMS provider")?;
            let to = due.to.as_deref().ok_or("the person withdrew their consent")?;
            sms.send(egress, to, &due.words.short).await
        }
    }
}

/// Sends every due notification once; returns how many were delivered.
pub async fn deliver_alerts(app: &App, senders: &Senders) -> Result<usize, custody_app::AppError> {
    let mut delivered = 0;
    loop {
        let batch = app.lease_alert_deliveries(50).await?;
        if batch.is_empty() {
            return Ok(delivered);
        }
        for due in batch {
            match send(app, senders, &due).await {
                Ok(()) => {
                    app.alert_delivered(&due).await?;
                    delivered += 1;
                }
                Err(error) => {
                    tracing::warn!(delivery = %due.delivery.id, channel = %due.delivery.channel, attempt = due.delivery.attempts + 1, %error, "alert notification failed");
                    // A target that resolves to a private address now is a refusal at the
                    // edge, on the record besides the delivery's failure.
                    if let (Some(refusals), Some(endpoint)) =
                        (&senders.refusals, &due.delivery.endpoint)
                        && error.starts_with(crate::egress::REFUSED)
                    {
                        let site = Some(due.alert.site.clone());
                        let source = format!("endpoint:{endpoint}");
                        refusals.refused(Edge::Egress, "private_address", source, site);
                    }
                    app.alert_delivery_failed(&due, &error).await?;
                }
            }
        }
    }
}
