//! Alerts' notifications to webhooks: queued with the alert, signed per Standard Webhooks (and
//! checked by independent implementations of the scheme), retried on a back-off, left in the
//! dead-letter list after the last try and sent again from there; never to private addresses
//! nor through redirects. On both backends, against a real HTTP receiver on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::io::Write as _;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use custody_app::fanout::{ALERT_ATTEMPTS, NewEndpoint, alert_backoff};
use custody_core::alert::{AlertKind, Channel, Severity};
use custody_core::audit::{AuditAction, Outcome};
use custody_server::egress::Allowed;
use custody_server::fanout::{Senders, deliver_alerts};
use custody_testkit::{Env, TestStore, backends};
use data_encoding::BASE64;
use hmac::{KeyInit as _, Mac as _};

/// One request a receiver took.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A webhook receiver on loopback answering the status in `answer`; `/moved` redirects to
/// `/hooks`. Returns its address and what it took.
async fn receiver(answer: Arc<AtomicU16>) -> (std::net::SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let record = got.clone();
    let app = axum::Router::new()
        .route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (record, answer) = (record.clone(), answer.clone());
                async move {
                    record.lock().unwrap().push(Received { headers, body: body.to_vec() });
                    StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap()
                }
            }),
        )
        .route(
            "/moved",
            axum::routing::post(|| async {
                (StatusCode::TEMPORARY_REDIRECT, [("location", "/hooks")])
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

/// What the worker sends with, with loopback allowed as an operator would allow a SIEM's host.
fn egress() -> Senders {
    senders(&localhost_tls().0)
}

fn senders(ca_pem: &str) -> Senders {
    Senders::new(&Allowed::hosts(["127.0.0.1".to_owned(), "localhost".to_owned()]), ca_pem).unwrap()
}

/// A certificate for `localhost` from a CA of its own: the CA, and the certificate and key.
fn localhost_tls() -> (String, String, String) {
    use custody_core::Clock as _;
    let (rng, now) = (custody_crypto::Rng::new(), custody_crypto::SystemClock.now());
    let day = custody_core::time::days(1);
    let ca = custody_crypto::pki::generate_ca("SIEM CA", rng.bytes().unwrap(), now, day).unwrap();
    let authority =
        custody_crypto::pki::CertificateAuthority::load(&ca.cert_pem, &ca.key_pem).unwrap();
    let cert =
        authority.issue_server(&["localhost".into()], rng.bytes().unwrap(), now, day).unwrap();
    (ca.cert_pem, cert.cert_pem, cert.key_pem.to_string())
}

/// Adds a webhook for the test site's alerts of `min` severity and up; returns its secret.
async fn webhook(env: &Env, url: String, min: Severity) -> String {
    let new = NewEndpoint { channel: Channel::Webhook, target: url, min_severity: min };
    let added = env.app.add_alert_endpoint(&env.stepped_up(&env.admin), &env.site, new).await;
    added.unwrap().secret.unwrap().to_string()
}

fn header(r: &Received, name: &str) -> String {
    r.headers.get(name).unwrap().to_str().unwrap().to_owned()
}

/// The signature as the Standard Webhooks specification defines it, computed with the `hmac`
/// crate rather than the server's aws-lc.
fn expected_signature(secret: &str, r: &Received) -> String {
    let key = BASE64.decode(secret.strip_prefix("whsec_").unwrap().as_bytes()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(header(r, "webhook-id").as_bytes());
    mac.update(b".");
    mac.update(header(r, "webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    format!("v1,{}", BASE64.encode(&mac.finalize().into_bytes()))
}

/// The signature the scheme's reference library (Python `standardwebhooks`) makes for the same
/// message; `None` where it is not installed and not required.
fn reference_signature(secret: &str, r: &Received) -> Option<String> {
    let script = "import sys\nfrom datetime import datetime, timezone\n\
                  from standardwebhooks.webhooks import Webhook\n\
                  body = sys.stdin.buffer.read().decode()\n\
                  ts = datetime.fromtimestamp(int(sys.argv[3]), tz=timezone.utc)\n\
                  print(Webhook(sys.argv[1]).sign(sys.argv[2], ts, body))\n";
    let child = std::process::Command::new("python3")
        .args(["-c", script, secret, &header(r, "webhook-id"), &header(r, "webhook-timestamp")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let output = child.ok().and_then(|mut c| {
        c.stdin.take().unwrap().write_all(&r.body).unwrap();
        c.wait_with_output().ok()
    });
    match output {
        Some(o) if o.status.success() => {
            Some(String::from_utf8(o.stdout).unwrap().trim().to_owned())
        }
        other => {
            assert!(
                std::env::var("CUSTODY_REQUIRE_WEBHOOK_VERIFIER").as_deref() != Ok("1"),
                "CUSTODY_REQUIRE_WEBHOOK_VERIFIER=1 but Python's standardwebhooks did not run: {other:?}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (reference verifier): install it with `pip install standardwebhooks`"
            );
            None
        }
    }
}

backends!(a_new_alert_reaches_its_sites_webhook_signed, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (addr, got) = receiver(Arc::new(AtomicU16::new(204))).await;
    let secret = webhook(&env, format!("http://{addr}/hooks"), Severity::High).await;

    // A pry (critical) goes out; a power cut (medium) is below the endpoint's severity.
    let now = env.app.now();
    let pry = env.app.sensor_reading(&env.device, AlertKind::Pry, Some(2), now, 1).await;
    let pry = pry.unwrap().unwrap();
    env.app.sensor_reading(&env.device, AlertKind::PowerLoss, None, now, 2).await.unwrap();
    // Another reading of the live pry joins it and notifies nobody again.
    env.app.sensor_reading(&env.device, AlertKind::Pry, Some(2), now, 3).await.unwrap();
    assert_eq!(deliver_alerts(&env.app, &egress()).await.unwrap(), 1);
    assert_eq!(deliver_alerts(&env.app, &egress()).await.unwrap(), 0, "delivered once");

    let received = got.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["type"], "alert.raised");
    assert_eq!(body["data"]["id"], pry.as_str());
    assert_eq!(body["data"]["kind"], "pry");
    assert_eq!(body["data"]["severity"], "critical");
    assert_eq!(body["data"]["compartment"], 2);
    assert!(header(r, "webhook-id").starts_with("dlv_"));
    assert_eq!(header(r, "webhook-timestamp"), env.app.now().as_secs().to_string());
    let signature = header(r, "webhook-signature");
    assert_eq!(signature, expected_signature(&secret, r), "the `hmac` crate agrees");
    if let Some(reference) = reference_signature(&secret, r) {
        assert_eq!(signature, reference, "the reference library agrees");
    }
    let mut tampered = r.clone();
    tampered.body.extend_from_slice(b" ");
    assert_ne!(signature, expected_signature(&secret, &tampered));

    // On the alert's timeline, and in the audit log.
    let admin = Env::as_person(&env.admin);
    let timeline = env.app.alert(&admin, &pry).await.unwrap().timeline;
    assert!(timeline.iter().any(|e| e.what == "notified" && e.note.as_deref() == Some("webhook")));
    assert!(env.site_log(100).await.iter().any(|e| e.event.action == AuditAction::AlertNotify
        && e.event.reason.as_deref().is_some_and(|r| r.contains(":delivered:"))));
    let listed = env.app.alert_deliveries(&admin, &env.site, false).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].delivered_at.is_some());
});

backends!(
    a_failing_receiver_is_retried_then_dead_lettered_and_sent_again,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let answer = Arc::new(AtomicU16::new(503));
        let (addr, got) = receiver(answer.clone()).await;
        webhook(&env, format!("http://{addr}/hooks"), Severity::Low).await;
        let now = env.app.now();
        let drill = env.app.sensor_reading(&env.device, AlertKind::Drill, Some(1), now, 1).await;
        let drill = drill.unwrap().unwrap();

        // Each try fails; none comes before its back-off; after the last it is dead.
        for attempt in 1..=ALERT_ATTEMPTS {
            assert_eq!(deliver_alerts(&env.app, &egress()).await.unwrap(), 0);
            assert_eq!(got.lock().unwrap().len(), usize::try_from(attempt).unwrap());
            assert_eq!(
                deliver_alerts(&env.app, &egress()).await.unwrap(),
                0,
                "not before its time"
            );
            assert_eq!(got.lock().unwrap().len(), usize::try_from(attempt).unwrap());
            env.clock.advance(alert_backoff(attempt));
        }
        let admin = Env::as_person(&env.admin);
        let dead = env.app.alert_deliveries(&admin, &env.site, true).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].attempts, dead[0].last_error.as_deref()),
            (ALERT_ATTEMPTS, Some("answered 503 Service Unavailable"))
        );
        deliver_alerts(&env.app, &egress()).await.unwrap();
        assert_eq!(
            got.lock().unwrap().len(),
            usize::try_from(ALERT_ATTEMPTS).unwrap(),
            "dead stays dead"
        );
        let timeline = env.app.alert(&admin, &drill).await.unwrap().timeline;
        assert!(timeline.iter().any(|e| e.what == "notify_failed"));
        assert!(
            env.site_log(200).await.iter().any(|e| e.event.action == AuditAction::AlertNotify
                && e.event.outcome == Outcome::Failure)
        );

        // The receiver is fixed; an admin sends it again from the dead-letter list.
        answer.store(200, Ordering::SeqCst);
        let auditor = Env::as_person(&env.auditor);
        let refused = env.app.retry_alert_delivery(&auditor, &dead[0].id).await;
        assert!(refused.is_err(), "an auditor changes nothing");
        let again =
            env.app.retry_alert_delivery(&env.stepped_up(&env.admin), &dead[0].id).await.unwrap();
        assert_eq!((again.attempts, again.dead_at), (0, None));
        assert_eq!(deliver_alerts(&env.app, &egress()).await.unwrap(), 1);
        assert!(env.app.alert_deliveries(&admin, &env.site, true).await.unwrap().is_empty());
        let twice = env.app.retry_alert_delivery(&env.stepped_up(&env.admin), &dead[0].id).await;
        assert!(twice.is_err(), "only a dead one is sent again");
    }
);

backends!(redirects_and_private_addresses_are_refused_at_delivery, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (addr, got) = receiver(Arc::new(AtomicU16::new(204))).await;
    // Stored before the operator's rules changed, say: the worker checks again.
    webhook(&env, format!("http://{addr}/moved"), Severity::Low).await;
    webhook(&env, format!("https://localhost:{}/hooks", addr.port()), Severity::Low).await;
    webhook(&env, format!("https://[::1]:{}/hooks", addr.port()), Severity::Low).await;
    let now = env.app.now();
    env.app.sensor_reading(&env.device, AlertKind::Pry, None, now, 1).await.unwrap();
    // The operator allows 127.0.0.1 (for the redirect's sake), not the name `localhost`.
    let mut only_the_address =
        Senders::new(&Allowed::hosts(["127.0.0.1".to_owned()]), &localhost_tls().0).unwrap();
    only_the_address.refusals = Some(custody_server::refusals::Refusals::new(env.app.clone()));
    assert_eq!(deliver_alerts(&env.app, &only_the_address).await.unwrap(), 0);
    // Each target the guard refused is on the record (DESIGN.md §4 invariant 13).
    custody_testkit::eventually("the refused targets are on the record", || async {
        let refused = env.site_log(200).await.into_iter().filter(|r| {
            r.event.action == AuditAction::EgressRefused
                && r.event.reason.as_deref().is_some_and(|r| r.starts_with("private_address:"))
        });
        refused.count() == 2
    })
    .await;
    assert!(
        got.lock().unwrap().is_empty(),
        "nothing reached the receiver, by redirect or otherwise"
    );
    let admin = Env::as_person(&env.admin);
    let mut errors: Vec<String> = env
        .app
        .alert_deliveries(&admin, &env.site, false)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.last_error.unwrap())
        .collect();
    errors.sort();
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().any(|e| e.contains("redirects are not followed")), "{errors:?}");
    assert_eq!(
        errors.iter().filter(|e| e.contains("loopback, link-local, private")).count(),
        2,
        "{errors:?}"
    );
});

backends!(a_new_alert_reaches_a_siem_over_syslog_tls_with_cef, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (ca, cert, key) = localhost_tls();
    let test = "a_new_alert_reaches_a_siem_over_syslog_tls_with_cef";
    let Some(rsyslog) = custody_testkit::rsyslog::Rsyslog::start(test, &cert, &key).await else {
        return;
    };
    let new = NewEndpoint {
        channel: Channel::Syslog,
        target: format!("localhost:{}", rsyslog.port()),
        min_severity: Severity::Medium,
    };
    env.app.add_alert_endpoint(&env.stepped_up(&env.admin), &env.site, new).await.unwrap();
    let now = env.app.now();
    let pry = env.app.sensor_reading(&env.device, AlertKind::Pry, Some(2), now, 1).await;
    let pry = pry.unwrap().unwrap();

    // A server that does not trust the receiver's certificate sends nothing.
    let (other_ca, _, _) = localhost_tls();
    assert_eq!(deliver_alerts(&env.app, &senders(&other_ca)).await.unwrap(), 0);
    let admin = Env::as_person(&env.admin);
    let failed = env.app.alert_deliveries(&admin, &env.site, false).await.unwrap();
    let error = failed[0].last_error.clone().unwrap();
    assert!(error.contains("TLS"), "{error}");

    env.clock.advance(alert_backoff(1));
    assert_eq!(deliver_alerts(&env.app, &senders(&ca)).await.unwrap(), 1);
    custody_testkit::eventually("rsyslog stores the alert", || async {
        !rsyslog.received().is_empty()
    })
    .await;
    let stored = rsyslog.received();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let line = &stored[0];
    // Facility 13 (log audit), severity 2 (critical); then the CEF event.
    assert!(line.starts_with("<106>1 "), "{line}");
    assert!(line.contains(" custody - alert - CEF:0|Custody|Custody|"), "{line}");
    assert!(line.contains("|pry|Custody alert raised: pry|10|"), "{line}");
    assert!(line.contains(&format!("externalId={pry}")), "{line}");
    assert!(line.contains("cs2Label=bank cs2=") && line.contains("cn1=2"), "{line}");
    let timeline = env.app.alert(&admin, &pry).await.unwrap().timeline;
    assert!(timeline.iter().any(|e| e.what == "notified" && e.note.as_deref() == Some("syslog")));
});

/// An SMS provider's API on loopback, Twilio's shape: records each message's form and who
/// sent it.
async fn sms_provider() -> (std::net::SocketAddr, Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>)
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let record = got.clone();
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/AC0123/Messages.json",
        axum::routing::post(
            move |headers: HeaderMap, axum::Form(form): axum::Form<Vec<(String, String)>>| {
                let record = record.clone();
                async move {
                    let auth = headers.get("authorization").unwrap().to_str().unwrap().to_owned();
                    record.lock().unwrap().push((auth, form));
                    StatusCode::CREATED
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

backends!(
    staff_who_agreed_hear_by_email_and_text_and_low_alerts_stay_quiet,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let (addr, texts) = sms_provider().await;
        let mail = tempfile::tempdir().unwrap();
        let mut senders = egress();
        senders.email = Some(custody_server::outbox::Transport::File(mail.path().to_owned()));
        senders.sms = Some(custody_server::sms::SmsSender {
            base_url: format!("http://127.0.0.1:{}", addr.port()),
            account_sid: "AC0123".into(),
            auth_token: zeroize::Zeroizing::new("token-9".into()),
            from: "+15005550006".into(),
        });
        let (ada, auditor, ann) =
            (Env::as_person(&env.admin), Env::as_person(&env.auditor), Env::as_person(&env.ann));
        // Consent, each to their own: a resident may not hear of a site's alerts; a text message
        // needs a number in international form.
        let sub = |who, channel, phone, min| {
            env.app.subscribe_alerts(who, &env.site, channel, phone, min)
        };
        sub(&ada, Channel::Email, None, Severity::High).await.unwrap();
        assert!(sub(&ada, Channel::Sms, Some("07700 900123"), Severity::Low).await.is_err());
        sub(&ada, Channel::Sms, Some("+447700900123"), Severity::Low).await.unwrap();
        sub(&auditor, Channel::Email, None, Severity::Low).await.unwrap();
        assert!(sub(&ann, Channel::Email, None, Severity::Low).await.is_err());
        assert_eq!(env.app.my_alert_subscriptions(&ada).await.unwrap().len(), 2);

        // A pry: Ada by e-mail and text, the auditor by e-mail.
        let now = env.app.now();
        env.app.sensor_reading(&env.device, AlertKind::Pry, Some(2), now, 1).await.unwrap();
        assert_eq!(deliver_alerts(&env.app, &senders).await.unwrap(), 3);
        let texts_now = texts.lock().unwrap().clone();
        assert_eq!(texts_now.len(), 1);
        let (auth, form) = &texts_now[0];
        assert_eq!(auth, &format!("Basic {}", BASE64.encode(b"AC0123:token-9")));
        let field = |k: &str| form.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!((field("To"), field("From")), ("+447700900123".into(), "+15005550006".into()));
        assert!(field("Body").starts_with("Custody CRITICAL: pry at "), "{}", field("Body"));
        assert!(field("Body").contains("/portal/alerts/alr_"));
        let mails: Vec<String> = std::fs::read_dir(mail.path())
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        assert_eq!(mails.len(), 2);
        assert!(mails.iter().any(|m| m.contains(env.admin.email.as_str())));
        assert!(mails.iter().all(|m| m.contains("Subject: [Custody] CRITICAL: pry at")));

        // A door left open is low: quiet, so e-mail to whoever wants low alerts, and no text.
        env.app
            .sensor_reading(&env.device, AlertKind::DoorLeftOpen, Some(4), now, 2)
            .await
            .unwrap();
        assert_eq!(deliver_alerts(&env.app, &senders).await.unwrap(), 1);
        assert_eq!(texts.lock().unwrap().len(), 1, "no text for a low alert");

        // Ada withdraws her number before the next alert's text goes: it is not sent, nor tried again.
        env.app.sensor_reading(&env.device, AlertKind::Drill, Some(1), now, 3).await.unwrap();
        env.app.unsubscribe_alerts(&ada, &env.site, Channel::Sms).await.unwrap();
        assert_eq!(deliver_alerts(&env.app, &senders).await.unwrap(), 2, "the two e-mails");
        assert_eq!(texts.lock().unwrap().len(), 1);
        let dead = env.app.alert_deliveries(&ada, &env.site, true).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 1, "given up at once");
        let consents = env
            .site_log(200)
            .await
            .into_iter()
            .filter(|e| e.event.action == AuditAction::AlertConsent)
            .count();
        assert_eq!(consents, 4, "three agreed and one withdrawn");
        assert!(
            env.site_log(200).await.iter().any(|e| e.event.action == AuditAction::AccessDenied),
            "the resident's attempt is refused on the record"
        );
        // Erasing a person's data deletes their consents and the numbers in them.
        let root = custody_app::Caller::Operator;
        assert!(env.app.erase_personal_data(&root, &env.admin.id).await.unwrap());
        assert!(env.app.my_alert_subscriptions(&ada).await.unwrap().is_empty());
    }
);

// An alert nobody takes is escalated once, to everyone who agreed to hear of the site's alerts
// whatever their least severity; one taken in time, and a low one, are not.
backends!(an_alert_left_unacknowledged_is_escalated_to_everyone_once, |t: TestStore| async move {
    let env = Env::new(t).await;
    let mail = tempfile::tempdir().unwrap();
    let mut senders = egress();
    senders.email = Some(custody_server::outbox::Transport::File(mail.path().to_owned()));
    let (ada, auditor) = (Env::as_person(&env.admin), Env::as_person(&env.auditor));
    let sub = |who, min| env.app.subscribe_alerts(who, &env.site, Channel::Email, None, min);
    sub(&ada, Severity::Critical).await.unwrap();
    sub(&auditor, Severity::Low).await.unwrap();
    let now = env.app.now();
    let read = |kind, n, counter| env.app.sensor_reading(&env.device, kind, Some(n), now, counter);
    let power = read(AlertKind::PowerLoss, 1, 1).await.unwrap().unwrap();
    let pry = read(AlertKind::Pry, 2, 2).await.unwrap().unwrap();
    read(AlertKind::DoorLeftOpen, 3, 3).await.unwrap();
    // Raised: the auditor hears of all three, Ada of the pry.
    assert_eq!(deliver_alerts(&env.app, &senders).await.unwrap(), 4);
    env.app.acknowledge_alert(&ada, &pry).await.unwrap();

    env.clock.advance(custody_core::time::minutes(14));
    assert_eq!(env.app.escalate_due().await.unwrap(), 0, "not yet");
    env.clock.advance(custody_core::time::minutes(1));
    assert_eq!(env.app.escalate_due().await.unwrap(), 1, "the power cut alone");
    assert_eq!(env.app.escalate_due().await.unwrap(), 0, "once");
    assert_eq!(deliver_alerts(&env.app, &senders).await.unwrap(), 2, "Ada and the auditor");
    let escalated: Vec<String> = std::fs::read_dir(mail.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .filter(|m| m.contains("(escalated)"))
        .collect();
    assert_eq!(escalated.len(), 2);
    assert!(escalated.iter().any(|m| m.contains(env.admin.email.as_str())));
    let timeline = env.app.alert(&ada, &power).await.unwrap().timeline;
    assert!(timeline.iter().any(|e| e.what == "escalated"));
    assert!(env.site_log(200).await.iter().any(|e| e.event.action == AuditAction::AlertEscalate));
});

// Every kind a bank's sensors report, read at the agent (through the input a wired sensor
// uses), carried over the device link, raised at the server and sent to the site's webhook:
// one notification of each kind, signed.
backends!(every_sensor_kind_goes_from_the_agent_to_the_webhook, |t: TestStore| async move {
    let server = custody_testkit::TestServer::start(t).await;
    let agent = server.agent().await;
    let env = &server.env;
    let (addr, got) = receiver(Arc::new(AtomicU16::new(204))).await;
    let secret = webhook(env, format!("http://{addr}/hooks"), Severity::Low).await;
    let kinds: Vec<AlertKind> =
        AlertKind::ALL.iter().copied().filter(|k| k.from_sensor()).collect();
    assert_eq!(kinds.len(), 9);
    let n = env.compartments[0].number.get();
    for &kind in &kinds {
        // An impact counts at the third within ten seconds; anything else at once.
        let readings = if kind == AlertKind::Impact { 3 } else { 1 };
        for _ in 0..readings {
            agent.handle.sensor(kind, Some(n)).await;
        }
    }
    let raised =
        || async { env.app.alerts(&custody_app::Caller::Operator, &env.site, true).await.unwrap() };
    custody_testkit::eventually("every reading is an alert at the server", || async {
        raised().await.len() == kinds.len()
    })
    .await;
    assert_eq!(deliver_alerts(&env.app, &egress()).await.unwrap(), kinds.len());

    let received = got.lock().unwrap().clone();
    let mut sent: Vec<String> = received
        .iter()
        .map(|r| {
            assert_eq!(header(r, "webhook-signature"), expected_signature(&secret, r));
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["data"]["compartment"], n);
            body["data"]["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    sent.sort();
    let mut wanted: Vec<String> = kinds.iter().map(|k| k.as_str().to_owned()).collect();
    wanted.sort();
    assert_eq!(sent, wanted);
});
