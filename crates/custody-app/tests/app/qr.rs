//! QR pickup tokens: signed by the server, bound to bank, compartment, parcel and code, single
//! use, short-lived in the app, and refused tampered, replayed, expired or at another bank.
//! On both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::parcels::PickupOutcome;
use custody_app::qr::APP_TOKEN_LIFETIME;
use custody_app::{AppError, Caller};
use custody_core::audit::{AuditAction, Outcome};
use custody_core::time::minutes;
use custody_core::token::{QR_TOKEN_PREFIX, ScannedToken};
use custody_testkit::env::enrol_device;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;

fn opened(outcome: &PickupOutcome) -> u16 {
    match *outcome {
        PickupOutcome::Accepted { compartment, .. } => compartment.get(),
        PickupOutcome::Refused | PickupOutcome::Paused => panic!("refused"),
    }
}

fn refused(outcome: &PickupOutcome) -> bool {
    matches!(outcome, PickupOutcome::Refused)
}

/// Outcome and reason of the site's pickup attempts, oldest first.
async fn attempts(env: &Env) -> Vec<(Outcome, String)> {
    let mut out: Vec<_> = env
        .site_log(500)
        .await
        .iter()
        .filter(|r| r.event.action == AuditAction::PickupAttempt)
        .map(|r| (r.event.outcome, r.event.reason.clone().unwrap_or_default()))
        .collect();
    out.reverse();
    out
}

async fn last_attempt(env: &Env) -> String {
    attempts(env).await.pop().unwrap().1
}

backends!(the_qr_code_in_the_message_opens_its_compartment_once, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, _) = env.delivered("ann@harbour.example").await;
    let qr = env.qr_sent_for(&parcel).await;
    let token = ScannedToken::decode(&qr).unwrap().token;
    assert_eq!((token.bank.clone(), token.parcel.clone()), (env.bank.clone(), parcel.clone()));
    let p = env.app.parcel(&Caller::Operator, &parcel).await.unwrap();
    assert_eq!(token.expires_at, p.expires_at.unwrap(), "the message's token lasts the window");

    let n = opened(&env.app.redeem_qr(&env.device, &qr).await.unwrap());
    assert_eq!(n, token.compartment.get());
    assert_eq!(last_attempt(&env).await, "qr_accepted");
    let p = env.app.parcel(&Caller::Operator, &parcel).await.unwrap();
    assert_eq!(p.state, custody_core::parcel::ParcelState::PickedUp);
    // The same token again, at once or after the door shut: a replay.
    assert!(refused(&env.app.redeem_qr(&env.device, &qr).await.unwrap()));
    assert_eq!(last_attempt(&env).await, "qr_used");
    env.app.door_report(&env.device, n, custody_proto::device::DoorReading::Open).await.unwrap();
    env.app.door_report(&env.device, n, custody_proto::device::DoorReading::Closed).await.unwrap();
    assert!(refused(&env.app.redeem_qr(&env.device, &qr).await.unwrap()), "no grace re-open");
});

backends!(tampered_and_foreign_tokens_are_refused, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, _) = env.delivered("ann@harbour.example").await;
    let qr = env.qr_sent_for(&parcel).await;

    // Every single-character change to the token is refused, and nothing is picked up.
    let body = &qr[QR_TOKEN_PREFIX.len()..];
    for at in (0..body.len()).step_by(7) {
        let mut chars: Vec<char> = body.chars().collect();
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        let tampered = format!("{QR_TOKEN_PREFIX}{}", chars.into_iter().collect::<String>());
        assert!(refused(&env.app.redeem_qr(&env.device, &tampered).await.unwrap()), "{at}");
        // Spend no more than the kiosk allows: tampered scans count as failures.
        env.clock.advance(minutes(5));
    }
    let reasons: Vec<String> = attempts(&env).await.into_iter().map(|a| a.1).collect();
    assert!(reasons.iter().all(|r| r == "qr_bad_signature" || r == "qr_malformed"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "qr_bad_signature"));
    for junk in ["", "hello", "https://example.com/", &format!("{qr}A")] {
        assert!(refused(&env.app.redeem_qr(&env.device, junk).await.unwrap()));
        assert_eq!(last_attempt(&env).await, "qr_malformed");
        env.clock.advance(minutes(5));
    }

    // A genuine token, held to another bank's scanner.
    let admin = env.stepped_up(&env.admin);
    let other = env.app.create_bank(&admin, &env.site, "Garage").await.unwrap();
    let other_kiosk = enrol_device(&env.app, &other.id).await;
    assert!(refused(&env.app.redeem_qr(&other_kiosk, &qr).await.unwrap()));
    assert_eq!(last_attempt(&env).await, "qr_other_bank");
    // Only a kiosk redeems tokens.
    assert!(matches!(
        env.app.redeem_qr(&Env::as_person(&env.ann), &qr).await,
        Err(AppError::Forbidden)
    ));

    // None of it touched the parcel: the token still opens at its own bank.
    opened(&env.app.redeem_qr(&env.device, &qr).await.unwrap());
});

backends!(a_token_dies_with_its_code, |t: TestStore| async move {
    let env = Env::new(t).await;
    let ann = Env::as_person(&env.ann);
    // Sent again: the old code and its token are retired together.
    let (parcel, code) = env.delivered("ann@harbour.example").await;
    let first = env.qr_sent_for(&parcel).await;
    // Messages are told apart by when they were queued.
    env.clock.advance(minutes(1));
    env.app.resend_code(&ann, &parcel).await.unwrap();
    assert!(refused(&env.app.redeem_qr(&env.device, &first).await.unwrap()));
    assert_eq!(last_attempt(&env).await, "qr_revoked");
    assert!(refused(&env.app.redeem_code(&env.device, &code).await.unwrap()));
    let second = env.qr_sent_for(&parcel).await;
    assert_ne!(first, second);

    // Picked up with the typed code: the token is spent too.
    let code = env.code_sent_for(&parcel).await;
    opened(&env.app.redeem_code(&env.device, &code).await.unwrap());
    assert!(refused(&env.app.redeem_qr(&env.device, &second).await.unwrap()));
    assert_eq!(last_attempt(&env).await, "qr_used");
});

backends!(the_app_shows_a_fresh_token_to_the_recipient_only, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, _) = env.delivered("ann@harbour.example").await;
    let ann = Env::as_person(&env.ann);
    let shown = env.app.pickup_qr(&ann, &parcel).await.unwrap();
    assert_eq!(shown.expires_at, env.app.now().plus(APP_TOKEN_LIFETIME));
    assert_eq!(ScannedToken::decode(&shown.text).unwrap().token.expires_at, shown.expires_at);

    // Not for another resident, not for staff, not for the carrier: a parcel that is not
    // theirs has no token to give.
    for other in [Env::as_person(&env.bob), env.stepped_up(&env.admin), env.carrier().await] {
        let err = env.app.pickup_qr(&other, &parcel).await.unwrap_err();
        assert!(matches!(err, AppError::NotFound), "{err:?}");
    }

    // Short-lived: after ten minutes the shown token is refused; a fresh one works.
    env.clock.advance(APP_TOKEN_LIFETIME);
    assert!(refused(&env.app.redeem_qr(&env.device, &shown.text).await.unwrap()));
    assert_eq!(last_attempt(&env).await, "qr_expired");
    let fresh = env.app.pickup_qr(&ann, &parcel).await.unwrap();
    opened(&env.app.redeem_qr(&env.device, &fresh.text).await.unwrap());

    // Picked up: no token any more.
    let err = env.app.pickup_qr(&ann, &parcel).await.unwrap_err();
    assert_eq!(err.code(), "parcel_state");
});

backends!(fifty_concurrent_scans_of_one_token_open_once, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, _) = env.delivered("ann@harbour.example").await;
    let qr = env.qr_sent_for(&parcel).await;
    let scans = (0..50).map(|_| {
        let (app, device, qr) = (env.app.clone(), env.device.clone(), qr.clone());
        tokio::spawn(async move { app.redeem_qr(&device, &qr).await })
    });
    let mut opens = 0;
    for scan in futures_util::future::join_all(scans).await {
        // Under contention a scan may lose its unit of work; it must never open twice.
        if let Ok(Ok(PickupOutcome::Accepted { .. })) = scan {
            opens += 1;
        }
    }
    assert_eq!(opens, 1);
});

backends!(bad_scans_spend_the_kiosk_budget_not_the_banks, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, code) = env.delivered("ann@harbour.example").await;
    let qr = env.qr_sent_for(&parcel).await;
    for _ in 0..custody_core::throttle::KIOSK_PICKUP.max_failures {
        assert!(refused(&env.app.redeem_qr(&env.device, "CQ1:NOTATOKEN").await.unwrap()));
    }
    // The kiosk is paused for every credential, a genuine token included...
    assert!(refused(&env.app.redeem_qr(&env.device, &qr).await.unwrap()));
    assert_eq!(last_attempt(&env).await, "qr_throttled:kiosk");
    // ...but the bank's budget for typed codes was not touched: another kiosk of the bank
    // takes the code at once.
    let second_kiosk = enrol_device(&env.app, &env.bank).await;
    opened(&env.app.redeem_code(&second_kiosk, &code).await.unwrap());
    let now = env.app.now();
    let key = format!("pickup:{}:{}", custody_core::throttle::BANK_PICKUP.name, env.bank);
    let window = custody_core::throttle::BANK_PICKUP.window_start(now);
    let spent = env
        .app
        .store()
        .read(move |tx| async move { tx.failures(&key, window).await }.boxed())
        .await
        .unwrap();
    assert_eq!(spent, 0, "scans spend nothing of the bank's budget");
});

backends!(a_qr_code_opens_while_typed_codes_are_paused, |t: TestStore| async move {
    // Someone spends the bank's hourly budget for typed codes, from kiosk to kiosk.
    let env = Env::new(t).await;
    let (parcel, code) = env.delivered("ann@harbour.example").await;
    env.spend_bank_hour().await;
    // Ann's typed code meets "paused"; her QR code opens.
    assert!(matches!(
        env.app.redeem_code(&env.device, &code).await.unwrap(),
        PickupOutcome::Paused
    ));
    let qr = env.qr_sent_for(&parcel).await;
    opened(&env.app.redeem_qr(&env.device, &qr).await.unwrap());
});
