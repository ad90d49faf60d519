//! Couriers at the kiosk with their daily code: they deposit and take back their carrier's
//! parcels and nothing else. On both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::parcels::PickupOutcome;
use custody_app::people::NewPerson;
use custody_app::people::Person;
use custody_app::{AppError, Caller};
use custody_core::compartment::SizeClass;
use custody_core::parcel::ParcelState;
use custody_core::person::Role;
use custody_core::time::{days, hours};
use custody_proto::device::DoorReading;
use custody_testkit::env::enrol_device;
use custody_testkit::{Env, TestStore, backends};

async fn courier_named(
    env: &Env,
    email: &str,
    carrier: &custody_core::CarrierId,
    site: Option<&custody_core::SiteId>,
) -> Person {
    let new = NewPerson {
        org: env.org.clone(),
        email: email.into(),
        name: "Cora Courier".into(),
        role: Role::Courier,
        site: site.cloned(),
        carrier: Some(carrier.clone()),
        password: None,
        reason: None,
    };
    env.app.create_person(&Caller::Operator, new).await.unwrap()
}

backends!(a_courier_deposits_and_takes_back_with_todays_code, |t: TestStore| async move {
    let env = Env::new(t).await;
    let carl = Env::as_person(&env.courier);
    let code = env.app.courier_code(&carl).await.unwrap();
    assert_eq!(code.code.len(), 14, "twelve digits in groups of four");
    assert!(code.code.chars().all(|c| c.is_ascii_digit() || c == ' '));
    assert_eq!(env.app.courier_code(&carl).await.unwrap().code, code.code, "one code a day");

    // At the kiosk: the parcels announced for this site, then a deposit as Carl's own.
    let parcel = env.announce("ann@harbour.example", "CARL-1", SizeClass::Small).await.id;
    let visit = env.app.courier_visit(&env.device, &code.code).await.unwrap().unwrap();
    assert_eq!(visit.courier.id, env.courier.id);
    assert_eq!(
        visit.deposits.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        vec![parcel.clone()]
    );
    assert!(visit.returns.is_empty());
    let deposit =
        env.app.courier_deposit(&env.device, &code.code, &parcel, None).await.unwrap().unwrap();
    let n = deposit.compartment.number.get();
    env.app.door_report(&env.device, n, DoorReading::Open).await.unwrap();
    env.app.door_report(&env.device, n, DoorReading::Closed).await.unwrap();
    let placed = env.app.courier_confirm(&env.device, &code.code, &parcel).await.unwrap().unwrap();
    assert_eq!(placed.state, ParcelState::Notified, "Ann is told at once, as from the API");
    assert!(env.code_sent_for(&parcel).await.len() > 10, "her code is in her message");
    let history = env.app.parcel_history(&Caller::Operator, &parcel).await.unwrap().1;
    assert!(
        history.iter().any(|e| e.0.event.actor.id.as_deref() == Some(env.courier.id.as_str())),
        "the deposit is Carl's"
    );

    // Uncollected for a week it expires, and Carl takes it back.
    env.clock.advance(days(7) + hours(1));
    assert_eq!(env.app.expire_due().await.unwrap(), 1);
    let code = env.app.courier_code(&carl).await.unwrap();
    let visit = env.app.courier_visit(&env.device, &code.code).await.unwrap().unwrap();
    assert_eq!(
        visit.returns.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        vec![parcel.clone()]
    );
    let (returned, opening) =
        env.app.courier_return(&env.device, &code.code, &parcel).await.unwrap().unwrap();
    assert_eq!(returned.state, ParcelState::Returned);
    assert_eq!(opening.compartment.number.get(), n);
});

backends!(a_courier_code_changes_every_day_and_stops_with_its_courier, |t: TestStore| async move {
    let env = Env::new(t).await;
    let carl = Env::as_person(&env.courier);
    let today = env.app.courier_code(&carl).await.unwrap();
    env.clock.advance(days(1));
    assert!(
        env.app.courier_visit(&env.device, &today.code).await.unwrap().is_none(),
        "yesterday's"
    );
    let tomorrow = env.app.courier_code(&carl).await.unwrap();
    assert_ne!(tomorrow.code, today.code);
    assert!(env.app.courier_visit(&env.device, &tomorrow.code).await.unwrap().is_some());
    // Disabled: the code stops at once.
    env.app.disable_person(&env.stepped_up(&env.super_admin), &env.courier.id).await.unwrap();
    assert!(env.app.courier_visit(&env.device, &tomorrow.code).await.unwrap().is_none());
    // Only couriers have codes.
    for person in [&env.ann, &env.admin] {
        let refused = env.app.courier_code(&env.stepped_up(person)).await;
        assert_eq!(refused.unwrap_err().code(), "not_a_courier", "{}", person.email.as_str());
    }
    assert!(matches!(env.app.courier_code(&env.device).await, Err(AppError::Forbidden)));
});

backends!(a_courier_code_opens_nothing_but_the_couriers_own_work, |t: TestStore| async move {
    let env = Env::new(t).await;
    // Ann's parcel, delivered by Carl's carrier, waits in the bank for her.
    let (anns, pickup) = env.delivered("ann@harbour.example").await;
    // Another carrier's courier has a code too.
    let other = env.app.create_carrier(&Caller::Operator, &env.org, "Rival Express").await.unwrap();
    let rita = courier_named(&env, "rita@rival.example", &other.id, None).await;
    let ritas = env.app.courier_code(&Env::as_person(&rita)).await.unwrap();
    let visit = env.app.courier_visit(&env.device, &ritas.code).await.unwrap().unwrap();
    assert!(visit.deposits.is_empty() && visit.returns.is_empty(), "nothing of Rita's here");
    let announced = env.announce("ann@harbour.example", "CARL-2", SizeClass::Small).await.id;
    // Rita can neither deposit Carl's carrier's parcel nor take anything out.
    let refused = env.app.courier_deposit(&env.device, &ritas.code, &announced, None).await;
    assert!(matches!(refused, Err(AppError::NotFound | AppError::Forbidden)), "{refused:?}");
    let refused = env.app.courier_return(&env.device, &ritas.code, &anns).await;
    assert!(matches!(refused, Err(AppError::NotFound | AppError::Forbidden)), "{refused:?}");
    // Carl cannot take Ann's parcel: it is hers until it expires.
    let carls = env.app.courier_code(&Env::as_person(&env.courier)).await.unwrap();
    let refused = env.app.courier_return(&env.device, &carls.code, &anns).await;
    assert!(matches!(refused, Err(AppError::Conflict { .. })), "{refused:?}");
    assert!(matches!(
        env.app.redeem_code(&env.device, &pickup).await.unwrap(),
        PickupOutcome::Accepted { .. }
    ));
    // A courier of one site has no business at another site's kiosk.
    let sam = courier_named(&env, "sam@parcelco.example", &env.carrier, Some(&env.site)).await;
    let sams = env.app.courier_code(&Env::as_person(&sam)).await.unwrap();
    let root = Caller::Operator;
    let north = env.app.create_site(&root, &env.org, "North Lobby", "UTC", None).await.unwrap();
    let bank = env.app.create_bank(&root, &north.id, "North A").await.unwrap();
    let kiosk = enrol_device(&env.app, &bank.id).await;
    assert!(env.app.courier_visit(&kiosk, &sams.code).await.unwrap().is_none());
    assert!(env.app.courier_visit(&env.device, &sams.code).await.unwrap().is_some());
});

backends!(courier_code_guesses_spend_the_kiosk_budget, |t: TestStore| async move {
    let env = Env::new(t).await;
    let code = env.app.courier_code(&Env::as_person(&env.courier)).await.unwrap();
    // Guesses are refused alike, malformed or not…
    for typed in ["1234", "0000 0000 0000", "abcd efgh ijkl", "0000 0000 0001", "9999 9999 9999"] {
        assert!(env.app.courier_visit(&env.device, typed).await.unwrap().is_none());
    }
    // …and after the kiosk's five, even the right code waits: guessing is slowed for all.
    let throttled = env.app.courier_visit(&env.device, &code.code).await;
    assert!(matches!(throttled, Err(AppError::Throttled)), "{throttled:?}");
    env.clock.advance(custody_core::time::minutes(5));
    assert!(env.app.courier_visit(&env.device, &code.code).await.unwrap().is_some());
    // A code that works gives its attempt back: a courier's day of deposits spends nothing.
    for _ in 0..10 {
        assert!(env.app.courier_visit(&env.device, &code.code).await.unwrap().is_some());
    }
});

backends!(a_courier_chooses_a_larger_compartment_at_the_kiosk, |t: TestStore| async move {
    let env = Env::new(t).await;
    let carl = env.app.courier_code(&Env::as_person(&env.courier)).await.unwrap();
    // The kiosk shows what is free, by size.
    let visit = env.app.courier_visit(&env.device, &carl.code).await.unwrap().unwrap();
    let free: Vec<(SizeClass, u32)> = visit.free;
    assert_eq!(
        free,
        vec![
            (SizeClass::Small, 2),
            (SizeClass::Medium, 2),
            (SizeClass::Large, 1),
            (SizeClass::ExtraLarge, 1)
        ]
    );

    // Announced small, but it does not fit: Carl asks for a large compartment.
    let bulky = env.announce("ann@harbour.example", "BULKY-1", SizeClass::Small).await.id;
    let deposit = env
        .app
        .courier_deposit(&env.device, &carl.code, &bulky, Some(SizeClass::Large))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deposit.compartment.size, SizeClass::Large);
    let history = env.app.parcel_history(&Caller::Operator, &bulky).await.unwrap().1;
    let reserved = history
        .iter()
        .find(|e| e.0.event.action == custody_core::audit::AuditAction::DepositReserve)
        .unwrap();
    assert_eq!(reserved.0.event.reason.as_deref(), Some("larger:large"), "the choice is audited");

    // Only ever larger: a medium parcel asked into a small compartment gets a medium one.
    let medium = env.announce("bob@harbour.example", "MEDIUM-1", SizeClass::Medium).await.id;
    let deposit = env
        .app
        .courier_deposit(&env.device, &carl.code, &medium, Some(SizeClass::Small))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deposit.compartment.size, SizeClass::Medium);

    // "At least large": with the large one taken, the extra-large one; after that, nothing.
    let more = env.announce("ann@harbour.example", "BULKY-2", SizeClass::Small).await.id;
    let deposit = env
        .app
        .courier_deposit(&env.device, &carl.code, &more, Some(SizeClass::Large))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deposit.compartment.size, SizeClass::ExtraLarge);
    let last = env.announce("ann@harbour.example", "BULKY-3", SizeClass::Small).await.id;
    let full =
        env.app.courier_deposit(&env.device, &carl.code, &last, Some(SizeClass::Large)).await;
    let Err(AppError::Conflict { code, .. }) = full else { panic!("{full:?}") };
    assert_eq!(code.as_str(), "no_free_compartment");
    // What is left free is what the kiosk lists; nothing taken is offered.
    let visit = env.app.courier_visit(&env.device, &carl.code).await.unwrap().unwrap();
    assert_eq!(visit.free, vec![(SizeClass::Small, 2), (SizeClass::Medium, 1)]);
});
