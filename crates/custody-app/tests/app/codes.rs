//! Pickup codes sent again: only to the recipient, the old code retired, within caps that keep
//! anyone from flooding a mailbox. On both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::parcels::PickupOutcome;
use custody_core::ParcelId;
use custody_core::time::{hours, minutes};
use custody_proto::device::DoorReading;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;

/// Who the last message about `parcel` went to.
async fn last_recipient(env: &Env, parcel: &ParcelId) -> String {
    let id = parcel.clone();
    let rows = env
        .app
        .store()
        .read(move |tx| async move { tx.messages_for_parcel(&id).await }.boxed())
        .await
        .unwrap();
    env.app.open_message(&rows.last().cloned().unwrap().into()).unwrap().to
}

backends!(
    a_resent_code_replaces_the_old_one_and_goes_to_the_recipient,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let (parcel, first) = env.delivered("ann@harbour.example").await;
        // Ann lost the message and asks again: a new code; the old one no longer opens.
        env.clock.advance(minutes(1));
        env.app.resend_code(&Env::as_person(&env.ann), &parcel).await.unwrap();
        let second = env.code_sent_for(&parcel).await;
        assert_ne!(first, second);
        assert!(matches!(
            env.app.redeem_code(&env.device, &first).await.unwrap(),
            PickupOutcome::Refused
        ));
        // The admin asks on her behalf: the code still goes to Ann, never to the admin.
        env.clock.advance(minutes(1));
        env.app.resend_code(&env.stepped_up(&env.admin), &parcel).await.unwrap();
        assert_eq!(last_recipient(&env, &parcel).await, "ann@harbour.example");
        let third = env.code_sent_for(&parcel).await;
        // Bob, the carrier and the auditor cannot have it sent again.
        let bob = env.app.resend_code(&Env::as_person(&env.bob), &parcel).await;
        assert_eq!(bob.unwrap_err().code(), "not_found");
        let carrier = env.app.resend_code(&env.carrier().await, &parcel).await;
        assert_eq!(carrier.unwrap_err().code(), "not_found");
        let auditor = env.app.resend_code(&env.stepped_up(&env.auditor), &parcel).await;
        assert_eq!(auditor.unwrap_err().code(), "not_found");
        assert!(matches!(
            env.app.redeem_code(&env.device, &third).await.unwrap(),
            PickupOutcome::Accepted { .. }
        ));
        // Collected: no code left to send.
        let after = env.app.resend_code(&Env::as_person(&env.ann), &parcel).await;
        assert_eq!(after.unwrap_err().code(), "parcel_state");
    }
);

backends!(resends_are_capped_per_parcel_and_per_recipient, |t: TestStore| async move {
    let env = Env::new(t).await;
    let ann = Env::as_person(&env.ann);
    let mut parcels = Vec::new();
    for _ in 0..4 {
        parcels.push(env.delivered("ann@harbour.example").await.0);
    }
    // Three a day for one parcel, whoever asks…
    for _ in 0..3 {
        env.app.resend_code(&ann, &parcels[0]).await.unwrap();
    }
    let fourth = env.app.resend_code(&env.stepped_up(&env.admin), &parcels[0]).await;
    assert_eq!(fourth.unwrap_err().code(), "throttled");
    // …and ten a day for one recipient, whatever the parcel (the refused fourth counted too).
    for parcel in &parcels[1..3] {
        for _ in 0..3 {
            env.app.resend_code(&ann, parcel).await.unwrap();
        }
    }
    let over = env.app.resend_code(&ann, &parcels[3]).await;
    assert_eq!(over.unwrap_err().code(), "throttled", "ten for Ann today");
    // A day later she may ask again.
    env.clock.advance(hours(24));
    env.app.resend_code(&ann, &parcels[3]).await.unwrap();
});

/// The recipient opens door `n`, takes the parcel and shuts it.
async fn take_out(env: &Env, n: u16) {
    env.app.door_report(&env.device, n, DoorReading::Open).await.unwrap();
    env.app.door_report(&env.device, n, DoorReading::Closed).await.unwrap();
}

/// The compartment a code opened.
fn opened(outcome: &PickupOutcome) -> u16 {
    match *outcome {
        PickupOutcome::Accepted { compartment, .. } => compartment.get(),
        PickupOutcome::Refused | PickupOutcome::Paused => panic!("refused"),
    }
}

backends!(
    a_code_reopens_its_emptied_compartment_once_just_after_pickup,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let (parcel, code) = env.delivered("ann@harbour.example").await;
        let n = opened(&env.app.redeem_code(&env.device, &code).await.unwrap());
        // Typed again at once, before the door has shut: refused, so a code opens once however
        // many times it is typed.
        let again = env.app.redeem_code(&env.device, &code).await.unwrap();
        assert!(matches!(again, PickupOutcome::Refused));
        take_out(&env, n).await;
        // Ann forgot her umbrella: the same code, a minute later, opens the same door once more.
        env.clock.advance(minutes(1));
        assert_eq!(opened(&env.app.redeem_code(&env.device, &code).await.unwrap()), n);
        let history =
            env.app.parcel_history(&custody_app::Caller::Operator, &parcel).await.unwrap().1;
        let reopened = history
            .iter()
            .filter(|e| e.0.event.action == custody_core::audit::AuditAction::PickupReopen)
            .count();
        assert_eq!(reopened, 1, "its own audited event");
        // Once only.
        assert!(matches!(
            env.app.redeem_code(&env.device, &code).await.unwrap(),
            PickupOutcome::Refused
        ));

        // Too late: two minutes after pickup the code opens nothing.
        let (_, late) = env.delivered("ann@harbour.example").await;
        take_out(&env, opened(&env.app.redeem_code(&env.device, &late).await.unwrap())).await;
        env.clock.advance(minutes(2));
        assert!(matches!(
            env.app.redeem_code(&env.device, &late).await.unwrap(),
            PickupOutcome::Refused
        ));

        // The compartment took Bob's parcel meanwhile: Ann's code never opens it again.
        let (_, anns) = env.delivered("ann@harbour.example").await;
        let freed = opened(&env.app.redeem_code(&env.device, &anns).await.unwrap());
        take_out(&env, freed).await;
        let mut filled = None;
        for _ in 0..6 {
            let (bobs, _) = env.delivered("bob@harbour.example").await;
            let p = env.app.parcel(&custody_app::Caller::Operator, &bobs).await.unwrap();
            let c = env.app.store().read({
                let id = p.compartment.clone().unwrap();
                move |tx| async move { tx.compartment(&id).await }.boxed()
            });
            if c.await.unwrap().unwrap().number.get() == freed {
                filled = Some(bobs);
                break;
            }
        }
        assert!(filled.is_some(), "a later deposit took the freed compartment");
        assert!(matches!(
            env.app.redeem_code(&env.device, &anns).await.unwrap(),
            PickupOutcome::Refused
        ));
    }
);
