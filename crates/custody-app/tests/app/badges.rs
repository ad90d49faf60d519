//! RFID badges: registered by a site's admins (one, or an access-control export), read at the
//! kiosk, revoked. A badge picks up its holder's own parcels and identifies a courier over a
//! trusted reader; nothing more. On both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::badges::{BadgeSpec, Registration};
use custody_app::parcels::PickupOutcome;
use custody_app::{AppError, Caller};
use custody_core::badge::{BadgeNumber, MIN_BADGE_BITS};
use custody_core::throttle::KIOSK_PICKUP;
use custody_crypto::secret::badge_verifier;
use custody_proto::device::BadgeList;
use custody_testkit::{Env, TestStore, backends};

const ANNS: &str = "04:A2:B3:C4:D5:E6:F7";
const BOBS: &str = "04A2B3C4D5E6F8";
const ADMINS: &str = "04A2B3C4D5E6F9";
const CARLS: &str = "04A2B3C4D5E6FA";

async fn register(env: &Env, email: &str, number: &str) -> custody_app::badges::Badge {
    let admin = Env::as_person(&env.admin);
    let spec = BadgeSpec { email: email.into(), number: number.into() };
    env.app.register_badge(&admin, &env.site, spec).await.expect("registered")
}

async fn tap(env: &Env, number: &str, reader: &str) -> PickupOutcome {
    env.app.redeem_badge(&env.device, number, reader).await.expect("a read")
}

fn opened(outcome: &PickupOutcome) -> Option<u16> {
    match outcome {
        PickupOutcome::Accepted { compartment, .. } => Some(compartment.get()),
        _ => None,
    }
}

/// Whether the list the kiosks are sent holds this number.
fn listed(list: &BadgeList, number: &str) -> bool {
    use data_encoding::BASE64;
    let key: [u8; 32] = BASE64.decode(list.key.as_bytes()).unwrap().try_into().unwrap();
    let number = BadgeNumber::parse(number).unwrap();
    let verifier = BASE64.encode(&badge_verifier(&key, number.as_bytes()));
    list.verifiers.contains(&verifier)
}

async fn reasons(env: &Env, n: u32) -> Vec<String> {
    env.site_log(n).await.into_iter().rev().filter_map(|r| r.event.reason).collect()
}

backends!(a_badge_picks_up_its_holders_parcels_one_a_tap, |t: TestStore| async move {
    let env = Env::new(t).await;
    let badge = register(&env, "ann@harbour.example", ANNS).await;
    assert_eq!(
        badge.hint.as_deref(),
        Some("E6F7"),
        "the last four digits, for staff to tell apart"
    );
    assert_eq!(badge.person, env.ann.id);
    let (first, first_code) = env.delivered("ann@harbour.example").await;
    env.clock.advance(custody_core::time::minutes(1));
    let (second, _) = env.delivered("ann@harbour.example").await;
    let compartment_of = |id| {
        let app = env.app.clone();
        async move { app.parcel(&Caller::Operator, &id).await.unwrap().compartment.unwrap() }
    };
    let (c1, c2) = (compartment_of(first.clone()).await, compartment_of(second.clone()).await);
    let number = |id: &custody_core::CompartmentId| {
        env.compartments.iter().find(|c| &c.id == id).unwrap().number.get()
    };

    // The oldest parcel first, then the next; the number's spelling does not matter.
    assert_eq!(opened(&tap(&env, ANNS, "osdp_secure").await), Some(number(&c1)));
    assert_eq!(opened(&tap(&env, "04a2b3c4d5e6f7", "osdp_secure").await), Some(number(&c2)));
    assert!(matches!(tap(&env, ANNS, "osdp_secure").await, PickupOutcome::Refused));
    // One credential: the badge used the first parcel's code, which now opens nothing.
    let typed = env.app.redeem_code(&env.device, &first_code).await.unwrap();
    assert!(opened(&typed).is_none());
    let log = reasons(&env, 12).await;
    assert!(log.contains(&"badge_accepted:osdp_secure".to_owned()), "{log:?}");
    assert!(log.contains(&"badge_no_parcel".to_owned()), "{log:?}");

    // A lower-trust reader (a keyboard wedge) still picks up the holder's own parcel.
    let (third, _) = env.delivered("ann@harbour.example").await;
    assert!(opened(&tap(&env, ANNS, "keyboard").await).is_some());
    let p = env.app.parcel(&Caller::Operator, &third).await.unwrap();
    assert_eq!(p.state, custody_core::parcel::ParcelState::PickedUp);
    assert!(reasons(&env, 4).await.contains(&"badge_accepted:keyboard".to_owned()));
});

backends!(a_badge_opens_nothing_but_its_holders_own_parcels, |t: TestStore| async move {
    let env = Env::new(t).await;
    register(&env, "ann@harbour.example", ANNS).await;
    register(&env, "admin@acme.example", ADMINS).await;
    let (parcel, _) = env.delivered("bob@harbour.example").await;

    // Neither Ann's badge nor the admin's opens Bob's compartment: a badge is no staff key.
    assert!(matches!(tap(&env, ANNS, "osdp_secure").await, PickupOutcome::Refused));
    assert!(matches!(tap(&env, ADMINS, "osdp_secure").await, PickupOutcome::Refused));
    let p = env.app.parcel(&Caller::Operator, &parcel).await.unwrap();
    assert_eq!(p.state, custody_core::parcel::ParcelState::Notified, "still waiting for Bob");
    // Unregistered, malformed, short and unknown-reader reads are refused and audited.
    assert!(matches!(tap(&env, BOBS, "osdp_secure").await, PickupOutcome::Refused));
    assert!(matches!(tap(&env, "not hex", "osdp_secure").await, PickupOutcome::Refused));
    env.clock.advance(KIOSK_PICKUP.window);
    assert!(matches!(tap(&env, "04A2B3C4D5", "osdp_secure").await, PickupOutcome::Refused));
    assert!(matches!(tap(&env, ANNS, "nfc").await, PickupOutcome::Refused));
    let log = reasons(&env, 8).await;
    for reason in ["badge_no_parcel", "badge_unknown", "badge_malformed"] {
        assert!(log.contains(&reason.to_owned()), "{reason} in {log:?}");
    }
});

backends!(badge_reads_spend_the_kiosk_and_bank_budgets, |t: TestStore| async move {
    let env = Env::new(t).await;
    register(&env, "ann@harbour.example", ANNS).await;
    let (_, _) = env.delivered("ann@harbour.example").await;
    // Five unknown badges spend the kiosk's budget: then even Ann's badge waits.
    for i in 0..KIOSK_PICKUP.max_failures {
        let guess = format!("0000000000{i:02X}");
        assert!(matches!(tap(&env, &guess, "osdp_secure").await, PickupOutcome::Refused));
    }
    assert!(matches!(tap(&env, ANNS, "osdp_secure").await, PickupOutcome::Refused));
    assert_eq!(reasons(&env, 1).await, vec!["badge_throttled:kiosk".to_owned()]);
    // Typed codes and badges draw on one budget: a spent bank pauses badges too.
    env.clock.advance(KIOSK_PICKUP.window);
    env.spend_bank_hour().await;
    assert!(matches!(tap(&env, ANNS, "osdp_secure").await, PickupOutcome::Paused));
    // Once it renews, Ann's badge works and gives its attempt back.
    env.clock.advance(custody_core::time::hours(1));
    assert!(opened(&tap(&env, ANNS, "osdp_secure").await).is_some());
});

backends!(a_revoked_badge_leaves_the_kiosks_list_and_opens_nothing, |t: TestStore| async move {
    let env = Env::new(t).await;
    let badge = register(&env, "ann@harbour.example", ANNS).await;
    register(&env, "bob@harbour.example", BOBS).await;
    let list = env.app.badge_list(&env.site).await.unwrap();
    assert!(listed(&list, ANNS) && listed(&list, BOBS));
    assert_eq!(list.verifiers.len(), 2);

    let admin = Env::as_person(&env.admin);
    let revoked = env.app.revoke_badge(&admin, &badge.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let again = env.app.revoke_badge(&admin, &badge.id).await;
    assert!(matches!(
        again,
        Err(AppError::Conflict { code: custody_app::conflicts::ConflictCode::BadgeRevoked, .. })
    ));
    let list = env.app.badge_list(&env.site).await.unwrap();
    assert!(!listed(&list, ANNS) && listed(&list, BOBS));

    let _ = env.delivered("ann@harbour.example").await;
    assert!(matches!(tap(&env, ANNS, "osdp_secure").await, PickupOutcome::Refused));
    assert!(reasons(&env, 2).await.contains(&"badge_unknown".to_owned()));
    // The number is free again: a new card with it can be registered.
    let renewed = register(&env, "ann@harbour.example", ANNS).await;
    assert_ne!(renewed.id, badge.id);
    let all = env.app.badges(&admin, &env.site).await.unwrap();
    assert_eq!(all.len(), 3, "the revoked badge stays listed, for the record");
});

backends!(an_export_registers_every_badge_or_none, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = Env::as_person(&env.admin);
    let bad = "\u{feff}Name,Card,E-mail,Department\n\
               Ann,04A2B3C4D5E6F7,ann@harbour.example,East\n\
               Bob,1234,bob@harbour.example,West\n\
               Nobody,04A2B3C4D5E6FB,nobody@harbour.example,East\n\
               Ann again,04:a2:b3:c4:d5:e6:f7,ann@harbour.example,East\n";
    let Err(Registration::Problems(problems)) = env.app.import_badges(&admin, &env.site, bad).await
    else {
        panic!("the import must fail");
    };
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![3, 4, 5], "{problems:?}");
    assert!(problems[0].problem.contains("48 bits"), "{}", problems[0].problem);
    assert!(problems[1].problem.contains("nobody@harbour.example"));
    assert!(problems[2].problem.contains("line 2"));
    assert!(env.app.badges(&admin, &env.site).await.unwrap().is_empty(), "nothing imported");

    let missing = env.app.import_badges(&admin, &env.site, "name,card\nAnn,04A2B3C4D5E6F7\n").await;
    assert!(matches!(missing, Err(Registration::Problems(p)) if p[0].line == 1));

    let good =
        "email,badge\nann@harbour.example,04A2B3C4D5E6F7\nbob@harbour.example,04A2B3C4D5E6F8\n";
    let rows = env.app.import_badges(&admin, &env.site, good).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].person, env.bob.id);
    let log = env.site_log(2).await;
    assert!(
        log.iter().all(|r| r.event.action == custody_core::audit::AuditAction::BadgeRegister),
        "one entry per badge"
    );
    // The same export again: every number is registered already.
    let twice = env.app.import_badges(&admin, &env.site, good).await;
    assert!(matches!(twice, Err(Registration::Problems(p)) if p.len() == 2));
});

backends!(only_the_sites_admins_register_and_revoke_badges, |t: TestStore| async move {
    let env = Env::new(t).await;
    let spec = || BadgeSpec { email: "ann@harbour.example".into(), number: ANNS.into() };
    let ann = Env::as_person(&env.ann);
    let auditor = Env::as_person(&env.auditor);
    assert!(matches!(
        env.app.register_badge(&ann, &env.site, spec()).await,
        Err(AppError::Forbidden | AppError::NotFound)
    ));
    assert!(matches!(
        env.app.register_badge(&auditor, &env.site, spec()).await,
        Err(AppError::Forbidden | AppError::NotFound)
    ));
    let badge = register(&env, "ann@harbour.example", ANNS).await;
    assert_eq!(env.app.badges(&auditor, &env.site).await.unwrap().len(), 1, "auditors read");
    assert!(env.app.badges(&ann, &env.site).await.is_err());
    assert!(env.app.revoke_badge(&ann, &badge.id).await.is_err());
    assert!(env.app.revoke_badge(&env.device, &badge.id).await.is_err());

    // Short numbers are refused, saying why.
    let short = BadgeSpec { email: "ann@harbour.example".into(), number: "01020304".into() };
    let admin = Env::as_person(&env.admin);
    let Err(AppError::Invalid(message)) = env.app.register_badge(&admin, &env.site, short).await
    else {
        panic!("a 32-bit number must be refused");
    };
    assert!(message.contains(&MIN_BADGE_BITS.to_string()), "{message}");
});

backends!(a_courier_badge_needs_a_secure_reader, |t: TestStore| async move {
    let env = Env::new(t).await;
    register(&env, "carl@parcelco.example", CARLS).await;
    let parcel = env
        .announce("ann@harbour.example", "CARL-BADGE", custody_core::compartment::SizeClass::Small)
        .await
        .id;
    let badge = |reader| custody_app::couriers::CourierAt::Badge { number: CARLS, reader };
    // Over a keyboard wedge or Wiegand, a courier's badge is not enough.
    for reader in ["keyboard", "wiegand", "osdp_clear"] {
        assert!(env.app.courier_visit(&env.device, badge(reader)).await.unwrap().is_none());
        assert_eq!(reasons(&env, 1).await, vec!["badge_low_trust".to_owned()]);
    }
    // Over OSDP with Secure Channel it identifies Carl, as his code would.
    let visit = env.app.courier_visit(&env.device, badge("osdp_secure")).await.unwrap().unwrap();
    assert_eq!(visit.courier.id, env.courier.id);
    assert_eq!(visit.deposits.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![parcel]);
    assert_eq!(reasons(&env, 1).await, vec!["courier_badge".to_owned()]);
    // A resident's badge is no courier's.
    register(&env, "ann@harbour.example", ANNS).await;
    let anns = custody_app::couriers::CourierAt::Badge { number: ANNS, reader: "osdp_secure" };
    assert!(env.app.courier_visit(&env.device, anns).await.unwrap().is_none());
});

backends!(a_locked_down_bank_refuses_badges, |t: TestStore| async move {
    let env = Env::new(t).await;
    register(&env, "ann@harbour.example", ANNS).await;
    let (parcel, _) = env.delivered("ann@harbour.example").await;
    env.app
        .engage_lockdown(&Env::as_person(&env.admin), &env.bank, "pry alarm on door 3")
        .await
        .unwrap();
    assert!(matches!(tap(&env, ANNS, "osdp_secure").await, PickupOutcome::Refused));
    assert_eq!(reasons(&env, 1).await, vec!["badge_locked_down".to_owned()]);
    let p = env.app.parcel(&Caller::Operator, &parcel).await.unwrap();
    assert_eq!(p.state, custody_core::parcel::ParcelState::Notified);
});
