//! Signing residents in by e-mailed link, against the real use cases, on both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::sync::{Arc, Mutex};

use custody_app::outbox::Message;
use custody_app::sessions::Client;
use custody_core::audit::{AuditAction, Outcome};
use custody_core::time::minutes;
use custody_testkit::{Env, TestStore, backends, eventually};
use futures_util::FutureExt as _;

fn client() -> Client {
    Client::new("198.51.100.40", "phone")
}

/// Every message queued so far (leased, so each is seen once; kept here).
async fn mail(env: &Env, seen: &Arc<Mutex<Vec<Message>>>) -> Vec<Message> {
    let rows = env.app.lease_messages(100).await.unwrap();
    let mut seen = seen.lock().unwrap();
    seen.extend(rows.iter().map(|r| env.app.open_message(r).unwrap()));
    seen.clone()
}

/// The token of the next sign-in link mailed to `to`.
async fn link_for(env: &Env, to: &str, seen: &Arc<Mutex<Vec<Message>>>) -> String {
    let before = seen.lock().unwrap().iter().filter(|m| m.to == to).count();
    eventually("a sign-in link", || async {
        mail(env, seen).await.iter().filter(|m| m.to == to).count() > before
    })
    .await;
    let all = seen.lock().unwrap().clone();
    let body = &all.iter().rev().find(|m| m.to == to).unwrap().body;
    let line = body.lines().find(|l| l.starts_with("Sign in: ")).unwrap();
    line.split_once("token=").unwrap().1.trim().to_owned()
}

backends!(a_link_signs_a_resident_in_once_in_the_browser_that_asked, |t: TestStore| async move {
    let env = Env::new(t).await;
    let seen = Arc::default();
    let binding = env.app.link_binding().unwrap();
    env.app.request_sign_in_link("Ann@Harbour.Example", &binding, &client()).await.unwrap();
    let token = link_for(&env, "ann@harbour.example", &seen).await;
    // Another browser cannot use it (and does not spend it).
    let elsewhere = env.app.link_binding().unwrap();
    let stolen = env.app.sign_in_with_link(&token, &elsewhere, &client()).await;
    assert_eq!(stolen.unwrap_err().code(), "authentication_failed");
    let session = env.app.sign_in_with_link(&token, &binding, &client()).await.unwrap();
    assert_eq!(session.person.id, env.ann.id);
    assert!(!session.needs_second_factor && session.device_cookie.is_some());
    assert!(env.app.session(&session.token).await.is_ok());
    let again = env.app.sign_in_with_link(&token, &binding, &client()).await;
    assert_eq!(again.unwrap_err().code(), "authentication_failed", "a link works once");
});

backends!(a_link_lapses_after_fifteen_minutes, |t: TestStore| async move {
    let env = Env::new(t).await;
    let seen = Arc::default();
    let binding = env.app.link_binding().unwrap();
    env.app.request_sign_in_link("ann@harbour.example", &binding, &client()).await.unwrap();
    let token = link_for(&env, "ann@harbour.example", &seen).await;
    env.clock.advance(minutes(15));
    let late = env.app.sign_in_with_link(&token, &binding, &client()).await;
    assert_eq!(late.unwrap_err().code(), "authentication_failed");
});

backends!(everyone_gets_the_same_answer_and_only_residents_get_mail, |t: TestStore| async move {
    let env = Env::new(t).await;
    let seen = Arc::default();
    let binding = env.app.link_binding().unwrap();
    // Staff need their second factor, so no link signs them in; unknown and malformed
    // addresses get the same answer as a resident's.
    for email in ["admin@acme.example", "nobody@harbour.example", "not an address"] {
        env.app.request_sign_in_link(email, &binding, &client()).await.unwrap();
    }
    let refused = || async {
        let log = env
            .app
            .store()
            .read(|tx| async move { tx.audit_from(0, 100_000).await }.boxed())
            .await
            .unwrap();
        log.iter()
            .filter(|r| {
                r.event.action == AuditAction::SignInLink && r.event.outcome == Outcome::Failure
            })
            .count()
    };
    eventually("three refusals audited", || async { refused().await == 3 }).await;
    assert!(mail(&env, &seen).await.is_empty(), "no mail for staff, strangers or nonsense");
});

backends!(link_requests_are_throttled_per_address_asked_for, |t: TestStore| async move {
    let env = Env::new(t).await;
    let binding = env.app.link_binding().unwrap();
    for email in ["ann@harbour.example", "nobody@harbour.example"] {
        for n in 0..3 {
            let from = Client::new(format!("203.0.113.{n}"), "browser");
            env.app.request_sign_in_link(email, &binding, &from).await.unwrap();
        }
        // The fourth within a quarter-hour is refused, for a real address as for an unknown one.
        let err = env.app.request_sign_in_link(email, &binding, &client()).await.unwrap_err();
        assert_eq!(err.code(), "throttled", "{email}");
    }
    env.clock.advance(minutes(15));
    assert!(env.app.request_sign_in_link("ann@harbour.example", &binding, &client()).await.is_ok());
});
