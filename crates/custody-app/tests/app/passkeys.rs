//! Passkeys as a second factor, against the real use cases, on both backends, with a software
//! authenticator (`webauthn-authenticator-rs`) speaking real WebAuthn.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::sessions::{Client, SessionInfo};
use custody_core::person::Factor;
use custody_core::time::minutes;
use custody_testkit::env::PASSWORD;
use custody_testkit::{Env, TestStore, backends};
use webauthn_authenticator_rs::WebauthnAuthenticator as _;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};
use zeroize::Zeroizing;

fn client() -> Client {
    Client::new("192.0.2.77", "passkey-test")
}

/// The portal's origin in the test configuration.
fn portal() -> Url {
    Url::parse("https://localhost:8443").unwrap()
}

/// Registers a passkey of `authenticator` for the admin; returns the signed-in token.
async fn register(env: &Env, authenticator: &mut SoftPasskey) -> (Zeroizing<String>, SessionInfo) {
    register_for(env, &env.admin, authenticator).await.0
}

/// Registers a passkey of `authenticator` for `person`; returns the signed-in session and the
/// passkey's credential id.
async fn register_for(
    env: &Env,
    person: &custody_app::people::Person,
    authenticator: &mut SoftPasskey,
) -> ((Zeroizing<String>, SessionInfo), String) {
    let token = env.sign_in(person).await;
    let info = env.app.session(&token).await.unwrap();
    let ceremony = env.app.begin_passkey(&info).await.unwrap();
    let options: CreationChallengeResponse = serde_json::from_str(&ceremony.options).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ceremony.options).unwrap()["publicKey"]["authenticatorSelection"]
            ["residentKey"],
        "preferred",
        "asks for a passkey that can sign in on its own"
    );
    let answer = authenticator.do_registration(portal(), options).unwrap();
    let credential = answer.id.clone();
    let answer = serde_json::to_string(&answer).unwrap();
    let proven =
        env.app.finish_passkey(&token, &info, &ceremony.id, &answer, &client()).await.unwrap();
    let info = env.app.session(&proven.session.token).await.unwrap();
    assert_eq!(info.factor.map(|(f, _)| f), Some(Factor::Passkey));
    ((proven.session.token, info), credential)
}

/// The user handle Custody gives `person`'s passkeys.
fn handle_of(person: &custody_app::people::Person) -> Vec<u8> {
    custody_crypto::sha256(person.id.as_str().as_bytes())[..16].to_vec()
}

/// A discoverable authenticator's answer to a passkey sign-in: the software authenticator
/// keeps no discoverable credentials, so the test names the credential it holds (as the
/// authenticator would pick it) and adds the user handle the authenticator stored with it.
fn sign_in_answer(
    phone: &mut SoftPasskey,
    options: &str,
    credential: &str,
    handle: &[u8],
) -> String {
    let mut options: serde_json::Value = serde_json::from_str(options).unwrap();
    assert_eq!(options["publicKey"]["allowCredentials"], serde_json::json!([]), "names nobody");
    assert!(options.get("mediation").is_none(), "the browser's usual prompt");
    options["publicKey"]["allowCredentials"] =
        serde_json::json!([{"type": "public-key", "id": credential}]);
    let options: RequestChallengeResponse = serde_json::from_value(options).unwrap();
    let mut answer =
        serde_json::to_value(phone.do_authentication(portal(), options).unwrap()).unwrap();
    answer["response"]["userHandle"] = data_encoding::BASE64URL_NOPAD.encode(handle).into();
    answer.to_string()
}

/// A password-only session of the admin, and the passkey ceremony begun in it.
async fn ask_for_passkey(
    env: &Env,
) -> (Zeroizing<String>, SessionInfo, String, RequestChallengeResponse) {
    let session = env
        .app
        .login(env.admin.email.as_str(), Zeroizing::new(PASSWORD.into()), &client())
        .await
        .unwrap();
    let info = env.app.session(&session.token).await.unwrap();
    let ceremony = env.app.begin_passkey_proof(&info).await.unwrap();
    let options = serde_json::from_str(&ceremony.options).unwrap();
    (session.token, info, ceremony.id, options)
}

backends!(a_passkey_signs_an_admin_in_and_its_challenge_works_once, |t: TestStore| async move {
    let env = Env::new(t).await;
    let mut phone = SoftPasskey::new(true);
    register(&env, &mut phone).await;
    let (token, info, ceremony, options) = ask_for_passkey(&env).await;
    assert!(info.needs_second_factor());
    let answer =
        serde_json::to_string(&phone.do_authentication(portal(), options).unwrap()).unwrap();
    let proven = env.app.prove_passkey(&token, &info, &ceremony, &answer, &client()).await.unwrap();
    let after = env.app.session(&proven.session.token).await.unwrap();
    assert_eq!(after.factor.map(|(f, _)| f), Some(Factor::Passkey));
    assert!(env.app.session(&token).await.is_err(), "rotated");
    // The same answer again, in another password-only session: the challenge is spent.
    let (token2, info2, _, _) = ask_for_passkey(&env).await;
    let replay = env.app.prove_passkey(&token2, &info2, &ceremony, &answer, &client()).await;
    assert_eq!(replay.unwrap_err().code(), "authentication_failed");
    let factors = env.app.factors(&after).await.unwrap();
    assert_eq!(factors.passkeys, 1);
});

backends!(a_passkey_answer_for_another_origin_is_refused, |t: TestStore| async move {
    let env = Env::new(t).await;
    let mut phone = SoftPasskey::new(true);
    register(&env, &mut phone).await;
    let (token, info, ceremony, options) = ask_for_passkey(&env).await;
    // A phishing site relays the challenge: the authenticator will not sign for a site that
    // is not the passkey's…
    let elsewhere = Url::parse("https://lockers-login.example").unwrap();
    assert!(phone.do_authentication(elsewhere, options.clone()).is_err());
    // …and an answer whose client data names another origin is refused by the server.
    let signed = phone.do_authentication(portal(), options).unwrap();
    let mut answer = serde_json::to_value(signed).unwrap();
    let data = answer["response"]["clientDataJSON"].as_str().unwrap().to_owned();
    let b64 = data_encoding::BASE64URL_NOPAD;
    let mut client_data: serde_json::Value =
        serde_json::from_slice(&b64.decode(data.as_bytes()).unwrap()).unwrap();
    client_data["origin"] = "https://lockers-login.example".into();
    answer["response"]["clientDataJSON"] =
        b64.encode(&serde_json::to_vec(&client_data).unwrap()).into();
    let answer = answer.to_string();
    let refused = env.app.prove_passkey(&token, &info, &ceremony, &answer, &client()).await;
    assert_eq!(refused.unwrap_err().code(), "authentication_failed");
    assert!(env.app.session(&token).await.unwrap().needs_second_factor());
});

backends!(another_authenticator_or_a_lapsed_ceremony_is_refused, |t: TestStore| async move {
    let env = Env::new(t).await;
    let mut phone = SoftPasskey::new(true);
    register(&env, &mut phone).await;
    // Another person's passkey, answering that person's own challenge, proves nothing for the
    // admin.
    let mut anns_phone = SoftPasskey::new(true);
    let ann_token = env.sign_in(&env.ann).await;
    let ann = env.app.session(&ann_token).await.unwrap();
    let setup = env.app.begin_passkey(&ann).await.unwrap();
    let options: CreationChallengeResponse = serde_json::from_str(&setup.options).unwrap();
    let created =
        serde_json::to_string(&anns_phone.do_registration(portal(), options).unwrap()).unwrap();
    let proven =
        env.app.finish_passkey(&ann_token, &ann, &setup.id, &created, &client()).await.unwrap();
    let ann = env.app.session(&proven.session.token).await.unwrap();
    let challenge = env.app.begin_passkey_proof(&ann).await.unwrap();
    let options: RequestChallengeResponse = serde_json::from_str(&challenge.options).unwrap();
    let anns_answer =
        serde_json::to_string(&anns_phone.do_authentication(portal(), options).unwrap()).unwrap();
    let (token, info, ceremony, _) = ask_for_passkey(&env).await;
    let refused = env.app.prove_passkey(&token, &info, &ceremony, &anns_answer, &client()).await;
    assert_eq!(refused.unwrap_err().code(), "authentication_failed");
    // Five minutes without an answer: the ceremony lapses.
    let (token, info, ceremony, options) = ask_for_passkey(&env).await;
    let answer =
        serde_json::to_string(&phone.do_authentication(portal(), options).unwrap()).unwrap();
    env.clock.advance(minutes(5));
    let late = env.app.prove_passkey(&token, &info, &ceremony, &answer, &client()).await;
    assert_eq!(late.unwrap_err().code(), "authentication_failed");
});

backends!(a_resident_signs_in_with_a_passkey_alone_once_per_challenge, |t: TestStore| async move {
    let env = Env::new(t).await;
    let mut phone = SoftPasskey::new(true);
    let (_, credential) = register_for(&env, &env.ann, &mut phone).await;
    let ceremony = env.app.begin_passkey_sign_in(&client()).await.unwrap();
    let answer = sign_in_answer(&mut phone, &ceremony.options, &credential, &handle_of(&env.ann));
    let session = env.app.sign_in_with_passkey(&ceremony.id, &answer, &client()).await.unwrap();
    assert_eq!(session.person.id, env.ann.id);
    assert!(!session.needs_second_factor);
    let info = env.app.session(&session.token).await.unwrap();
    assert_eq!(info.factor.map(|(f, _)| f), Some(Factor::Passkey));
    // The same answer again: the ceremony is spent.
    let replay = env.app.sign_in_with_passkey(&ceremony.id, &answer, &client()).await;
    assert_eq!(replay.unwrap_err().code(), "authentication_failed");
    // So is a lapsed one.
    let late = env.app.begin_passkey_sign_in(&client()).await.unwrap();
    let answer = sign_in_answer(&mut phone, &late.options, &credential, &handle_of(&env.ann));
    env.clock.advance(minutes(5));
    let refused = env.app.sign_in_with_passkey(&late.id, &answer, &client()).await;
    assert_eq!(refused.unwrap_err().code(), "authentication_failed");
});

backends!(an_admin_passkey_sign_in_is_complete_without_another_step, |t: TestStore| async move {
    let env = Env::new(t).await;
    let mut key = SoftPasskey::new(true);
    let (_, credential) = register_for(&env, &env.admin, &mut key).await;
    let ceremony = env.app.begin_passkey_sign_in(&client()).await.unwrap();
    let answer = sign_in_answer(&mut key, &ceremony.options, &credential, &handle_of(&env.admin));
    let session = env.app.sign_in_with_passkey(&ceremony.id, &answer, &client()).await.unwrap();
    assert!(!session.needs_second_factor, "a user-verified passkey is both factors");
    let info = env.app.session(&session.token).await.unwrap();
    assert!(info.stepped_up(custody_core::Clock::now(&env.clock), minutes(5)));
});

backends!(a_passkey_sign_in_claiming_someone_else_is_refused, |t: TestStore| async move {
    let env = Env::new(t).await;
    let mut phone = SoftPasskey::new(true);
    let (_, credential) = register_for(&env, &env.ann, &mut phone).await;
    // Ann's passkey, presented with the admin's user handle: signed correctly, claims wrongly.
    let ceremony = env.app.begin_passkey_sign_in(&client()).await.unwrap();
    let answer = sign_in_answer(&mut phone, &ceremony.options, &credential, &handle_of(&env.admin));
    let refused = env.app.sign_in_with_passkey(&ceremony.id, &answer, &client()).await;
    assert_eq!(refused.unwrap_err().code(), "authentication_failed");
    // A passkey nobody registered.
    let mut stranger = SoftPasskey::new(true);
    let unregistered = {
        let token = env.sign_in(&env.bob).await;
        let info = env.app.session(&token).await.unwrap();
        let begun = env.app.begin_passkey(&info).await.unwrap();
        let options: CreationChallengeResponse = serde_json::from_str(&begun.options).unwrap();
        stranger.do_registration(portal(), options).unwrap().id
    };
    let ceremony = env.app.begin_passkey_sign_in(&client()).await.unwrap();
    let answer =
        sign_in_answer(&mut stranger, &ceremony.options, &unregistered, &handle_of(&env.bob));
    let refused = env.app.sign_in_with_passkey(&ceremony.id, &answer, &client()).await;
    assert_eq!(refused.unwrap_err().code(), "authentication_failed");
    // A disabled resident's own passkey.
    env.app.disable_person(&env.stepped_up(&env.admin), &env.ann.id).await.unwrap();
    let ceremony = env.app.begin_passkey_sign_in(&client()).await.unwrap();
    let answer = sign_in_answer(&mut phone, &ceremony.options, &credential, &handle_of(&env.ann));
    let refused = env.app.sign_in_with_passkey(&ceremony.id, &answer, &client()).await;
    assert_eq!(refused.unwrap_err().code(), "authentication_failed");
    // Garbage is the same failure, not a different error.
    let ceremony = env.app.begin_passkey_sign_in(&client()).await.unwrap();
    let refused = env.app.sign_in_with_passkey(&ceremony.id, "{\"id\":1}", &client()).await;
    assert_eq!(refused.unwrap_err().code(), "authentication_failed");
});

backends!(passkey_sign_ins_are_throttled_by_source, |t: TestStore| async move {
    let env = Env::new(t).await;
    let limit = custody_core::throttle::SOURCE_LOGIN.max_failures;
    for _ in 0..limit {
        env.app.begin_passkey_sign_in(&client()).await.unwrap();
    }
    let refused = env.app.begin_passkey_sign_in(&client()).await;
    assert_eq!(refused.unwrap_err().code(), "throttled");
    // Another address is not held up by this one.
    let elsewhere = Client::new("198.51.100.9", "passkey-test");
    env.app.begin_passkey_sign_in(&elsewhere).await.unwrap();
});

backends!(a_super_admin_needs_a_passkey_and_adds_one_with_the_app, |t: TestStore| async move {
    use custody_app::factors::Proof;
    use custody_crypto::totp::step_at;
    let env = Env::new(t).await;
    // Her first factor is an authenticator app: it proves who she is, and no more.
    let (sue, seed, token) = env
        .person_with_app("sue@acme.example", "Sue Super", custody_core::person::Role::SuperAdmin)
        .await;
    let now = || custody_core::Clock::now(&env.clock).as_millis();
    let info = env.app.session(&token).await.unwrap();
    assert!(info.needs_second_factor(), "a super-admin's code is not enough");
    let custody_app::Caller::Principal(custody_core::policy::Principal::Person {
        second_factor_at,
        ..
    }) = &info.caller
    else {
        panic!("a person")
    };
    assert_eq!(*second_factor_at, None, "no step-up from a code either");
    // …but enough to add a passkey, which completes the sign-in.
    let mut key = SoftPasskey::new(true);
    let ceremony = env.app.begin_passkey(&info).await.unwrap();
    let options: CreationChallengeResponse = serde_json::from_str(&ceremony.options).unwrap();
    let answer = serde_json::to_string(&key.do_registration(portal(), options).unwrap()).unwrap();
    let done =
        env.app.finish_passkey(&token, &info, &ceremony.id, &answer, &client()).await.unwrap();
    assert!(!done.session.needs_second_factor);
    assert!(!env.app.session(&done.session.token).await.unwrap().needs_second_factor());
    // Next time an authenticator code or a recovery code leaves her at the step again.
    env.clock.advance(minutes(1));
    let session = env
        .app
        .login(sue.email.as_str(), Zeroizing::new(PASSWORD.into()), &client())
        .await
        .unwrap();
    assert!(session.needs_second_factor);
    let info = env.app.session(&session.token).await.unwrap();
    let code = seed.code_at(step_at(now()));
    let proven =
        env.app.prove_second_factor(&session.token, &info, Proof::Totp(code), &client()).await;
    assert!(proven.unwrap().session.needs_second_factor);
    // An admin is not held to it: the seeded admin's code completes their sign-in.
    let admin = env.sign_in(&env.admin).await;
    assert!(!env.app.session(&admin).await.unwrap().needs_second_factor());
});
