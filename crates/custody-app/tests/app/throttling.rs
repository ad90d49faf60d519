//! Sign-in throttling against the real use cases, on both backends: budgets per account
//! (growing waits), per source address and across the installation, and device cookies that
//! keep an attacker from locking a person out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::Caller;
use custody_app::factors::Proof;
use custody_app::people::Person;
use custody_app::sessions::Client;
use custody_core::throttle::{GLOBAL_LOGIN, ThrottleRule};
use custody_core::time::{hours, minutes};
use custody_testkit::env::PASSWORD;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

/// Signs `person` in completely from `client` and returns the device cookie the browser gets.
async fn sign_in_fully(env: &Env, person: &Person, client: &Client) -> Zeroizing<String> {
    let app = &env.app;
    let session =
        app.login(person.email.as_str(), Zeroizing::new(PASSWORD.into()), client).await.unwrap();
    if let Some(cookie) = session.device_cookie {
        return cookie;
    }
    let info = app.session(&session.token).await.unwrap();
    let proof = Proof::Totp(env.totp_code(person));
    let proven = app.prove_second_factor(&session.token, &info, proof, client).await.unwrap();
    proven.session.device_cookie.unwrap()
}

async fn attempt(env: &Env, person: &Person, password: &str, client: &Client) -> &'static str {
    match env.app.login(person.email.as_str(), Zeroizing::new(password.into()), client).await {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

fn attacker(n: usize) -> Client {
    Client::new(format!("198.51.100.{}", n % 250), "attacker")
}

backends!(an_attacker_cannot_lock_a_person_out_of_their_own_browser, |t: TestStore| async move {
    let env = Env::new(t).await;
    let laptop = Client::new("192.0.2.10", "laptop");
    let device = sign_in_fully(&env, &env.admin, &laptop).await;
    let laptop = laptop.with_device(Some(&device));
    // Someone fails on purpose from many addresses until the account's budget is spent.
    for n in 0..10 {
        assert_eq!(
            attempt(&env, &env.admin, "not the password", &attacker(n)).await,
            "authentication_failed"
        );
    }
    assert_eq!(attempt(&env, &env.admin, PASSWORD, &attacker(11)).await, "throttled");
    // A browser that never signed in to the account is held too…
    let new_phone = Client::new("192.0.2.11", "phone");
    assert_eq!(attempt(&env, &env.admin, PASSWORD, &new_phone).await, "throttled");
    // …but the admin's own browser is not.
    assert_eq!(attempt(&env, &env.admin, PASSWORD, &laptop).await, "ok");
    // Another person's device cookie, or a forged one, buys nothing.
    let ann_device = sign_in_fully(&env, &env.ann, &Client::new("192.0.2.12", "ann")).await;
    let borrowed = new_phone.clone().with_device(Some(&ann_device));
    assert_eq!(attempt(&env, &env.admin, PASSWORD, &borrowed).await, "throttled");
    let forged = format!("{}.{}", env.admin.id, "AAAAAAAAAAAAAAAAAAAAAA.AAAA");
    let forged = new_phone.with_device(Some(&forged));
    assert_eq!(attempt(&env, &env.admin, PASSWORD, &forged).await, "throttled");
    // The device's own budget still bounds guessing from that browser.
    for _ in 0..10 {
        assert_eq!(
            attempt(&env, &env.admin, "wrong again", &laptop).await,
            "authentication_failed"
        );
    }
    assert_eq!(attempt(&env, &env.admin, PASSWORD, &laptop).await, "throttled");
});

backends!(waits_grow_with_failures_on_one_account, |t: TestStore| async move {
    let env = Env::new(t).await;
    let mut n = 0;
    let mut checked = 0;
    // Four quarter-hours of failing as fast as allowed: ten checked in each, until the day's
    // budget (which refused attempts spend too) holds them all.
    for _ in 0..4 {
        for _ in 0..11 {
            n += 1;
            if attempt(&env, &env.ann, "guess", &attacker(n)).await == "authentication_failed" {
                checked += 1;
            }
        }
        env.clock.advance(minutes(15));
    }
    assert!(
        checked > 20 && checked <= 30,
        "{checked} checked: ten a quarter-hour, at most thirty a day"
    );
    assert_eq!(attempt(&env, &env.ann, PASSWORD, &attacker(n + 1)).await, "throttled");
    env.clock.advance(hours(24));
    assert_eq!(attempt(&env, &env.ann, PASSWORD, &attacker(n + 2)).await, "ok");
});

backends!(spraying_across_accounts_meets_the_installation_budget, |t: TestStore| async move {
    let env = Env::new(t).await;
    let laptop = Client::new("192.0.2.20", "laptop");
    let device = sign_in_fully(&env, &env.ann, &laptop).await;
    // A spray across many accounts and addresses has spent the installation's budget (filled
    // in directly: checking a thousand passwords would only make the test slow).
    let rule: ThrottleRule = GLOBAL_LOGIN;
    let window = rule.window_start(env.app.now());
    env.app
        .store()
        .write(move |tx| {
            async move {
                for _ in 0..rule.max_failures {
                    tx.add_failure("login:global:all", window).await?;
                }
                Ok::<_, custody_store::StoreError>(())
            }
            .boxed()
        })
        .await
        .unwrap();
    assert_eq!(attempt(&env, &env.bob, PASSWORD, &attacker(1)).await, "throttled");
    // A browser that signed in before is not held by other people's failures.
    assert_eq!(attempt(&env, &env.ann, PASSWORD, &laptop.with_device(Some(&device))).await, "ok");
});

// No user enumeration by response time (ASVS 6.3.8): every failed sign-in checks one password
// with Argon2, whether the account exists, is disabled, or the password is wrong, so each costs
// the same work. The work is counted here; `custody bench sign-in` measures the times
// (docs/BENCHMARKS.md), since a test asserts nothing on the wall clock.
backends!(every_sign_in_checks_one_password_whatever_the_account, |t: TestStore| async move {
    let env = Env::new(t).await;
    let disabled = env.app.disable_person(&Caller::Operator, &env.bob.id).await;
    disabled.unwrap();
    let cases = [
        (env.ann.email.as_str().to_owned(), "a wrong password"),
        ("nobody@harbour.example".to_owned(), "an unknown account"),
        (env.bob.email.as_str().to_owned(), "a disabled account"),
        ("not an address".to_owned(), "not an address at all"),
        (env.ann.email.as_str().to_owned(), "the right password"),
    ];
    for (n, (email, what)) in cases.into_iter().enumerate() {
        let password = if what == "the right password" { PASSWORD } else { "wrong password" };
        let before = env.app.password_checks();
        let client = Client::new(format!("192.0.2.{n}"), "work");
        let _ = env.app.login(&email, Zeroizing::new(password.into()), &client).await;
        assert_eq!(env.app.password_checks() - before, 1, "{what}: one password checked");
    }
});
