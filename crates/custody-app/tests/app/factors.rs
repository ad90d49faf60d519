//! Second factors against the real use cases, on both backends: what a password alone
//! reaches, codes that work once, throttling, step-up, session rotation and listing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::time::Duration;

use custody_app::factors::{Proof, Proven};
use custody_app::people::Person;
use custody_app::sessions::{Client, NewSession, SessionInfo};
use custody_app::{App, AppError};
use custody_core::audit::{AuditAction, Outcome};
use custody_core::person::Factor;
use custody_core::time::minutes;
use custody_testkit::env::PASSWORD;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

fn client() -> Client {
    Client::new("203.0.113.9", "factors-test")
}

/// A password-only session of `person`, and what the app makes of it.
async fn password_only(env: &Env, person: &Person) -> (NewSession, SessionInfo) {
    let session = env
        .app
        .login(person.email.as_str(), Zeroizing::new(PASSWORD.into()), &client())
        .await
        .unwrap();
    let info = env.app.session(&session.token).await.unwrap();
    (session, info)
}

async fn prove(
    app: &App,
    session: &NewSession,
    info: &SessionInfo,
    proof: Proof,
) -> Result<Proven, AppError> {
    app.prove_second_factor(&session.token, info, proof, &client()).await
}

fn totp(code: &str) -> Proof {
    Proof::Totp(Zeroizing::new(code.to_owned()))
}

/// Audit entries of `action` with `outcome`, their reasons.
async fn audited(env: &Env, action: AuditAction, outcome: Outcome) -> Vec<String> {
    let rows =
        env.app.store().read(|tx| async move { tx.audit_from(0, 100_000).await }.boxed()).await;
    rows.unwrap()
        .into_iter()
        .filter(|r| r.event.action == action && r.event.outcome == outcome)
        .map(|r| r.event.reason.unwrap_or_default())
        .collect()
}

backends!(a_password_alone_leaves_an_admin_at_the_second_factor_step, |t: TestStore| async move {
    let env = Env::new(t).await;
    for person in [&env.admin, &env.super_admin] {
        let (session, info) = password_only(&env, person).await;
        assert!(session.needs_second_factor && info.needs_second_factor(), "{}", person.email);
    }
    for person in [&env.ann, &env.courier, &env.auditor] {
        let (session, info) = password_only(&env, person).await;
        assert!(!session.needs_second_factor && !info.needs_second_factor(), "{}", person.email);
    }
});

backends!(proving_a_factor_rotates_the_session, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (session, info) = password_only(&env, &env.admin).await;
    let proven = prove(&env.app, &session, &info, totp(&env.totp_code(&env.admin))).await.unwrap();
    // The password-only token is dead; the new one carries the factor, same session id.
    assert!(env.app.session(&session.token).await.is_err());
    let after = env.app.session(&proven.session.token).await.unwrap();
    assert_eq!(after.id, info.id);
    assert_eq!(after.factor.map(|(f, _)| f), Some(Factor::Totp));
    assert!(!after.needs_second_factor());
    assert_ne!(env.app.csrf_token(&session.token), env.app.csrf_token(&proven.session.token));
    assert_eq!(
        audited(&env, AuditAction::FactorProve, Outcome::Success).await.last().unwrap(),
        "totp"
    );
});

backends!(a_code_works_once_and_no_older_code_works_after_it, |t: TestStore| async move {
    let env = Env::new(t).await;
    let code = env.totp_code(&env.admin);
    let (s1, i1) = password_only(&env, &env.admin).await;
    prove(&env.app, &s1, &i1, totp(&code)).await.unwrap();
    // Replayed within its step, from another session: refused.
    let (s2, i2) = password_only(&env, &env.admin).await;
    let err = prove(&env.app, &s2, &i2, totp(&code)).await.unwrap_err();
    assert_eq!(err.code(), "authentication_failed");
    // Thirty seconds on, the used code is still within a step of now, and still refused.
    env.clock.advance(Duration::from_secs(30));
    let err = prove(&env.app, &s2, &i2, totp(&code)).await.unwrap_err();
    assert_eq!(err.code(), "authentication_failed", "a used code stays used");
    let fresh = env.totp_code(&env.admin);
    prove(&env.app, &s2, &i2, totp(&fresh)).await.unwrap();
    let failures = audited(&env, AuditAction::FactorProve, Outcome::Failure).await;
    assert_eq!(failures, ["bad_code:totp", "bad_code:totp"]);
});

backends!(of_two_requests_with_one_code_exactly_one_wins, |t: TestStore| async move {
    let env = Env::new(t).await;
    let code = env.totp_code(&env.admin);
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(password_only(&env, &env.admin).await);
    }
    let attempts = sessions.iter().map(|(s, i)| prove(&env.app, s, i, totp(&code)));
    let results = futures_util::future::join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
});

backends!(second_factor_attempts_are_throttled_per_account, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (session, info) = password_only(&env, &env.admin).await;
    let right = env.totp_code(&env.admin);
    let wrong = if right.as_str() == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        let err = prove(&env.app, &session, &info, totp(wrong)).await.unwrap_err();
        assert_eq!(err.code(), "authentication_failed");
    }
    // The budget is spent: even the right code is not checked.
    let err = prove(&env.app, &session, &info, totp(&right)).await.unwrap_err();
    assert_eq!(err.code(), "throttled");
    assert!(
        audited(&env, AuditAction::FactorProve, Outcome::Denied)
            .await
            .contains(&"throttled:factor".to_owned())
    );
    // Other accounts are unaffected.
    let (s, i) = password_only(&env, &env.super_admin).await;
    prove(&env.app, &s, &i, totp(&env.totp_code(&env.super_admin))).await.unwrap();
    // Fifteen minutes on, the admin may try again.
    env.clock.advance(minutes(15));
    let (session, info) = password_only(&env, &env.admin).await;
    prove(&env.app, &session, &info, totp(&env.totp_code(&env.admin))).await.unwrap();
    // Over a day at most twenty failures are checked, whatever the pace.
    let mut checked = 0;
    for _ in 0..8 {
        for _ in 0..5 {
            let (session, info) = password_only(&env, &env.admin).await;
            if prove(&env.app, &session, &info, totp(wrong)).await.unwrap_err().code()
                == "authentication_failed"
            {
                checked += 1;
            }
        }
        env.clock.advance(minutes(15));
    }
    // The five wrong codes of the first window count towards the day too.
    assert!(5 + checked <= 20, "{checked} more failures checked the same day");
    assert!(checked > 5, "the day allows more than one short window: {checked}");
});

backends!(changing_factors_needs_a_step_up, |t: TestStore| async move {
    let env = Env::new(t).await;
    // A password alone cannot swap in another authenticator for an admin who has one.
    let (_, pending) = password_only(&env, &env.admin).await;
    assert_eq!(env.app.begin_totp(&pending).await.unwrap_err().code(), "step_up_required");
    // Just signed in with the app: a step-up for five minutes.
    let token = env.sign_in(&env.admin).await;
    let info = env.app.session(&token).await.unwrap();
    assert!(env.app.begin_totp(&info).await.is_ok());
    let codes = env.app.issue_recovery_codes(&info).await.unwrap();
    assert_eq!(codes.len(), 10);
    env.clock.advance(minutes(6));
    let info = env.app.session(&token).await.unwrap();
    assert_eq!(env.app.begin_totp(&info).await.unwrap_err().code(), "step_up_required");
    assert_eq!(env.app.issue_recovery_codes(&info).await.unwrap_err().code(), "step_up_required");
    // Proving the factor again is the step-up.
    let proven = env
        .app
        .prove_second_factor(&token, &info, totp(&env.totp_code(&env.admin)), &client())
        .await
        .unwrap();
    let info = env.app.session(&proven.session.token).await.unwrap();
    assert!(env.app.issue_recovery_codes(&info).await.is_ok());
    // An admin's only app cannot be removed (it would leave the role without a factor).
    assert_eq!(env.app.remove_totp(&info).await.unwrap_err().code(), "last_factor");
});

backends!(recovery_codes_work_once_however_they_are_typed, |t: TestStore| async move {
    let env = Env::new(t).await;
    let token = env.sign_in(&env.admin).await;
    let info = env.app.session(&token).await.unwrap();
    let codes = env.app.issue_recovery_codes(&info).await.unwrap();
    let (session, pending) = password_only(&env, &env.admin).await;
    let typed = codes[0].to_lowercase().replace('-', " ");
    let proven =
        prove(&env.app, &session, &pending, Proof::RecoveryCode(Zeroizing::new(typed.clone())))
            .await
            .unwrap();
    let after = env.app.session(&proven.session.token).await.unwrap();
    assert_eq!(after.factor.map(|(f, _)| f), Some(Factor::RecoveryCode));
    assert_eq!(env.app.factors(&after).await.unwrap().recovery_codes_left, 9);
    let (session, pending) = password_only(&env, &env.admin).await;
    let again = prove(&env.app, &session, &pending, Proof::RecoveryCode(Zeroizing::new(typed)));
    assert_eq!(again.await.unwrap_err().code(), "authentication_failed");
    // Another person's code is no code of this person's.
    let (session, pending) = password_only(&env, &env.super_admin).await;
    let foreign = prove(&env.app, &session, &pending, Proof::RecoveryCode(codes[1].clone()));
    assert_eq!(foreign.await.unwrap_err().code(), "authentication_failed");
});

backends!(setting_up_an_app_expires_and_keeps_the_old_one_working, |t: TestStore| async move {
    let env = Env::new(t).await;
    let token = env.sign_in(&env.admin).await;
    let info = env.app.session(&token).await.unwrap();
    let enrolment = env.app.begin_totp(&info).await.unwrap();
    let seed = custody_crypto::totp::TotpSeed::from_bytes(
        &data_encoding::BASE32_NOPAD.decode(enrolment.secret.as_bytes()).unwrap(),
    )
    .unwrap();
    // Meanwhile the working app still signs in.
    let (session, pending) = password_only(&env, &env.admin).await;
    prove(&env.app, &session, &pending, totp(&env.totp_code(&env.admin))).await.unwrap();
    // Too late: the new app's code no longer confirms it.
    env.clock.advance(minutes(16));
    let token = env.sign_in(&env.admin).await;
    let info = env.app.session(&token).await.unwrap();
    let step = custody_crypto::totp::step_at(env.app.now().as_millis());
    let late = env.app.confirm_totp(&token, &info, &seed.code_at(step), &client()).await;
    assert_eq!(late.unwrap_err().code(), "enrolment_expired");
});

backends!(people_list_and_end_their_own_sessions_only, |t: TestStore| async move {
    let env = Env::new(t).await;
    let here = env.sign_in(&env.admin).await;
    let there = env.sign_in(&env.admin).await;
    let info = env.app.session(&here).await.unwrap();
    let listed = env.app.sessions_of(&info).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|s| s.source == "192.0.2.250" && s.factor.is_some()));
    // Someone else's session id is not found, and stays.
    let ann = env.sign_in(&env.ann).await;
    let ann_info = env.app.session(&ann).await.unwrap();
    assert_eq!(env.app.end_session(&info, &ann_info.id).await.unwrap_err().code(), "not_found");
    assert!(env.app.session(&ann).await.is_ok());
    // "Sign out everywhere else" keeps this one.
    assert_eq!(env.app.end_other_sessions(&info, &here).await.unwrap(), 1);
    assert!(env.app.session(&there).await.is_err());
    assert!(env.app.session(&here).await.is_ok());
    assert_eq!(audited(&env, AuditAction::SessionEnd, Outcome::Success).await, ["all_others"]);
});

backends!(a_super_admin_session_idles_out_sooner, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = env.sign_in(&env.admin).await;
    let root = env.sign_in(&env.super_admin).await;
    env.clock.advance(minutes(16));
    assert!(env.app.session(&admin).await.is_ok(), "30 minutes for admins");
    assert!(env.app.session(&root).await.is_err(), "15 minutes for super-admins");
});

backends!(
    an_app_guessed_at_a_hundred_times_locks_but_never_the_person,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let token = env.sign_in(&env.admin).await;
        let info = env.app.session(&token).await.unwrap();
        let codes = env.app.issue_recovery_codes(&info).await.unwrap();
        // Someone with the password guesses, as fast as the budgets let them (days of it).
        let mut guessed = 0;
        while guessed < custody_core::throttle::TOTP_CONSECUTIVE_FAILURES {
            let (session, pending) = password_only(&env, &env.admin).await;
            let right = env.totp_code(&env.admin);
            let wrong = if right.as_str() == "999999" { "999998" } else { "999999" };
            match prove(&env.app, &session, &pending, totp(wrong)).await.unwrap_err().code() {
                "authentication_failed" => guessed += 1,
                "throttled" => env.clock.advance(minutes(15)),
                other => panic!("{other}"),
            }
        }
        // Now even the right code is not checked…
        env.clock.advance(custody_core::time::days(1));
        let (session, pending) = password_only(&env, &env.admin).await;
        let locked = prove(&env.app, &session, &pending, totp(&env.totp_code(&env.admin))).await;
        assert_eq!(locked.unwrap_err().code(), "totp_locked");
        assert!(
            audited(&env, AuditAction::FactorProve, Outcome::Denied)
                .await
                .contains(&"totp_locked".to_owned())
        );
        // …but a recovery code signs the admin in, and setting the app up again unlocks it.
        let proven = prove(&env.app, &session, &pending, Proof::RecoveryCode(codes[0].clone()))
            .await
            .unwrap();
        let info = env.app.session(&proven.session.token).await.unwrap();
        let enrolment = env.app.begin_totp(&info).await.unwrap();
        let seed = custody_crypto::totp::TotpSeed::from_bytes(
            &data_encoding::BASE32_NOPAD.decode(enrolment.secret.as_bytes()).unwrap(),
        )
        .unwrap();
        let step = custody_crypto::totp::step_at(env.app.now().as_millis());
        env.app
            .confirm_totp(&proven.session.token, &info, &seed.code_at(step), &client())
            .await
            .unwrap();
        let (session, pending) = password_only(&env, &env.admin).await;
        env.clock.advance(Duration::from_secs(30));
        let next = seed.code_at(custody_crypto::totp::step_at(env.app.now().as_millis()));
        prove(&env.app, &session, &pending, totp(&next)).await.unwrap();
    }
);

backends!(a_first_factor_needs_a_fresh_sign_in, |t: TestStore| async move {
    let env = Env::new(t).await;
    let token = env.sign_in(&env.ann).await;
    env.clock.advance(minutes(6));
    let info_later = env.app.session(&token).await.unwrap();
    assert_eq!(env.app.begin_totp(&info_later).await.unwrap_err().code(), "sign_in_again");
    // Within minutes of the password, a resident may set up an app too.
    let fresh = env.sign_in(&env.ann).await;
    let info = env.app.session(&fresh).await.unwrap();
    assert!(env.app.begin_totp(&info).await.is_ok());
});
