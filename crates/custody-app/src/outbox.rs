//! Notifications: composed inside the unit of work that triggers them, sealed at rest, and
//! delivered by the server's outbox worker with retries.
//!
//! The message body carries the pickup code, so the outbox row holds it only as AES-256-GCM
//! ciphertext bound to the row's id, and the ciphertext is wiped once the message is delivered or
//! given up (DESIGN.md §4 invariant 3).

use crate::conflicts::ConflictCode;
use std::time::Duration;

use custody_core::audit::{Actor, AuditAction, AuditEvent, Outcome, Target};
use custody_core::code::PickupCode;
use custody_core::{MessageId, ParcelId, Timestamp};
use custody_store::{BankRow, CompartmentRow, OutboxRow, SiteRow, Tx};
use futures_util::FutureExt as _;
use serde::{Deserialize, Serialize};

use crate::people::Person;
use crate::{App, AppError};

view! {
    /// A message leased from the outbox for delivery, still sealed.
    Leased from OutboxRow {
        /// Id.
        id: MessageId,
        /// Channel name (`email`, `file`).
        channel: String,
        /// The parcel it is about.
        parcel: Option<ParcelId>,
        /// The sealed message; `None` once delivered or abandoned.
        sealed: Option<Vec<u8>>,
        /// Queued.
        created_at: Timestamp,
        /// Next try.
        next_attempt_at: Timestamp,
        /// Tries so far.
        attempts: u32,
        /// Delivered.
        delivered_at: Option<Timestamp>,
        /// Given up.
        dead_at: Option<Timestamp>,
        /// Why the last try failed.
        last_error: Option<String>,
    }
}

/// An outgoing message. Never logged: its body may hold a pickup code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// A pickup token to show as a QR image beside the body (the server's mailer renders it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message").field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// Tries before a message is given up and left in the dead-letter list.
pub const MAX_ATTEMPTS: u32 = 8;

/// Wait before try `attempt + 1`: one minute, doubling, at most an hour.
pub fn backoff(attempt: u32) -> Duration {
    let minutes = 1u64 << attempt.saturating_sub(1).min(6);
    Duration::from_secs((minutes * 60).min(3600))
}

fn utc(t: Timestamp) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(t.as_secs())
        .ok()
        .and_then(|d| d.format(&fmt).ok())
        .unwrap_or_else(|| "the end of the pickup window".into())
}

/// The message that tells a recipient their parcel is ready.
pub(crate) fn pickup_message(
    app: &App,
    recipient: &Person,
    site: &SiteRow,
    bank: &BankRow,
    compartment: &CompartmentRow,
    credentials: Credentials<'_>,
    expires_at: Timestamp,
) -> Message {
    let Credentials { code, qr } = credentials;
    Message {
        to: recipient.email.as_str().to_owned(),
        subject: format!("Your parcel is ready at {}", site.name),
        body: format!(
            "Hello {name},\n\n\
             a parcel for you is waiting in locker bank \"{bank}\" at {site}, locker {number}.\n\n\
             Your pickup code: {code}\n\n\
             Type all of it on the locker's screen: first your locker's number ({number}), then the\n\
             ten digits. Or hold the QR code in this message to the locker's scanner. Either works\n\
             once, only for this locker, until {until}. After that the parcel goes back to the\n\
             carrier.\n\n\
             Nobody from {site} will ever ask you for this code.\n\n\
             Your parcels: {url}\n",
            name = recipient.name,
            bank = bank.name,
            site = site.name,
            number = compartment.number,
            code = code.entry(compartment.number),
            until = utc(expires_at),
            url = app.config().public_url,
        ),
        qr: Some(qr.to_owned()),
    }
}

/// What opens a parcel's compartment, for the message that carries them.
#[derive(Clone, Copy)]
pub(crate) struct Credentials<'a> {
    /// The code to type.
    pub(crate) code: &'a PickupCode,
    /// The signed token to scan.
    pub(crate) qr: &'a str,
}

impl App {
    /// Seals and queues a message inside the caller's unit of work.
    pub(crate) async fn enqueue(
        &self,
        tx: &mut Tx,
        message: &Message,
        parcel: Option<&ParcelId>,
        now: Timestamp,
    ) -> Result<MessageId, AppError> {
        let id = MessageId::from_random(self.rng().bytes()?);
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(message).map_err(|e| AppError::Invalid(e.to_string()))?,
        );
        let sealed = self.keys().outbox.seal(id.as_str().as_bytes(), &plain)?;
        tx.enqueue_message(&id, &self.config().notification_channel, parcel, &sealed, now).await?;
        Ok(id)
    }

    /// Takes due messages for delivery, each leased for five minutes.
    pub async fn lease_messages(&self, limit: u32) -> Result<Vec<Leased>, AppError> {
        let now = self.now();
        let until = now.plus(custody_core::time::minutes(5));
        Ok(crate::views(
            self.store()
                .write(move |tx| {
                    async move { tx.lease_due_messages(now, until, limit).await }.boxed()
                })
                .await?,
        ))
    }

    /// Gives up and wipes every message still held for `address` (a person being erased).
    /// The queue holds only what is waiting, so it is read whole; a body that does not open is
    /// left for the worker, which gives it up itself.
    pub(crate) async fn withdraw_messages_to(
        &self,
        tx: &mut Tx,
        address: &str,
        now: Timestamp,
    ) -> Result<u64, AppError> {
        let mut withdrawn = 0;
        for row in tx.held_messages().await? {
            let Some(sealed) = &row.sealed else { continue };
            let Ok(plain) = self.keys().outbox.open(row.id.as_str().as_bytes(), sealed) else {
                continue;
            };
            let plain = zeroize::Zeroizing::new(plain);
            let Ok(message) = serde_json::from_slice::<Message>(&plain) else { continue };
            if message.to.eq_ignore_ascii_case(address) {
                tx.withdraw_message(&row.id, "recipient erased", now).await?;
                withdrawn += 1;
            }
        }
        Ok(withdrawn)
    }

    /// Opens a leased message for its transport.
    pub fn open_message(&self, row: &Leased) -> Result<Message, AppError> {
        let sealed = row.sealed.as_ref().ok_or_else(|| {
            AppError::conflict(ConflictCode::MessageWiped, "message already delivered")
        })?;
        let plain =
            zeroize::Zeroizing::new(self.keys().outbox.open(row.id.as_str().as_bytes(), sealed)?);
        serde_json::from_slice(&plain).map_err(|e| AppError::Invalid(e.to_string()))
    }

    /// Records a delivery.
    pub async fn message_delivered(&self, row: &Leased) -> Result<(), AppError> {
        let (now, id) = (self.now(), row.id.clone());
        let event = delivery_event(row, now, Outcome::Success, None);
        self.store()
            .write(move |tx| {
                async move {
                    tx.message_delivered(&id, now).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await
    }

    /// Records a failed try: retry later with backoff, or give up after [`MAX_ATTEMPTS`].
    pub async fn message_failed(&self, row: &Leased, error: &str) -> Result<(), AppError> {
        let now = self.now();
        let attempt = row.attempts + 1;
        let retry_at = (attempt < MAX_ATTEMPTS).then(|| now.plus(backoff(attempt)));
        let error: String = error.chars().filter(|c| !c.is_control()).take(200).collect();
        let id = row.id.clone();
        let gave_up = retry_at.is_none().then(|| {
            delivery_event(row, now, Outcome::Failure, Some(format!("gave_up_after:{attempt}")))
        });
        self.store()
            .write(move |tx| {
                async move {
                    tx.message_failed(&id, &error, retry_at, now).await?;
                    if let Some(e) = gave_up {
                        tx.append_audit(&e)?;
                    }
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await
    }
}

fn delivery_event(
    row: &Leased,
    at: Timestamp,
    outcome: Outcome,
    reason: Option<String>,
) -> AuditEvent {
    let target = Target { parcel: row.parcel.clone(), ..Target::default() };
    AuditEvent::ended(outcome, at, Actor::system(), AuditAction::NotificationDelivery, target)
        .because(reason.unwrap_or_else(|| format!("channel:{}", row.channel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        let mins: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs() / 60).collect();
        assert_eq!(mins, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
