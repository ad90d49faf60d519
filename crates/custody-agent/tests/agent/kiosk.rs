//! The kiosk page the agent serves to the bank's touch screen, in headless Chromium: a resident
//! types her code on the keypad, a scanner types a QR token, a courier deposits by size, and
//! with the server gone the page still loads, says so, and still serves codes and couriers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_agent::hardware::cable::NetworkCable;
use custody_agent::kiosk;
use custody_core::compartment::SizeClass;
use custody_testkit::{TestServer, eventually};
use fantoccini::{Client, Locator};
use serde_json::Value;

/// The text of the status line once it says something other than "Checking…".
async fn answer(browser: &Client) -> String {
    let message = browser.find(Locator::Id("message")).await.unwrap();
    let text = std::sync::Mutex::new(String::new());
    eventually("an answer on the kiosk", || async {
        let shown = message.text().await.unwrap();
        let done = !shown.is_empty() && shown != "Checking…";
        *text.lock().unwrap() = shown;
        done
    })
    .await;
    text.into_inner().unwrap()
}

/// Taps the digits of `code` on the keypad, then "Open".
async fn tap(browser: &Client, code: &str) {
    for digit in code.chars().filter(char::is_ascii_digit) {
        let key = format!("button[data-key=\"{digit}\"]");
        browser.find(Locator::Css(&key)).await.unwrap().click().await.unwrap();
    }
    browser.find(Locator::Id("open")).await.unwrap().click().await.unwrap();
}

/// Taps "Courier" and types `code`.
async fn courier_types(browser: &Client, code: &str) {
    browser.find(Locator::Id("courier-start")).await.unwrap().click().await.unwrap();
    let field = browser.find(Locator::Id("courier-code")).await.unwrap();
    field.send_keys(code).await.unwrap();
    field.send_keys("\n").await.unwrap();
}

/// Carl deposits at the kiosk page while the network is gone: his work from the agent's
/// list, a compartment that opens, and the confirmation once the door is shut.
async fn carl_deposits_offline(
    browser: &Client,
    agent: &custody_testkit::server::TestAgent,
    code: &str,
) {
    clear_message(browser).await;
    courier_types(browser, code).await;
    let deposit = browser
        .wait()
        .for_element(Locator::XPath("//button[. = 'Deposit 1Z-OFFLINE']"))
        .await
        .unwrap();
    clear_message(browser).await;
    deposit.click().await.unwrap();
    let opened = answer(browser).await;
    assert!(opened.starts_with("Compartment ") && opened.contains(" is open"), "{opened}");
    let slot: u16 = opened.split_whitespace().nth(1).unwrap().parse().unwrap();
    eventually("the latch releases offline", || async { agent.bank.is_unlatched(slot) }).await;
    agent.bank.open_door(slot).unwrap();
    agent.bank.close_door(slot).unwrap();
    // Confirmed once the agent has the door shut (before, the kiosk refuses and Carl taps
    // again).
    eventually("the deposit is confirmed offline", || async {
        clear_message(browser).await;
        let confirm = "//button[. = 'Confirm 1Z-OFFLINE']";
        browser.find(Locator::XPath(confirm)).await.unwrap().click().await.unwrap();
        answer(browser).await == "Thank you: the deposit is recorded."
    })
    .await;
}

async fn clear_message(browser: &Client) {
    browser.execute("document.getElementById('message').textContent = '';", vec![]).await.unwrap();
}

#[tokio::test]
async fn the_kiosk_page_opens_for_codes_and_couriers_and_says_when_it_is_offline() {
    let server = TestServer::start(custody_testkit::sqlite_store().await).await;
    let cable = NetworkCable::lay(server.gateway()).await.unwrap();
    let via = format!("localhost:{}", cable.address().port());
    let agent = server.agent_with(|setup| setup.link.gateway = via).await;
    let page = kiosk::serve(agent.handle.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let Some(session) = custody_testkit::browser::start("kiosk page", &[]).await else { return };
    let browser = &session.client;
    let url = format!("http://{}/", page.address);
    browser.goto(&url).await.unwrap();
    eventually("the page sees the locker online", || async {
        browser.find(Locator::Id("link")).await.unwrap().text().await.unwrap() == "Online"
    })
    .await;

    // Accessible: a language, a labelled field, a status region read out as it changes.
    let lang = browser.execute("return document.documentElement.lang;", vec![]).await.unwrap();
    assert_eq!(lang, Value::from("en"));
    let label = browser.find(Locator::Css("label[for=code]")).await.unwrap().text().await.unwrap();
    assert!(label.contains("Type the code"), "{label}");
    let live = browser.find(Locator::Id("message")).await.unwrap().attr("aria-live").await.unwrap();
    assert_eq!(live.as_deref(), Some("polite"));

    // A wrong code, then Ann's code, on the keypad.
    tap(browser, "1234 5678").await;
    assert_eq!(answer(browser).await, "Code not accepted.");
    let env = &server.env;
    let (_, code) = env.delivered("ann@harbour.example").await;
    clear_message(browser).await;
    tap(browser, &code).await;
    let opened = answer(browser).await;
    assert!(opened.ends_with(" is open. Please close the door when you are done."), "{opened}");
    let n: u16 = opened.split_whitespace().nth(1).unwrap().parse().unwrap();
    eventually("the latch releases", || async { agent.bank.is_unlatched(n) }).await;

    // A QR scanner types into the focused field: a token that is not one is refused.
    clear_message(browser).await;
    let field = browser.find(Locator::Id("code")).await.unwrap();
    field.send_keys("CQ1:NOT-A-TOKEN\n").await.unwrap();
    assert_eq!(answer(browser).await, "Code not accepted.");

    // Carl the courier: his code, his work, a deposit that needs a larger compartment.
    env.announce("bob@harbour.example", "1Z-COURIER", SizeClass::Small).await;
    let code_today = server.courier_code().await;
    courier_types(browser, &code_today).await;
    let larger = browser
        .wait()
        .for_element(Locator::XPath("//button[starts-with(., 'Needs ')]"))
        .await
        .unwrap();
    let size = larger.text().await.unwrap();
    clear_message(browser).await;
    larger.click().await.unwrap();
    let opened = answer(browser).await;
    assert!(opened.starts_with("Compartment ") && opened.contains(" is open"), "{opened}");
    let slot: u16 = opened.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chosen = env.compartments.iter().find(|c| c.number.get() == slot).unwrap();
    assert_eq!(format!("Needs {}", chosen.size.as_str()), size, "the size he chose");
    // The kiosk shows the server's answer; the open command arrives beside it.
    eventually("the latch releases", || async { agent.bank.is_unlatched(slot) }).await;
    agent.bank.open_door(slot).unwrap();
    agent.bank.close_door(slot).unwrap();
    eventually("the server hears the door shut", || async {
        let rows = env.app.bank_overview(&env.bank).await.unwrap();
        rows.iter().any(|c| {
            c.number.get() == slot && c.door == custody_core::compartment::DoorState::Closed
        })
    })
    .await;
    clear_message(browser).await;
    let confirm = "//button[. = 'Confirm 1Z-COURIER']";
    browser.find(Locator::XPath(confirm)).await.unwrap().click().await.unwrap();
    assert_eq!(answer(browser).await, "Thank you: the deposit is recorded.");

    // The network goes: the page still loads from the agent, says so, and codes still work
    // from the agent's list, once each; so does Carl's, for a parcel announced before.
    env.announce("ann@harbour.example", "1Z-OFFLINE", SizeClass::Small).await;
    let (_, bobs) = env.delivered("bob@harbour.example").await;
    eventually("the agent holds the bank's codes", || async {
        let codes = env.app.offline_list(&env.bank).await.unwrap().codes.len();
        agent.handle.offline_codes() == Some(codes)
    })
    .await;
    browser.find(Locator::Id("courier-done")).await.unwrap().click().await.unwrap();
    cable.pull();
    eventually("the agent notices", || async { !agent.handle.is_ready() }).await;
    browser.goto(&url).await.unwrap();
    eventually("the page says it is offline", || async {
        browser.find(Locator::Id("link")).await.unwrap().text().await.unwrap()
            == "Offline: pickup codes, QR codes and courier codes still work here"
    })
    .await;
    clear_message(browser).await;
    tap(browser, &bobs).await;
    let opened = answer(browser).await;
    assert!(opened.ends_with(" is open. Please close the door when you are done."), "{opened}");
    clear_message(browser).await;
    tap(browser, &code).await;
    assert_eq!(answer(browser).await, "Code not accepted.", "Ann's code was used online");

    carl_deposits_offline(browser, &agent, &code_today).await;
}

/// Only loopback: the listener, and the name a request gives, so a web page elsewhere cannot
/// reach the kiosk through a name that resolves to this machine.
#[tokio::test]
async fn the_kiosk_answers_loopback_only() {
    let server = TestServer::start(custody_testkit::sqlite_store().await).await;
    let agent = server.agent().await;
    let err = kiosk::serve(agent.handle.clone(), "0.0.0.0:0".parse().unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("loopback only"), "{err}");
    let page = kiosk::serve(agent.handle.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/state", page.address);
    let ok = client.get(&url).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["online"], true);
    let rebound = client.get(&url).header("host", "kiosk.attacker.example").send().await.unwrap();
    assert_eq!(rebound.status(), 421);
    let page_headers = client.get(format!("http://{}/", page.address)).send().await.unwrap();
    let csp = page_headers.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
}
