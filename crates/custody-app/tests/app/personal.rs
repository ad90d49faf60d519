//! People at rest: addresses and names sealed under each person's own key, found by blind
//! index, sealed in place when an earlier version stored them in clear, and gone from the row
//! when the person is erased.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::alerts::AlertAt;
use custody_app::badges::BadgeSpec;
use custody_app::people::NewPerson;
use custody_app::personal::Statement;
use custody_app::sessions::Client;
use custody_app::sessions::NewSession;
use custody_app::{AppError, Caller};
use custody_core::PersonId;
use custody_core::alert::{AlertKind, Channel, Severity};
use custody_core::audit::AuditAction;
use custody_core::person::Role;
use custody_core::text::{Email, Name};
use custody_store::{PersonDetails, PersonRow};
use custody_testkit::env::PASSWORD;
use custody_testkit::{Env, TEST_EPOCH, TestStore, backends};
use futures_util::FutureExt as _;
use sqlx::{Connection as _, Row as _};
use zeroize::Zeroizing;

/// Every column of every row of `people`, as text (bytes as lossy UTF-8), for a search of
/// what a copy of the table would show.
async fn people_table(url: &str) -> String {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT id, org_id, email_index, email_sealed, name_sealed, clear_email, clear_name, \
         role, password_hash FROM people",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut out = String::new();
    for r in rows {
        for i in 0..r.len() {
            if let Ok(Some(text)) = r.try_get::<Option<String>, _>(i) {
                out.push_str(&text);
            } else if let Ok(Some(bytes)) = r.try_get::<Option<Vec<u8>>, _>(i) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
            out.push('|');
        }
        out.push('\n');
    }
    out
}

/// Signs in with the seeded password as `email`, typed as given.
async fn login(env: &Env, email: &str) -> Result<NewSession, AppError> {
    env.app.login(email, Zeroizing::new(PASSWORD.into()), &Client::new("192.0.2.10", "test")).await
}

backends!(people_are_sealed_and_found_by_their_blind_index, |t: TestStore| async move {
    let env = Env::new(t).await;
    let table = people_table(&env.store.url).await;
    for person in [&env.ann, &env.bob, &env.admin, &env.super_admin, &env.courier] {
        assert!(!table.contains(person.email.as_str()), "{} in clear:\n{table}", person.email);
        assert!(!table.contains(person.name.as_str()), "{} in clear:\n{table}", person.name);
    }
    // Sign-in by address finds the person through the index, in any case of letters.
    let upper = env.ann.email.as_str().to_uppercase();
    let session = login(&env, &upper).await.unwrap();
    assert_eq!(session.person, env.ann);
    // Reading a person opens their row.
    let info = env.app.session(&session.token).await.unwrap();
    assert_eq!(
        (info.person.email, info.person.name),
        (env.ann.email.clone(), env.ann.name.clone())
    );
});

backends!(a_sealed_field_moved_to_another_row_does_not_open, |t: TestStore| async move {
    let env = Env::new(t).await;
    // Someone with write access to the database copies Ann's sealed address into Bob's row,
    // hoping Bob's notifications go to Ann (or Ann's address shows as Bob's).
    let mut conn = sqlx::AnyConnection::connect(&env.store.url).await.unwrap();
    let ann_sealed: Vec<u8> = sqlx::query_scalar("SELECT email_sealed FROM people WHERE id = $1")
        .bind(env.ann.id.to_string())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE people SET email_sealed = $1 WHERE id = $2")
        .bind(ann_sealed)
        .bind(env.bob.id.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let refused = login(&env, env.bob.email.as_str());
    assert_eq!(refused.await.unwrap_err().code(), "internal", "the moved field must not open");
    // Ann's own row is untouched.
    login(&env, env.ann.email.as_str()).await.unwrap();
});

backends!(people_stored_in_clear_are_sealed_in_place_once, |t: TestStore| async move {
    let env = Env::new(t).await;
    // Two people as an earlier version stored them: address and name in clear, no key.
    let hash = {
        let id = env.ann.id.clone();
        let row = env.store.store.read(move |tx| async move { tx.person(&id).await }.boxed());
        row.await.unwrap().unwrap().password_hash
    };
    let old = |n: u8, email: &str, name: &str| PersonRow {
        id: PersonId::from_random([n; 16]),
        org: env.org.clone(),
        email_index: None,
        details: PersonDetails::Clear {
            email: Email::parse(email).unwrap(),
            name: Name::parse(name).unwrap(),
        },
        key: None,
        role: Role::Resident,
        site: Some(env.site.clone()),
        carrier: None,
        password_hash: hash.clone(),
        disabled_at: None,
        created_at: TEST_EPOCH,
    };
    let rows =
        [old(1, "carol@harbour.example", "Carol Old"), old(2, "dan@harbour.example", "Dan Old")];
    let inserted = rows.clone();
    env.store
        .store
        .write(move |tx| {
            async move {
                for row in &inserted {
                    tx.insert_person(row).await?;
                }
                Ok::<_, custody_store::StoreError>(())
            }
            .boxed()
        })
        .await
        .unwrap();
    assert!(people_table(&env.store.url).await.contains("carol@harbour.example"));
    // And an admin's note on an alert, as it was stored before notes were sealed.
    let place = AlertAt { site: env.site.clone(), bank: Some(env.bank.clone()), compartment: None };
    let alert = env.app.raise_alert(AlertKind::DeviceOffline, place).await.unwrap();
    let (noted, writer) = (alert.clone(), env.admin.id.to_string());
    env.store
        .store
        .write(move |tx| {
            async move {
                tx.add_alert_event(&noted, TEST_EPOCH, &writer, "note", Some("old words")).await
            }
            .boxed()
        })
        .await
        .unwrap();
    // Before sealing, nobody finds them by address.
    let early = login(&env, "carol@harbour.example");
    assert_eq!(early.await.unwrap_err().code(), "authentication_failed");

    // One row to a batch, with progress after each.
    let mut seen = Vec::new();
    let sealed = env.app.seal_personal_data(1, |done, total| seen.push((done, total))).await;
    assert_eq!(sealed.unwrap(), 3);
    assert_eq!(seen, [(1, 3), (2, 3), (3, 3)]);
    let timeline = env.app.alert(&Caller::Operator, &alert).await.unwrap().timeline;
    assert_eq!(timeline[1].note.as_deref(), Some("old words"), "sealed, and still read");
    let mut conn = sqlx::AnyConnection::connect(&env.store.url).await.unwrap();
    let clear: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM alert_events WHERE note = 'old words'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(clear, 0);
    let table = people_table(&env.store.url).await;
    for text in ["carol@harbour.example", "Carol Old", "dan@harbour.example", "Dan Old"] {
        assert!(!table.contains(text), "{text} still in clear:\n{table}");
    }
    let session = login(&env, "carol@harbour.example").await.unwrap();
    assert_eq!(session.person.name.as_str(), "Carol Old");
    let sealing: Vec<_> = env
        .log()
        .await
        .into_iter()
        .filter(|r| r.event.action == AuditAction::PersonalDataSeal)
        .collect();
    assert_eq!(sealing.len(), 1);
    assert_eq!(sealing[0].event.reason.as_deref(), Some("rows:3"));
    // Nothing left: a second run does nothing and records nothing.
    assert_eq!(env.app.seal_personal_data(1, |_, _| panic!("nothing to do")).await.unwrap(), 0);
});

backends!(an_erased_person_leaves_nothing_in_their_row, |t: TestStore| async move {
    let env = Env::new(t).await;
    let ann = env.ann.clone();
    assert!(env.app.erase_personal_data(&Caller::Operator, &ann.id).await.unwrap());
    let id = ann.id.clone();
    let row = env.store.store.read(move |tx| async move { tx.person(&id).await }.boxed());
    let row = row.await.unwrap().expect("the row stays for what refers to it");
    assert_eq!(
        (row.email_index, row.details, row.key, row.password_hash),
        (None, PersonDetails::Erased, None, None)
    );
    assert!(row.disabled_at.is_some());
    // She cannot sign in, and her address is free for a new account.
    let refused = login(&env, ann.email.as_str());
    assert_eq!(refused.await.unwrap_err().code(), "authentication_failed");
    let again = NewPerson {
        org: env.org.clone(),
        email: ann.email.to_string(),
        name: "Ann Again".into(),
        role: Role::Resident,
        site: Some(env.site.clone()),
        carrier: None,
        password: None,
        reason: None,
    };
    let new = env.app.create_person(&Caller::Operator, again).await.unwrap();
    assert_ne!(new.id, ann.id);
});

backends!(the_last_super_admin_cannot_be_erased, |t: TestStore| async move {
    let env = Env::new(t).await;
    let refused = env.app.erase_personal_data(&Caller::Operator, &env.super_admin.id).await;
    assert_eq!(refused.unwrap_err().code(), "last_super_admin");
    // Nothing changed: they still sign in.
    let id = env.super_admin.id.clone();
    let row = env.store.store.read(move |tx| async move { tx.person(&id).await }.boxed());
    assert!(matches!(row.await.unwrap().unwrap().details, PersonDetails::Sealed { .. }));
});

backends!(a_dump_of_the_database_names_nobody, |t: TestStore| async move {
    let env = Env::new(t).await;
    // Everything that names or reaches a person, or opens a door, stored the ways it can be:
    // people (seeded), sessions with where they came from, a phone number for alerts, a badge,
    // a parcel with its tracking number and pickup code, a sign-in link.
    let admin = Env::as_person(&env.admin);
    let session = env.sign_in(&env.admin).await;
    env.app
        .subscribe_alerts(&admin, &env.site, Channel::Sms, Some("+447700900123"), Severity::Medium)
        .await
        .unwrap();
    let spec = BadgeSpec { email: env.ann.email.to_string(), number: "04A2B3C4D5E6F7".into() };
    env.app.register_badge(&admin, &env.site, spec).await.unwrap();
    let (_, code) = env.delivered(env.ann.email.as_str()).await;
    let place = AlertAt { site: env.site.clone(), bank: Some(env.bank.clone()), compartment: None };
    let alert = env.app.raise_alert(AlertKind::DeviceOffline, place).await.unwrap();
    env.app.note_alert(&admin, &alert, "rang Dana Example about the door").await.unwrap();
    let client = Client::new("192.0.2.250", "custody-testkit");
    env.app
        .request_sign_in_link(env.bob.email.as_str(), "a browser binding", &client)
        .await
        .unwrap();

    let Some(dump) = custody_testkit::dump::dump("personal::dump", &env.store.url).await else {
        return;
    };
    let mut secrets = vec![
        "+447700900123".to_owned(),
        "rang Dana Example".to_owned(),
        "1Z999AA10123456784".to_owned(),
        "custody-testkit".to_owned(),
        "192.0.2.250".to_owned(),
        code.clone(),
        session.to_string(),
        env.carrier_token.to_string(),
    ];
    for p in [&env.super_admin, &env.admin, &env.auditor, &env.courier, &env.ann, &env.bob] {
        secrets.push(p.email.to_string());
        secrets.push(p.name.to_string());
    }
    for secret in &secrets {
        assert!(!dump.contains(secret.as_str()), "{secret} in a dump of the database");
    }
    // The badge's hint is four hex digits, which the dump's binary columns (left out of the
    // search) hold by chance; its column holds it sealed.
    let mut conn = sqlx::AnyConnection::connect(&env.store.url).await.unwrap();
    let clear: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM badges WHERE clear_hint IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(clear, 0);
});

backends!(a_note_on_an_alert_goes_with_its_writer, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = Env::as_person(&env.admin);
    let place = AlertAt { site: env.site.clone(), bank: Some(env.bank.clone()), compartment: None };
    let alert = env.app.raise_alert(AlertKind::DeviceOffline, place).await.unwrap();
    env.app.note_alert(&admin, &alert, "spoke to the caretaker").await.unwrap();
    let notes = |app: custody_app::App| {
        let alert = alert.clone();
        async move {
            let shown = app.alert(&Caller::Operator, &alert).await.unwrap();
            shown.timeline.into_iter().map(|e| (e.what, e.note)).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        notes(env.app.clone()).await,
        [("raised".into(), None), ("note".into(), Some("spoke to the caretaker".into()))]
    );
    assert!(env.app.erase_personal_data(&Caller::Operator, &env.admin.id).await.unwrap());
    // The entry stays, in its place on the timeline; the words are gone with their writer.
    assert_eq!(notes(env.app.clone()).await, [("raised".into(), None), ("note".into(), None)]);
});

backends!(a_person_gets_everything_held_about_them, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = Env::as_person(&env.admin);
    let session = env.sign_in(&env.ann).await;
    let spec = BadgeSpec { email: env.ann.email.to_string(), number: "04A2B3C4D5E6F7".into() };
    env.app.register_badge(&admin, &env.site, spec).await.unwrap();
    let (parcel, _) = env.delivered(env.ann.email.as_str()).await;
    env.app.retrieve(&admin, &parcel, "Ann asked us to hold it").await.unwrap().opened().unwrap();

    // Ann, signed in, asks for hers; an admin in scope answers a request made to the site.
    let ann = env.app.session(&session).await.unwrap().caller;
    for caller in [ann, admin.clone()] {
        let data = env.app.personal_data(&caller, &env.ann.id).await.unwrap();
        assert_eq!(data.person, env.ann);
        assert!(data.sessions.iter().any(|s| s.user_agent == "custody-testkit"));
        assert_eq!(data.badges.len(), 1);
        assert_eq!(data.badges[0].hint.as_deref(), Some("E6F7"));
        let ours = data.parcels.iter().find(|p| p.id == parcel).unwrap();
        assert_eq!(
            ours.tracking_ref.as_ref().map(custody_core::text::TrackingRef::as_str),
            Some("1Z999AA10123456784")
        );
        assert!(data.statements.iter().any(|(r, said)| {
            r.event.action == AuditAction::Retrieve
                && *said == Statement::Shown("Ann asked us to hold it".into())
        }));
    }
    // Someone else's is not there for another resident, nor for the auditor.
    for other in [Env::as_person(&env.bob), Env::as_person(&env.auditor)] {
        let refused = env.app.personal_data(&other, &env.ann.id).await.unwrap_err();
        assert_eq!(refused.code(), "not_found");
    }
    // Each export is on the record; an erased person has nothing left to export.
    let exports = env
        .log()
        .await
        .into_iter()
        .filter(|r| r.event.action == AuditAction::PersonalDataExport)
        .filter(|r| r.event.outcome == custody_core::audit::Outcome::Success)
        .count();
    assert_eq!(exports, 2);
    assert!(env.app.erase_personal_data(&Caller::Operator, &env.ann.id).await.unwrap());
    let gone = env.app.personal_data(&admin, &env.ann.id).await.unwrap_err();
    assert_eq!(gone.code(), "not_found");
});

backends!(consents_keep_their_history_and_go_with_the_person, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = Env::as_person(&env.admin);
    let t0 = env.app.now();
    let step = custody_core::time::minutes(1);
    env.app
        .subscribe_alerts(&admin, &env.site, Channel::Sms, Some("+447700900123"), Severity::Medium)
        .await
        .unwrap();
    env.clock.advance(step);
    env.app
        .subscribe_alerts(&admin, &env.site, Channel::Sms, Some("+447700900123"), Severity::High)
        .await
        .unwrap();
    env.clock.advance(step);
    env.app.subscribe_alerts(&admin, &env.site, Channel::Email, None, Severity::Low).await.unwrap();
    env.clock.advance(step);
    env.app.unsubscribe_alerts(&admin, &env.site, Channel::Sms).await.unwrap();
    // Withdrawing what was never given changes nothing.
    assert!(env.app.unsubscribe_alerts(&admin, &env.site, Channel::Sms).await.is_err());

    let data = env.app.personal_data(&admin, &env.admin.id).await.unwrap();
    let history: Vec<_> = data
        .consent_history
        .iter()
        .map(|c| (c.channel, c.given, c.at.since(t0).as_secs() / 60))
        .collect();
    assert_eq!(
        history,
        [
            (Channel::Sms, Some(Severity::Medium), 0),
            (Channel::Sms, Some(Severity::High), 1),
            (Channel::Email, Some(Severity::Low), 2),
            (Channel::Sms, None, 3),
        ]
    );
    assert_eq!(data.consents.len(), 1, "only the e-mail consent stands");
    assert!(data.consent_history.iter().all(|c| c.site == env.site));

    // Erased, the person's history goes with them.
    assert!(env.app.erase_personal_data(&Caller::Operator, &env.admin.id).await.unwrap());
    let who = env.admin.id.clone();
    let left = env
        .store
        .store
        .read(move |tx| async move { tx.consent_history(&who).await }.boxed())
        .await
        .unwrap();
    assert!(left.is_empty());
});

backends!(an_erased_persons_waiting_messages_are_withdrawn, |t: TestStore| async move {
    let env = Env::new(t).await;
    // Waiting to be sent: a pickup code and a sign-in link for Ann, a pickup code for Bob.
    let (ann_parcel, _) = env.delivered(env.ann.email.as_str()).await;
    let client = Client::new("192.0.2.251", "custody-testkit");
    env.app
        .request_sign_in_link(env.ann.email.as_str(), "a browser binding", &client)
        .await
        .unwrap();
    let (bob_parcel, _) = env.delivered(env.bob.email.as_str()).await;
    let held = || {
        let store = env.store.store.clone();
        async move { store.read(|tx| async move { tx.held_messages().await }.boxed()).await.unwrap() }
    };
    let before = held().await;
    assert!(before.len() >= 3, "{} waiting", before.len());

    assert!(env.app.erase_personal_data(&Caller::Operator, &env.ann.id).await.unwrap());
    // Nothing addressed to her is left to send or to open; Bob's code still goes.
    let after = held().await;
    assert!(after.iter().all(|m| m.parcel.as_ref() != Some(&ann_parcel)));
    assert_eq!(before.len() - after.len(), 2, "her code and her link, nothing else");
    assert!(after.iter().any(|m| m.parcel.as_ref() == Some(&bob_parcel)));
    let theirs = {
        let store = env.store.store.clone();
        let parcel = ann_parcel.clone();
        store
            .read(move |tx| async move { tx.messages_for_parcel(&parcel).await }.boxed())
            .await
            .unwrap()
    };
    for m in &theirs {
        assert!(m.sealed.is_none() && m.dead_at.is_some(), "{m:?}");
        assert_eq!(m.last_error.as_deref(), Some("recipient erased"));
    }
    let leased = env.app.lease_messages(10).await.unwrap();
    let opened: Vec<_> = leased.iter().map(|m| env.app.open_message(m).unwrap().to).collect();
    assert!(!opened.iter().any(|to| to.eq_ignore_ascii_case(env.ann.email.as_str())), "{opened:?}");
    assert!(opened.iter().any(|to| to == env.bob.email.as_str()));
});
