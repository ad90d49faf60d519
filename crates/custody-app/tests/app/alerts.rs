//! Alerts: a bank's sensors raise them through its agent, readings of one thing join one
//! alert, and admins in scope acknowledge, note and resolve them, every step audited. On both
//! backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::alerts::AlertAt;
use custody_app::parcels::PickupOutcome;
use custody_app::{AppError, Caller};
use std::sync::atomic::{AtomicU64, Ordering};

use custody_core::alert::{
    AlertKind, AlertState, LockdownRule, LockdownScope, SensorSettings, Severity,
};
use custody_core::audit::AuditAction;
use custody_core::{AlertId, BankId};
use custody_testkit::{Env, TestStore, backends};

/// The device's next reading, under a journal counter of its own.
async fn read(
    env: &Env,
    kind: AlertKind,
    compartment: Option<u16>,
) -> Result<Option<AlertId>, AppError> {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    env.app.sensor_reading(&env.device, kind, compartment, env.app.now(), counter).await
}

backends!(readings_of_one_thing_raise_one_alert, |t: TestStore| async move {
    let env = Env::new(t).await;
    let now = env.app.now();
    let first = read(&env, AlertKind::Pry, Some(3)).await.unwrap().unwrap();
    let again = read(&env, AlertKind::Pry, Some(3)).await.unwrap().unwrap();
    assert_eq!(first, again, "the same pry, read twice");
    let other = read(&env, AlertKind::Pry, Some(4)).await.unwrap().unwrap();
    assert_ne!(first, other, "another compartment is another alert");
    let whole = read(&env, AlertKind::PowerLoss, None).await.unwrap().unwrap();

    // A reading sent again, its acknowledgement lost on the way, is taken once.
    let sent = env.app.sensor_reading(&env.device, AlertKind::Pry, Some(3), now, 7_000_000);
    assert_eq!(sent.await.unwrap(), Some(first.clone()));
    let resent = env.app.sensor_reading(&env.device, AlertKind::Pry, Some(3), now, 7_000_000);
    assert_eq!(resent.await.unwrap(), None);

    let admin = Env::as_person(&env.admin);
    let shown = env.app.alert(&admin, &first).await.unwrap();
    assert_eq!(shown.alert.readings, 3);
    assert_eq!(shown.alert.severity, Severity::Critical);
    assert_eq!(shown.alert.compartment, Some(3));
    assert_eq!(shown.alert.bank.as_ref(), Some(&env.bank));
    let whats: Vec<&str> = shown.timeline.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(whats, ["raised", "reading", "reading"]);
    assert_eq!(env.app.alert(&admin, &whole).await.unwrap().alert.severity, Severity::Medium);
    let live = env.app.alerts(&admin, &env.site, true).await.unwrap();
    assert_eq!(live.len(), 3);

    // Each reading is in the audit log, with the compartment it came from.
    let raised: Vec<_> = env
        .site_log(100)
        .await
        .into_iter()
        .filter(|r| r.event.action == AuditAction::AlertRaise)
        .collect();
    assert_eq!(raised.len(), 5);
    assert!(
        raised.iter().any(|r| r.event.target.compartment.as_ref() == Some(&env.compartments[2].id))
    );

    // The server's own alerts come from the server only.
    let refused = read(&env, AlertKind::AuditIntegrity, None).await;
    assert!(matches!(refused, Err(AppError::Invalid(_))), "{refused:?}");
    let nowhere = read(&env, AlertKind::Drill, Some(99)).await;
    assert!(matches!(nowhere, Err(AppError::Invalid(_))), "{nowhere:?}");
    let person = env.app.sensor_reading(&admin, AlertKind::Drill, Some(1), now, 1).await;
    assert!(matches!(person, Err(AppError::Forbidden)), "{person:?}");
    let place = AlertAt { site: env.site.clone(), bank: Some(env.bank.clone()), compartment: None };
    let server = env.app.raise_alert(AlertKind::DeviceOffline, place).await.unwrap();
    let shown = env.app.alert(&admin, &server).await.unwrap();
    assert_eq!(shown.timeline[0].actor, "system");
});

backends!(admins_acknowledge_note_and_resolve, |t: TestStore| async move {
    let env = Env::new(t).await;
    let id = read(&env, AlertKind::Drill, Some(1)).await.unwrap().unwrap();
    let (admin, auditor, ann) =
        (Env::as_person(&env.admin), Env::as_person(&env.auditor), Env::as_person(&env.ann));

    // An auditor sees it and changes nothing; a resident does not see it at all.
    assert_eq!(env.app.alerts(&auditor, &env.site, true).await.unwrap().len(), 1);
    assert!(matches!(env.app.acknowledge_alert(&auditor, &id).await, Err(AppError::Forbidden)));
    assert!(matches!(env.app.alerts(&ann, &env.site, false).await, Err(AppError::Forbidden)));
    assert!(matches!(env.app.alert(&ann, &id).await, Err(AppError::NotFound)));

    let taken = env.app.acknowledge_alert(&admin, &id).await.unwrap();
    assert_eq!(taken.state, AlertState::Acknowledged);
    assert_eq!(taken.owner.as_ref(), Some(&env.admin.id));
    let twice = env.app.acknowledge_alert(&admin, &id).await;
    assert!(matches!(twice, Err(AppError::Conflict { .. })), "{twice:?}");
    env.app.note_alert(&admin, &id, "camera 2 shows a man with a drill").await.unwrap();
    assert!(matches!(env.app.resolve_alert(&admin, &id, "").await, Err(AppError::Invalid(_))));
    let done = env.app.resolve_alert(&admin, &id, "police called, door replaced").await.unwrap();
    assert_eq!(done.state, AlertState::Resolved);
    let shown = env.app.alert(&admin, &id).await.unwrap();
    let steps: Vec<(&str, Option<&str>)> =
        shown.timeline.iter().map(|e| (e.what.as_str(), e.note.as_deref())).collect();
    assert_eq!(
        steps,
        [
            ("raised", None),
            ("acknowledged", None),
            ("note", Some("camera 2 shows a man with a drill")),
            ("resolved", Some("police called, door replaced"))
        ]
    );
    assert!(shown.timeline[1..].iter().all(|e| e.actor == env.admin.id.as_str()));
    let audited: Vec<AuditAction> = env
        .site_log(100)
        .await
        .into_iter()
        .map(|r| r.event.action)
        .filter(|a| a.as_str().starts_with("alert."))
        .collect();
    assert_eq!(
        audited.iter().filter(|a| **a != AuditAction::AlertRaise).count(),
        3 + 1,
        "acknowledge, note, resolve, and the auditor's refused attempt: {audited:?}"
    );
    assert!(
        env.site_log(100)
            .await
            .iter()
            .any(|r| r.event.action == AuditAction::AlertResolve && r.event.personal.is_some()),
        "the reason sealed"
    );

    // Resolved stays resolved; the next reading is a new alert.
    assert!(env.app.alerts(&admin, &env.site, true).await.unwrap().is_empty());
    let next = read(&env, AlertKind::Drill, Some(1)).await.unwrap().unwrap();
    assert_ne!(next, id);
    let caller = Caller::Operator;
    assert!(env.app.alert(&caller, &next).await.is_ok());
});

backends!(a_bank_whose_budget_is_spent_raises_one_brute_force_alert, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = Env::as_person(&env.admin);
    env.spend_bank_hour().await;
    assert!(env.app.alerts(&admin, &env.site, true).await.unwrap().is_empty(), "not yet");
    for _ in 0..3 {
        let paused = env.app.redeem_code(&env.device, "1 00000 00000").await.unwrap();
        assert!(matches!(paused, PickupOutcome::Paused), "{paused:?}");
    }
    let live = env.app.alerts(&admin, &env.site, true).await.unwrap();
    let kinds: Vec<(AlertKind, u64)> = live.iter().map(|a| (a.kind, a.readings)).collect();
    assert_eq!(kinds, [(AlertKind::BruteForce, 3)], "one alert, a reading per paused attempt");
    assert_eq!(live[0].severity, Severity::High);
});

backends!(a_rule_locks_down_as_a_matching_alert_is_raised, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (admin, auditor) = (Env::as_person(&env.admin), Env::as_person(&env.auditor));
    let locked = |bank: BankId| {
        let app = env.app.clone();
        async move { app.is_locked_down(&bank).await.unwrap() }
    };

    // No rule: an alert locks nothing down.
    read(&env, AlertKind::Pry, Some(1)).await.unwrap().unwrap();
    assert!(!locked(env.bank.clone()).await);

    let pry = LockdownRule {
        kind: Some(AlertKind::Pry),
        min_severity: Severity::High,
        scope: LockdownScope::Bank,
    };
    assert!(matches!(
        env.app.set_lockdown_rule(&auditor, &env.site, pry).await,
        Err(AppError::Forbidden)
    ));
    let rules = env.app.set_lockdown_rule(&admin, &env.site, pry).await.unwrap();
    assert_eq!(rules, [pry]);
    assert_eq!(env.app.lockdown_rules(&auditor, &env.site).await.unwrap(), [pry]);

    // Another reading of the live pry changes nothing; a power cut is not a pry.
    read(&env, AlertKind::Pry, Some(1)).await.unwrap().unwrap();
    read(&env, AlertKind::PowerLoss, None).await.unwrap().unwrap();
    assert!(!locked(env.bank.clone()).await);

    // A new pry: the bank is locked down in the same unit, on the record and the timeline.
    let id = read(&env, AlertKind::Pry, Some(2)).await.unwrap().unwrap();
    assert!(locked(env.bank.clone()).await);
    let lockdown = env.app.lockdown(&admin, &env.bank).await.unwrap().unwrap();
    assert_eq!(lockdown.engaged_by, format!("alert:{id}"));
    let timeline = env.app.alert(&admin, &id).await.unwrap().timeline;
    let steps: Vec<(&str, Option<&str>)> =
        timeline.iter().map(|e| (e.what.as_str(), e.note.as_deref())).collect();
    assert_eq!(steps, [("raised", None), ("locked_down", Some(env.bank.as_str()))]);
    assert!(env.site_log(50).await.iter().any(|r| {
        r.event.action == AuditAction::LockdownEngage
            && r.event.reason.as_deref() == Some(&format!("alert:{id}:pry"))
    }));

    // A rule for the whole site locks every bank of it.
    let garage = env.app.create_bank(&Caller::Operator, &env.site, "Garage").await.unwrap();
    let any =
        LockdownRule { kind: None, min_severity: Severity::Critical, scope: LockdownScope::Site };
    env.app.set_lockdown_rule(&admin, &env.site, any).await.unwrap();
    assert!(!locked(garage.id.clone()).await);
    read(&env, AlertKind::Drill, Some(3)).await.unwrap().unwrap();
    assert!(locked(garage.id.clone()).await);

    // Removing a rule lets doors stay open that would have closed: it needs a step-up.
    let plain = env.app.remove_lockdown_rule(&admin, &env.site, None).await;
    assert!(matches!(plain, Err(AppError::StepUpRequired)), "{plain:?}");
    let left = env.app.remove_lockdown_rule(&env.stepped_up(&env.admin), &env.site, None).await;
    assert_eq!(left.unwrap(), [pry]);
    let rules: Vec<Option<String>> = env
        .site_log(100)
        .await
        .into_iter()
        .filter(|r| r.event.action == AuditAction::LockdownRule)
        .map(|r| r.event.reason)
        .collect();
    assert_eq!(rules.len(), 5, "set twice, refused once, removed refused once, removed: {rules:?}");
});

backends!(a_banks_sensor_settings_are_an_admins_with_a_step_up, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (admin, auditor, ann) =
        (Env::as_person(&env.admin), Env::as_person(&env.auditor), Env::as_person(&env.ann));
    let defaults = env.app.sensor_settings(&auditor, &env.bank).await.unwrap();
    assert_eq!(defaults, SensorSettings::default());
    assert!(matches!(env.app.sensor_settings(&ann, &env.bank).await, Err(AppError::NotFound)));

    let quieter =
        SensorSettings::from_wire([("impact".to_owned(), 5, 20_000, 120_000)], 600).unwrap();
    let refused =
        [(auditor, "an auditor"), (admin.clone(), "an admin without a fresh second factor")];
    for (caller, who) in refused {
        let r = env.app.set_sensor_settings(&caller, &env.bank, quieter.clone()).await;
        assert!(matches!(r, Err(AppError::Forbidden | AppError::StepUpRequired)), "{who}: {r:?}");
    }
    let stored =
        env.app.set_sensor_settings(&env.stepped_up(&env.admin), &env.bank, quieter.clone()).await;
    assert_eq!(stored.unwrap(), quieter);
    assert_eq!(env.app.sensor_settings(&admin, &env.bank).await.unwrap(), quieter);

    // The bank's agent gets them with the site's lockdown rules.
    let pry = LockdownRule {
        kind: Some(AlertKind::Pry),
        min_severity: Severity::High,
        scope: LockdownScope::Bank,
    };
    env.app.set_lockdown_rule(&admin, &env.site, pry).await.unwrap();
    let policy = env.app.bank_policy(&env.bank).await.unwrap();
    assert_eq!((policy.sensors, policy.lockdown), (quieter, vec![pry]));

    let audited: Vec<(Option<String>, bool)> = env
        .site_log(100)
        .await
        .into_iter()
        .filter(|r| r.event.action == AuditAction::SensorSettings)
        .map(|r| (r.event.reason, r.event.outcome == custody_core::audit::Outcome::Success))
        .collect();
    assert_eq!(audited.len(), 3, "two refusals and the change: {audited:?}");
    assert!(audited.contains(&(Some("door:600;impact:5/20000/120000".to_owned()), true)));
});
