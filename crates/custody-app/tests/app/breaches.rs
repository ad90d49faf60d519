//! A personal-data breach, declared: the people the log shows reached, the clocks from
//! discovery, the notices drafted, and each step recorded once, in order, on the record.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::breaches::NewBreach;
use custody_app::conflicts::ConflictCode;
use custody_app::parcels::PickupOutcome;
use custody_app::{AppError, Caller};
use custody_core::audit::AuditAction;
use custody_core::breach::BreachStep;
use custody_core::time::{hours, minutes};
use custody_proto::device::DoorReading;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;
use sqlx::{Connection as _, Row as _};

/// Ann's parcel delivered and picked up: entries at the bank naming her parcel.
async fn ann_collects(env: &Env) {
    let (_, code) = env.delivered(env.ann.email.as_str()).await;
    let PickupOutcome::Accepted { compartment, .. } =
        env.app.redeem_code(&env.device, &code).await.unwrap()
    else {
        panic!("the code was refused");
    };
    let n = compartment.get();
    env.app.door_report(&env.device, n, DoorReading::Open).await.unwrap();
    env.app.door_report(&env.device, n, DoorReading::Closed).await.unwrap();
}

backends!(a_breach_reaches_whom_the_log_shows_and_runs_its_clocks, |t: TestStore| async move {
    let env = Env::new(t).await;
    let from = env.app.now();
    ann_collects(&env).await;
    let to = env.app.now();
    // Later, outside the window: Bob's parcel.
    env.clock.advance(hours(2));
    env.delivered(env.bob.email.as_str()).await;
    env.clock.advance(hours(1));
    let found = env.app.now();
    env.clock.advance(minutes(30));

    let admin = env.stepped_up(&env.admin);
    let new = || NewBreach {
        site: env.site.clone(),
        bank: Some(env.bank.clone()),
        alert: None,
        summary: "The bank's service door was found open; its controller was reachable.".into(),
        window_from: from,
        window_to: to,
        discovered_at: found,
    };
    // Refused: no account of it, a window in the future, a plain session, a resident.
    let blank = NewBreach { summary: "  ".into(), ..new() };
    assert!(
        matches!(env.app.declare_breach(&admin, blank).await, Err(AppError::Invalid(m)) if m.contains("summary"))
    );
    let ahead = NewBreach { window_to: env.app.now().plus(hours(1)), ..new() };
    assert!(
        matches!(env.app.declare_breach(&admin, ahead).await, Err(AppError::Invalid(m)) if m.contains("window"))
    );
    assert!(env.app.declare_breach(&Env::as_person(&env.admin), new()).await.is_err());
    assert!(env.app.declare_breach(&env.stepped_up(&env.ann), new()).await.is_err());

    let breach = env.app.declare_breach(&admin, new()).await.unwrap();
    // Ann, whose parcel the entries concern; not Bob, whose parcel came later.
    let reached = {
        let (store, id) = (env.store.store.clone(), breach.id.clone());
        store.read(move |tx| async move { tx.breach_affected(&id).await }.boxed()).await.unwrap()
    };
    assert_eq!(reached, std::slice::from_ref(&env.ann.id));
    assert_eq!(breach.affected, 1);
    assert_eq!(breach.deadlines.authority, found.plus(hours(72)));
    assert_eq!(breach.deadlines.individuals, found.plus(custody_core::time::days(60)));
    assert!(breach.steps.is_empty());
    // Staff's account is sealed at rest.
    let mut conn = sqlx::AnyConnection::connect(&env.store.url).await.unwrap();
    let stored: Vec<u8> = sqlx::query("SELECT summary_sealed FROM breaches")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert!(!String::from_utf8_lossy(&stored).contains("service door"));
    // Auditors see it; a resident finds nothing.
    let seen = env.app.breach(&Env::as_person(&env.auditor), &breach.id).await.unwrap();
    assert_eq!(seen.summary, breach.summary);
    assert!(matches!(
        env.app.breach(&Env::as_person(&env.ann), &breach.id).await,
        Err(AppError::NotFound | AppError::Forbidden)
    ));

    // The drafts: to the authority with the count and the deadline, to Ann by name.
    let notices = env.app.breach_notices(&admin, &breach.id).await.unwrap();
    assert!(notices.authority.contains("about 1 "), "{}", notices.authority);
    assert!(notices.authority.contains("service door was found open"));
    assert_eq!(notices.individuals.len(), 1);
    let to_ann = &notices.individuals[0];
    assert_eq!(to_ann.email.as_deref(), Some(env.ann.email.as_str()));
    assert!(to_ann.text.starts_with(&format!("Dear {},", env.ann.name)), "{}", to_ann.text);

    // Steps: closing waits for the notices; each step once.
    let close = env.app.record_breach_step(&admin, &breach.id, BreachStep::Closed).await;
    assert!(matches!(
        close,
        Err(AppError::Conflict { code: ConflictCode::NoticesOutstanding, .. })
    ));
    env.app.record_breach_step(&admin, &breach.id, BreachStep::AuthorityNotified).await.unwrap();
    let again = env.app.record_breach_step(&admin, &breach.id, BreachStep::AuthorityNotified).await;
    assert!(matches!(again, Err(AppError::Conflict { code: ConflictCode::Exists, .. })));
    let close = env.app.record_breach_step(&admin, &breach.id, BreachStep::Closed).await;
    assert!(matches!(
        close,
        Err(AppError::Conflict { code: ConflictCode::NoticesOutstanding, .. })
    ));
    env.app.record_breach_step(&admin, &breach.id, BreachStep::IndividualsNotified).await.unwrap();
    let closed = env.app.record_breach_step(&admin, &breach.id, BreachStep::Closed).await.unwrap();
    let steps: Vec<_> = closed.steps.iter().map(|(s, _, by)| (*s, by.clone())).collect();
    assert_eq!(
        steps,
        [
            (BreachStep::AuthorityNotified, env.admin.id.clone()),
            (BreachStep::IndividualsNotified, env.admin.id.clone()),
            (BreachStep::Closed, env.admin.id.clone()),
        ]
    );

    // Every step is on the record, the refused declaration too.
    let log = env.log().await;
    let said: Vec<_> = log
        .iter()
        .filter(|r| {
            matches!(
                r.event.action,
                AuditAction::BreachDeclare | AuditAction::BreachNotices | AuditAction::BreachStep
            )
        })
        .map(|r| (r.event.action, r.event.reason.clone().unwrap_or_default()))
        .collect();
    let id = &breach.id;
    assert_eq!(
        said,
        [
            (AuditAction::BreachDeclare, "denied_step_up".to_owned()),
            (AuditAction::BreachDeclare, format!("breach:{id};affected:1")),
            (AuditAction::BreachNotices, format!("breach:{id}")),
            (AuditAction::BreachStep, format!("breach:{id};step:authority_notified")),
            (AuditAction::BreachStep, format!("breach:{id};step:individuals_notified")),
            (AuditAction::BreachStep, format!("breach:{id};step:closed")),
        ]
    );
    assert_eq!(env.app.breaches_at(&Caller::Operator, &env.site).await.unwrap().len(), 1);
});
