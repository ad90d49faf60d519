//! The chain of custody, told as stories against the real use cases, on both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::audit::AuditRecord;
use custody_app::audit::{Verdict, verify_store};
use custody_app::parcels::{ParcelSpec, PickupOutcome};
use custody_app::personal::Statement;
use custody_app::sessions::Client;
use custody_app::{AppError, Caller};
use custody_core::ParcelId;
use custody_core::alert::AlertKind;
use custody_core::audit::{AuditAction, Outcome};
use custody_core::compartment::{CompartmentState, DoorState, SizeClass};
use custody_core::parcel::ParcelState;
use custody_core::person::Role;
use custody_core::time::{days, hours, minutes};
use custody_crypto::sign::PublicKey;
use custody_proto::device::{DoorReading, OPEN_COMMAND_DOMAIN, SignedOpenCommand};
use custody_store::StoreError;
use custody_testkit::env::PASSWORD;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

fn spec(env: &Env, email: &str, size: SizeClass) -> ParcelSpec {
    ParcelSpec {
        site: env.site.clone(),
        carrier: env.carrier.clone(),
        recipient_email: email.into(),
        tracking_ref: "1Z999AA10123456784".into(),
        size,
        accessible: false,
        refrigerated: false,
    }
}

fn verify(env: &Env, command: &SignedOpenCommand) {
    let key = PublicKey::from_bytes(env.app.command_public_key().as_bytes()).unwrap();
    let sig = data_encoding::BASE64.decode(command.signature.as_bytes()).unwrap();
    key.verify(OPEN_COMMAND_DOMAIN, &command.command.signing_bytes(), &sig)
        .expect("command signed by the command key");
}

/// The reason of the site's latest audit entry.
/// The reason of the site's last pickup attempt in the audit log.
async fn last_attempt_reason(env: &Env) -> Option<String> {
    let log = env.site_log(20).await;
    let attempt = log.iter().find(|r| r.event.action == AuditAction::PickupAttempt)?;
    attempt.event.reason.clone()
}

async fn history(env: &Env, parcel: &ParcelId) -> Vec<AuditRecord> {
    env.app
        .parcel_history(&Caller::Operator, parcel)
        .await
        .unwrap()
        .1
        .into_iter()
        .map(|e| e.0)
        .collect()
}

fn actions(h: &[AuditRecord]) -> Vec<(AuditAction, Outcome, Option<String>)> {
    h.iter().map(|r| (r.event.action, r.event.outcome, r.event.reason.clone())).collect()
}

backends!(deposit_notify_and_pickup, |t: TestStore| async move {
    let env = Env::new(t).await;
    let carrier = env.carrier().await;
    let parcel = env
        .app
        .expect_parcel(&carrier, spec(&env, "ann@harbour.example", SizeClass::Small))
        .await
        .unwrap();
    assert_eq!(
        (parcel.state, parcel.recipient.clone()),
        (ParcelState::Expected, Some(env.ann.id.clone()))
    );

    let deposit = env.app.start_deposit(&carrier, &parcel.id, &env.bank).await.unwrap();
    assert_eq!(deposit.compartment.number.get(), 1, "smallest plain compartment");
    assert_eq!(deposit.command.command.compartment, 1);
    assert_eq!(deposit.command.command.purpose, "deposit");
    verify(&env, &deposit.command);

    // The door has not been seen to close since the unlock: no confirmation yet.
    let err = env.app.confirm_deposit(&carrier, &parcel.id).await.unwrap_err();
    assert_eq!(err.code(), "door_not_closed");
    env.app.door_report(&env.device, 1, DoorReading::Open).await.unwrap();
    env.app.door_report(&env.device, 1, DoorReading::Closed).await.unwrap();
    let deposited = env.app.confirm_deposit(&carrier, &parcel.id).await.unwrap();
    assert_eq!(deposited.state, ParcelState::Deposited);
    assert_eq!(deposited.expires_at, Some(env.app.now().plus(days(7))), "default pickup window");

    let notified = env.app.notify(&parcel.id).await.unwrap();
    assert_eq!(notified.state, ParcelState::Notified);
    let code = env.code_sent_for(&parcel.id).await;
    assert!(code.starts_with("1 "), "the locker number first: {code}");
    assert_eq!(code.len(), 13, "then 10 digits, grouped: {code}");

    // Another locker's number with the right digits opens nothing: the number is part of it.
    let other_locker = code.replacen("1 ", "2 ", 1);
    for wrong in ["0000 0000", "12", "not a code", other_locker.as_str()] {
        assert!(matches!(
            env.app.redeem_code(&env.device, wrong).await.unwrap(),
            PickupOutcome::Refused
        ));
    }
    let PickupOutcome::Accepted { compartment, command } =
        env.app.redeem_code(&env.device, &code).await.unwrap()
    else {
        panic!("the right code was refused");
    };
    assert_eq!(compartment.get(), 1);
    assert_eq!(command.command.purpose, "pickup");
    verify(&env, &command);
    assert!(
        matches!(env.app.redeem_code(&env.device, &code).await.unwrap(), PickupOutcome::Refused),
        "single use"
    );

    let (after, h) = env.app.parcel_history(&Caller::Operator, &parcel.id).await.unwrap();
    let h: Vec<AuditRecord> = h.into_iter().map(|e| e.0).collect();
    assert_eq!(after.state, ParcelState::PickedUp);
    let slot = env.compartments[0].id.clone();
    let c = env
        .app
        .store()
        .read(move |tx| async move { tx.compartment(&slot).await }.boxed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.state, c.parcel, c.door), (CompartmentState::Free, None, DoorState::Unknown));
    let acts = actions(&h);
    let expected_prefix = [
        AuditAction::ParcelExpect,
        AuditAction::DepositReserve,
        AuditAction::OpenCommand,
        AuditAction::DoorReport,
        AuditAction::DoorReport,
        AuditAction::Deposit,
        AuditAction::Notify,
    ];
    assert_eq!(acts.iter().take(7).map(|a| a.0).collect::<Vec<_>>(), expected_prefix);
    assert!(acts.contains(&(
        AuditAction::PickupAttempt,
        Outcome::Success,
        Some("code_accepted".into())
    )));
    assert!(acts.contains(&(AuditAction::PickUp, Outcome::Success, None)));
    // The code never reaches the audit log.
    let digits: String = code.chars().filter(char::is_ascii_digit).collect();
    assert!(h.iter().all(|r| !format!("{:?}", r.event).contains(&digits)));
});

backends!(failed_attempts_are_audited_with_their_reason, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (_parcel, code) = env.delivered("ann@harbour.example").await;
    env.app.redeem_code(&env.device, "1234 5678").await.unwrap();
    env.app.redeem_code(&env.device, "abc").await.unwrap();
    env.app.redeem_code(&env.device, &code).await.unwrap();
    env.app.redeem_code(&env.device, &code).await.unwrap();
    let log = env.site_log(100).await;
    let reasons: Vec<_> = log
        .iter()
        .rev()
        .filter(|r| r.event.action == AuditAction::PickupAttempt)
        .map(|r| (r.event.outcome, r.event.reason.clone().unwrap()))
        .collect();
    let expected = [
        (Outcome::Failure, "code_unknown"),
        (Outcome::Failure, "code_malformed"),
        (Outcome::Success, "code_accepted"),
        (Outcome::Failure, "code_used"),
    ];
    assert_eq!(reasons, expected.map(|(o, r)| (o, r.to_owned())));
});

backends!(a_code_only_works_at_its_own_bank, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (_parcel, code) = env.delivered("ann@harbour.example").await;
    let other_bank = env.app.create_bank(&Caller::Operator, &env.site, "Back door").await.unwrap();
    env.app
        .add_compartments(
            &Caller::Operator,
            &other_bank.id,
            &[custody_app::compartments::CompartmentSpec {
                number: 1,
                size: SizeClass::Large,
                accessible: false,
                refrigerated: false,
            }],
        )
        .await
        .unwrap();
    let other_device = custody_testkit::env::enrol_device(&env.app, &other_bank.id).await;
    assert!(matches!(
        env.app.redeem_code(&other_device, &code).await.unwrap(),
        PickupOutcome::Refused
    ));
    assert!(matches!(
        env.app.redeem_code(&env.device, &code).await.unwrap(),
        PickupOutcome::Accepted { .. }
    ));
});

backends!(kiosk_throttle_holds_even_for_the_right_code, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, code) = env.delivered("ann@harbour.example").await;
    for _ in 0..5 {
        env.app.redeem_code(&env.device, "0000 0000").await.unwrap();
    }
    // The budget is spent: the next attempt is refused without being checked.
    assert!(matches!(
        env.app.redeem_code(&env.device, &code).await.unwrap(),
        PickupOutcome::Refused
    ));
    let log = env.site_log(1).await;
    assert_eq!(
        (log[0].event.outcome, log[0].event.reason.as_deref()),
        (Outcome::Denied, Some("code_throttled:kiosk"))
    );
    env.clock.advance(minutes(5));
    assert!(
        matches!(
            env.app.redeem_code(&env.device, &code).await.unwrap(),
            PickupOutcome::Accepted { .. }
        ),
        "a new window"
    );
    assert_eq!(
        env.app.parcel(&Caller::Operator, &parcel).await.unwrap().state,
        ParcelState::PickedUp
    );
});

backends!(bank_throttle_spans_kiosks, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (_parcel, code) = env.delivered("ann@harbour.example").await;
    // Ten failures an hour across the bank, five per kiosk per five minutes: an attacker who
    // waits out the kiosk window still meets the bank budget.
    env.spend_bank_hour().await;
    // The kiosk says typed codes are paused, which says nothing about the code.
    assert!(matches!(
        env.app.redeem_code(&env.device, &code).await.unwrap(),
        PickupOutcome::Paused
    ));
    assert_eq!(last_attempt_reason(&env).await.as_deref(), Some("code_throttled:bank"));
    // Someone is guessing there: an alert says so.
    let live = env.app.alerts(&Caller::Operator, &env.site, true).await.unwrap();
    assert_eq!(live.iter().map(|a| a.kind).collect::<Vec<_>>(), [AlertKind::BruteForce]);
    env.clock.advance(hours(1));
    assert!(matches!(
        env.app.redeem_code(&env.device, &code).await.unwrap(),
        PickupOutcome::Accepted { .. }
    ));
});

backends!(the_daily_bank_budget_bounds_a_years_guessing, |t: TestStore| async move {
    // The bound of DESIGN.md §4 invariant 6 rests on this budget: whatever the hourly windows,
    // a bank takes 24 failed guesses a day and no more.
    let env = Env::new(t).await;
    let (_parcel, code) = env.delivered("ann@harbour.example").await;
    let day_start = env.app.now().as_millis() / 86_400_000;
    let mut failures = 0;
    while failures < custody_core::throttle::BANK_PICKUP_DAY.max_failures {
        for _ in 0..5 {
            env.app.redeem_code(&env.device, "1 00000 00000").await.unwrap();
            failures += 1;
        }
        // Wait out the kiosk window, and the hourly one every second round.
        env.clock.advance(if failures % 10 == 0 { hours(1) } else { minutes(5) });
    }
    assert_eq!(env.app.now().as_millis() / 86_400_000, day_start, "still the same day");
    assert!(matches!(
        env.app.redeem_code(&env.device, &code).await.unwrap(),
        PickupOutcome::Paused
    ));
    assert_eq!(last_attempt_reason(&env).await.as_deref(), Some("code_throttled:bank_day"));
    env.clock.advance(hours(24));
    assert!(matches!(
        env.app.redeem_code(&env.device, &code).await.unwrap(),
        PickupOutcome::Accepted { .. }
    ));
});

backends!(fifty_concurrent_pickups_open_once, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (_parcel, code) = env.delivered("ann@harbour.example").await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app, device, code) = (env.app.clone(), env.device.clone(), code.clone());
            tokio::spawn(async move { app.redeem_code(&device, &code).await.unwrap() })
        })
        .collect();
    let mut opens = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), PickupOutcome::Accepted { .. }) {
            opens += 1;
        }
    }
    assert_eq!(opens, 1);
});

backends!(expiry_then_return_to_carrier, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, code) = env.delivered("ann@harbour.example").await;
    env.clock.advance(minutes(7 * 24 * 60 - 1));
    assert_eq!(env.app.expire_due().await.unwrap(), 0, "not yet");
    env.clock.advance(minutes(1));
    assert_eq!(env.app.expire_due().await.unwrap(), 1);
    assert_eq!(
        env.app.parcel(&Caller::Operator, &parcel).await.unwrap().state,
        ParcelState::Expired
    );
    assert!(matches!(
        env.app.redeem_code(&env.device, &code).await.unwrap(),
        PickupOutcome::Refused
    ));
    let h = history(&env, &parcel).await;
    assert!(actions(&h).contains(&(
        AuditAction::PickupAttempt,
        Outcome::Failure,
        Some("code_revoked".into())
    )));

    // A resident cannot take it back for the carrier; the carrier can.
    let ann = Env::as_person(&env.ann);
    assert!(env.app.return_to_carrier(&ann, &parcel).await.is_err());
    let (returned, opening) =
        env.app.return_to_carrier(&env.carrier().await, &parcel).await.unwrap();
    assert_eq!(returned.state, ParcelState::Returned);
    assert_eq!(opening.command.command.purpose, "return");
    assert_eq!(
        env.app.return_to_carrier(&env.carrier().await, &parcel).await.unwrap_err().code(),
        "parcel_state"
    );
});

backends!(staff_retrieval_needs_scope_and_reason, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, code) = env.delivered("ann@harbour.example").await;
    let other_site = env
        .app
        .create_site(&Caller::Operator, &env.org, "Elm Court", "Europe/Berlin", None)
        .await
        .unwrap();
    let outsider = env
        .app
        .create_person(
            &Caller::Operator,
            custody_app::people::NewPerson {
                org: env.org.clone(),
                email: "elm-admin@acme.example".into(),
                name: "Eli Elm".into(),
                role: Role::Admin,
                site: Some(other_site.id),
                carrier: None,
                password: None,
                reason: None,
            },
        )
        .await
        .unwrap();
    let err = env
        .app
        .retrieve(&Env::as_person(&outsider), &parcel, "tidying up the lobby")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found", "another site's admin cannot even see it");
    let err =
        env.app.retrieve(&Env::as_person(&env.ann), &parcel, "I want it now").await.unwrap_err();
    assert_eq!(err.code(), "forbidden", "a resident may see her parcel but not act as staff");
    let admin = Env::as_person(&env.admin);
    assert_eq!(env.app.retrieve(&admin, &parcel, "").await.unwrap_err().code(), "invalid_request");
    let (p, opening) = env
        .app
        .retrieve(&admin, &parcel, "recipient moved out; held at front desk")
        .await
        .unwrap()
        .opened()
        .unwrap();
    assert_eq!(
        (p.state, opening.command.command.purpose.as_str()),
        (ParcelState::Retrieved, "retrieve")
    );
    assert!(
        matches!(env.app.redeem_code(&env.device, &code).await.unwrap(), PickupOutcome::Refused),
        "codes revoked"
    );
    let words = "recipient moved out; held at front desk";
    let (_, h) = env.app.parcel_history(&admin, &parcel).await.unwrap();
    let (row, said) = h
        .iter()
        .find(|(r, _)| {
            r.event.action == AuditAction::Retrieve && r.event.outcome == Outcome::Success
        })
        .unwrap();
    assert_eq!(row.event.reason, None);
    assert_eq!(said, &Statement::Shown(words.into()));
    // Sealed under the recipient's key: the stored entry never holds the words in clear.
    let sealed = row.event.personal.as_ref().unwrap();
    assert_eq!(sealed.subject, env.ann.id);
    assert!(!sealed.ciphertext.windows(words.len()).any(|w| w == words.as_bytes()));
});

backends!(statements_are_sealed_per_subject_and_erasure_keeps_the_log, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, _) = env.delivered("ann@harbour.example").await;
    // A second parcel of Ann's, still in its compartment when she is erased.
    let (parcel2, _) = env.delivered("ann@harbour.example").await;
    let admin = Env::as_person(&env.admin);
    let words = "Ann Example called: lost her phone, held at front desk";
    env.app.retrieve(&admin, &parcel, words).await.unwrap().opened().unwrap();
    let said = |who: Caller| {
        let (app, parcel) = (env.app.clone(), parcel.clone());
        async move {
            let (_, h) = app.parcel_history(&who, &parcel).await.unwrap();
            h.into_iter().find(|(r, _)| r.event.action == AuditAction::Retrieve).unwrap().1
        }
    };
    // Staff in scope, auditors and the subject read the words; a carrier sees that there were
    // some.
    assert_eq!(said(admin.clone()).await, Statement::Shown(words.into()));
    assert_eq!(said(Env::as_person(&env.auditor)).await, Statement::Shown(words.into()));
    assert_eq!(said(Env::as_person(&env.ann)).await, Statement::Shown(words.into()));
    assert_eq!(said(env.carrier().await).await, Statement::Withheld);
    // Ann's key is stored wrapped under the installation's key-encryption key, named beside it.
    let ann = env.ann.id.clone();
    let stored = env
        .app
        .store()
        .read(move |tx| async move { tx.subject_key(&ann).await }.boxed())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(stored.kek.starts_with("file-"), "{}", stored.kek);
    // No byte of the log holds them in clear.
    let entries = env
        .app
        .store()
        .read(|tx| async move { tx.audit_leaves(0, 10_000).await }.boxed())
        .await
        .unwrap();
    assert!(entries.iter().all(|e| !e.entry().encode().windows(9).any(|w| w == b"lost her ")));
    let (checkpoint, _) = env.app.current_checkpoint().await.unwrap();

    // Only org-wide admins erase; an auditor is refused, and the refusal is audited.
    assert_eq!(
        env.app
            .erase_personal_data(&Env::as_person(&env.auditor), &env.ann.id)
            .await
            .unwrap_err()
            .code(),
        "forbidden"
    );
    assert!(env.app.erase_personal_data(&Caller::Operator, &env.ann.id).await.unwrap());
    assert!(!env.app.erase_personal_data(&Caller::Operator, &env.ann.id).await.unwrap());
    assert_eq!(said(admin.clone()).await, Statement::Erased);

    // The log did not change and still verifies, against the checkpoint signed before.
    match verify_store(env.app.store(), Some(&checkpoint), |_, _| {}).await.unwrap() {
        Verdict::Intact { .. } => {}
        other @ Verdict::Tampered(_) => panic!("erasure broke the log: {other:?}"),
    }
    // Nothing new about Ann is sealed: the words of a later action are not kept.
    env.app.retrieve(&admin, &parcel2, "Ann again").await.unwrap().opened().unwrap();
    let (_, h) = env.app.parcel_history(&admin, &parcel2).await.unwrap();
    let (row, said) = h.iter().find(|(r, _)| r.event.action == AuditAction::Retrieve).unwrap();
    assert_eq!((row.event.personal.as_ref(), said), (None, &Statement::None));
    let log = env
        .app
        .store()
        .read(|tx| async move { tx.audit_from(0, 10_000).await }.boxed())
        .await
        .unwrap();
    assert!(
        log.iter().any(|r| r.event.action == AuditAction::PersonalDataErase
            && r.event.outcome == Outcome::Success)
    );
});

backends!(remote_open_is_audited_with_its_reason, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = env.stepped_up(&env.admin);
    let slot = env.compartments[4].id.clone();
    assert_eq!(
        env.app.remote_open(&admin, &slot, "  ").await.unwrap_err().code(),
        "invalid_request"
    );
    assert_eq!(
        env.app
            .remote_open(&Env::as_person(&env.auditor), &slot, "just looking")
            .await
            .unwrap_err()
            .code(),
        "forbidden"
    );
    assert_eq!(
        env.app.remote_open(&env.carrier().await, &slot, "just looking").await.unwrap_err().code(),
        "forbidden"
    );
    // An admin whose second factor is not fresh is asked to step up first.
    assert_eq!(
        env.app
            .remote_open(&Env::as_person(&env.admin), &slot, "cleaning crew, ticket 4411")
            .await
            .unwrap_err()
            .code(),
        "step_up_required"
    );
    let opening = env
        .app
        .remote_open(&admin, &slot, "cleaning crew, ticket 4411")
        .await
        .unwrap()
        .opened()
        .unwrap();
    assert_eq!(
        (opening.command.command.compartment, opening.command.command.purpose.as_str()),
        (5, "remote_open")
    );
    let log = env.site_log(10).await;
    let remote: Vec<_> = log.iter().filter(|r| r.event.action == AuditAction::RemoteOpen).collect();
    assert_eq!(remote.len(), 4, "one success, three refusals");
    assert_eq!(remote[1].event.reason.as_deref(), Some("denied_step_up"));
    // An empty compartment: the words are sealed under the key of the admin who gave them.
    let sealed = remote[0].event.personal.as_ref().unwrap();
    assert_eq!(sealed.subject, env.admin.id);
    assert_eq!(remote[0].event.reason, None);
    assert_eq!(remote[0].event.actor.id.as_deref(), Some(env.admin.id.as_str()));
});

backends!(everyone_sees_only_their_own_parcels, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (ann_parcel, _) = env.delivered("ann@harbour.example").await;
    let (bob_parcel, _) = env.delivered("bob@harbour.example").await;
    let ann = Env::as_person(&env.ann);
    let mine = env.app.visible_parcels(&ann, None, 50).await.unwrap();
    assert_eq!(mine.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![ann_parcel.clone()]);
    assert_eq!(env.app.parcel(&ann, &bob_parcel).await.unwrap_err().code(), "not_found");
    let courier = Env::as_person(&env.courier);
    assert_eq!(env.app.visible_parcels(&courier, None, 50).await.unwrap().len(), 2);
    let rival = env.app.create_carrier(&Caller::Operator, &env.org, "Rival Express").await.unwrap();
    let rival_key = env
        .app
        .issue_api_key(
            &Caller::Operator,
            &rival.id,
            std::slice::from_ref(&env.site),
            "rival",
            "new carrier",
        )
        .await
        .unwrap();
    let rival = env.app.authenticate_api_key(&rival_key.token).await.unwrap();
    assert!(env.app.visible_parcels(&rival, None, 50).await.unwrap().is_empty());
    assert_eq!(env.app.parcel(&rival, &ann_parcel).await.unwrap_err().code(), "not_found");
    assert_eq!(
        env.app
            .visible_parcels(&Env::as_person(&env.admin), Some(&env.site), 50)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        env.app.visible_parcels(&ann, Some(&env.site), 50).await.unwrap_err().code(),
        "forbidden"
    );
});

backends!(carriers_cannot_deliver_for_others_or_elsewhere, |t: TestStore| async move {
    let env = Env::new(t).await;
    let rival = env.app.create_carrier(&Caller::Operator, &env.org, "Rival Express").await.unwrap();
    let carrier = env.carrier().await;
    let err = env
        .app
        .expect_parcel(
            &carrier,
            ParcelSpec {
                carrier: rival.id.clone(),
                ..spec(&env, "ann@harbour.example", SizeClass::Small)
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    let elsewhere =
        env.app.create_site(&Caller::Operator, &env.org, "Elm Court", "UTC", None).await.unwrap();
    let err = env
        .app
        .expect_parcel(
            &carrier,
            ParcelSpec {
                site: elsewhere.id,
                ..spec(&env, "ann@harbour.example", SizeClass::Small)
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
});

backends!(a_bank_that_is_full_says_so, |t: TestStore| async move {
    let env = Env::new(t).await;
    let carrier = env.carrier().await;
    let mut reserved = Vec::new();
    for _ in 0..2 {
        let p = env
            .app
            .expect_parcel(&carrier, spec(&env, "ann@harbour.example", SizeClass::Large))
            .await
            .unwrap();
        reserved.push(
            env.app
                .start_deposit(&carrier, &p.id, &env.bank)
                .await
                .unwrap()
                .compartment
                .number
                .get(),
        );
    }
    assert_eq!(reserved, vec![5, 6]);
    let p = env
        .app
        .expect_parcel(&carrier, spec(&env, "ann@harbour.example", SizeClass::Large))
        .await
        .unwrap();
    assert_eq!(
        env.app.start_deposit(&carrier, &p.id, &env.bank).await.unwrap_err().code(),
        "no_free_compartment"
    );
    // An abandoned deposit frees its compartment once its reservation lapses.
    env.clock.advance(minutes(10));
    assert_eq!(env.app.release_stale_reservations().await.unwrap(), 2);
    assert_eq!(
        env.app.start_deposit(&carrier, &p.id, &env.bank).await.unwrap().compartment.number.get(),
        5
    );
});

backends!(a_failed_audit_append_fails_the_change, |t: TestStore| async move {
    let env = Env::new(t).await;
    let carrier = env.carrier().await;
    let parcel = env
        .app
        .expect_parcel(&carrier, spec(&env, "ann@harbour.example", SizeClass::Small))
        .await
        .unwrap();
    // Break the audit log from outside, as a full disk or a broken table would.
    {
        use sqlx::Connection as _;
        let mut conn = sqlx::AnyConnection::connect(&env.store.url).await.unwrap();
        sqlx::raw_sql("ALTER TABLE audit_entries RENAME TO audit_entries_broken")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let err = env.app.start_deposit(&carrier, &parcel.id, &env.bank).await.unwrap_err();
    assert!(matches!(err, AppError::Store(StoreError::Database(_))), "{err:?}");
    let id = parcel.id.clone();
    let p = env
        .app
        .store()
        .read(move |tx| async move { tx.parcel(&id).await }.boxed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((p.state, p.compartment), (ParcelState::Expected, None), "nothing changed");
    let bank = env.bank.clone();
    let slots = env
        .app
        .store()
        .read(move |tx| async move { tx.compartments(&bank).await }.boxed())
        .await
        .unwrap();
    assert!(
        slots.iter().all(|c| c.state == CompartmentState::Free),
        "no compartment stayed reserved"
    );
});

backends!(password_login_sessions_and_timeouts, |t: TestStore| async move {
    let env = Env::new(t).await;
    let pw = || Zeroizing::new(PASSWORD.to_owned());
    let session = env
        .app
        .login("Admin@Acme.Example", pw(), &Client::new("192.0.2.1", "story"))
        .await
        .unwrap();
    assert_eq!(session.person.id, env.admin.id);
    let info = env.app.session(&session.token).await.unwrap();
    assert_eq!(info.person.id, env.admin.id);
    for (email, password) in [
        ("admin@acme.example", "wrong password!!"),
        ("nobody@acme.example", PASSWORD),
        ("not an email", PASSWORD),
    ] {
        let err = env
            .app
            .login(email, Zeroizing::new(password.into()), &Client::new("192.0.2.1", "story"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "authentication_failed", "{email}");
    }
    // Idle for 30 minutes: the session ends.
    env.clock.advance(minutes(29));
    assert!(env.app.session(&session.token).await.is_ok());
    env.clock.advance(minutes(29));
    assert!(env.app.session(&session.token).await.is_ok(), "activity keeps it alive");
    env.clock.advance(minutes(30));
    assert_eq!(env.app.session(&session.token).await.unwrap_err().code(), "authentication_failed");
    // Twelve hours after sign-in it ends whatever happens.
    let s2 = env
        .app
        .login("admin@acme.example", pw(), &Client::new("192.0.2.1", "story"))
        .await
        .unwrap();
    for _ in 0..25 {
        env.clock.advance(minutes(29));
        let _ = env.app.session(&s2.token).await;
    }
    assert!(env.app.session(&s2.token).await.is_err(), "absolute lifetime");
    // Logout ends it at once.
    let s3 = env
        .app
        .login("admin@acme.example", pw(), &Client::new("192.0.2.1", "story"))
        .await
        .unwrap();
    env.app.logout(&s3.token).await.unwrap();
    assert!(env.app.session(&s3.token).await.is_err());
});

backends!(login_is_throttled_per_account, |t: TestStore| async move {
    let env = Env::new(t).await;
    for _ in 0..10 {
        let err = env
            .app
            .login(
                "ann@harbour.example",
                Zeroizing::new("guess guess guess".into()),
                &Client::new("198.51.100.7", "story"),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "authentication_failed");
    }
    let err = env
        .app
        .login(
            "ann@harbour.example",
            Zeroizing::new(PASSWORD.into()),
            &Client::new("198.51.100.8", "story"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "throttled", "the account budget holds from any address");
    let err = env
        .app
        .login(
            "nobody@harbour.example",
            Zeroizing::new(PASSWORD.into()),
            &Client::new("198.51.100.8", "story"),
        )
        .await;
    assert_eq!(err.unwrap_err().code(), "authentication_failed", "other accounts are unaffected");
    env.clock.advance(minutes(15));
    assert!(
        env.app
            .login(
                "ann@harbour.example",
                Zeroizing::new(PASSWORD.into()),
                &Client::new("198.51.100.8", "story")
            )
            .await
            .is_ok()
    );
});

backends!(api_keys_are_checked_and_revocable, |t: TestStore| async move {
    let env = Env::new(t).await;
    assert!(env.app.authenticate_api_key(&env.carrier_token).await.is_ok());
    let (id, secret) = env.carrier_token.split_once('.').unwrap();
    let mut tampered = secret.to_owned();
    tampered.replace_range(0..1, if secret.starts_with('a') { "b" } else { "a" });
    for bad in [
        format!("{id}.{tampered}"),
        format!("{id}."),
        id.to_owned(),
        "key_x.y".into(),
        String::new(),
    ] {
        assert_eq!(
            env.app.authenticate_api_key(&bad).await.unwrap_err().code(),
            "authentication_failed",
            "{bad}"
        );
    }
    let key = custody_core::ApiKeyId::parse(id).unwrap();
    // Revoking takes a fresh second factor, and then works at once.
    let admin = Env::as_person(&env.admin);
    assert_eq!(env.app.revoke_api_key(&admin, &key).await.unwrap_err().code(), "step_up_required");
    env.app.revoke_api_key(&env.stepped_up(&env.admin), &key).await.unwrap();
    assert!(env.app.authenticate_api_key(&env.carrier_token).await.is_err());
});

backends!(api_keys_rotate_with_an_overlap_and_show_their_last_use, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = env.stepped_up(&env.admin);
    let old_id =
        custody_core::ApiKeyId::parse(env.carrier_token.split_once('.').unwrap().0).unwrap();
    env.clock.advance(minutes(3));
    assert!(env.app.authenticate_api_key(&env.carrier_token).await.is_ok());
    let listed = env.app.api_keys(&admin, &env.carrier).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(env.app.now()), "last use is shown");
    // Rotation: a new key now, the old one for the overlap.
    let too_long = env.app.rotate_api_key(&admin, &old_id, days(8), "depot move").await;
    assert_eq!(too_long.unwrap_err().code(), "invalid_request");
    let rotated = env.app.rotate_api_key(&admin, &old_id, hours(24), "depot move").await.unwrap();
    assert_eq!(rotated.key.sites, vec![env.site.clone()]);
    assert!(env.app.authenticate_api_key(&rotated.token).await.is_ok());
    env.clock.advance(hours(23));
    assert!(env.app.authenticate_api_key(&env.carrier_token).await.is_ok(), "still overlapping");
    // A retiring key is not rotated again (its successor is).
    let again =
        env.app.rotate_api_key(&env.stepped_up(&env.admin), &old_id, hours(24), "depot move").await;
    assert_eq!(again.unwrap_err().code(), "key_retired");
    env.clock.advance(hours(1));
    assert!(env.app.authenticate_api_key(&env.carrier_token).await.is_err(), "overlap over");
    assert!(env.app.authenticate_api_key(&rotated.token).await.is_ok());
    let listed = env.app.api_keys(&env.stepped_up(&env.admin), &env.carrier).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|k| k.id == old_id && k.revoked_at.is_some()));
    // Residents and couriers see no keys.
    assert!(env.app.api_keys(&Env::as_person(&env.ann), &env.carrier).await.unwrap().is_empty());
});

backends!(roles_grant_only_downwards, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = env.stepped_up(&env.admin);
    let new = |role, site: Option<custody_core::SiteId>| custody_app::people::NewPerson {
        org: env.org.clone(),
        email: format!("{}-{}@acme.example", role, env.app.now().as_millis()),
        name: "New Person".into(),
        role,
        site,
        carrier: None,
        password: None,
        reason: None,
    };
    assert!(
        env.app.create_person(&admin, new(Role::Resident, Some(env.site.clone()))).await.is_ok()
    );
    assert_eq!(
        env.app
            .create_person(&admin, new(Role::Admin, Some(env.site.clone())))
            .await
            .unwrap_err()
            .code(),
        "forbidden"
    );
    assert_eq!(
        env.app.create_person(&admin, new(Role::SuperAdmin, None)).await.unwrap_err().code(),
        "forbidden"
    );
    assert_eq!(
        env.app
            .create_person(&Env::as_person(&env.ann), new(Role::Resident, Some(env.site.clone())))
            .await
            .unwrap_err()
            .code(),
        "forbidden"
    );
    env.clock.advance(minutes(1));
    // Granting a role with power needs a step-up; adding a resident does not.
    assert_eq!(
        env.app
            .create_person(
                &Env::as_person(&env.super_admin),
                new(Role::Admin, Some(env.site.clone()))
            )
            .await
            .unwrap_err()
            .code(),
        "step_up_required"
    );
    assert!(
        env.app
            .create_person(&Env::as_person(&env.admin), new(Role::Resident, Some(env.site.clone())))
            .await
            .is_ok()
    );
    // …and a reason.
    let root = env.stepped_up(&env.super_admin);
    assert_eq!(
        env.app
            .create_person(&root, new(Role::Admin, Some(env.site.clone())))
            .await
            .unwrap_err()
            .code(),
        "invalid_request"
    );
    let with_reason = custody_app::people::NewPerson {
        reason: Some("night manager from December".into()),
        ..new(Role::Admin, Some(env.site.clone()))
    };
    assert!(env.app.create_person(&root, with_reason).await.is_ok());
    // Changing a role needs one too.
    let admin = env.stepped_up(&env.admin);
    let no_reason = env.app.change_role(&admin, &env.auditor.id, Role::Auditor, "").await;
    assert_eq!(no_reason.unwrap_err().code(), "invalid_request");
});

#[tokio::test]
async fn enrolment_tokens_are_single_use() {
    let env = Env::new(custody_testkit::sqlite_store().await).await;
    let token = env.app.create_enrolment_token(&Caller::Operator, &env.bank).await.unwrap();
    let key = custody_crypto::pki::DeviceKey::generate().unwrap();
    let csr = key.csr("agent").unwrap();
    let first = env.app.enrol(&token, &csr).await.unwrap();
    assert_eq!(env.app.enrol(&token, &csr).await.unwrap_err().code(), "authentication_failed");
    // Re-enrolment gives the bank a new identity and retires the old one.
    let info = custody_crypto::pki::certificate_info(
        &custody_crypto::pki::first_cert_der(&first.certificate_pem).unwrap(),
    )
    .unwrap();
    assert!(env.app.authenticate_device(&info).await.is_ok());
    let token2 = env.app.create_enrolment_token(&Caller::Operator, &env.bank).await.unwrap();
    env.app.enrol(&token2, &csr).await.unwrap();
    assert!(env.app.authenticate_device(&info).await.is_err(), "old identity revoked");
    assert_eq!(env.app.enrol("garbage", &csr).await.unwrap_err().code(), "authentication_failed");
}

/// The password hash stored for `person`: the app never hands it out.
async fn stored_password_hash(env: &Env, person: &custody_core::PersonId) -> String {
    let id = person.clone();
    let row = env.store.store.read(move |tx| async move { tx.person(&id).await }.boxed());
    row.await.unwrap().unwrap().password_hash.unwrap()
}

// Tests seed people at the least Argon2id allows (a debug build's `PasswordCost::Test`); the
// application as `custody serve` and every command build it, from the default configuration,
// hashes at OWASP's minimum. A release build has no cheaper cost to choose.
backends!(the_application_hashes_passwords_at_the_production_cost, |t: TestStore| async move {
    let env = Env::new(t).await;
    let seeded = stored_password_hash(&env, &env.ann.id).await;
    assert!(seeded.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{seeded}");
    let keys = env.data.load_keys().unwrap();
    let clock = std::sync::Arc::new(env.clock.clone());
    let app = custody_app::App::new(
        env.store.store.clone(),
        clock,
        keys,
        custody_app::AppConfig::default(),
    )
    .unwrap();
    let dora = custody_app::people::NewPerson {
        org: env.org.clone(),
        email: "dora@harbour.example".into(),
        name: "Dora".into(),
        role: Role::Resident,
        site: Some(env.site.clone()),
        carrier: None,
        password: Some(Zeroizing::new(PASSWORD.into())),
        reason: None,
    };
    let dora = app.create_person(&Caller::Operator, dora).await.unwrap();
    let stored = stored_password_hash(&env, &dora.id).await;
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
});
