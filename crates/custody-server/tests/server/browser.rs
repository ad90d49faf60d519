//! The admin portal in headless Chromium (Debian `chromium` and `chromium-driver`), driven over
//! WebDriver: sign in with an authenticator app's code, the site overview, a parcel's chain of
//! custody, sign out; setting up an authenticator app, recovery codes, replayed codes; a
//! resident's e-mailed sign-in link; a passkey added and used as a second factor, and a
//! resident's passkey signing her in alone, through the WebDriver virtual authenticator.
//!
//! Without Chromium and ChromeDriver the test prints a notice and passes, unless
//! `CUSTODY_REQUIRE_BROWSER=1` (as in CI), which makes their absence a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::parcels::ParcelSpec;
use custody_core::Clock as _;
use custody_core::compartment::SizeClass;
use custody_crypto::totp::{TotpSeed, step_at};
use custody_proto::device::DoorReading;
use custody_testkit::{TestServer, eventually};
use fantoccini::Locator;
use serde_json::json;

/// A parcel for Ann, deposited and notified.
async fn notified_parcel(env: &custody_testkit::Env) -> custody_app::parcels::Parcel {
    let carrier = env.carrier().await;
    let spec = ParcelSpec {
        site: env.site.clone(),
        carrier: env.carrier.clone(),
        recipient_email: "ann@harbour.example".into(),
        tracking_ref: "BROWSER-1".into(),
        size: SizeClass::Small,
        accessible: false,
        refrigerated: false,
    };
    let parcel = env.app.expect_parcel(&carrier, spec).await.unwrap();
    let deposit = env.app.start_deposit(&carrier, &parcel.id, &env.bank).await.unwrap();
    env.app
        .door_report(&env.device, deposit.compartment.number.get(), DoorReading::Closed)
        .await
        .unwrap();
    env.app.confirm_deposit(&carrier, &parcel.id).await.unwrap();
    env.app.notify(&parcel.id).await.unwrap();

    parcel
}

/// A headless Chromium trusting exactly the test server's key (its certificate is dated by the
/// test clock).
async fn browser(server: &TestServer, test: &str) -> Option<custody_testkit::browser::Browser> {
    let (cert, _) = server.env.data.server_tls().unwrap();
    let spki = data_encoding::BASE64.encode(&custody_crypto::pki::spki_pin_of_pem(&cert).unwrap());
    custody_testkit::browser::start(
        test,
        &[format!("--ignore-certificate-errors-spki-list={spki}")],
    )
    .await
}

/// Waits until the browser has navigated to `path` on the same server (every page shows the
/// navigation bar, so an element alone cannot tell one page from the next).
async fn arrive_at(browser: &fantoccini::Client, path: &str) {
    let mut want = browser.current_url().await.unwrap();
    want.set_path(path);
    want.set_query(None);
    browser.wait().for_url(&want).await.unwrap();
}

/// Fills in the sign-in form and submits it.
async fn sign_in_with_password(browser: &fantoccini::Client, server: &TestServer, email: &str) {
    browser.goto(&server.url("/portal/login")).await.unwrap();
    let form = browser.form(Locator::Css("form.card")).await.unwrap();
    form.set_by_name("email", email).await.unwrap();
    form.set_by_name("password", custody_testkit::env::PASSWORD).await.unwrap();
    form.submit().await.unwrap();
}

#[tokio::test]
async fn an_admin_signs_in_and_follows_a_parcel() {
    let server = TestServer::start(custody_testkit::sqlite_store().await).await;
    let Some(session) = browser(&server, "portal tour").await else { return };
    let browser = &session.client;
    let parcel = notified_parcel(&server.env).await;

    // Signed out, the portal sends you to sign in.
    browser.goto(&server.url("/portal")).await.unwrap();
    assert!(browser.current_url().await.unwrap().path().ends_with("/portal/login"));

    // A wrong password gets one plain message.
    let form = browser.form(Locator::Css("form.card")).await.unwrap();
    form.set_by_name("email", "admin@acme.example").await.unwrap();
    form.set_by_name("password", "not the password").await.unwrap();
    form.submit().await.unwrap();
    let error =
        browser.wait().for_element(Locator::Id("login-error")).await.unwrap().text().await.unwrap();
    assert_eq!(error, "E-mail address or password is not right.");

    // The right one leads to the second-factor step (an admin's password is not enough), and
    // the authenticator app's code to the overview.
    let form = browser.form(Locator::Css("form.card")).await.unwrap();
    form.set_by_name("email", "admin@acme.example").await.unwrap();
    form.set_by_name("password", custody_testkit::env::PASSWORD).await.unwrap();
    form.submit().await.unwrap();
    browser.wait().for_element(Locator::Id("totp")).await.unwrap();
    assert_eq!(browser.current_url().await.unwrap().path(), "/portal/second-factor");
    browser.goto(&server.url("/portal")).await.unwrap();
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/portal/second-factor",
        "nothing else is reachable before the second factor"
    );
    let code = server.env.totp_code(&server.env.admin);
    browser.find(Locator::Id("totp")).await.unwrap().send_keys(&code).await.unwrap();
    browser.find(Locator::Id("prove-totp")).await.unwrap().click().await.unwrap();
    arrive_at(browser, "/portal").await;
    let who = browser.find(Locator::Id("who")).await.unwrap().text().await.unwrap();
    assert!(who.contains("Ada Admin"), "{who}");

    // The site: its bank, compartments and the parcel.
    browser.find(Locator::LinkText("Harbour House")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Id("parcels")).await.unwrap();
    let page = browser.source().await.unwrap();
    assert!(
        page.contains("Lobby") && page.contains("occupied"),
        "the bank, with the parcel's compartment occupied"
    );
    browser.find(Locator::LinkText(parcel.id.as_str())).await.unwrap().click().await.unwrap();

    // The parcel and its chain of custody.
    assert_eq!(
        browser
            .wait()
            .for_element(Locator::Id("parcel-state"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "notified"
    );
    let history = browser.find(Locator::Id("history")).await.unwrap().text().await.unwrap();
    for event in [
        "parcel.expect",
        "parcel.deposit.reserve",
        "compartment.open_command",
        "parcel.deposit",
        "parcel.notify",
    ] {
        assert!(history.contains(event), "history lacks {event}:\n{history}");
    }
    let verified = browser.find_all(Locator::Css("#history .verified")).await.unwrap().len();
    let all = browser.find_all(Locator::Css("#history li")).await.unwrap().len();
    assert_eq!(verified, all, "every event is proved in the log");
    assert!(browser.screenshot().await.unwrap().starts_with(b"\x89PNG"));

    // Sign out ends the session.
    browser.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Id("sign-in")).await.unwrap();
    assert!(browser.current_url().await.unwrap().path().ends_with("/portal/login"));
    browser.goto(&server.url("/portal")).await.unwrap();
    assert!(
        browser.current_url().await.unwrap().path().ends_with("/portal/login"),
        "the old session is gone"
    );
    browser.clone().close().await.unwrap();
}

#[tokio::test]
async fn a_new_admin_sets_up_an_authenticator_app_and_signs_in_with_it() {
    let server = TestServer::start(custody_testkit::sqlite_store().await).await;
    let Some(session) = browser(&server, "authenticator app").await else { return };
    let browser = &session.client;
    let env = &server.env;
    let nina = env
        .app
        .create_person(
            &custody_app::Caller::Operator,
            custody_app::people::NewPerson {
                org: env.org.clone(),
                email: "nina@acme.example".into(),
                name: "Nina New".into(),
                role: custody_core::person::Role::Admin,
                site: Some(env.site.clone()),
                carrier: None,
                password: Some(zeroize::Zeroizing::new(custody_testkit::env::PASSWORD.into())),
                reason: None,
            },
        )
        .await
        .unwrap();

    // With no second factor yet, the only way on is to set one up.
    sign_in_with_password(browser, &server, nina.email.as_str()).await;
    browser.wait().for_element(Locator::Id("set-up-totp")).await.unwrap().click().await.unwrap();
    let secret = browser.wait().for_element(Locator::Id("totp-secret")).await.unwrap();
    let secret = secret.text().await.unwrap();
    assert!(browser.source().await.unwrap().contains("<svg"), "the key as a QR code");
    let seed =
        TotpSeed::from_bytes(&data_encoding::BASE32_NOPAD.decode(secret.as_bytes()).unwrap())
            .unwrap();
    let code = |env: &custody_testkit::Env| seed.code_at(step_at(env.clock.now().as_millis()));

    // A mistyped first code shows the same key again; the app's code confirms it.
    let first = code(env);
    let wrong = if first.as_str() == "000000" { "111111" } else { "000000" };
    browser.find(Locator::Id("code")).await.unwrap().send_keys(wrong).await.unwrap();
    browser.find(Locator::Id("confirm-totp")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Id("setup-error")).await.unwrap();
    let again = browser.find(Locator::Id("totp-secret")).await.unwrap();
    assert_eq!(again.text().await.unwrap(), secret, "the same key, not a new one");
    browser.find(Locator::Id("code")).await.unwrap().send_keys(&first).await.unwrap();
    browser.find(Locator::Id("confirm-totp")).await.unwrap().click().await.unwrap();

    // Ten recovery codes, shown once.
    let codes = browser.wait().for_element(Locator::Id("recovery-codes")).await.unwrap();
    let codes: Vec<String> =
        codes.text().await.unwrap().lines().map(|l| l.trim().to_owned()).collect();
    assert_eq!(codes.len(), 10, "{codes:?}");
    browser.find(Locator::Id("done")).await.unwrap().click().await.unwrap();
    let state = browser.wait().for_element(Locator::Id("totp-state")).await.unwrap();
    assert!(state.text().await.unwrap().contains("set up"));
    let sessions = browser.find(Locator::Id("sessions")).await.unwrap().text().await.unwrap();
    assert!(sessions.contains("this one") && sessions.contains("totp"), "{sessions}");

    // Signed out and in again, the code that confirmed the app is refused: a code works once.
    browser.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Id("sign-in")).await.unwrap();
    sign_in_with_password(browser, &server, nina.email.as_str()).await;
    browser.wait().for_element(Locator::Id("totp")).await.unwrap().send_keys(&first).await.unwrap();
    browser.find(Locator::Id("prove-totp")).await.unwrap().click().await.unwrap();
    let error = browser.wait().for_element(Locator::Id("factor-error")).await.unwrap();
    assert_eq!(error.text().await.unwrap(), "That code is not right, or was used already.");

    // Thirty seconds on, the app shows a new code, and it signs her in.
    env.clock.advance(std::time::Duration::from_secs(30));
    browser.find(Locator::Id("totp")).await.unwrap().send_keys(&code(env)).await.unwrap();
    browser.find(Locator::Id("prove-totp")).await.unwrap().click().await.unwrap();
    arrive_at(browser, "/portal").await;

    // Without the phone, a recovery code signs her in, once.
    for (attempt, expect_in) in [(&codes[3], true), (&codes[3], false)] {
        browser.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();
        browser.wait().for_element(Locator::Id("sign-in")).await.unwrap();
        sign_in_with_password(browser, &server, nina.email.as_str()).await;
        browser
            .wait()
            .for_element(Locator::Css("details summary"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        browser.find(Locator::Id("recovery-code")).await.unwrap().send_keys(attempt).await.unwrap();
        browser.find(Locator::Id("prove-recovery")).await.unwrap().click().await.unwrap();
        if expect_in {
            arrive_at(browser, "/portal").await;
        } else {
            let error = browser.wait().for_element(Locator::Id("factor-error")).await.unwrap();
            assert!(error.text().await.unwrap().contains("not right"));
        }
    }
    browser.clone().close().await.unwrap();
}

#[tokio::test]
async fn a_resident_signs_in_with_an_emailed_link() {
    let server = TestServer::start(custody_testkit::sqlite_store().await).await;
    let Some(session) = browser(&server, "sign-in link").await else { return };
    let browser = &session.client;
    browser.goto(&server.url("/portal/login")).await.unwrap();
    browser
        .find(Locator::Id("link-email"))
        .await
        .unwrap()
        .send_keys("ann@harbour.example")
        .await
        .unwrap();
    browser.find(Locator::Id("send-link")).await.unwrap().click().await.unwrap();
    let sent = browser.wait().for_element(Locator::Id("link-sent")).await.unwrap();
    assert!(sent.text().await.unwrap().starts_with("If that address belongs to a resident"));
    let env = &server.env;
    let mail = std::sync::Mutex::new(Vec::new());
    eventually("the link's e-mail", || async {
        let rows = env.app.lease_messages(10).await.unwrap();
        let mut mail = mail.lock().unwrap();
        mail.extend(rows.iter().map(|r| env.app.open_message(r).unwrap()));
        !mail.is_empty()
    })
    .await;
    let body = mail.into_inner().unwrap().remove(0).body;
    let link = body.lines().find_map(|l| l.strip_prefix("Sign in: ")).unwrap().trim().to_owned();
    // The e-mail's link points at the configured public URL; the test server listens elsewhere.
    let path = &link[link.find("/portal/login/link").unwrap()..];
    browser.goto(&server.url(path)).await.unwrap();
    browser.wait().for_element(Locator::Id("use-link")).await.unwrap().click().await.unwrap();
    arrive_at(browser, "/portal").await;
    let who = browser.find(Locator::Id("who")).await.unwrap().text().await.unwrap();
    assert!(who.contains("Ann Resident"), "{who}");

    // Her parcel's page shows the QR code that opens her locker: what the browser drew, read
    // back from its pixels, is a token the kiosk accepts.
    let parcel = notified_parcel(env).await;
    browser.goto(&server.url(&format!("/portal/parcels/{}", parcel.id))).await.unwrap();
    let figure = browser.wait().for_element(Locator::Css("#pickup-qr figure")).await.unwrap();
    let shot = figure.screenshot().await.unwrap();
    let token = custody_testkit::mail::qr_in_png(&shot);
    let opened = env.app.redeem_qr(&env.device, &token).await.unwrap();
    assert!(matches!(opened, custody_app::parcels::PickupOutcome::Accepted { .. }));
    // Picked up: the page no longer offers a code.
    browser.refresh().await.unwrap();
    browser.wait().for_element(Locator::Id("history")).await.unwrap();
    assert!(browser.find(Locator::Id("pickup-qr")).await.is_err());

    // The next parcel she opens from the page, with the code on the kiosk's screen.
    let agent = server.agent().await;
    let next = notified_parcel(env).await;
    browser.goto(&server.url(&format!("/portal/parcels/{}", next.id))).await.unwrap();
    let field = browser.wait().for_element(Locator::Id("presence-code")).await.unwrap();
    field.send_keys(&env.presence_code(&env.bank)).await.unwrap();
    browser.find(Locator::Id("open-now")).await.unwrap().click().await.unwrap();
    let notice = browser.wait().for_element(Locator::Id("notice")).await.unwrap();
    let text = notice.text().await.unwrap();
    assert!(text.starts_with("Locker ") && text.ends_with(" is opening."), "{text}");
    let n: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    eventually("the latch opens", || async { agent.bank.is_unlatched(n) }).await;
    let p = env.app.parcel(&custody_app::Caller::Operator, &next.id).await.unwrap();
    assert_eq!(p.state, custody_core::parcel::ParcelState::PickedUp);
    browser.clone().close().await.unwrap();
}

/// WebDriver's virtual authenticator (W3C WebAuthn §11.3): a platform passkey that verifies
/// its user, so the browser's real WebAuthn code runs without a person.
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl fantoccini::wd::WebDriverCompatibleCommand for AddVirtualAuthenticator {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/webauthn/authenticator", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let options = json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
            "automaticPresenceSimulation": true,
        });
        (http::Method::POST, Some(options.to_string()))
    }
}

/// Adds a passkey of the virtual authenticator on the account page of whoever is signed in.
async fn add_passkey_on_the_account_page(browser: &fantoccini::Client, server: &TestServer) {
    browser.goto(&server.url("/portal/account")).await.unwrap();
    browser.wait().for_element(Locator::Id("add-passkey")).await.unwrap().click().await.unwrap();
    let status = || async {
        match browser.find(Locator::Id("passkey-status")).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    eventually("the passkey ceremony to end", || async {
        !status().await.is_empty() || browser.source().await.unwrap().contains("Passkeys: 1.")
    })
    .await;
    // A first factor comes with recovery codes, shown once before going on.
    if let Ok(done) = browser.find(Locator::Id("done")).await {
        assert_eq!(browser.find_all(Locator::Css("#recovery-codes li")).await.unwrap().len(), 10);
        done.click().await.unwrap();
        arrive_at(browser, "/portal/account").await;
    }
    let page = browser.source().await.unwrap();
    assert!(page.contains("Passkeys: 1."), "not registered: {:?}", status().await);
}

#[tokio::test]
async fn an_admin_adds_a_passkey_and_signs_in_with_it() {
    let server = TestServer::start_at_own_origin(custody_testkit::sqlite_store().await).await;
    let Some(session) = browser(&server, "passkeys").await else { return };
    let browser = &session.client;
    browser.issue_cmd(AddVirtualAuthenticator).await.expect("a virtual authenticator");
    let env = &server.env;

    // Signed in with the authenticator app, Ada adds a passkey on her account page.
    sign_in_with_password(browser, &server, env.admin.email.as_str()).await;
    let code = env.totp_code(&env.admin);
    browser.wait().for_element(Locator::Id("totp")).await.unwrap().send_keys(&code).await.unwrap();
    browser.find(Locator::Id("prove-totp")).await.unwrap().click().await.unwrap();
    arrive_at(browser, "/portal").await;
    add_passkey_on_the_account_page(browser, &server).await;

    // Next time: the password, then the passkey.
    browser.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Id("sign-in")).await.unwrap();
    sign_in_with_password(browser, &server, env.admin.email.as_str()).await;
    browser.wait().for_element(Locator::Id("use-passkey")).await.unwrap().click().await.unwrap();
    arrive_at(browser, "/portal").await;
    let who = browser.find(Locator::Id("who")).await.unwrap().text().await.unwrap();
    assert!(who.contains("Ada Admin"), "{who}");
    browser.clone().close().await.unwrap();
}

#[tokio::test]
async fn a_resident_signs_in_with_her_passkey_alone() {
    let server = TestServer::start_at_own_origin(custody_testkit::sqlite_store().await).await;
    let Some(session) = browser(&server, "passkey sign-in").await else { return };
    let browser = &session.client;
    browser.issue_cmd(AddVirtualAuthenticator).await.expect("a virtual authenticator");
    let env = &server.env;

    // Ann signs in with her password once and adds a passkey (her phone's Face ID).
    sign_in_with_password(browser, &server, env.ann.email.as_str()).await;
    arrive_at(browser, "/portal").await;
    add_passkey_on_the_account_page(browser, &server).await;
    browser.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();

    // From then on: no e-mail, no password.
    browser
        .wait()
        .for_element(Locator::Id("sign-in-passkey"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrive_at(browser, "/portal").await;
    let who = browser.find(Locator::Id("who")).await.unwrap().text().await.unwrap();
    assert!(who.contains("Ann Resident"), "{who}");
    browser.goto(&server.url("/portal/account")).await.unwrap();
    let sessions = browser.wait().for_element(Locator::Id("sessions")).await.unwrap();
    let listed = sessions.text().await.unwrap();
    assert!(listed.contains("passkey"), "the session shows how it was proven: {listed}");
    browser.clone().close().await.unwrap();
}

#[tokio::test]
async fn a_super_admin_adds_a_passkey_after_the_authenticator_app() {
    use custody_crypto::totp::step_at;
    let server = TestServer::start_at_own_origin(custody_testkit::sqlite_store().await).await;
    let Some(session) = browser(&server, "super-admin passkey").await else { return };
    let browser = &session.client;
    browser.issue_cmd(AddVirtualAuthenticator).await.expect("a virtual authenticator");
    let env = &server.env;
    // Sue is a new super-admin whose only factor is an authenticator app.
    let role = custody_core::person::Role::SuperAdmin;
    let (sue, seed, _) = env.person_with_app("sue@acme.example", "Sue Super", role).await;
    let now = || custody_core::Clock::now(&env.clock).as_millis();
    env.clock.advance(std::time::Duration::from_secs(30));

    // Password, then the app's code: the portal asks for a passkey and she adds one.
    sign_in_with_password(browser, &server, sue.email.as_str()).await;
    let code = seed.code_at(step_at(now()));
    browser.wait().for_element(Locator::Id("totp")).await.unwrap().send_keys(&code).await.unwrap();
    browser.find(Locator::Id("prove-totp")).await.unwrap().click().await.unwrap();
    // The step before says "passkey" too: wait for the page that asks her to add one.
    eventually("the portal asks for a passkey", || async {
        match browser.find(Locator::Css("h1")).await {
            Ok(h1) => h1.text().await.is_ok_and(|t| t == "Add your passkey"),
            Err(_) => false,
        }
    })
    .await;
    let says = browser.find(Locator::Id("passkey-only")).await.unwrap();
    assert!(says.text().await.unwrap().contains("add a passkey"));
    browser.find(Locator::Id("add-passkey")).await.unwrap().click().await.unwrap();
    // The passkey step may itself be at `/portal`, so the address alone cannot tell that the
    // overview has replaced it: wait for the step's own text to go.
    eventually("the passkey step gives way to the overview", || async {
        browser.find(Locator::Id("passkey-only")).await.is_err()
    })
    .await;
    arrive_at(browser, "/portal").await;
    let who = browser.wait().for_element(Locator::Id("who")).await.unwrap();
    assert!(who.text().await.unwrap().contains("Sue Super"));

    // Next time: password, then the passkey, and no code box at all.
    browser.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Id("sign-in")).await.unwrap();
    sign_in_with_password(browser, &server, sue.email.as_str()).await;
    let use_passkey = browser.wait().for_element(Locator::Id("use-passkey")).await.unwrap();
    assert!(browser.find(Locator::Id("totp")).await.is_err(), "a code would not do");
    use_passkey.click().await.unwrap();
    arrive_at(browser, "/portal").await;
    browser.clone().close().await.unwrap();
}

/// Signs an admin in through the forms, with her authenticator app's code.
async fn sign_in_admin(browser: &fantoccini::Client, server: &TestServer) {
    sign_in_with_password(browser, server, "admin@acme.example").await;
    browser.wait().for_element(Locator::Id("totp")).await.unwrap();
    let code = server.env.totp_code(&server.env.admin);
    browser.find(Locator::Id("totp")).await.unwrap().send_keys(&code).await.unwrap();
    browser.find(Locator::Id("prove-totp")).await.unwrap().click().await.unwrap();
    arrive_at(browser, "/portal").await;
}

/// The text of the alert's row, once the list shows it. The live list replaces its rows as
/// updates arrive, so a row found may be gone before its text is read: it is found again.
async fn alert_row(browser: &fantoccini::Client, id: &custody_core::AlertId) -> String {
    let row = format!("alert-{id}");
    for _ in 0..20 {
        let found = browser.wait().for_element(Locator::Id(&row)).await.unwrap();
        match found.text().await {
            Ok(text) => return text,
            Err(e) if e.is_stale_element_reference() => {}
            Err(e) => panic!("reading the row of {id}: {e}"),
        }
    }
    panic!("the row of {id} was replaced twenty times while being read")
}

#[tokio::test]
async fn an_admin_watches_alerts_arrive_and_takes_them_in_place() {
    use custody_app::alerts::AlertAt;
    use custody_core::alert::AlertKind;
    let server = TestServer::start(custody_testkit::sqlite_store().await).await;
    let Some(session) = browser(&server, "live alerts").await else { return };
    let browser = &session.client;
    let env = &server.env;
    sign_in_admin(browser, &server).await;
    browser.find(Locator::LinkText("Harbour House")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Id("site-alerts")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Id("alert-rows")).await.unwrap();
    let live = Locator::XPath("//*[@id='live-status'][starts-with(., 'Live')]");
    browser.wait().for_element(live).await.unwrap();

    // A pry at compartment 3 appears without a reload.
    let at = |n| AlertAt { site: env.site.clone(), bank: Some(env.bank.clone()), compartment: n };
    let pry = env
        .app
        .raise_alert(
            AlertKind::Pry,
            at(Some(custody_core::compartment::CompartmentNumber::new(3).unwrap())),
        )
        .await
        .unwrap();
    let row = alert_row(browser, &pry).await;
    assert!(
        row.contains("critical") && row.contains("pry") && row.contains("Lobby, compartment 3"),
        "{row}"
    );

    // Acknowledged from the list, it is Ada's.
    let acknowledge = format!("#alert-{pry} button.acknowledge");
    browser.find(Locator::Css(&acknowledge)).await.unwrap().click().await.unwrap();
    browser
        .wait()
        .for_element(Locator::XPath(&format!(
            "//tr[@id='alert-{pry}']/td[@class='state'][.='acknowledged']"
        )))
        .await
        .unwrap();
    assert!(alert_row(browser, &pry).await.contains("Ada Admin"));

    // She starts writing what it was; an alert arriving meanwhile keeps what she typed.
    let reason = format!("#alert-{pry} input[name='reason']");
    browser
        .find(Locator::Css(&reason))
        .await
        .unwrap()
        .send_keys("a courier's trolley")
        .await
        .unwrap();
    let drill = env.app.raise_alert(AlertKind::Drill, at(None)).await.unwrap();
    assert!(alert_row(browser, &drill).await.contains("drill"));
    let typed = browser.find(Locator::Css(&reason)).await.unwrap().prop("value").await.unwrap();
    assert_eq!(typed.as_deref(), Some("a courier's trolley"));

    // Resolved, the pry leaves the list; the drill stays for someone to look into.
    let resolve = format!("#alert-{pry} button.resolve");
    browser.find(Locator::Css(&resolve)).await.unwrap().click().await.unwrap();
    let row = format!("alert-{pry}");
    eventually("a resolved alert is not live", || async {
        browser.find_all(Locator::Id(&row)).await.unwrap().is_empty()
    })
    .await;
    assert!(alert_row(browser, &drill).await.contains("open"));
    let resolved = env.app.alert(&custody_app::Caller::Operator, &pry).await.unwrap().alert;
    assert_eq!(resolved.state, custody_core::alert::AlertState::Resolved);
    browser.clone().close().await.unwrap();
}

/// What a breach's page says of the authority's clock.
async fn authority_clock(browser: &fantoccini::Client) -> String {
    let row = browser.wait().for_element(Locator::Id("clock-authority")).await.unwrap();
    row.find(Locator::Css("td.state")).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn an_admin_sees_a_breachs_clocks_run() {
    use custody_app::breaches::NewBreach;
    use custody_core::breach::BreachStep;
    use custody_core::time::hours;
    let server = TestServer::start(custody_testkit::sqlite_store().await).await;
    let Some(session) = browser(&server, "breach clocks").await else { return };
    let browser = &session.client;
    let env = &server.env;
    sign_in_admin(browser, &server).await;
    let now = env.app.now();
    let admin = env.stepped_up(&env.admin);
    let declare = |discovered_hours_ago: u64| NewBreach {
        site: env.site.clone(),
        bank: None,
        alert: None,
        summary: "A lost master key for the banks' service doors.".into(),
        window_from: now.minus(hours(100)),
        window_to: now.minus(hours(90)),
        discovered_at: now.minus(hours(discovered_hours_ago)),
    };
    let recent = env.app.declare_breach(&admin, declare(70)).await.unwrap();
    let late = env.app.declare_breach(&admin, declare(75)).await.unwrap();

    browser.find(Locator::LinkText("Harbour House")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Id("site-breaches")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Id("breaches")).await.unwrap();
    browser.find(Locator::LinkText(recent.id.as_str())).await.unwrap().click().await.unwrap();
    // Discovered 70 hours ago: two hours left to tell the authority.
    assert_eq!(authority_clock(browser).await, "2 h 0 min left");
    let summary = browser.find(Locator::Id("breach-summary")).await.unwrap().text().await.unwrap();
    assert!(summary.contains("lost master key"), "{summary}");

    // Discovered 75 hours ago and nobody told: overdue.
    browser.goto(&server.url(&format!("/portal/breaches/{}", late.id))).await.unwrap();
    arrive_at(browser, &format!("/portal/breaches/{}", late.id)).await;
    assert_eq!(authority_clock(browser).await, "overdue by 3 h 0 min");

    // Told: the clock shows when.
    env.app.record_breach_step(&admin, &recent.id, BreachStep::AuthorityNotified).await.unwrap();
    browser.goto(&server.url(&format!("/portal/breaches/{}", recent.id))).await.unwrap();
    arrive_at(browser, &format!("/portal/breaches/{}", recent.id)).await;
    let told = authority_clock(browser).await;
    assert!(told.starts_with("given 2030-01-01T00:00:"), "{told}");
    let steps = browser.find(Locator::Id("steps")).await.unwrap().text().await.unwrap();
    assert!(steps.contains("authority notified"), "{steps}");
}
