//! The admin portal in headless Chromium (Debian `chromium` and `chromium-driver`), driven over
//! WebDriver: sign in, the site overview, a parcel's chain of custody, sign out.
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

use std::io::Write as _;
use std::path::{Path, PathBuf};

use custody_app::parcels::ParcelSpec;
use custody_core::compartment::SizeClass;
use custody_proto::device::DoorReading;
use custody_testkit::{TestServer, eventually};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

struct Driver(tokio::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn chromedriver(path: &Path) -> (Driver, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = tokio::process::Command::new(path)
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    eventually("chromedriver to listen", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    (Driver(child), port)
}

/// A parcel for Ann, deposited and notified.
async fn notified_parcel(env: &custody_testkit::Env) -> custody_store::ParcelRow {
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

#[tokio::test]
async fn an_admin_signs_in_and_follows_a_parcel() {
    let (Some(chromium), Some(driver)) = (
        find(&["/usr/lib/chromium/chromium", "/usr/bin/chromium"]),
        find(&["/usr/bin/chromedriver"]),
    ) else {
        assert!(
            std::env::var("CUSTODY_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "CUSTODY_REQUIRE_BROWSER=1 but chromium or chromedriver is missing"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED (browser): portal test — install Debian chromium and chromium-driver"
        );
        return;
    };
    let server = TestServer::start(custody_testkit::sqlite_store().await).await;
    let parcel = notified_parcel(&server.env).await;
    let (_driver, port) = chromedriver(&driver).await;
    let profile = tempfile::tempdir().unwrap();
    let (cert, _) = server.env.data.server_tls().unwrap();
    let spki = data_encoding::BASE64.encode(&custody_crypto::pki::spki_pin_of_pem(&cert).unwrap());
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
                // Trust exactly this server's key (its certificate is dated by the test clock).
                format!("--ignore-certificate-errors-spki-list={spki}"),
            ]
        }
    });
    let browser = ClientBuilder::rustls()
        .unwrap()
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session");

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

    // The right one leads to the overview.
    let form = browser.form(Locator::Css("form.card")).await.unwrap();
    form.set_by_name("email", "admin@acme.example").await.unwrap();
    form.set_by_name("password", custody_testkit::env::PASSWORD).await.unwrap();
    form.submit().await.unwrap();
    let who = browser.wait().for_element(Locator::Id("who")).await.unwrap().text().await.unwrap();
    assert!(who.contains("Ada Admin"), "{who}");
    assert_eq!(browser.current_url().await.unwrap().path(), "/portal");

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
    browser.close().await.unwrap();
}
