//! `custody demo --scenario tour`: the whole story told through the real API and device link,
//! step by step, stopping at the first step that misbehaves.

#![allow(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing by key yields Null rather than panicking, and the bank list always holds the three banks `start` made"
)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use custody_agent::core::Screen;
use custody_agent::hardware::SimulatedBank;
use custody_core::alert::AlertKind;
use custody_core::badge::{BadgeNumber, ReaderKind};
use custody_core::time::{days, minutes};
use custody_proto::device::CourierAction;

use super::{Bank, DEMO_PASSWORD, Demo, Poll, door_shut};
use futures_util::FutureExt as _;
use serde_json::{Value, json};

/// The session a sign-in answer starts (its cookie and CSRF token), and the answer.
async fn session_of(response: reqwest::Response, email: &str) -> anyhow::Result<(Session, Value)> {
    ensure!(response.status().is_success(), "signing in {email}: {}", response.status());
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no session cookie")?
        .to_owned();
    let body: Value = response.json().await?;
    let csrf = body["csrf_token"].as_str().unwrap_or_default().to_owned();
    Ok((Session { cookie, csrf }, body))
}

/// The tour's view of the world: an HTTP client like any carrier's or admin's, and the people
/// standing at the banks.
struct Tour<'a> {
    demo: &'a Demo,
    http: reqwest::Client,
    base: String,
    step: usize,
    seen_mail: std::collections::BTreeSet<PathBuf>,
}

impl Tour<'_> {
    fn ok(&mut self, what: &str) {
        self.step += 1;
        println!("✔ {:>2}. {what}", self.step);
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        match auth {
            Auth::Carrier => request = request.bearer_auth(self.demo.carrier_token.as_str()),
            Auth::Session(s) => {
                request = request.header("x-csrf-token", &s.csrf).header("cookie", &s.cookie);
            }
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("calling {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    async fn sign_in(&self, email: &str) -> anyhow::Result<Session> {
        let response = self
            .http
            .post(format!("{}/api/v1/sessions", self.base))
            .json(&json!({"email": email, "password": DEMO_PASSWORD}))
            .send()
            .await?;
        let (session, body) = session_of(response, email).await?;
        if body["second_factor_required"] != true {
            return Ok(session);
        }
        // An admin's password reaches only the second-factor step: the app's code next.
        let code = self.demo.authenticator_code(email)?;
        let response = self
            .http
            .post(format!("{}/api/v1/sessions/current/factor", self.base))
            .header("x-csrf-token", &session.csrf)
            .header("cookie", &session.cookie)
            .json(&json!({"totp": code.as_str()}))
            .send()
            .await?;
        Ok(session_of(response, email).await?.0)
    }

    /// The pickup code in the next e-mail to `to`.
    async fn mail_code(&mut self, to: &str) -> anyhow::Result<String> {
        let mut poll = Poll::new(&format!("an e-mail to {to}"));
        loop {
            if let Ok(entries) = std::fs::read_dir(&self.demo.outbox) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if self.seen_mail.contains(&path) {
                        continue;
                    }
                    let text = std::fs::read_to_string(&path)?;
                    let code = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Your pickup code: "))
                        .map(|c| c.trim().to_owned());
                    if let (true, Some(code)) = (text.contains(to), code) {
                        self.seen_mail.insert(path);
                        return Ok(code);
                    }
                }
            }
            poll.next().await?;
        }
    }

    /// Parcelco announces a parcel of `size` for `email` at the site; returns its id.
    async fn announce(
        &self,
        email: &str,
        tracking_ref: &str,
        size: &str,
    ) -> anyhow::Result<String> {
        let (status, parcel) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/parcels",
                Auth::Carrier,
                Some(json!({"site": self.demo.site.to_string(), "recipient_email": email, "tracking_ref": tracking_ref, "size": size})),
            )
            .await?;
        ensure!(status == 201, "announcing a parcel for {email}: {status} {parcel}");
        Ok(parcel["id"].as_str().context("parcel id")?.to_owned())
    }

    /// Carl signs in to the app and reads today's courier code.
    async fn carls_code(&self) -> anyhow::Result<String> {
        let carl = self.sign_in("carl@parcelco.example").await?;
        let (status, body) = self
            .call(reqwest::Method::GET, "/api/v1/me/courier-code", Auth::Session(&carl), None)
            .await?;
        let code = body["code"].as_str().filter(|_| status == 200);
        Ok(code.with_context(|| format!("Carl's courier code: {status} {body}"))?.to_owned())
    }

    /// Announces, deposits and confirms a parcel for `email` at `bank`; returns its id and
    /// compartment number.
    async fn deliver(
        &mut self,
        email: &str,
        bank: usize,
        size: &str,
    ) -> anyhow::Result<(String, u16)> {
        let b = self.demo.banks.get(bank).context("bank")?;
        let id = self.announce(email, &format!("PC{}", 1000 + self.step), size).await?;
        self.ok(&format!("Parcelco announces a {size} parcel for {email} ({id})"));

        let (status, deposit) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/parcels/{id}/deposit"),
                Auth::Carrier,
                Some(json!({"bank": b.id.to_string()})),
            )
            .await?;
        ensure!(
            status == 200 && deposit["command_delivered"] == true,
            "starting the deposit: {status} {deposit}"
        );
        let n = u16::try_from(deposit["compartment"]["number"].as_u64().context("compartment")?)?;
        unlatched(&b.doors, n).await?;
        self.ok(&format!("The courier starts the deposit at {}: compartment {n} unlocks", b.name));

        b.use_door(&self.demo.app, n).await?;
        let path = format!("/api/v1/parcels/{id}/deposit/confirm");
        let mut poll = Poll::new("the door-closed report to arrive");
        let confirmed = loop {
            let (status, body) =
                self.call(reqwest::Method::POST, &path, Auth::Carrier, None).await?;
            if status == 200 {
                break body;
            }
            ensure!(
                body["error"]["code"] == "door_not_closed",
                "confirming the deposit: {status} {body}"
            );
            poll.next().await?;
        };
        // Its carrier is never shown whether a recipient was told (docs/SECURITY.md, "Carriers
        // cannot learn who lives at a site"): the code in the mail shows it.
        ensure!(confirmed["state"] == "deposited", "after confirming: {confirmed}");
        self.ok(&format!(
            "The courier places the parcel, closes the door and confirms; {email} is notified"
        ));
        Ok((id, n))
    }

    async fn parcel_state(&self, id: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .call(reqwest::Method::GET, &format!("/api/v1/parcels/{id}"), Auth::Carrier, None)
            .await?;
        ensure!(status == 200, "reading parcel {id}: {status}");
        Ok(body["state"].as_str().unwrap_or_default().to_owned())
    }
}

/// A bank loses its network: its kiosk keeps serving pickups and Carl's deposit from the
/// verifiers it holds, and once the network is back the server takes both into the record,
/// once.
async fn offline_and_back(t: &mut Tour<'_>, at: usize) -> anyhow::Result<()> {
    let demo = t.demo;
    let bank = &demo.banks[at];
    // Announced before Bob's code is drawn, so the list his code brings the agent holds it.
    let carls = t.announce("ann@harbour.example", "PC-GARAGE-1", "small").await?;
    let carl = t.carls_code().await?;
    let (parcel, slot) = t.deliver("bob@harbour.example", at, "small").await?;
    let code = t.mail_code("bob@harbour.example").await?;
    let mut poll = Poll::new("the Garage's agent to hold Bob's new code");
    while bank.agent.offline_codes().is_none_or(|n| n == 0) {
        poll.next().await?;
    }
    bank.cable.pull();
    let mut poll = Poll::new("the Garage's agent to notice");
    while bank.agent.is_ready() {
        poll.next().await?;
    }
    t.ok("The Garage's network cable is pulled: its kiosk says so, and still holds a verifier \
         (a keyed hash, never the code) of each code waiting there, good for a day");
    screen_is(bank.agent.try_code(&code).await.as_ref(), &Screen::Open(slot), "an offline code")?;
    unlatched(&bank.doors, slot).await?;
    bank.doors.open_door(slot).map_err(|e| anyhow::anyhow!("door {slot}: {e}"))?;
    bank.doors.close_door(slot).map_err(|e| anyhow::anyhow!("door {slot}: {e}"))?;
    t.ok(&format!(
        "Bob types his code: the kiosk checks it itself, journals the use, and compartment \
         {slot} opens"
    ));
    screen_is(bank.agent.try_code(&code).await.as_ref(), &Screen::NotAccepted, "a spent code")?;
    t.ok("The same code again: refused, offline as online");
    let n = deposit_offline(bank, &carl, &carls).await?;
    t.ok(&format!(
        "Carl brings a parcel for Ann: the kiosk checks his code against a slow hash of today's, \
         compartment {n} opens, and he confirms once the door is shut"
    ));
    bank.cable.plug();
    tokio::time::timeout(Duration::from_mins(1), bank.agent.wait_ready())
        .await
        .context("the Garage's agent did not reconnect")?;
    let mut poll = Poll::new("the offline pickup to reach the record");
    while t.parcel_state(&parcel).await? != "picked_up" {
        poll.next().await?;
    }
    door_shut(&demo.app, &bank.id, slot).await?;
    t.ok("The cable is back: the agent reports the pickup and the door readings it journaled; \
         the server records the pickup once and acknowledges it");
    let mut poll = Poll::new("Carl's offline deposit to reach the record");
    while t.parcel_state(&carls).await? != "deposited" {
        poll.next().await?;
    }
    let _ = t.mail_code("ann@harbour.example").await?;
    t.ok("Carl's deposit is taken in as he made it, and Ann is sent her code");
    Ok(())
}

/// Carl deposits `parcel` with `code` at `bank` while it is offline, shuts the door and
/// confirms; returns the compartment.
async fn deposit_offline(bank: &Bank, code: &str, parcel: &str) -> anyhow::Result<u16> {
    let deposit = CourierAction::Deposit { parcel: parcel.to_owned(), size: None };
    let opened = bank.agent.courier(code, deposit).await;
    let Some(Screen::Open(n)) = opened else { bail!("Carl's offline deposit: {opened:?}") };
    unlatched(&bank.doors, n).await?;
    bank.doors.open_door(n).map_err(|e| anyhow::anyhow!("door {n}: {e}"))?;
    bank.doors.close_door(n).map_err(|e| anyhow::anyhow!("door {n}: {e}"))?;
    // The kiosk takes the confirmation once the agent has read the door shut.
    let mut poll = Poll::new("the kiosk to take Carl's confirmation");
    let confirm = CourierAction::Confirm { parcel: parcel.to_owned() };
    while bank.agent.courier(code, confirm.clone()).await != Some(Screen::Thanks) {
        poll.next().await?;
    }
    Ok(n)
}

/// Ada sets the site's rule that a pry locks its bank down; a pry at `at` raises a critical
/// alert and the bank's agent locks itself down at once; Ada resolves the alert and asks to
/// lift the lockdown, and Olly approves.
async fn pry_at_night(t: &mut Tour<'_>, at: usize) -> anyhow::Result<()> {
    let demo = t.demo;
    let bank = &demo.banks[at];
    // A fresh sign-in for each admin (a new authenticator step, a fresh factor for the lift).
    demo.clock.advance(minutes(1));
    let ada = t.sign_in("admin@harbour.example").await?;
    let rules = format!("/api/v1/sites/{}/lockdown-rules", demo.site);
    let rule = json!({"kind": "pry", "min_severity": "high", "scope": "bank"});
    let (status, body) =
        t.call(reqwest::Method::POST, &rules, Auth::Session(&ada), Some(rule)).await?;
    ensure!(status == 200, "setting the lockdown rule: {status} {body}");
    t.ok("Ada sets the site's rule: a pry locks its bank down");

    bank.agent.sensor(AlertKind::Pry, Some(2)).await;
    let mut poll = Poll::new(&format!("the {} to lock itself down", bank.name));
    while !bank.agent.is_interlocked() {
        poll.next().await?;
    }
    // The agent locks down at once, on its own; the server records the alert when the
    // reading reaches it over the link.
    let alerts = format!("/api/v1/sites/{}/alerts?live=true", demo.site);
    let mut poll = Poll::new("the pry alert");
    let pry = loop {
        let (status, live) =
            t.call(reqwest::Method::GET, &alerts, Auth::Session(&ada), None).await?;
        ensure!(status == 200, "the live alerts: {status} {live}");
        if let Some(pry) = live.as_array().and_then(|a| a.iter().find(|x| x["kind"] == "pry")) {
            break pry.clone();
        }
        poll.next().await?;
    };
    ensure!(pry["severity"] == "critical", "the pry's severity: {pry}");
    t.ok(&format!(
        "A pry at the {} compartment 2: a critical alert, and the bank locks itself down at once",
        bank.name
    ));

    let id = pry["id"].as_str().context("alert id")?;
    notified(t, id).await?;
    for (step, body) in [
        ("acknowledge", json!({})),
        ("notes", json!({"note": "camera 1 shows a man with a crowbar, gone at 03:14"})),
        ("resolve", json!({"reason": "door checked, lock intact, police report filed"})),
    ] {
        let path = format!("/api/v1/alerts/{id}/{step}");
        let (status, body) =
            t.call(reqwest::Method::POST, &path, Auth::Session(&ada), Some(body)).await?;
        ensure!(status == 200, "{step} the alert: {status} {body}");
    }
    t.ok("Ada takes the alert, notes what the camera shows, and resolves it");

    let export = format!("/api/v1/alerts/{id}/export");
    let reason = json!({"reason": "for the police report"});
    let (status, bundle) =
        t.call(reqwest::Method::POST, &export, Auth::Session(&ada), Some(reason)).await?;
    let bundle = bundle.as_str().filter(|_| status == 200);
    let bundle = bundle.with_context(|| format!("exporting the incident: {status}"))?;
    let key = custody_audit::checkpoint::NoteVerifier::parse(&demo.app.checkpoint_verifier_key())?;
    let verified = custody_audit::export::verify_export(bundle, &key)?;
    let incident = verified.incident.context("the bundle's incident")?;
    t.ok(&format!(
        "Ada exports the incident for the police: the alert, its timeline of {} events, each \
         backed by one of {} audit entries with proofs; the file verifies offline with the \
         checkpoint key alone",
        incident.timeline.len(),
        verified.entries
    ));

    let lift = format!("/api/v1/banks/{}/lockdown/lift", bank.id);
    let reason = json!({"reason": "lock checked on site after the pry alarm"});
    let (status, asked) =
        t.call(reqwest::Method::POST, &lift, Auth::Session(&ada), Some(reason)).await?;
    ensure!(status == 202, "asking to lift: {status} {asked}");
    let request = asked["id"].as_str().context("request id")?;
    let olly = t.sign_in("ops@harbour.example").await?;
    let approve = format!("/api/v1/approvals/{request}/approve");
    let (status, body) =
        t.call(reqwest::Method::POST, &approve, Auth::Session(&olly), Some(json!({}))).await?;
    ensure!((200..300).contains(&status), "approving the lift: {status} {body}");
    let mut poll = Poll::new(&format!("the {} to open again", bank.name));
    while bank.agent.is_interlocked() {
        poll.next().await?;
    }
    t.ok(&format!(
        "Lifting takes two: Ada asks with a fresh second factor and a reason, Olly approves, and \
         the {} opens again",
        bank.name
    ));
    Ok(())
}

/// Waits for alert `id` at the site's webhook (its signature checked with the endpoint's
/// secret) and at its syslog receiver (over TLS, as a CEF event).
async fn notified(t: &mut Tour<'_>, id: &str) -> anyhow::Result<()> {
    let mut receivers = t.demo.receivers.lock().await;
    let (mut webhook, mut syslog) = (false, false);
    while !(webhook && syslog) {
        let arrival = tokio::time::timeout(Duration::from_secs(10), receivers.arrivals.recv())
            .await
            .with_context(|| format!("alert {id}: webhook {webhook}, syslog {syslog}"))?
            .context("the alert receivers stopped")?;
        if arrival.alert != id {
            continue;
        }
        ensure!(arrival.authentic, "the {} of alert {id} is not authentic", arrival.channel);
        webhook |= arrival.channel == "webhook";
        syslog |= arrival.channel == "syslog";
    }
    t.ok("It reaches the site's webhook, signed (the signature checks out), and its SIEM by syslog over TLS, at once");
    Ok(())
}

/// Carl, Parcelco's courier, works the `bank`'s kiosk with today's code: his work list, a
/// deposit, the confirmation. Then his badge shows his work at the `badged` bank's reader over
/// Secure Channel, and is refused from a keyboard wedge.
async fn courier_at_the_kiosk(t: &mut Tour<'_>, bank: usize, badged: usize) -> anyhow::Result<()> {
    let demo = t.demo;
    // Five minutes on: the Lobby kiosk's budget for failed attempts, spent on the wrong codes
    // and used tokens above, has renewed.
    demo.clock.advance(minutes(5));
    let code = t.carls_code().await?;
    let id = t.announce("bob@harbour.example", "PC-KIOSK-1", "small").await?;
    let kiosk = &demo.banks[bank];
    let work = kiosk.agent.courier(&code, CourierAction::Visit).await;
    let listed = matches!(&work, Some(Screen::CourierWork { deposits, .. }) if deposits.iter().any(|p| p.id == id));
    ensure!(listed, "Carl's work at the {}: {work:?}", kiosk.name);
    t.ok(&format!(
        "Carl, Parcelco's courier, types today's code at the {} kiosk: it lists the parcel he brings",
        kiosk.name
    ));
    let deposit = CourierAction::Deposit { parcel: id.clone(), size: None };
    let opened = kiosk.agent.courier(&code, deposit).await;
    let Some(Screen::Open(slot)) = opened else { bail!("Carl's deposit: {opened:?}") };
    unlatched(&kiosk.doors, slot).await?;
    kiosk.use_door(&demo.app, slot).await?;
    door_shut(&demo.app, &kiosk.id, slot).await?;
    let done = kiosk.agent.courier(&code, CourierAction::Confirm { parcel: id }).await;
    screen_is(done.as_ref(), &Screen::Thanks, "Carl's confirmation")?;
    let _ = t.mail_code("bob@harbour.example").await?;
    t.ok(&format!(
        "He deposits it in compartment {slot}, shuts the door and confirms at the kiosk; Bob is notified"
    ));
    let reader = &demo.banks[badged].agent;
    let badge = "04A2B3C4D5E6FA";
    let work = reader.courier_badge(badge, ReaderKind::OsdpSecure, CourierAction::Visit).await;
    ensure!(matches!(work, Some(Screen::CourierWork { .. })), "Carl's badge: {work:?}");
    let typed = reader.courier_badge(badge, ReaderKind::Keyboard, CourierAction::Visit).await;
    screen_is(typed.as_ref(), &Screen::NotAccepted, "a courier badge from a keyboard wedge")?;
    t.ok(&format!(
        "At the {} his badge, read over Secure Channel, opens his work list; the same number typed by a keyboard wedge does not",
        demo.banks[badged].name
    ));
    Ok(())
}

/// Waits until the latch of compartment `n` has been released by the agent.
async fn unlatched(doors: &SimulatedBank, n: u16) -> anyhow::Result<()> {
    let mut poll = Poll::new(&format!("compartment {n} to unlock"));
    while !doors.is_unlatched(n) {
        poll.next().await?;
    }
    Ok(())
}

struct Session {
    cookie: String,
    csrf: String,
}

enum Auth<'a> {
    Carrier,
    Session(&'a Session),
}

fn screen_is(got: Option<&Screen>, want: &Screen, what: &str) -> anyhow::Result<()> {
    ensure!(got == Some(want), "{what}: the kiosk showed {got:?}, expected {want:?}");
    Ok(())
}

#[allow(clippy::too_many_lines, reason = "the tour is one story, told step by step")]
pub(super) async fn tour(demo: &Demo) -> anyhow::Result<usize> {
    let trust =
        custody_crypto::tls::ServerTrust { ca_pem: demo.data.server_ca_pem()?, pins: Vec::new() };
    let tls = custody_crypto::tls::client_config(
        &trust,
        None,
        &[b"h2", b"http/1.1"],
        demo.clock.clone(),
    )?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = format!("https://localhost:{}", demo.running.public.port());
    let mut t = Tour { demo, http, base, step: 0, seen_mail: std::collections::BTreeSet::new() };
    let [lobby, garage, mailroom] = [0usize, 1, 2];

    // 1. Deposit, notify, wrong codes, pickup.
    let (ann_parcel, ann_slot) = t.deliver("ann@harbour.example", lobby, "small").await?;
    let code = t.mail_code("ann@harbour.example").await?;
    t.ok("Ann's e-mail arrives with a one-time code (only its keyed hash is stored)");
    let lobby_agent = &demo.banks[lobby].agent;
    for wrong in ["0000 0000", "1234 5678"] {
        screen_is(
            lobby_agent.try_code(wrong).await.as_ref(),
            &Screen::NotAccepted,
            "a wrong code",
        )?;
    }
    t.ok("Someone tries two wrong codes at the Lobby kiosk: \"Code not accepted\" both times");
    screen_is(lobby_agent.try_code(&code).await.as_ref(), &Screen::Open(ann_slot), "Ann's code")?;
    let doors = demo.banks[lobby].doors.clone();
    unlatched(&doors, ann_slot).await?;
    demo.banks[lobby].use_door(&demo.app, ann_slot).await?;
    ensure!(t.parcel_state(&ann_parcel).await? == "picked_up", "Ann's parcel should be picked up");
    t.ok(&format!(
        "Ann types her code: compartment {ann_slot} opens, she takes the parcel and closes the door"
    ));
    door_shut(&demo.app, &demo.banks[lobby].id, ann_slot).await?;
    screen_is(lobby_agent.try_code(&code).await.as_ref(), &Screen::Open(ann_slot), "a re-open")?;
    unlatched(&doors, ann_slot).await?;
    demo.banks[lobby].use_door(&demo.app, ann_slot).await?;
    t.ok("She forgot her umbrella: within two minutes her code opens the emptied compartment once more");
    door_shut(&demo.app, &demo.banks[lobby].id, ann_slot).await?;
    screen_is(lobby_agent.try_code(&code).await.as_ref(), &Screen::NotAccepted, "a used code")?;
    t.ok("After that her code does not work again");

    // 2. The QR code, and opening from the app at the bank.
    let (qr_parcel, qr_slot) = t.deliver("ann@harbour.example", lobby, "small").await?;
    let _ = t.mail_code("ann@harbour.example").await?;
    let ann = t.sign_in("ann@harbour.example").await?;
    let (status, body) = t
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/parcels/{qr_parcel}/pickup-qr"),
            Auth::Session(&ann),
            None,
        )
        .await?;
    let token = body["token"].as_str().filter(|_| status == 200);
    let token = token.with_context(|| format!("Ann's QR code: {status} {body}"))?.to_owned();
    screen_is(lobby_agent.scan(&token).await.as_ref(), &Screen::Open(qr_slot), "Ann's QR code")?;
    unlatched(&doors, qr_slot).await?;
    demo.banks[lobby].use_door(&demo.app, qr_slot).await?;
    t.ok(&format!(
        "Another parcel for Ann: she holds the QR code her app shows to the scanner, and \
         compartment {qr_slot} opens (the kiosk checked the signature itself first)"
    ));
    door_shut(&demo.app, &demo.banks[lobby].id, qr_slot).await?;
    screen_is(lobby_agent.scan(&token).await.as_ref(), &Screen::NotAccepted, "a used QR code")?;
    t.ok("A photo of her screen is worth nothing now: the kiosk refuses the used token");
    let (app_parcel, _) = t.deliver("ann@harbour.example", lobby, "small").await?;
    let _ = t.mail_code("ann@harbour.example").await?;
    let path = format!("/api/v1/parcels/{app_parcel}/open");
    let shown = lobby_agent.presence_code().context("the Lobby kiosk shows a presence code")?;
    let guess = format!("{:06}", (shown.parse::<u32>()? + 1) % 1_000_000);
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            &path,
            Auth::Session(&ann),
            Some(json!({"presence_code": guess})),
        )
        .await?;
    ensure!(status == 409, "a code not read from the kiosk: {status} {body}");
    t.ok("From her sofa, Ann cannot open her next parcel from the app: it needs the code on the kiosk's screen");
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            &path,
            Auth::Session(&ann),
            Some(json!({"presence_code": shown.as_str()})),
        )
        .await?;
    let slot = body["compartment"].as_u64().filter(|_| status == 200);
    let slot =
        u16::try_from(slot.with_context(|| format!("opening from the app: {status} {body}"))?)?;
    unlatched(&doors, slot).await?;
    demo.banks[lobby].use_door(&demo.app, slot).await?;
    door_shut(&demo.app, &demo.banks[lobby].id, slot).await?;
    t.ok(&format!(
        "At the Lobby she types the six digits the kiosk shows into the app: compartment {slot} opens"
    ));

    // 3. Badges from the site's access-control system.
    let admin = t.sign_in("admin@harbour.example").await?;
    let csv = "Name,Card,Email\nAnn Resident,04A2B3C4D5E6F7,ann@harbour.example\n\
               Bob Resident,04A2B3C4D5E6F8,bob@harbour.example\n\
               Carl Courier,04A2B3C4D5E6FA,carl@parcelco.example\n";
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/sites/{}/badges/import", demo.site),
            Auth::Session(&admin),
            Some(json!({ "csv": csv })),
        )
        .await?;
    ensure!(status == 201, "importing badges: {status} {body}");
    t.ok("The admin imports Ann's, Bob's and Carl's badges from the access-control system's CSV export");
    let (badge_parcel, badge_slot) = t.deliver("ann@harbour.example", lobby, "small").await?;
    let _ = t.mail_code("ann@harbour.example").await?;
    let (_, reader) = demo.banks[lobby].reader.as_ref().context("the Lobby has a badge reader")?;
    reader.present(&BadgeNumber::parse("04A2B3C4D5E6F7")?);
    unlatched(&doors, badge_slot).await?;
    demo.banks[lobby].use_door(&demo.app, badge_slot).await?;
    door_shut(&demo.app, &demo.banks[lobby].id, badge_slot).await?;
    ensure!(t.parcel_state(&badge_parcel).await? == "picked_up", "Ann's badge pickup");
    t.ok(&format!(
        "Ann holds her badge to the Lobby's reader (OSDP, Secure Channel): compartment \
         {badge_slot} opens"
    ));
    let bobs = body
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["hint"] == "E6F8"))
        .and_then(|r| r["id"].as_str())
        .context("Bob's badge in the import")?
        .to_owned();
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/badges/{bobs}/revoke"),
            Auth::Session(&admin),
            None,
        )
        .await?;
    ensure!(status == 200, "revoking a badge: {status} {body}");
    screen_is(
        lobby_agent.badge("04A2B3C4D5E6F8", ReaderKind::OsdpSecure).await.as_ref(),
        &Screen::NotAccepted,
        "a revoked badge",
    )?;
    t.ok("Bob loses his badge; the admin revokes it and the kiosk refuses it from the sync that follows");

    // 4. The courier at the kiosk: today's code, and his badge over Secure Channel.
    courier_at_the_kiosk(&mut t, garage, lobby).await?;

    // 5. Expiry and return to the carrier.
    let (bob_parcel, bob_slot) = t.deliver("bob@harbour.example", garage, "medium").await?;
    let bob_code = t.mail_code("bob@harbour.example").await?;
    demo.clock.advance(days(7) + minutes(1));
    custody_server::workers::sweep(&demo.app).await?;
    ensure!(t.parcel_state(&bob_parcel).await? == "expired", "Bob's parcel should have expired");
    t.ok("A week passes without Bob: the parcel expires and its code is revoked");
    screen_is(
        demo.banks[garage].agent.try_code(&bob_code).await.as_ref(),
        &Screen::NotAccepted,
        "an expired code",
    )?;
    t.ok("Bob's late attempt with the old code is refused");
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/parcels/{bob_parcel}/return"),
            Auth::Carrier,
            None,
        )
        .await?;
    ensure!(
        status == 200 && body["command_delivered"] == true,
        "returning to the carrier: {status} {body}"
    );
    let gdoors = demo.banks[garage].doors.clone();
    unlatched(&gdoors, bob_slot).await?;
    demo.banks[garage].use_door(&demo.app, bob_slot).await?;
    ensure!(t.parcel_state(&bob_parcel).await? == "returned", "Bob's parcel should be returned");
    t.ok(&format!("The courier takes it back from compartment {bob_slot}: returned to Parcelco"));

    // 6. The Garage's network goes, and comes back.
    offline_and_back(&mut t, garage).await?;

    // 7. Staff retrieval and remote open, with reasons.
    let (third, third_slot) = t.deliver("ann@harbour.example", mailroom, "large").await?;
    let _ = t.mail_code("ann@harbour.example").await?;
    let admin = t.sign_in("admin@harbour.example").await?;
    t.ok("Ada Admin signs in: her password, then the code from her authenticator app");
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/parcels/{third}/retrieve"),
            Auth::Session(&admin),
            Some(json!({"reason": "Ann asked the front desk to hold it"})),
        )
        .await?;
    ensure!(
        status == 200 && body["parcel"]["state"] == "retrieved",
        "staff retrieval: {status} {body}"
    );
    t.ok(&format!(
        "Ada Admin retrieves Ann's parcel from compartment {third_slot} of the Mail room, giving a reason"
    ));
    let compartment = demo
        .app
        .bank_overview(&demo.banks[mailroom].id)
        .await?
        .into_iter()
        .find(|c| c.number.get() == 8)
        .context("compartment 8")?;
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/compartments/{}/open", compartment.id),
            Auth::Session(&admin),
            Some(json!({"reason": "check the refrigeration"})),
        )
        .await?;
    ensure!(status == 200 && body["command_delivered"] == true, "remote open: {status} {body}");
    unlatched(&demo.banks[mailroom].doors, 8).await?;
    t.ok("Ada opens the refrigerated compartment 8 remotely, with a reason");
    let ann = t.sign_in("ann@harbour.example").await?;
    let (status, _) = t
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/compartments/{}/open", compartment.id),
            Auth::Session(&ann),
            Some(json!({"reason": "let me in"})),
        )
        .await?;
    ensure!(status == 403, "a resident must not open compartments remotely: {status}");
    t.ok("Ann cannot open a compartment remotely (403)");

    // 8. A pry at night: the rule locks the bank down, and lifting it takes two people.
    pry_at_night(&mut t, lobby).await?;

    // 9. The chain of custody of each parcel.
    for (id, who, expect) in [
        (&ann_parcel, "Ann", "parcel.pick_up"),
        (&bob_parcel, "Bob", "parcel.return"),
        (&third, "Ann", "parcel.retrieve"),
    ] {
        let (status, history) = t
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/parcels/{id}/history"),
                Auth::Session(&admin),
                None,
            )
            .await?;
        ensure!(status == 200, "history of {id}: {status}");
        let actions: Vec<&str> = history["events"]
            .as_array()
            .context("events")?
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        for required in [
            "parcel.expect",
            "parcel.deposit.reserve",
            "compartment.open_command",
            "parcel.deposit",
            "parcel.notify",
            expect,
        ] {
            ensure!(
                actions.contains(&required),
                "the history of {who}'s parcel lacks {required}: {actions:?}"
            );
        }
    }
    t.ok("Every parcel's chain of custody shows each hand-off, in order");

    // The data directory holds the keys, the database and every agent's journal: nobody else
    // may read any of it.
    let private = custody_crypto::private_files::check_tree(demo.data.root())?;
    t.ok(&format!("Every file and folder in the data directory is its owner's alone ({private})"));

    // 10. The audit log of the whole story, against a checkpoint that left the database.
    let head =
        demo.app.store().read(|tx| async move { tx.tree_head().await }.boxed()).await?.size();
    let verifier =
        custody_audit::checkpoint::NoteVerifier::parse(&demo.data.checkpoint_verifier_key()?)?;
    let mut poll = Poll::new("a signed checkpoint of the whole story");
    let shipped = loop {
        let newest = custody_app::audit::newest_checkpoint_file(&demo.data.checkpoint_dir());
        if let Some(file) = newest {
            let candidate =
                verifier.open_checkpoint(&std::fs::read_to_string(&file)?, verifier.name())?;
            if candidate.size >= head {
                break candidate;
            }
        }
        poll.next().await?;
    };
    match custody_app::audit::verify_store(demo.app.store(), Some(&shipped), |_, _| {}).await? {
        custody_app::audit::Verdict::Intact { size, .. } => {
            t.ok(&format!(
                "The audit log verifies: {size} entries, containing the signed checkpoint of {}",
                shipped.size
            ));
        }
        custody_app::audit::Verdict::Tampered(e) => bail!("the audit log does not verify: {e}"),
    }
    let export = demo.data.root().join("audit-export.jsonl");
    let mut lines = String::new();
    let summary = demo
        .app
        .export_audit(&custody_store::AuditFilter::default(), |line| {
            lines.push_str(&serde_json::to_string(line).map_err(std::io::Error::other)?);
            lines.push('\n');
            Ok(())
        })
        .await?;
    std::fs::write(&export, &lines)?;
    let offline =
        custody_audit::export::verify_export(&std::fs::read_to_string(&export)?, &verifier)?;
    ensure!(
        offline.entries == summary.entries,
        "the export verified {} of {} entries",
        offline.entries,
        summary.entries
    );
    t.ok(&format!("The exported log ({} entries with inclusion proofs) verifies offline with the checkpoint key alone", offline.entries));
    Ok(t.step)
}
