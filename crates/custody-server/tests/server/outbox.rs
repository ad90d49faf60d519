//! Notifications through the durable outbox over a real SMTP conversation on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::sync::Arc;

use axum::http::StatusCode;

use custody_app::parcels::ParcelSpec;
use custody_core::ParcelId;
use custody_core::alert::AlertKind;
use custody_core::audit::{AuditAction, Outcome};
use custody_core::compartment::SizeClass;
use custody_core::time::minutes;
use custody_proto::device::DoorReading;
use custody_server::outbox::{SmtpSecurity, SmtpSettings, Transport, deliver_due};
use custody_testkit::smtp::SmtpSink;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;

/// A deposited parcel for Ann whose notification is queued.
async fn queued(env: &Env) -> ParcelId {
    let carrier = env.carrier().await;
    let spec = ParcelSpec {
        site: env.site.clone(),
        carrier: env.carrier.clone(),
        recipient_email: "ann@harbour.example".into(),
        tracking_ref: "MAIL-1".into(),
        size: SizeClass::Small,
        accessible: false,
        refrigerated: false,
    };
    let p = env.app.expect_parcel(&carrier, spec).await.unwrap();
    let d = env.app.start_deposit(&carrier, &p.id, &env.bank).await.unwrap();
    env.app
        .door_report(&env.device, d.compartment.number.get(), DoorReading::Closed)
        .await
        .unwrap();
    env.app.confirm_deposit(&carrier, &p.id).await.unwrap();
    env.app.notify(&p.id).await.unwrap();
    p.id
}

/// A relay certificate and the CA that issued it. lettre checks a relay's certificate against
/// the wall clock (it takes no time source), so unlike every other certificate in the tests these
/// are issued at wall-clock time, through the system clock adapter.
fn relay_tls() -> (rustls::ServerConfig, String) {
    use custody_core::Clock as _;
    let (rng, now) = (custody_crypto::Rng::new(), custody_crypto::SystemClock.now());
    let ca = custody_crypto::pki::generate_ca(
        "Relay CA",
        rng.bytes().unwrap(),
        now,
        custody_core::time::days(1),
    )
    .unwrap();
    let authority =
        custody_crypto::pki::CertificateAuthority::load(&ca.cert_pem, &ca.key_pem).unwrap();
    let cert = authority
        .issue_server(&["localhost".into()], rng.bytes().unwrap(), now, custody_core::time::days(1))
        .unwrap();
    let config = custody_crypto::tls::server_config(
        &cert.cert_pem,
        &cert.key_pem,
        &custody_crypto::tls::ClientAuth::None,
        &[],
        Arc::new(custody_crypto::SystemClock),
    )
    .unwrap();
    (config, ca.cert_pem)
}

fn smtp(port: u16, security: SmtpSecurity, ca_pem: &str) -> Transport {
    Transport::Smtp(SmtpSettings {
        host: "localhost".into(),
        port,
        security,
        from: "Custody <lockers@harbour.example>".into(),
        ca_pem: Some(ca_pem.to_owned()),
        credentials: None,
    })
}

backends!(a_notification_travels_over_smtp_with_starttls, |t: TestStore| async move {
    let env = Env::new(t).await;
    let parcel = queued(&env).await;
    let (tls, ca) = relay_tls();
    let sink = SmtpSink::start(Some(tls)).await;
    let delivered =
        deliver_due(&env.app, &smtp(sink.addr.port(), SmtpSecurity::StartTls, &ca)).await.unwrap();
    let pid = parcel.clone();
    let why = env
        .app
        .store()
        .read(move |tx| async move { tx.messages_for_parcel(&pid).await }.boxed())
        .await
        .unwrap()[0]
        .last_error
        .clone();
    assert_eq!(delivered, 1, "{why:?}");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, vec!["ann@harbour.example".to_owned()]);
    assert_eq!(got[0].from, "lockers@harbour.example");
    assert_eq!(got[0].tls, Some(rustls::ProtocolVersion::TLSv1_3), "the message crossed TLS 1.3");
    assert!(got[0].data.contains("Your pickup code: "), "{}", got[0].data);
    assert!(got[0].data.contains("Subject: Your parcel is ready at Harbour House"));
    // Delivered: the sealed body (with the code) is gone from the database.
    let pid = parcel.clone();
    let rows = env
        .app
        .store()
        .read(move |tx| async move { tx.messages_for_parcel(&pid).await }.boxed())
        .await
        .unwrap();
    assert_eq!((rows[0].sealed.is_none(), rows[0].delivered_at.is_some()), (true, true));
    let history = env.app.parcel_history(&custody_app::Caller::Operator, &parcel).await.unwrap().1;
    assert!(history.iter().any(|(r, _)| r.event.action == AuditAction::NotificationDelivery
        && r.event.outcome == Outcome::Success));
    // Nothing is left to send.
    assert_eq!(
        deliver_due(&env.app, &smtp(sink.addr.port(), SmtpSecurity::StartTls, &ca)).await.unwrap(),
        0
    );
});

#[tokio::test]
async fn starttls_is_required_not_attempted() {
    let env = Env::new(custody_testkit::sqlite_store().await).await;
    queued(&env).await;
    // A relay that offers no STARTTLS: the message must not go out in plaintext.
    let (_, ca) = relay_tls();
    let sink = SmtpSink::start(None).await;
    assert_eq!(
        deliver_due(&env.app, &smtp(sink.addr.port(), SmtpSecurity::StartTls, &ca)).await.unwrap(),
        0
    );
    assert!(sink.received().is_empty());
    // The operator's explicit plaintext setting for a relay on this machine does deliver.
    env.clock.advance(minutes(1));
    assert_eq!(
        deliver_due(&env.app, &smtp(sink.addr.port(), SmtpSecurity::DangerPlaintext, &ca))
            .await
            .unwrap(),
        1
    );
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test]
async fn failures_back_off_and_end_in_the_dead_letter_list() {
    let env = Env::new(custody_testkit::sqlite_store().await).await;
    let parcel = queued(&env).await;
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (_, ca) = relay_tls();
    let transport = smtp(closed, SmtpSecurity::StartTls, &ca);
    let row = |env: &Env| {
        let pid = parcel.clone();
        let app = env.app.clone();
        async move {
            app.store()
                .read(move |tx| async move { tx.messages_for_parcel(&pid).await }.boxed())
                .await
                .unwrap()
                .remove(0)
        }
    };
    let waits = [1, 2, 4, 8, 16, 32, 60];
    for (attempt, wait) in waits.iter().enumerate() {
        assert_eq!(deliver_due(&env.app, &transport).await.unwrap(), 0);
        let r = row(&env).await;
        assert_eq!(r.attempts, u32::try_from(attempt + 1).unwrap());
        assert_eq!(
            r.next_attempt_at,
            env.app.now().plus(minutes(*wait)),
            "backoff after attempt {}",
            attempt + 1
        );
        assert!(r.last_error.is_some());
        // Not due before its time.
        assert_eq!(deliver_due(&env.app, &transport).await.unwrap(), 0);
        assert_eq!(row(&env).await.attempts, u32::try_from(attempt + 1).unwrap());
        env.clock.advance(minutes(*wait));
    }
    assert_eq!(deliver_due(&env.app, &transport).await.unwrap(), 0);
    let dead = row(&env).await;
    assert_eq!((dead.attempts, dead.dead_at.is_some(), dead.sealed.is_none()), (8, true, true));
    let history = env.app.parcel_history(&custody_app::Caller::Operator, &parcel).await.unwrap().1;
    assert!(history.iter().any(|(r, _)| r.event.action == AuditAction::NotificationDelivery
        && r.event.reason.as_deref() == Some("gave_up_after:8")));
}

#[tokio::test]
async fn checkpoints_are_written_for_shipping_when_the_log_grows() {
    let env = Env::new(custody_testkit::sqlite_store().await).await;
    let dir = tempfile::tempdir().unwrap();
    let size = custody_server::workers::checkpoint_once(&env.app, dir.path())
        .await
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(
        custody_server::workers::checkpoint_once(&env.app, dir.path()).await.unwrap(),
        None,
        "nothing new"
    );
    let file = dir.path().join(format!("{size:020}.checkpoint"));
    let verifier =
        custody_audit::checkpoint::NoteVerifier::parse(&env.app.checkpoint_verifier_key()).unwrap();
    let c =
        verifier.open_checkpoint(&std::fs::read_to_string(file).unwrap(), verifier.name()).unwrap();
    assert_eq!(c.size, size);
}

#[tokio::test]
async fn the_self_check_raises_one_alert_per_finding() {
    use custody_server::workers::{checkpoint_once, self_check_once};
    let env = Env::new(custody_testkit::sqlite_store().await).await;
    let dir = tempfile::tempdir().unwrap();
    let alerts = || async {
        env.app
            .store()
            .read(|tx| async move { tx.audit_from(0, 100_000).await }.boxed())
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.event.action == AuditAction::AuditIntegrity)
            .map(|r| (r.event.outcome, r.event.reason.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let mut last = None;
    checkpoint_once(&env.app, dir.path()).await.unwrap();
    assert_eq!(self_check_once(&env.app, dir.path(), &mut last).await.unwrap(), None);
    assert!(alerts().await.is_empty(), "an intact log raises nothing");

    // A shipped checkpoint the server did not sign (or a damaged one) is a finding.
    std::fs::write(dir.path().join(format!("{:020}.checkpoint", u64::MAX)), "not a note\n")
        .unwrap();
    let finding = self_check_once(&env.app, dir.path(), &mut last).await.unwrap().expect("found");
    assert!(finding.contains("shipped checkpoint"), "{finding}");
    assert_eq!(alerts().await, vec![(Outcome::Failure, finding.clone())]);
    let raised = env.app.alerts(&custody_app::Caller::Operator, &env.site, true).await.unwrap();
    let kinds: Vec<_> = raised.iter().map(|a| (a.kind, a.severity, a.bank.clone())).collect();
    assert_eq!(
        kinds,
        [(AlertKind::AuditIntegrity, custody_core::alert::Severity::Critical, None)],
        "an alert at every site"
    );
    // Found again at the next check: not raised again.
    self_check_once(&env.app, dir.path(), &mut last).await.unwrap();
    assert_eq!(alerts().await.len(), 1, "one alert per finding");
    let raised = env.app.alerts(&custody_app::Caller::Operator, &env.site, true).await.unwrap();
    assert_eq!(raised[0].readings, 1);
}

/// A webhook receiver on `listener` that records each body, answering `status`.
fn webhook_receiver(
    listener: tokio::net::TcpListener,
    status: StatusCode,
) -> Arc<std::sync::Mutex<Vec<serde_json::Value>>> {
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = got.clone();
    let app = axum::Router::new().route(
        "/hooks/checkpoints",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(body);
                status
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    got
}

async fn loopback() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[tokio::test]
async fn checkpoints_are_shipped_to_syslog_and_a_webhook_and_retried_until_taken() {
    use custody_server::ship::{Sink, note_of_syslog_message, ship_latest};
    use tokio::io::AsyncReadExt as _;
    let env = Env::new(custody_testkit::sqlite_store().await).await;
    let dir = tempfile::tempdir().unwrap();
    let verifier =
        custody_audit::checkpoint::NoteVerifier::parse(&env.app.checkpoint_verifier_key()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (listener, hook) = loopback().await;
    let bodies = webhook_receiver(listener, StatusCode::NO_CONTENT);
    // A webhook that is down at first: its port is taken and released again.
    let (down, down_addr) = loopback().await;
    drop(down);
    let sinks = vec![
        Sink::syslog(&format!("tcp://{}", tcp.local_addr().unwrap())).unwrap(),
        Sink::syslog(&format!("udp://{}", udp.local_addr().unwrap())).unwrap(),
        Sink::webhook(&format!("http://{hook}/hooks/checkpoints")).unwrap(),
        Sink::webhook(&format!("http://{down_addr}/hooks/checkpoints")).unwrap(),
    ];
    let mut shipped = vec![0; sinks.len()];

    let size =
        custody_server::workers::checkpoint_once(&env.app, dir.path()).await.unwrap().unwrap();
    ship_latest(&env.app, &sinks, &mut shipped).await.unwrap();
    assert_eq!(shipped, vec![size, size, size, 0], "the sink that is down is behind");

    // Syslog over TCP: one octet-counted RFC 5424 message whose note verifies.
    let (mut conn, _) = tcp.accept().await.unwrap();
    let mut framed = String::new();
    conn.read_to_string(&mut framed).await.unwrap();
    let (len, message) = framed.split_once(' ').unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), message.len());
    assert!(message.starts_with("<110>1 "), "facility log audit, severity info: {message}");
    assert!(message.contains(" custody - checkpoint - size="), "{message}");
    let note = note_of_syslog_message(message).unwrap();
    assert_eq!(verifier.open_checkpoint(&note, verifier.name()).unwrap().size, size);
    // Syslog over UDP: the same message in one datagram.
    let mut datagram = vec![0; 4096];
    let n = udp.recv(&mut datagram).await.unwrap();
    let message = std::str::from_utf8(&datagram[..n]).unwrap();
    assert_eq!(note_of_syslog_message(message).unwrap(), note);
    // The webhook: the note as JSON.
    let body = bodies.lock().unwrap()[0].clone();
    assert_eq!((body["size"].as_u64(), body["note"].as_str()), (Some(size), Some(note.as_str())));

    // Nothing new: nothing is sent again, but the sink that was down is retried; once it is up
    // it gets the newest checkpoint even though the log did not grow.
    ship_latest(&env.app, &sinks, &mut shipped).await.unwrap();
    assert_eq!(shipped[3], 0);
    let late =
        webhook_receiver(tokio::net::TcpListener::bind(down_addr).await.unwrap(), StatusCode::OK);
    ship_latest(&env.app, &sinks, &mut shipped).await.unwrap();
    assert_eq!(shipped, vec![size; 4]);
    assert_eq!(late.lock().unwrap()[0]["size"].as_u64(), Some(size));
    assert_eq!(bodies.lock().unwrap().len(), 1, "the others were not sent it twice");

    // A receiver that refuses (not 2xx) has not taken it.
    let (listener, refusing) = loopback().await;
    webhook_receiver(listener, StatusCode::FORBIDDEN);
    let refusing = [Sink::webhook(&format!("http://{refusing}/hooks/checkpoints")).unwrap()];
    let mut refused = vec![0];
    ship_latest(&env.app, &refusing, &mut refused).await.unwrap();
    assert_eq!(refused, vec![0]);
}

#[test]
fn checkpoint_sinks_are_checked_when_configured() {
    use custody_server::ship::Sink;
    assert!(Sink::syslog("tcp://logs.example.org:6514").is_ok());
    assert!(Sink::syslog("udp://[::1]:514").is_ok());
    for bad in ["logs.example.org:514", "tls://logs:6514", "tcp://logs", "tcp://:514"] {
        assert!(Sink::syslog(bad).is_err(), "{bad}");
    }
    assert!(Sink::webhook("https://siem.example.org/custody").is_ok());
    for bad in ["ftp://siem.example.org/", "siem.example.org", "https://"] {
        assert!(Sink::webhook(bad).is_err(), "{bad}");
    }
    let hook = Sink::webhook("https://siem.example.org/in?token=s3cret").unwrap();
    assert_eq!(hook.label(), "https://siem.example.org", "no token in logs");
}
