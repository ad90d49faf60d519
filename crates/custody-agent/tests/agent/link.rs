//! The agent against a real server: enrolment over HTTPS, the device link over mutual TLS, the
//! kiosk, the doors, and the commands that open them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_agent::core::Screen;
use custody_agent::hardware::cable::NetworkCable;
use custody_core::alert::AlertKind;
use custody_core::audit::AuditAction;
use custody_core::compartment::DoorState;
use custody_core::parcel::ParcelState;
use custody_proto::device::{CourierAction, KioskParcel, ServerMessage};
use custody_server::outbox::{Transport, deliver_due};
use custody_testkit::{TestServer, TestStore, backends, eventually};
use serde_json::{Value, json};

async fn door_is(server: &TestServer, number: u16, door: DoorState) -> bool {
    let bank = server.env.bank.clone();
    let rows = server.env.app.bank_overview(&bank).await.unwrap();
    rows.iter().any(|c| c.number.get() == number && c.door == door)
}

/// Reads the pickup code from the e-mail the file outbox wrote.
fn code_from_outbox(dir: &std::path::Path) -> String {
    let mut codes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if let Some(line) = text.lines().find(|l| l.starts_with("Your pickup code: ")) {
            codes.push(line.trim_start_matches("Your pickup code: ").trim().to_owned());
        }
    }
    assert_eq!(codes.len(), 1, "one message");
    codes.remove(0)
}

backends!(deposit_and_pickup_through_the_device_link, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let mut agent = server.agent().await;
    let (handle, bank) = (&mut agent.handle, agent.bank.clone());
    let client = server.client();
    let key = server.env.carrier_token.to_string();

    let parcel: Value = client
        .post(server.url("/api/v1/parcels"))
        .bearer_auth(&key)
        .json(&json!({"site": server.env.site.to_string(), "recipient_email": "ann@harbour.example", "tracking_ref": "1Z42", "size": "medium"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = parcel["id"].as_str().unwrap().to_owned();
    let deposit: Value = client
        .post(server.url(&format!("/api/v1/parcels/{id}/deposit")))
        .bearer_auth(&key)
        .json(&json!({"bank": server.env.bank.to_string()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deposit["command_delivered"], true, "{deposit}");
    let n = u16::try_from(deposit["compartment"]["number"].as_u64().unwrap()).unwrap();
    assert_eq!(n, 3, "smallest free compartment that fits a medium parcel");
    eventually("the agent releases the latch", || async { bank.is_unlatched(n) }).await;

    // The courier opens the door, puts the parcel in and closes it.
    bank.open_door(n).unwrap();
    bank.close_door(n).unwrap();
    eventually("the server hears the door close", || door_is(&server, n, DoorState::Closed)).await;
    let confirmed = client
        .post(server.url(&format!("/api/v1/parcels/{id}/deposit/confirm")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    // To its carrier the parcel reads `deposited`: whether a recipient was told is not theirs.
    assert_eq!(confirmed.json::<Value>().await.unwrap()["state"], "deposited");

    // The outbox delivers the message; the recipient reads the code.
    let mail = tempfile::tempdir().unwrap();
    assert_eq!(
        deliver_due(&server.env.app, &Transport::File(mail.path().to_owned())).await.unwrap(),
        1
    );
    let code = code_from_outbox(mail.path());

    // At the kiosk: a wrong code, then the right one.
    assert_eq!(handle.try_code("9999 9999").await, Some(Screen::NotAccepted));
    assert_eq!(handle.try_code(&code).await, Some(Screen::Open(n)));
    eventually("the latch opens for the recipient", || async { bank.is_unlatched(n) }).await;
    bank.open_door(n).unwrap();
    bank.close_door(n).unwrap();
    assert_eq!(bank.unlocks(n), 2, "one unlock for the deposit, one for the pickup");
    // Once the door is shut, the code re-opens the emptied compartment once (a bag left
    // behind), and then never again.
    eventually("the server hears the door shut", || door_is(&server, n, DoorState::Closed)).await;
    assert_eq!(handle.try_code(&code).await, Some(Screen::Open(n)), "the grace re-open");
    eventually("the latch opens again", || async { bank.unlocks(n) == 3 }).await;
    bank.open_door(n).unwrap();
    bank.close_door(n).unwrap();
    eventually("the server hears the door shut", || door_is(&server, n, DoorState::Closed)).await;
    assert_eq!(handle.try_code(&code).await, Some(Screen::NotAccepted), "used up");

    let history: Value = client
        .get(server.url(&format!("/api/v1/parcels/{id}/history")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["parcel"]["state"], "picked_up");
    let actions: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"parcel.pick_up"), "{actions:?}");
    let results = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("unlocked")))
        .count();
    assert!(results <= 2);
});

backends!(
    of_ten_people_typing_one_code_at_once_only_the_one_it_opened_for_is_told,
    |t: TestStore| async move {
        // Ten kiosk requests with the same code at once: the server opens once, and only the
        // request it opened for hears "open"; the other nine hear what they got, "not accepted".
        let server = TestServer::start(t).await;
        let agent = server.agent().await;
        let (parcel, code) = server.env.delivered("ann@harbour.example").await;
        let p = server.env.app.parcel(&custody_app::Caller::Operator, &parcel).await.unwrap();
        let n = server.env.compartments.iter().find(|c| Some(&c.id) == p.compartment.as_ref());
        let n = n.unwrap().number.get();
        let answers =
            futures_util::future::join_all((0..10).map(|_| agent.handle.try_code(&code))).await;
        let opened = answers.iter().filter(|a| **a == Some(Screen::Open(n))).count();
        let refused = answers.iter().filter(|a| **a == Some(Screen::NotAccepted)).count();
        assert_eq!((opened, refused), (1, 9), "{answers:?}");
        eventually("the latch opens once", || async { agent.bank.unlocks(n) == 1 }).await;
    }
);

backends!(replayed_and_foreign_commands_are_refused_by_the_agent, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let agent = server.agent().await;
    let bank = &agent.bank;
    let admin = server.env.stepped_up(&server.env.admin);
    let slot = server.env.compartments[4].clone();
    let opening = server
        .env
        .app
        .remote_open(&admin, &slot.id, "inspect the lock after a complaint")
        .await
        .unwrap()
        .opened()
        .unwrap();
    let hub = &server.running.state.hub;
    assert!(hub.send(&server.env.bank, ServerMessage::Open(opening.command.clone())));
    eventually("first delivery unlocks", || async { bank.unlocks(5) == 1 }).await;
    // The same signed command again: a replay.
    assert!(hub.send(&server.env.bank, ServerMessage::Open(opening.command.clone())));
    // A forged command: signature over another compartment.
    let mut forged = opening.command.clone();
    forged.command.compartment = 6;
    assert!(hub.send(&server.env.bank, ServerMessage::Open(forged)));
    let site = server.env.site.clone();
    eventually("the agent's refusals reach the audit log", || {
        let (app, site) = (server.env.app.clone(), site.clone());
        async move {
            let log = app
                .store()
                .read(move |tx| Box::pin(async move { tx.audit_for_site(&site, 50).await }))
                .await
                .unwrap();
            let reasons: Vec<String> = log
                .iter()
                .filter(|r| r.event.action == AuditAction::OpenCommand)
                .filter_map(|r| r.event.reason.clone())
                .collect();
            reasons.iter().any(|r| r.starts_with("agent_refused:replay"))
                && reasons.iter().any(|r| r.starts_with("agent_refused:bad_signature"))
        }
    })
    .await;
    assert_eq!(
        (bank.unlocks(5), bank.unlocks(6)),
        (1, 0),
        "neither the replay nor the forgery opened anything"
    );
});

backends!(a_revoked_device_cannot_connect, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let agent = server.agent().await;
    assert!(server.running.state.hub.is_online(&server.env.bank));
    let device = custody_core::DeviceId::parse(&agent.identity.device).unwrap();
    let now = server.env.app.now();
    server
        .env
        .app
        .store()
        .write(move |tx| Box::pin(async move { tx.revoke_device(&device, now).await }))
        .await
        .unwrap();
    // A fresh connection with the revoked identity is refused at the upgrade.
    let gateway = format!("localhost:{}", server.running.gateway.port());
    let setup =
        custody_agent::enrol::load(agent.dir(), Some(&gateway), server.env.app.clock()).unwrap();
    let err = custody_agent::link::connect(&setup.link).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let second = server.agent().await;
    assert!(second.handle.is_ready(), "a newly enrolled device connects");
});

backends!(a_courier_works_the_kiosk_with_todays_code, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let mut agent = server.agent().await;
    let (handle, bank) = (&mut agent.handle, agent.bank.clone());
    let env = &server.env;
    let parcel = env
        .announce("ann@harbour.example", "1Z-KIOSK", custody_core::compartment::SizeClass::Small)
        .await;

    // Carl signs in to the app and reads today's code.
    let code = server.courier_code().await;

    // At the kiosk: his work, then the deposit, the door, and "done".
    assert_eq!(
        handle.courier("0000 0000 0000", CourierAction::Visit).await,
        Some(Screen::NotAccepted)
    );
    let work = handle.courier(&code, CourierAction::Visit).await;
    let expected = KioskParcel {
        id: parcel.id.to_string(),
        tracking_ref: "1Z-KIOSK".into(),
        size: "small".into(),
    };
    let Some(Screen::CourierWork { deposits, returns, free }) = work else { panic!("{work:?}") };
    assert_eq!((deposits, returns), (vec![expected], Vec::new()));
    assert!(free.iter().any(|f| f.size == "small" && f.count > 0), "{free:?}");
    // It does not fit a small one: Carl asks for a medium compartment.
    let deposit =
        CourierAction::Deposit { parcel: parcel.id.to_string(), size: Some("medium".into()) };
    let Some(Screen::Open(n)) = handle.courier(&code, deposit).await else { panic!("opens") };
    assert!((3..=4).contains(&n), "a medium compartment, not small 1 or 2: {n}");
    eventually("the latch opens for the courier", || async { bank.is_unlatched(n) }).await;
    bank.open_door(n).unwrap();
    bank.close_door(n).unwrap();
    eventually("the server hears the door close", || door_is(&server, n, DoorState::Closed)).await;
    let confirm = CourierAction::Confirm { parcel: parcel.id.to_string() };
    assert_eq!(handle.courier(&code, confirm).await, Some(Screen::Thanks));
    // The parcel is Ann's now: Carl's code does not open it.
    let take = CourierAction::Return { parcel: parcel.id.to_string() };
    assert_eq!(handle.courier(&code, take).await, Some(Screen::NotAccepted));
    assert_eq!(bank.unlocks(n), 1, "only the deposit opened it");
});

backends!(
    a_resident_scans_the_qr_code_from_her_email_then_from_the_app,
    |t: TestStore| async move {
        let server = TestServer::start(t).await;
        let agent = server.agent().await;
        let (handle, bank) = (&agent.handle, agent.bank.clone());
        let env = &server.env;

        // The e-mail as her phone shows it: the QR code is an image, read from its pixels.
        let (parcel, _) = env.delivered("ann@harbour.example").await;
        let queued = env.qr_sent_for(&parcel).await;
        let mail = tempfile::tempdir().unwrap();
        deliver_due(&env.app, &Transport::File(mail.path().to_owned())).await.unwrap();
        let eml = std::fs::read_dir(mail.path()).unwrap().next().unwrap().unwrap().path();
        let qr = custody_testkit::mail::qr_in_email(&std::fs::read_to_string(eml).unwrap());
        assert_eq!(qr, queued);

        let Some(Screen::Open(n)) = handle.scan(&qr).await else { panic!("the QR code opens") };
        eventually("the latch opens for the QR code", || async { bank.is_unlatched(n) }).await;
        bank.open_door(n).unwrap();
        bank.close_door(n).unwrap();
        eventually("the server hears the door shut", || door_is(&server, n, DoorState::Closed))
            .await;
        // Scanned again (a photo of her screen, say): refused at the kiosk itself.
        assert_eq!(handle.scan(&qr).await, Some(Screen::NotAccepted));
        assert_eq!(bank.unlocks(n), 1, "the QR code opened it once");

        // The next parcel: Ann opens the app, which shows a fresh token, and holds it up.
        let (second, _) = env.delivered("ann@harbour.example").await;
        let ann = server.sign_in(&env.ann).await;
        let shown = ann
            .client
            .get(server.url(&format!("/api/v1/parcels/{second}/pickup-qr")))
            .send()
            .await
            .unwrap();
        assert_eq!(shown.status(), 200);
        assert_eq!(shown.headers()["cache-control"], "no-store");
        let shown: Value = shown.json().await.unwrap();
        let token = shown["token"].as_str().unwrap();
        let Some(Screen::Open(m)) = handle.scan(token).await else {
            panic!("the app's code opens")
        };
        let opened = if m == n { 2 } else { 1 };
        eventually("the latch opens for the app's code", || async { bank.unlocks(m) == opened })
            .await;

        // Bob's app has nothing to show for Ann's parcel.
        let (third, _) = env.delivered("ann@harbour.example").await;
        let bob = server.sign_in(&env.bob).await;
        let status = bob
            .client
            .get(server.url(&format!("/api/v1/parcels/{third}/pickup-qr")))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404);
    }
);

backends!(a_resident_opens_from_the_app_with_the_code_on_the_kiosk, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let agent = server.agent().await;
    let (handle, bank) = (&agent.handle, agent.bank.clone());
    let env = &server.env;
    let (parcel, _) = env.delivered("ann@harbour.example").await;
    let ann = server.sign_in(&env.ann).await;
    let open = |code: String| {
        let request = ann
            .client
            .post(server.url(&format!("/api/v1/parcels/{parcel}/open")))
            .header("x-csrf-token", ann.csrf.as_str())
            .json(&json!({ "presence_code": code }));
        async move { request.send().await.unwrap() }
    };

    // The kiosk shows the code its agent computes from the key in the welcome.
    let shown = handle.presence_code().expect("a welcomed kiosk shows a presence code");
    assert_eq!(shown.as_str(), env.presence_code(&env.bank));
    let wrong = format!("{:06}", (shown.parse::<u32>().unwrap() + 1) % 1_000_000);
    let refused = open(wrong).await;
    assert_eq!(refused.status(), 409);
    let opened: Value = open(shown.to_string()).await.json().await.unwrap();
    assert_eq!(opened["command_delivered"], true, "{opened}");
    let n = u16::try_from(opened["compartment"].as_u64().unwrap()).unwrap();
    eventually("the latch opens for the app", || async { bank.is_unlatched(n) }).await;
    assert_eq!(bank.unlocks(n), 1);
});

// A reader on OSDP: libosdp's PD (the simulated reader) and the agent's CP talk in-process
// over a memory line, with Secure Channel; a badge registered through the API reaches the
// kiosk's list, opens its holder's compartment, and stops at the kiosk once revoked.
backends!(a_badge_at_an_osdp_reader_opens_through_the_agent, |t: TestStore| async move {
    use custody_agent::osdp::{MemoryBus, OsdpConfig, OsdpReader, SimulatedReader};
    use custody_core::badge::{BadgeNumber, ReaderKind};

    let server = TestServer::start(t).await;
    let agent = server.agent().await;
    let (handle, bank) = (&agent.handle, agent.bank.clone());
    let env = &server.env;
    let key = [0x5Au8; 16];
    let bus = MemoryBus::default();
    let reader = SimulatedReader::start(Box::new(bus.reader()), 1, Some(key)).unwrap();
    let config = OsdpConfig {
        address: 1,
        baud_rate: 9600,
        scbk: zeroize::Zeroizing::new(key),
        commissioning_until: None,
    };
    let panel =
        OsdpReader::start(Box::new(bus.panel()), &config, env.app.clock(), handle.badge_reader())
            .unwrap();
    eventually("the reader comes up over Secure Channel", || async {
        panel.status().secure && reader.is_secure()
    })
    .await;

    // The admin registers Ann's badge; the site's kiosks are sent the list at once.
    let admin = server.sign_in(&env.admin).await;
    let registered = admin
        .client
        .post(server.url(&format!("/api/v1/sites/{}/badges", env.site)))
        .header("x-csrf-token", admin.csrf.as_str())
        .json(&json!({"email": "ann@harbour.example", "badge": "04A2B3C4D5E6F7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let badge: Value = registered.json().await.unwrap();
    assert_eq!(badge["hint"], "E6F7");
    assert!(badge.get("number").is_none() && badge.get("verifier").is_none());

    let (parcel, _) = env.delivered("ann@harbour.example").await;
    let row = env.app.parcel(&custody_app::Caller::Operator, &parcel).await.unwrap();
    let n = env.compartments.iter().find(|c| Some(&c.id) == row.compartment.as_ref()).unwrap();
    let n = n.number.get();
    let card = BadgeNumber::parse("04A2B3C4D5E6F7").unwrap();
    reader.present(&card);
    eventually("Ann's badge, read over OSDP, opens her compartment", || async {
        bank.is_unlatched(n)
    })
    .await;
    assert_eq!(bank.unlocks(n), 1);
    let log = env.site_log(30).await;
    assert!(
        log.iter().any(|r| r.event.reason.as_deref() == Some("badge_accepted:osdp_secure")),
        "the read came over Secure Channel"
    );

    // Revoked through the API: the server sends the list again, and the kiosk refuses it.
    let id = badge["id"].as_str().unwrap();
    let revoked = admin
        .client
        .post(server.url(&format!("/api/v1/badges/{id}/revoke")))
        .header("x-csrf-token", admin.csrf.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let _ = env.delivered("ann@harbour.example").await;
    assert_eq!(
        handle.badge("04A2B3C4D5E6F7", ReaderKind::OsdpSecure).await,
        Some(Screen::NotAccepted)
    );
});

// A factory-fresh reader, in install mode, is given its key during the commissioning window,
// and its reads then come over Secure Channel.
backends!(a_new_reader_is_given_its_key_while_commissioning, |t: TestStore| async move {
    use custody_agent::osdp::{MemoryBus, OsdpConfig, OsdpReader, SimulatedReader};

    let server = TestServer::start(t).await;
    let agent = server.agent().await;
    let env = &server.env;
    let bus = MemoryBus::default();
    let reader = SimulatedReader::start(Box::new(bus.reader()), 0, None).unwrap();
    let config = OsdpConfig {
        address: 0,
        baud_rate: 9600,
        scbk: zeroize::Zeroizing::new([0x3Cu8; 16]),
        commissioning_until: Some(env.app.now().plus(custody_core::time::hours(1))),
    };
    let panel = OsdpReader::start(
        Box::new(bus.panel()),
        &config,
        env.app.clock(),
        agent.handle.badge_reader(),
    )
    .unwrap();
    eventually("the reader takes the key and comes up secure", || async {
        panel.status().secure && reader.is_secure()
    })
    .await;
});

/// Engages the lockdown of the seeded bank as its admin; its agent is told at once.
async fn lock_down(server: &TestServer) {
    let admin = server.env.stepped_up(&server.env.admin);
    server
        .env
        .app
        .engage_lockdown(&admin, &server.env.bank, "pry marks on the door")
        .await
        .unwrap();
}

backends!(a_lockdown_holds_at_the_agent_across_a_power_cut, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let mut agent = server.agent().await;
    let admin = server.env.stepped_up(&server.env.admin);
    let slot = server.env.compartments[1].clone();
    // A command signed before the lockdown, held back by someone on the network.
    let held = server
        .env
        .app
        .remote_open(&admin, &slot.id, "check the hinge")
        .await
        .unwrap()
        .opened()
        .unwrap();
    lock_down(&server).await;
    eventually("the agent engages its interlock", || async { agent.handle.is_interlocked() }).await;

    server.restart_agent(&mut agent, None).await;
    assert!(agent.handle.is_interlocked(), "locked down from its journal, before any link");
    agent.handle.wait_ready().await;
    assert!(server.running.state.hub.send(&server.env.bank, ServerMessage::Open(held.command)));
    eventually("the refusal reaches the audit log", || {
        audited(&server, AuditAction::OpenCommand, "agent_refused:locked_down")
    })
    .await;
    assert_eq!(agent.bank.unlocks(2), 0);
});

backends!(a_command_begun_before_a_power_cut_is_never_executed_again, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let mut agent = server.agent().await;
    let admin = server.env.stepped_up(&server.env.admin);
    let slot = server.env.compartments[2].clone();
    let opening = server
        .env
        .app
        .remote_open(&admin, &slot.id, "check the hinge")
        .await
        .unwrap()
        .opened()
        .unwrap();
    let hub = &server.running.state.hub;
    assert!(hub.send(&server.env.bank, ServerMessage::Open(opening.command.clone())));
    eventually("the latch releases", || async { agent.bank.unlocks(3) == 1 }).await;

    // The power goes; the agent comes back and the same command arrives again.
    server.restart_agent(&mut agent, None).await;
    agent.handle.wait_ready().await;
    assert!(hub.send(&server.env.bank, ServerMessage::Open(opening.command.clone())));
    eventually("the replay is refused", || {
        audited(&server, AuditAction::OpenCommand, "agent_refused:replay")
    })
    .await;
    assert_eq!(agent.bank.unlocks(3), 1, "not executed twice");
});

backends!(a_journal_that_cannot_be_written_stops_every_open, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let mut agent = server.agent().await;
    let full = std::path::Path::new("/dev/full");
    let file = tokio::fs::OpenOptions::new().write(true).open(full).await.unwrap();
    server
        .restart_agent(&mut agent, Some(custody_agent::journal::Journal::on_file(full, file)))
        .await;
    agent.handle.wait_ready().await;
    let admin = server.env.stepped_up(&server.env.admin);
    let slot = server.env.compartments[0].clone();
    let opening = server
        .env
        .app
        .remote_open(&admin, &slot.id, "check the hinge")
        .await
        .unwrap()
        .opened()
        .unwrap();
    assert!(server.running.state.hub.send(&server.env.bank, ServerMessage::Open(opening.command)));
    eventually("the interlock engages", || async { agent.handle.is_interlocked() }).await;
    eventually("the failure reaches the audit log", || {
        audited(&server, AuditAction::OpenCommand, "agent_failed:interlocked")
    })
    .await;
    assert_eq!(agent.bank.unlocks(1), 0, "nothing opens that the journal could not record");
});

/// Whether the audit log of the seeded site has an entry of `action` whose reason starts with
/// `reason`.
async fn audited(server: &TestServer, action: AuditAction, reason: &str) -> bool {
    let (app, site) = (server.env.app.clone(), server.env.site.clone());
    let log = app
        .store()
        .read(move |tx| Box::pin(async move { tx.audit_for_site(&site, 100).await }))
        .await
        .unwrap();
    log.iter().any(|r| {
        r.event.action == action && r.event.reason.as_deref().is_some_and(|r| r.starts_with(reason))
    })
}

/// The agent's setup as `custody agent run` would load it from `dir`, against this server.
fn setup_of(server: &TestServer, dir: &std::path::Path) -> custody_agent::enrol::AgentSetup {
    let gateway = format!("localhost:{}", server.running.gateway.port());
    custody_agent::enrol::load(dir, Some(&gateway), server.env.app.clock()).unwrap()
}

backends!(revoking_a_device_ends_its_link_and_refuses_its_handshake, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let agent = server.agent().await;
    let device = agent.identity.device.clone();
    let admin = server.sign_in(&server.env.admin).await;
    let revoked = admin
        .client
        .post(server.url(&format!("/api/v1/devices/{device}/revoke")))
        .header("x-csrf-token", &admin.csrf)
        .json(&json!({"reason": "the controller was stolen from the Lobby"}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let view: Value = revoked.json().await.unwrap();
    assert!(view["revoked_at"].is_string(), "{view}");
    eventually("the live link ends", || async { !agent.handle.is_ready() }).await;
    assert!(audited(&server, AuditAction::DeviceRevoke, &device).await);

    let gateway = format!("localhost:{}", server.running.gateway.port());
    let setup =
        custody_agent::enrol::load(agent.dir(), Some(&gateway), server.env.app.clock()).unwrap();
    let err = custody_agent::link::connect(&setup.link).await.unwrap_err();
    assert!(err.to_string().contains("CertificateRevoked"), "refused at the handshake: {err}");
    let listed: Vec<Value> = admin
        .client
        .get(server.url(&format!("/api/v1/banks/{}/devices", server.env.bank)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let this = listed.iter().find(|d| d["id"] == device.as_str()).expect("listed");
    assert_eq!(this["connected"], false, "{listed:?}");
});

backends!(
    a_revoked_certificate_is_refused_at_the_handshake_even_resuming,
    |t: TestStore| async move {
        // The agent keeps one TLS configuration, and with it whatever session it could resume. A
        // resumed session skips the client certificate's check, so the gateway resumes none: the
        // next handshake after a revocation is refused at the handshake itself.
        let server = TestServer::start(t).await;
        let agent = server.agent().await;
        let setup = setup_of(&server, agent.dir());
        agent.handle.stop();
        eventually("the agent's link ends", || async {
            !server.running.state.hub.is_online(&server.env.bank)
        })
        .await;
        // One connection with this configuration, closed again: a session to resume, if offered.
        drop(custody_agent::link::connect(&setup.link).await.unwrap());
        let admin = server.env.stepped_up(&server.env.admin);
        let device = custody_core::DeviceId::parse(&agent.identity.device).unwrap();
        server.env.app.revoke_device(&admin, &device, "the controller was stolen").await.unwrap();
        server.running.state.hub.refresh_revocations(&server.env.app).await;
        let err = custody_agent::link::connect(&setup.link).await.unwrap_err();
        assert!(err.to_string().contains("CertificateRevoked"), "refused at the handshake: {err}");
        // On the record, with its reason and source (DESIGN.md §4 invariant 13).
        eventually("the refused handshake is audited", || async {
            server.env.log().await.iter().any(|r| {
                r.event.action == AuditAction::DeviceRefused
                    && r.event.reason.as_deref() == Some("revoked:from:127.0.0.1")
            })
        })
        .await;
    }
);

backends!(re_enrolment_gives_a_new_identity_and_ends_the_old_one, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let old = server.agent().await;
    let new = server.agent().await;
    assert_ne!(old.identity.device, new.identity.device);
    eventually("the old link ends", || async { !old.handle.is_ready() }).await;
    assert!(new.handle.is_ready());
    let gateway = format!("localhost:{}", server.running.gateway.port());
    let setup =
        custody_agent::enrol::load(old.dir(), Some(&gateway), server.env.app.clock()).unwrap();
    let err = custody_agent::link::connect(&setup.link).await.unwrap_err();
    assert!(err.to_string().contains("CertificateRevoked"), "{err}");
});

backends!(
    one_identity_connected_from_two_places_is_audited_and_raised,
    |t: TestStore| async move {
        let server = TestServer::start(t).await;
        let agent = server.agent().await;
        assert!(!audited(&server, AuditAction::DeviceConflict, "").await);
        // A copy of its key and certificate, used from another address while it is connected.
        let gateway = format!("localhost:{}", server.running.gateway.port());
        let mut setup =
            custody_agent::enrol::load(agent.dir(), Some(&gateway), server.env.app.clock())
                .unwrap();
        setup.link.local_address = Some("127.0.0.2".parse().unwrap());
        let _copy = custody_agent::link::connect(&setup.link).await.unwrap();
        eventually("the conflict is audited", || {
            audited(
                &server,
                AuditAction::DeviceConflict,
                "connected_from_two_places:127.0.0.1:127.0.0.2",
            )
        })
        .await;
        eventually("and raised as an alert", || async {
            live_alerts(&server).await == [(AlertKind::IdentityInTwoPlaces, None, 1)]
        })
        .await;
    }
);

backends!(
    one_identity_twice_from_one_address_is_refused_and_told_nothing,
    |t: TestStore| async move {
        // NAT hides many hosts behind one address: a second link with a live identity is a
        // conflict from anywhere. The established link stays in charge; the newcomer gets no
        // welcome, presence key, offline list or badges, only a goodbye.
        use futures_util::{SinkExt as _, StreamExt as _};
        let server = TestServer::start(t).await;
        let agent = server.agent().await;
        let setup = setup_of(&server, agent.dir());
        let mut copy = custody_agent::link::connect(&setup.link).await.unwrap();
        let hello = json!({"type": "hello", "protocol": custody_proto::device::PROTOCOL_VERSION, "agent_version": "copy"});
        let _ = copy
            .send(tokio_tungstenite::tungstenite::Message::Text(hello.to_string().into()))
            .await;
        let mut told = Vec::new();
        while let Some(Ok(frame)) = copy.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
                told.push(serde_json::from_str::<Value>(&text).unwrap()["type"].clone());
            }
        }
        assert_eq!(told, [json!("goodbye")], "the newcomer is told nothing else");
        eventually("the conflict is audited", || {
            audited(
                &server,
                AuditAction::DeviceConflict,
                "connected_from_two_places:127.0.0.1:127.0.0.1",
            )
        })
        .await;
        assert_eq!(live_alerts(&server).await, [(AlertKind::IdentityInTwoPlaces, None, 1)]);
        // The established link is still the bank's: its kiosk still works.
        assert!(agent.handle.is_ready());
        let (_, code) = server.env.delivered("ann@harbour.example").await;
        assert!(matches!(agent.handle.try_code(&code).await, Some(Screen::Open(_))));
    }
);

backends!(a_certificate_is_renewed_for_a_new_key_before_it_expires, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let mut agent = server.agent().await;
    let old_cert = std::fs::read_to_string(agent.dir().join("device.pem")).unwrap();
    let gateway = format!("localhost:{}", server.running.gateway.port());
    let old =
        custody_agent::enrol::load(agent.dir(), Some(&gateway), server.env.app.clock()).unwrap();

    // Twenty days into thirty: the next message from the server finds the renewal due.
    server.env.clock.advance(custody_core::time::days(20));
    server.running.state.hub.send(&server.env.bank, ServerMessage::Lockdown { on: false });
    eventually("the certificate is renewed", || async {
        std::fs::read_to_string(agent.dir().join("device.pem")).unwrap() != old_cert
    })
    .await;
    assert!(audited(&server, AuditAction::DeviceRenew, "").await);
    let renewed =
        custody_agent::enrol::load(agent.dir(), Some(&gateway), server.env.app.clock()).unwrap();
    assert_eq!(renewed.identity.device, old.identity.device, "the same identity");
    assert_ne!(renewed.certificate.spki_sha256, old.certificate.spki_sha256, "a new key");
    assert!(renewed.certificate.not_after > old.certificate.not_after);

    // The old certificate and key are refused from now on; the new ones connect.
    let err = custody_agent::link::connect(&old.link).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    server.restart_agent(&mut agent, None).await;
    agent.handle.wait_ready().await;
});

backends!(the_agent_reports_its_health, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let mut agent = server.agent().await;
    let admin = server.sign_in(&server.env.admin).await;
    let devices = server.url(&format!("/api/v1/banks/{}/devices", server.env.bank));
    let device = agent.identity.device.clone();
    let health = || async {
        let listed: Vec<Value> =
            admin.client.get(&devices).send().await.unwrap().json().await.unwrap();
        let this = listed.iter().find(|d| d["id"] == device.as_str()).expect("listed");
        this["health"].clone()
    };
    eventually("a health report arrives", || async { health().await.is_object() }).await;
    let report = health().await;
    assert_eq!(
        (report["reconnects"].as_u64(), report["interlocked"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(report["boards"], json!([]), "simulated doors have no boards");

    // Locked down and restarted: its first report says the interlock is engaged.
    lock_down(&server).await;
    eventually("the interlock engages", || async { agent.handle.is_interlocked() }).await;
    server.restart_agent(&mut agent, None).await;
    eventually("the restarted agent reports", || async {
        health().await["interlocked"] == json!(true)
    })
    .await;
});

/// How the kiosk answers `code` now.
async fn typed(agent: &custody_testkit::server::TestAgent, code: &str) -> Option<Screen> {
    agent.handle.try_code(code).await
}

/// An agent that reaches the server through `cable` and takes three seconds of silence (three
/// pings unanswered) for a dead link.
async fn agent_behind(
    server: &TestServer,
    cable: &NetworkCable,
) -> custody_testkit::server::TestAgent {
    let via = format!("localhost:{}", cable.address().port());
    server
        .agent_with(|setup| {
            setup.link.gateway = via;
            setup.link.silent_after = std::time::Duration::from_secs(3);
        })
        .await
}

/// Waits, a minute at most, until the agent is back online: it retries with a growing pause
/// after the link is lost.
async fn reconnected(agent: &custody_testkit::server::TestAgent) {
    tokio::time::timeout(std::time::Duration::from_mins(1), agent.handle.wait_ready())
        .await
        .expect("the agent reconnects");
}

async fn state_of(server: &TestServer, parcel: &custody_core::ParcelId) -> ParcelState {
    server.env.app.parcel(&custody_app::Caller::Operator, parcel).await.unwrap().state
}

/// How many entries of `action` with exactly `reason` the site's log holds.
async fn count(server: &TestServer, action: AuditAction, reason: &str) -> usize {
    server
        .env
        .site_log(500)
        .await
        .iter()
        .filter(|r| r.event.action == action && r.event.reason.as_deref() == Some(reason))
        .count()
}

// Revoked while its cable was out, the agent never heard a goodbye: it learns at its next
// handshake, which the server refuses, and wipes its offline list, presence key and badges at
// once. The kiosk says the locker is out of service and nothing opens, online or off.
backends!(an_agent_revoked_while_offline_keeps_nothing_once_refused, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let cable = NetworkCable::lay(server.gateway()).await.unwrap();
    let agent = agent_behind(&server, &cable).await;
    let (parcel, code) = server.env.delivered("ann@harbour.example").await;
    eventually("the agent holds the code", || async { agent.handle.offline_codes() == Some(1) })
        .await;
    assert!(agent.dir().join("offline.json").exists());
    cable.pull();
    eventually("the agent notices", || async { !agent.handle.is_ready() }).await;
    let admin = server.env.stepped_up(&server.env.admin);
    let device = custody_core::DeviceId::parse(&agent.identity.device).unwrap();
    server.env.app.revoke_device(&admin, &device, "the controller was stolen").await.unwrap();
    server.running.state.hub.refresh_revocations(&server.env.app).await;
    cable.plug();
    eventually("the refused agent is out of service", || async {
        agent.handle.is_out_of_service()
    })
    .await;
    assert_eq!(agent.handle.offline_codes(), None, "the offline list is gone");
    assert!(agent.handle.presence_code().is_none(), "and the presence key");
    assert!(!agent.dir().join("offline.json").exists(), "and the saved list");
    assert_eq!(agent.handle.try_code(&code).await, Some(Screen::OutOfService));
    assert_eq!(state_of(&server, &parcel).await, ParcelState::Notified, "nothing opened");
});

// The network goes in the middle of the bank's day: first silently (a cable cut beyond the
// building, which closes nothing), then for good. The kiosk keeps serving pickups from its
// list of verifiers; once the link is back, each offline use is taken into the record once,
// a code revoked meanwhile is audited as a conflict, and the doors' readings catch up.
backends!(the_bank_serves_pickups_offline_and_reconciles_on_reconnect, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let cable = NetworkCable::lay(server.gateway()).await.unwrap();
    let agent = agent_behind(&server, &cable).await;
    let (env, bank) = (&server.env, agent.bank.clone());
    let (first, first_code) = env.delivered("ann@harbour.example").await;
    let (second, second_code) = env.delivered("bob@harbour.example").await;
    let (third, old_code) = env.delivered("ann@harbour.example").await;
    eventually("the agent holds the three codes", || async {
        agent.handle.offline_codes() == Some(3)
    })
    .await;

    // Online, as ever.
    let Some(Screen::Open(a)) = typed(&agent, &first_code).await else { panic!("online pickup") };
    eventually("the latch releases", || async { bank.is_unlatched(a) }).await;
    bank.open_door(a).unwrap();
    bank.close_door(a).unwrap();
    eventually("the server hears the door shut", || door_is(&server, a, DoorState::Closed)).await;

    // The network goes silent while Bob types his code: nobody answers, the agent notices,
    // and tells him to try again; it works the second time, from the list.
    cable.silence();
    assert_eq!(typed(&agent, &second_code).await, Some(Screen::Offline));
    assert!(!agent.handle.is_ready());
    let Some(Screen::Open(b)) = typed(&agent, &second_code).await else { panic!("offline pickup") };
    eventually("the latch releases offline", || async { bank.is_unlatched(b) }).await;
    bank.open_door(b).unwrap();
    bank.close_door(b).unwrap();

    // Meanwhile Ann asks for her third parcel's code again: the server revokes the old one,
    // but the agent cannot hear it, and her old code still opens (it was valid at the last
    // sync, and the sync deadline is a day away).
    server.env.clock.advance(std::time::Duration::from_mins(1));
    env.app.resend_code(&custody_testkit::Env::as_person(&env.ann), &third).await.unwrap();
    let Some(Screen::Open(c)) = typed(&agent, &old_code).await else { panic!("old code offline") };
    eventually("the latch releases offline", || async { bank.is_unlatched(c) }).await;
    bank.open_door(c).unwrap();
    bank.close_door(c).unwrap();

    // What may not open offline: a wrong code, a code used online before the cut, a code used
    // offline already.
    assert_eq!(typed(&agent, "2 11111 11111").await, Some(Screen::NotAccepted));
    assert_eq!(typed(&agent, &first_code).await, Some(Screen::NotAccepted));
    assert_eq!(typed(&agent, &second_code).await, Some(Screen::NotAccepted));

    // The cable is pulled and plugged in again: the agent reconnects and reports.
    cable.pull();
    cable.plug();
    reconnected(&agent).await;
    eventually("the offline pickups are in the record", || async {
        state_of(&server, &second).await == ParcelState::PickedUp
            && state_of(&server, &third).await == ParcelState::PickedUp
    })
    .await;
    eventually("the conflict and the refusals are audited", || async {
        audited(&server, AuditAction::PickupOfflineConflict, "revoked").await
            && count(&server, AuditAction::PickupAttempt, "code_refused_offline").await == 3
    })
    .await;
    eventually("the doors' readings catch up", || async {
        door_is(&server, b, DoorState::Closed).await && door_is(&server, c, DoorState::Closed).await
    })
    .await;
    assert_eq!(state_of(&server, &first).await, ParcelState::PickedUp);
    assert_eq!(count(&server, AuditAction::PickupAttempt, "code_accepted_offline").await, 2);
    assert_eq!((bank.unlocks(a), bank.unlocks(b), bank.unlocks(c)), (1, 1, 1));
    // Acknowledged: a later reconnection reports nothing again.
    cable.pull();
    cable.plug();
    eventually("the agent notices", || async { !agent.handle.is_ready() }).await;
    reconnected(&agent).await;
    assert_eq!(count(&server, AuditAction::PickupAttempt, "code_accepted_offline").await, 2);
});

// The network goes while Carl is on his round: his code still works at the kiosk, from the
// agent's list; he deposits and confirms. Once the link is back the parcel is deposited in the
// record and Ann is told, and her code opens the compartment Carl used.
backends!(
    a_courier_deposits_offline_and_the_recipient_is_told_on_reconnect,
    |t: TestStore| async move {
        let server = TestServer::start(t).await;
        let env = &server.env;
        let parcel = env
            .announce(
                "ann@harbour.example",
                "1Z-OFFLINE",
                custody_core::compartment::SizeClass::Small,
            )
            .await;
        let cable = NetworkCable::lay(server.gateway()).await.unwrap();
        let agent = agent_behind(&server, &cable).await;
        let bank = agent.bank.clone();
        let code = server.courier_code().await;
        eventually("the agent holds the bank's list", || async {
            agent.handle.offline_codes().is_some()
        })
        .await;

        cable.pull();
        eventually("the agent notices", || async { !agent.handle.is_ready() }).await;
        let work = agent.handle.courier(&code, CourierAction::Visit).await;
        let Some(Screen::CourierWork { deposits, returns, .. }) = work else { panic!("{work:?}") };
        assert_eq!(
            deposits.iter().map(|p| p.tracking_ref.as_str()).collect::<Vec<_>>(),
            ["1Z-OFFLINE"]
        );
        assert!(returns.is_empty());
        let deposit = CourierAction::Deposit { parcel: parcel.id.to_string(), size: None };
        let Some(Screen::Open(n)) = agent.handle.courier(&code, deposit).await else {
            panic!("a compartment opens offline")
        };
        eventually("the latch releases offline", || async { bank.is_unlatched(n) }).await;
        bank.open_door(n).unwrap();
        bank.close_door(n).unwrap();
        let confirm = CourierAction::Confirm { parcel: parcel.id.to_string() };
        eventually("the kiosk takes the confirmation once the door is shut", || async {
            agent.handle.courier(&code, confirm.clone()).await == Some(Screen::Thanks)
        })
        .await;
        assert_eq!(
            state_of(&server, &parcel.id).await,
            ParcelState::Expected,
            "not yet in the record"
        );

        cable.plug();
        reconnected(&agent).await;
        eventually("the deposit is in the record and Ann is told", || async {
            state_of(&server, &parcel.id).await == ParcelState::Notified
        })
        .await;
        assert_eq!(count(&server, AuditAction::DepositReserve, "courier_code_offline").await, 1);
        assert_eq!(count(&server, AuditAction::Deposit, "courier_code_offline").await, 1);
        let anns = env.code_sent_for(&parcel.id).await;
        let Some(Screen::Open(m)) = typed(&agent, &anns).await else { panic!("Ann's code opens") };
        assert_eq!(m, n, "where Carl put it");
        eventually("the latch releases for Ann", || async { bank.unlocks(n) == 2 }).await;
    }
);

/// The live alerts of the test site's, by kind and compartment.
async fn live_alerts(server: &TestServer) -> Vec<(AlertKind, Option<u16>, u64)> {
    let env = &server.env;
    let alerts = env.app.alerts(&custody_app::Caller::Operator, &env.site, true).await.unwrap();
    alerts.into_iter().map(|a| (a.kind, a.compartment, a.readings)).collect()
}

// Tamper readings reach the server as alerts: a pry, a door forced with no unlock before it,
// and a drill read while the network is down, reported once it is back.
backends!(tamper_readings_raise_alerts_even_across_an_outage, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let cable = NetworkCable::lay(server.gateway()).await.unwrap();
    let agent = agent_behind(&server, &cable).await;
    let bank = agent.bank.clone();
    agent.handle.sensor(AlertKind::Pry, Some(2)).await;
    // The same pry again at once counts once: one alert, one reading.
    agent.handle.sensor(AlertKind::Pry, Some(2)).await;
    eventually("the pry is an alert", || async {
        live_alerts(&server).await == [(AlertKind::Pry, Some(2), 1)]
    })
    .await;

    // A door forced open, with no unlock before it, is an alert.
    bank.force_door(4).unwrap();
    eventually("the forced door is an alert", || async {
        live_alerts(&server).await.contains(&(AlertKind::DoorForced, Some(4), 1))
    })
    .await;

    cable.pull();
    eventually("the agent notices", || async { !agent.handle.is_ready() }).await;
    agent.handle.sensor(AlertKind::Drill, Some(1)).await;
    cable.plug();
    reconnected(&agent).await;
    eventually("the drill read offline is an alert", || async {
        live_alerts(&server).await.contains(&(AlertKind::Drill, Some(1), 1))
    })
    .await;
    assert_eq!(live_alerts(&server).await.len(), 3);
});

// The site's rule travels to the agent, which applies it to its own pry with the cable pulled:
// the bank locks itself down at once, stays so when the server (not yet knowing) says
// otherwise, and the server, once it has the reading, locks the bank down by the same rule.
// From then the server's word holds: the lift frees the doors.
backends!(a_pry_locks_the_bank_down_at_the_agent_even_offline, |t: TestStore| async move {
    use custody_core::alert::{LockdownRule, LockdownScope, Severity};
    let server = TestServer::start(t).await;
    let cable = NetworkCable::lay(server.gateway()).await.unwrap();
    let agent = agent_behind(&server, &cable).await;
    let env = &server.env;
    let (parcel, code) = env.delivered("bob@harbour.example").await;
    let pry = LockdownRule {
        kind: Some(AlertKind::Pry),
        min_severity: Severity::High,
        scope: LockdownScope::Bank,
    };
    env.app.set_lockdown_rule(&custody_app::Caller::Operator, &env.site, pry).await.unwrap();
    // The rule reaches the agent at once, and is journaled there.
    eventually("the agent has the rule", || async {
        let journal = std::fs::read_to_string(agent.dir().join("journal.log")).unwrap_or_default();
        journal.contains("\"kind\":\"policy\"") && journal.contains("\"pry\"")
    })
    .await;

    cable.pull();
    eventually("the agent notices", || async { !agent.handle.is_ready() }).await;
    agent.handle.sensor(AlertKind::Pry, Some(3)).await;
    eventually("locked down at once, offline", || async { agent.handle.is_interlocked() }).await;
    assert!(!env.app.is_locked_down(&env.bank).await.unwrap(), "the server has not heard yet");

    cable.plug();
    reconnected(&agent).await;
    eventually("the server has the pry and locks down by its rule", || async {
        env.app.is_locked_down(&env.bank).await.unwrap()
    })
    .await;
    assert!(agent.handle.is_interlocked(), "never let go in between");
    assert_eq!(typed(&agent, &code).await, Some(Screen::NotAccepted));

    let admin = env.stepped_up(&env.admin);
    let lifted = env.app.lift_lockdown(&admin, &env.bank, "pry was the cleaner's trolley").await;
    let custody_app::lockdown::Lift::Pending(ask) = lifted.unwrap() else { panic!("approval") };
    let approved = custody_core::approval::ApprovalOutcome::Approved;
    let root = env.stepped_up(&env.super_admin);
    env.app.decide_approval(&root, &ask.id, approved).await.unwrap();
    eventually("the lift frees the doors", || async { !agent.handle.is_interlocked() }).await;
    let Some(Screen::Open(_)) = typed(&agent, &code).await else { panic!("opens after the lift") };
    eventually("the pickup is in the record", || async {
        state_of(&server, &parcel).await == ParcelState::PickedUp
    })
    .await;
});

// A bank's sensor settings reach its agent at once: one impact counts once an admin says so,
// and a door left open past the bank's time is an alert.
backends!(a_banks_sensor_settings_reach_its_agent, |t: TestStore| async move {
    use custody_core::alert::SensorSettings;
    let server = TestServer::start(t).await;
    let agent = server.agent().await;
    let env = &server.env;
    agent.handle.sensor(AlertKind::Impact, None).await;
    let settings = SensorSettings::from_wire([("impact".to_owned(), 1, 1_000, 1_000)], 60).unwrap();
    let admin = env.stepped_up(&env.admin);
    env.app.set_sensor_settings(&admin, &env.bank, settings).await.unwrap();
    eventually("one impact counts", || async {
        agent.handle.sensor(AlertKind::Impact, None).await;
        live_alerts(&server).await.iter().any(|(k, _, _)| *k == AlertKind::Impact)
    })
    .await;

    agent.bank.force_door(2).unwrap();
    eventually("the forced door is an alert", || async {
        live_alerts(&server).await.iter().any(|(k, _, _)| *k == AlertKind::DoorForced)
    })
    .await;
    agent.handle.tick().await;
    assert!(!live_alerts(&server).await.iter().any(|(k, _, _)| *k == AlertKind::DoorLeftOpen));
    env.clock.advance(std::time::Duration::from_secs(61));
    eventually("left open past a minute", || async {
        agent.handle.tick().await;
        live_alerts(&server).await.contains(&(AlertKind::DoorLeftOpen, Some(2), 1))
    })
    .await;
});

// An agent that goes quiet: once three heartbeats are missed its link is ended, and its bank
// raises `device_offline`, once for the outage. When it is back the alert's timeline says so.
backends!(an_agent_gone_quiet_raises_device_offline, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let cable = NetworkCable::lay(server.gateway()).await.unwrap();
    let agent = agent_behind(&server, &cable).await;
    let (env, hub) = (&server.env, &server.running.state.hub);
    hub.watch_heartbeats(&env.app).await;
    assert!(live_alerts(&server).await.is_empty(), "heard just now");

    // Silent: nothing closes, and nothing is heard.
    cable.silence();
    env.clock.advance(std::time::Duration::from_mins(2));
    hub.watch_heartbeats(&env.app).await;
    assert!(live_alerts(&server).await.is_empty(), "two heartbeats missed is not yet an outage");
    assert!(hub.is_online(&env.bank));
    // Four minutes more: whatever was still on its way when the cable went silent is over
    // three minutes old.
    env.clock.advance(std::time::Duration::from_mins(4));
    hub.watch_heartbeats(&env.app).await;
    assert!(!hub.is_online(&env.bank), "the silent link is ended");
    assert_eq!(live_alerts(&server).await, [(AlertKind::DeviceOffline, None, 1)]);
    env.clock.advance(std::time::Duration::from_mins(10));
    hub.watch_heartbeats(&env.app).await;
    assert_eq!(live_alerts(&server).await, [(AlertKind::DeviceOffline, None, 1)], "once");

    cable.pull();
    cable.plug();
    reconnected(&agent).await;
    let admin = custody_testkit::Env::as_person(&env.admin);
    let id = env.app.alerts(&admin, &env.site, true).await.unwrap()[0].id.clone();
    eventually("the timeline says the agent is back", || async {
        let alert = env.app.alert(&admin, &id).await.unwrap();
        alert.timeline.iter().any(|e| e.what == "back_online")
    })
    .await;
    hub.watch_heartbeats(&env.app).await;
    assert_eq!(live_alerts(&server).await.len(), 1, "nothing new while it is connected");
});

// A power cut with the network down: the agent comes back with the list it saved and its
// journal, serves the pickup, and reports it once the network is back.
backends!(
    a_restart_while_offline_still_checks_codes_from_the_saved_list,
    |t: TestStore| async move {
        let server = TestServer::start(t).await;
        let cable = NetworkCable::lay(server.gateway()).await.unwrap();
        let mut agent = agent_behind(&server, &cable).await;
        let (parcel, code) = server.env.delivered("bob@harbour.example").await;
        eventually("the agent holds the code", || async {
            agent.handle.offline_codes() == Some(1)
        })
        .await;
        cable.pull();
        server.restart_agent(&mut agent, None).await;
        assert_eq!(agent.handle.offline_codes(), Some(1), "the saved list, before any link");
        let Some(Screen::Open(n)) = typed(&agent, &code).await else { panic!("offline pickup") };
        eventually("the latch releases", || async { agent.bank.is_unlatched(n) }).await;
        cable.plug();
        reconnected(&agent).await;
        eventually("the pickup is in the record", || async {
            state_of(&server, &parcel).await == ParcelState::PickedUp
        })
        .await;
    }
);
