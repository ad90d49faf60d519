//! Signing residents in by e-mailed link, the fallback when they have no passkey at hand.
//!
//! A link carries 256 random bits, works once, for 15 minutes, and only in the browser that
//! asked for it: the request binds it to a random value the browser keeps in a cookie
//! (ASVS 6.6.2). Token and binding are stored as keyed hashes. Whoever asks gets the same
//! answer, whether the address belongs to a resident or not, and at the same speed: the
//! link is made and queued after the answer (ASVS 6.3.8). Requests are throttled per address
//! asked for and per source, so nobody can flood a mailbox.

use std::time::Duration;

use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Target};
use custody_core::person::Role;
use custody_core::text::Email;
use custody_core::throttle::{LINK_ACCOUNT, LINK_SOURCE};
use custody_core::time::minutes;
use data_encoding::BASE64URL_NOPAD;
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

use crate::outbox::Message;
use crate::sessions::{Client, NewSession};
use crate::throttle::Budgets;
use crate::{App, AppError};

/// How long a sign-in link works.
pub const LINK_TTL: Duration = minutes(15);

/// Longest browser binding accepted (it is ours: 43 characters).
const MAX_BINDING: usize = 128;

impl App {
    /// A new browser binding for a sign-in request: the browser keeps it in a cookie.
    pub fn link_binding(&self) -> Result<Zeroizing<String>, AppError> {
        Ok(Zeroizing::new(BASE64URL_NOPAD.encode(&self.rng().bytes::<32>()?)))
    }

    /// Asks for a sign-in link to `email`, from the browser holding `binding`. Answers the
    /// same whoever asks; when the address belongs to a resident who may sign in, the link is
    /// made and e-mailed after the answer. `Throttled` past the budgets.
    pub async fn request_sign_in_link(
        &self,
        email: &str,
        binding: &str,
        client: &Client,
    ) -> Result<(), AppError> {
        if binding.is_empty() || binding.len() > MAX_BINDING {
            return Err(AppError::Invalid("the request carries no browser binding".into()));
        }
        let now = self.now();
        let typed = Email::parse(email)
            .map_or_else(|_| email.trim().to_lowercase(), |e| e.as_str().to_owned());
        let budgets = Budgets::new(
            "link",
            [
                (LINK_ACCOUNT, self.throttle_subject(&typed)),
                (LINK_SOURCE, self.throttle_subject(&client.address)),
            ],
        );
        let denied =
            AuditEvent::denied(now, Actor::anonymous(), AuditAction::SignInLink, Target::default());
        self.spend_or_throttle(&budgets, denied).await?;
        let (app, email, binding) = (self.clone(), email.to_owned(), binding.to_owned());
        tokio::spawn(async move {
            if let Err(e) = app.send_sign_in_link(&email, &binding).await {
                tracing::error!(error = %e, "could not queue a sign-in link");
            }
        });
        Ok(())
    }

    /// Makes and queues the link when `email` belongs to a resident who may sign in; audits the
    /// request either way.
    async fn send_sign_in_link(&self, email: &str, binding: &str) -> Result<(), AppError> {
        let now = self.now();
        let person = match Email::parse(email) {
            Ok(e) => {
                let index = self.email_index(&e);
                self.store()
                    .read(move |tx| async move { tx.person_by_email_index(&index).await }.boxed())
                    .await?
            }
            Err(_) => None,
        };
        let resident = person.filter(|p| p.role == Role::Resident && p.disabled_at.is_none());
        let Some(person) = resident.map(|p| self.person_view(&p)).transpose()? else {
            let event = AuditEvent::failure(
                now,
                Actor::anonymous(),
                AuditAction::SignInLink,
                Target::default(),
            )
            .because("no_resident");
            self.store().write(move |tx| async move { tx.append_audit(&event) }.boxed()).await?;
            return Ok(());
        };
        let token = Zeroizing::new(BASE64URL_NOPAD.encode(&self.rng().bytes::<32>()?));
        let token_hash = self.keys().sign_in_links.hash(&[b"token", token.as_bytes()]);
        let browser_hash = self.keys().sign_in_links.hash(&[b"browser", binding.as_bytes()]);
        let message = Message {
            to: person.email.as_str().to_owned(),
            subject: "Your sign-in link".into(),
            body: format!(
                "Hello {name},\n\n\
                 someone (we hope you) asked to sign in to Custody with this address.\n\n\
                 Sign in: {url}/portal/login/link?token={token}\n\n\
                 The link works once, for 15 minutes, and only in the browser where you asked\n\
                 for it. If that was not you, ignore this message: nothing happens without it.\n",
                name = person.name,
                url = self.config().public_url,
                token = token.as_str(),
            ),
            qr: None,
        };
        let event = AuditEvent::success(
            now,
            Actor { kind: ActorKind::Person, id: Some(person.id.to_string()) },
            AuditAction::SignInLink,
            Target { site: person.site.clone(), ..Target::default() },
        )
        .because("sent");
        let app = self.clone();
        self.store()
            .write(move |tx| {
                async move {
                    tx.insert_sign_in_link(
                        &token_hash,
                        &person.id,
                        &browser_hash,
                        now,
                        now.plus(LINK_TTL),
                    )
                    .await?;
                    app.enqueue(tx, &message, None, now).await?;
                    tx.append_audit(&event)?;
                    Ok(())
                }
                .boxed()
            })
            .await
    }

    /// Signs in with a link's token, from the browser holding `binding`: a full session for
    /// the resident it was sent to. One answer for every failure (used, expired, another
    /// browser, unknown).
    pub async fn sign_in_with_link(
        &self,
        token: &str,
        binding: &str,
        client: &Client,
    ) -> Result<NewSession, AppError> {
        if token.len() > MAX_BINDING || binding.len() > MAX_BINDING {
            return Err(AppError::AuthenticationFailed);
        }
        let now = self.now();
        let token_hash = self.keys().sign_in_links.hash(&[b"token", token.as_bytes()]);
        let browser_hash = self.keys().sign_in_links.hash(&[b"browser", binding.as_bytes()]);
        let used = self
            .store()
            .write(move |tx| {
                async move {
                    let Some(id) = tx.use_sign_in_link(&token_hash, &browser_hash, now).await?
                    else {
                        return Ok::<_, AppError>(None);
                    };
                    Ok(tx.person(&id).await?)
                }
                .boxed()
            })
            .await?;
        let Some(person) = used.filter(|p| p.disabled_at.is_none() && p.role == Role::Resident)
        else {
            let event =
                AuditEvent::failure(now, Actor::anonymous(), AuditAction::Login, Target::default())
                    .because("bad_link");
            self.store().write(move |tx| async move { tx.append_audit(&event) }.boxed()).await?;
            return Err(AppError::AuthenticationFailed);
        };
        self.start_session(person, client, "link", None).await
    }
}
