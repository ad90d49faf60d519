//! Key-encryption keys: a rotation re-wraps every person's data key under the new key, what
//! was sealed still reads, and a rotation stopped part-way carries on where it stopped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use custody_app::people::NewPerson;
use custody_app::personal::Statement;
use custody_app::{App, AppConfig, Caller};
use custody_core::ParcelId;
use custody_core::audit::AuditAction;
use custody_core::person::Role;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;

/// What `who` reads of the retrieval of `parcel` through `app`.
async fn words(app: &App, who: &Caller, parcel: &ParcelId) -> Statement {
    let (_, history) = app.parcel_history(who, parcel).await.unwrap();
    history.into_iter().find(|(r, _)| r.event.action == AuditAction::Retrieve).unwrap().1
}

/// The application a restarted server would run, on the keys now in the data directory.
fn restarted(env: &Env) -> App {
    let keys = env.data.load_keys().unwrap();
    App::new(env.store.store.clone(), Arc::new(env.clock.clone()), keys, AppConfig::default())
        .unwrap()
}

backends!(a_rotation_stopped_part_way_carries_on_and_loses_nothing, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = Env::as_person(&env.admin);
    let mut retrieved = Vec::new();
    for (who, said) in [("ann@harbour.example", "Ann's note"), ("bob@harbour.example", "Bob's")] {
        let (parcel, _) = env.delivered(who).await;
        env.app.retrieve(&admin, &parcel, said).await.unwrap().opened().unwrap();
        retrieved.push((parcel, said));
    }
    let before = env.app.current_kek();
    // A key for each of the six people seeded, who are sealed under theirs.
    assert_eq!(env.app.subject_keys_by_kek().await.unwrap(), [(before.clone(), 6)]);

    let new = env
        .data
        .rotate_kek(custody_app::setup::KekHome::File, &custody_crypto::Rng::new())
        .unwrap();
    assert_ne!(new, before);
    let app = restarted(&env);
    assert_eq!(app.current_kek(), new);

    // Only the operator rotates.
    let refused = app.rewrap_subject_keys(&admin, 1, |_, _| {}).await.unwrap_err();
    assert_eq!(refused.code(), "forbidden");

    // The process dies after its first batch is committed.
    let stopped = AssertUnwindSafe(app.rewrap_subject_keys(&Caller::Operator, 1, |moved, _| {
        assert!(moved < 1, "killed after the first batch");
    }))
    .catch_unwind()
    .await;
    assert!(stopped.is_err());
    let mut counts = app.subject_keys_by_kek().await.unwrap();
    counts.sort();
    let mut want = vec![(before.clone(), 5), (new.clone(), 1)];
    want.sort();
    assert_eq!(counts, want, "half moved, nothing lost");
    // The server started before the rotation holds only the old KEK: it refuses to wrap a new
    // person's key under it rather than wrap one a retirement could leave unreadable.
    let new_person = |email: &str| NewPerson {
        org: env.org.clone(),
        email: email.into(),
        name: "Newcomer".into(),
        role: Role::Resident,
        site: Some(env.site.clone()),
        carrier: None,
        password: None,
        reason: None,
    };
    let stale = env.app.create_person(&Caller::Operator, new_person("new@harbour.example")).await;
    assert_eq!(stale.unwrap_err().code(), "internal");
    // Nor is the old KEK retired while keys still name it.
    let retire = |app: App| {
        let data = env.data.clone();
        let held = env.data.held_keks().unwrap();
        async move {
            app.retire_keks(&Caller::Operator, held, move |id| {
                data.remove_kek(id).map_err(|e| e.to_string())
            })
            .await
        }
    };
    assert_eq!(retire(app.clone()).await.unwrap(), Vec::<String>::new());
    for (parcel, said) in &retrieved {
        assert_eq!(words(&app, &admin, parcel).await, Statement::Shown((*said).into()));
    }

    // Run again: it carries on, and a run with nothing left moves nothing.
    let mut seen = Vec::new();
    let moved =
        app.rewrap_subject_keys(&Caller::Operator, 1, |m, total| seen.push((m, total))).await;
    assert_eq!(moved.unwrap(), 5);
    assert_eq!(seen.last(), Some(&(5, 5)));
    assert_eq!(app.subject_keys_by_kek().await.unwrap(), [(new.clone(), 6)]);
    assert_eq!(app.rewrap_subject_keys(&Caller::Operator, 500, |_, _| {}).await.unwrap(), 0);
    for (parcel, said) in &retrieved {
        assert_eq!(words(&app, &admin, parcel).await, Statement::Shown((*said).into()));
    }
    // Now nothing names the old KEK: a person may not retire it; the operator does, once, and
    // its file is gone. A server started afterwards loads without it, and wraps and reads.
    let by_person = app.retire_keks(&admin, env.data.held_keks().unwrap(), |_| Ok(())).await;
    assert_eq!(by_person.unwrap_err().code(), "forbidden");
    assert_eq!(retire(app.clone()).await.unwrap(), std::slice::from_ref(&before));
    assert!(retire(app.clone()).await.unwrap().is_empty(), "retired once");
    assert!(!env.data.held_keks().unwrap().contains(&before));
    let app = restarted(&env);
    app.create_person(&Caller::Operator, new_person("new@harbour.example")).await.unwrap();
    // People's sealed addresses and names open under the new KEK: Ann signs in by address.
    let client = custody_app::sessions::Client::new("192.0.2.10", "test");
    let password = zeroize::Zeroizing::new(custody_testkit::env::PASSWORD.into());
    let session = app.login(env.ann.email.as_str(), password, &client).await.unwrap();
    assert_eq!(session.person, env.ann);
    // The refusal and each finished run are on the record, a run with the KEK and the count.
    let log =
        app.store().read(|tx| async move { tx.audit_from(0, 10_000).await }.boxed()).await.unwrap();
    let runs: Vec<_> = log
        .iter()
        .filter(|r| r.event.action == AuditAction::KeysRewrap)
        .filter_map(|r| r.event.reason.clone())
        .collect();
    assert_eq!(
        runs,
        ["denied_role".to_owned(), format!("kek:{new} moved:5"), format!("kek:{new} moved:0")]
    );
});
