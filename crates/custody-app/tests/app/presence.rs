//! Opening from the app: only the recipient, only with the code the bank's kiosk shows now,
//! once, and throttled per person. On both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::parcels::PickupOutcome;
use custody_app::{AppError, Caller};
use custody_core::audit::{AuditAction, Outcome};
use custody_core::throttle::APP_OPEN;
use custody_testkit::{Env, TestStore, backends};

/// Outcome and reason of the site's latest pickup attempt.
async fn last_attempt(env: &Env) -> (Outcome, String) {
    let log = env.site_log(50).await;
    let row = log.iter().find(|r| r.event.action == AuditAction::PickupAttempt).unwrap();
    (row.event.outcome, row.event.reason.clone().unwrap_or_default())
}

/// A six-digit code that is not `code`.
fn other_than(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

backends!(
    the_recipient_opens_from_the_app_with_the_code_on_the_screen,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let (parcel, typed) = env.delivered("ann@harbour.example").await;
        let ann = Env::as_person(&env.ann);
        let opening =
            env.app.open_from_app(&ann, &parcel, &env.presence_code(&env.bank)).await.unwrap();
        let p = env.app.parcel(&Caller::Operator, &parcel).await.unwrap();
        assert_eq!(p.state, custody_core::parcel::ParcelState::PickedUp);
        assert_eq!(opening.command.command.compartment, opening.compartment.get());
        assert_eq!(last_attempt(&env).await, (Outcome::Success, "app_accepted".into()));
        // One credential: the typed code is spent with it, and the app cannot open twice.
        assert!(matches!(
            env.app.redeem_code(&env.device, &typed).await.unwrap(),
            PickupOutcome::Refused
        ));
        let again = env.app.open_from_app(&ann, &parcel, &env.presence_code(&env.bank)).await;
        assert_eq!(again.unwrap_err().code(), "parcel_state");
    }
);

backends!(a_code_not_read_from_the_screen_just_now_opens_nothing, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, _) = env.delivered("ann@harbour.example").await;
    let ann = Env::as_person(&env.ann);
    let now = env.presence_code(&env.bank);
    let wrong = env.app.open_from_app(&ann, &parcel, &other_than(&now)).await.unwrap_err();
    assert_eq!(wrong.code(), "presence_code");
    assert_eq!(last_attempt(&env).await, (Outcome::Failure, "app_presence_wrong".into()));
    for junk in ["", "12345", "1234567", "abcdef"] {
        let err = env.app.open_from_app(&ann, &parcel, junk).await.unwrap_err();
        assert_eq!(err.code(), "presence_code", "{junk:?}");
    }
    // Those were five wrong codes: the next try waits for the window to pass.
    env.clock.advance(APP_OPEN.window);
    // Another bank's screen.
    let admin = env.stepped_up(&env.admin);
    let garage = env.app.create_bank(&admin, &env.site, "Garage").await.unwrap();
    let (now, elsewhere) = (env.presence_code(&env.bank), env.presence_code(&garage.id));
    if elsewhere != now {
        let err = env.app.open_from_app(&ann, &parcel, &elsewhere).await.unwrap_err();
        assert_eq!(err.code(), "presence_code");
    }
    // Ninety seconds later, a code read then is stale; one read half a minute ago still works
    // (the screen may have changed while she typed).
    let read = env.presence_code(&env.bank);
    env.clock.advance(std::time::Duration::from_secs(90));
    let stale = env.app.open_from_app(&ann, &parcel, &read).await;
    assert_eq!(stale.unwrap_err().code(), "presence_code");
    let read = env.presence_code(&env.bank);
    env.clock.advance(std::time::Duration::from_secs(30));
    env.app.open_from_app(&ann, &parcel, &read).await.unwrap();
});

backends!(nobody_but_the_recipient_opens_from_the_app, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, _) = env.delivered("ann@harbour.example").await;
    let code = env.presence_code(&env.bank);
    for other in [Env::as_person(&env.bob), env.stepped_up(&env.admin), env.carrier().await] {
        let err = env.app.open_from_app(&other, &parcel, &code).await.unwrap_err();
        assert!(matches!(err, AppError::NotFound), "{err:?}");
    }
    let p = env.app.parcel(&Caller::Operator, &parcel).await.unwrap();
    assert_eq!(p.state, custody_core::parcel::ParcelState::Notified, "nothing opened");
});

backends!(wrong_presence_codes_are_throttled_per_person, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, _) = env.delivered("ann@harbour.example").await;
    let ann = Env::as_person(&env.ann);
    let wrong = other_than(&env.presence_code(&env.bank));
    for _ in 0..APP_OPEN.max_failures {
        let err = env.app.open_from_app(&ann, &parcel, &wrong).await.unwrap_err();
        assert_eq!(err.code(), "presence_code");
    }
    // Spent: even the right code waits for the window to pass.
    let right = env.presence_code(&env.bank);
    let err = env.app.open_from_app(&ann, &parcel, &right).await.unwrap_err();
    assert!(matches!(err, AppError::Throttled), "{err:?}");
    assert_eq!(last_attempt(&env).await, (Outcome::Denied, "app_throttled:app_open".into()));
    env.clock.advance(APP_OPEN.window);
    env.app.open_from_app(&ann, &parcel, &env.presence_code(&env.bank)).await.unwrap();
});
