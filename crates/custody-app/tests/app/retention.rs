//! Retention: each site keeps personal data as long as its admins say and the sweeper drops it
//! at that boundary, not a millisecond before; the log keeps verifying.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::alerts::AlertAt;
use custody_app::audit::{Verdict, verify_store};
use custody_app::parcels::PickupOutcome;
use custody_app::retention::Swept;
use custody_app::sessions::Client;
use custody_app::{AppError, Caller};
use custody_core::Timestamp;
use custody_core::alert::{AlertKind, Channel, Severity};
use custody_core::audit::AuditAction;
use custody_core::parcel::ParcelState;
use custody_core::site::Retention;
use custody_core::time::days;
use custody_proto::device::DoorReading;
use custody_testkit::env::PASSWORD;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;
use std::time::Duration;
use zeroize::Zeroizing;

fn at(t: Timestamp, d: Duration) -> Timestamp {
    t.plus(d)
}

/// A millisecond before `d` after `t`.
fn just_before(t: Timestamp, d: Duration) -> Timestamp {
    t.plus(d).minus(Duration::from_millis(1))
}

backends!(
    retention_drops_personal_data_at_its_boundary_and_not_before,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let admin = env.stepped_up(&env.admin);
        assert_eq!(env.app.retention(&admin, &env.site).await.unwrap(), Retention::DEFAULT);
        let own =
            Retention { parcel_days: 10, session_days: 5, delivery_days: 3, evidence_days: 90 };
        assert_eq!(env.app.set_retention(&admin, &env.site, own).await.unwrap(), own);

        // At T0: a parcel picked up, its message delivered, an alert's text message delivered, and
        // sessions of a resident of the site and of someone with no site.
        let subscriber = Env::as_person(&env.admin);
        env.app
            .subscribe_alerts(
                &subscriber,
                &env.site,
                Channel::Sms,
                Some("+447700900123"),
                Severity::Low,
            )
            .await
            .unwrap();
        let place =
            AlertAt { site: env.site.clone(), bank: Some(env.bank.clone()), compartment: None };
        env.app.raise_alert(AlertKind::DeviceOffline, place).await.unwrap();
        let (parcel, code) = env.delivered(env.ann.email.as_str()).await;
        let PickupOutcome::Accepted { compartment, .. } =
            env.app.redeem_code(&env.device, &code).await.unwrap()
        else {
            panic!("the code was refused");
        };
        let n = compartment.get();
        env.app.door_report(&env.device, n, DoorReading::Open).await.unwrap();
        env.app.door_report(&env.device, n, DoorReading::Closed).await.unwrap();
        let t0 = env.app.now();
        let picked = env.app.parcel(&Caller::Operator, &parcel).await.unwrap();
        assert_eq!((picked.state, picked.closed_at), (ParcelState::PickedUp, Some(t0)));
        let messages = env.app.lease_messages(10).await.unwrap();
        assert!(!messages.is_empty());
        for m in &messages {
            env.app.message_delivered(m).await.unwrap();
        }
        let texts = env.app.lease_alert_deliveries(10).await.unwrap();
        assert!(!texts.is_empty());
        for d in &texts {
            env.app.alert_delivered(d).await.unwrap();
        }
        let client = Client::new("192.0.2.10", "test");
        let password = || Zeroizing::new(PASSWORD.to_owned());
        env.app.login(env.ann.email.as_str(), password(), &client).await.unwrap();
        env.app.login(env.super_admin.email.as_str(), password(), &client).await.unwrap();
        let sessions = |who: custody_core::PersonId| {
            let store = env.store.store.clone();
            async move {
                store
                    .read(move |tx| async move { tx.sessions_of(&who).await }.boxed())
                    .await
                    .unwrap()
            }
        };
        let ends = sessions(env.ann.id.clone()).await[0].expires_at;
        let message_ids: Vec<_> = messages.iter().map(|m| m.id.clone()).collect();
        let left = || {
            let (store, ids, parcel) =
                (env.store.store.clone(), message_ids.clone(), parcel.clone());
            async move {
                store
                    .read(move |tx| {
                        async move {
                            let mut messages = 0;
                            for id in &ids {
                                messages += usize::from(tx.message(id).await?.is_some());
                            }
                            let parcel = tx.parcel(&parcel).await?.unwrap();
                            Ok::<_, AppError>((messages, parcel.recipient, parcel.tracking_ref))
                        }
                        .boxed()
                    })
                    .await
                    .unwrap()
            }
        };
        let sweep = || async { env.app.apply_retention().await.unwrap() };

        // Delivery records: kept until three days after delivery, then gone.
        env.clock.set(just_before(t0, days(3)));
        assert_eq!(sweep().await, Swept::default());
        env.clock.set(at(t0, days(3)));
        let swept = sweep().await;
        assert_eq!(
            (swept.messages, swept.alert_deliveries),
            (message_ids.len() as u64, texts.len() as u64)
        );
        assert_eq!((swept.parcels, swept.sessions), (0, 0));
        assert_eq!(left().await.0, 0);

        // Sessions: the site's resident's five days after it ended; the one of someone with no
        // site keeps the default thirty.
        env.clock.set(just_before(ends, days(5)));
        assert_eq!(sweep().await, Swept::default());
        env.clock.set(at(ends, days(5)));
        assert_eq!(sweep().await, Swept { sessions: 1, ..Swept::default() });
        assert!(sessions(env.ann.id.clone()).await.is_empty());
        assert_eq!(sessions(env.super_admin.id.clone()).await.len(), 1);

        // The parcel: ten days after pickup it keeps its facts and loses whom it was for and its
        // tracking number.
        env.clock.set(just_before(t0, days(10)));
        assert_eq!(sweep().await, Swept::default());
        let (_, recipient, tracking) = left().await;
        assert!(recipient.is_some() && tracking.is_some());
        env.clock.set(at(t0, days(10)));
        assert_eq!(sweep().await, Swept { parcels: 1, ..Swept::default() });
        let (_, recipient, tracking) = left().await;
        assert_eq!((recipient, tracking), (None, None));
        let kept = env.app.parcel(&Caller::Operator, &parcel).await.unwrap();
        assert_eq!(
            (kept.state, kept.closed_at, kept.tracking_ref),
            (ParcelState::PickedUp, Some(t0), None)
        );
        let theirs = env.app.personal_data(&Caller::Operator, &env.ann.id).await.unwrap();
        assert!(theirs.parcels.is_empty(), "no longer hers");

        env.clock.set(at(ends, days(30)));
        assert_eq!(sweep().await, Swept { sessions: 1, ..Swept::default() });
        assert_eq!(sweep().await, Swept::default(), "nothing twice");

        // Each sweep that dropped something says so in the log, which still verifies.
        let log = env.log().await;
        let reasons: Vec<_> = log
            .iter()
            .filter(|r| r.event.action == AuditAction::RetentionApply)
            .map(|r| r.event.reason.clone().unwrap())
            .collect();
        assert_eq!(
            reasons,
            [
                format!(
                    "parcels:0;sessions:0;messages:{};alert_deliveries:{}",
                    message_ids.len(),
                    texts.len()
                ),
                "parcels:0;sessions:1;messages:0;alert_deliveries:0".to_owned(),
                "parcels:1;sessions:0;messages:0;alert_deliveries:0".to_owned(),
                "parcels:0;sessions:1;messages:0;alert_deliveries:0".to_owned(),
            ]
        );
        let set = log.iter().find(|r| r.event.action == AuditAction::SiteRetention).unwrap();
        assert_eq!(
            set.event.reason.as_deref(),
            Some("parcels:10;sessions:5;deliveries:3;evidence:90")
        );
        assert!(matches!(
            verify_store(&env.store.store, None, |_, _| {}).await.unwrap(),
            Verdict::Intact { .. }
        ));
    }
);

backends!(retention_is_bounded_and_only_admins_in_scope_set_it, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = env.stepped_up(&env.admin);
    for (bad, field) in [
        (Retention { parcel_days: 0, ..Retention::DEFAULT }, "parcel_days"),
        (Retention { delivery_days: 3651, ..Retention::DEFAULT }, "delivery_days"),
    ] {
        let refused = env.app.set_retention(&admin, &env.site, bad).await.unwrap_err();
        assert!(matches!(&refused, AppError::Invalid(m) if m.contains(field)), "{refused:?}");
    }
    let shorter = Retention { parcel_days: 1, ..Retention::DEFAULT };
    // Without a fresh second factor, as a resident, or as a courier: refused, nothing changes.
    let plain = Env::as_person(&env.admin);
    assert!(env.app.set_retention(&plain, &env.site, shorter).await.is_err());
    assert!(env.app.set_retention(&Env::as_person(&env.ann), &env.site, shorter).await.is_err());
    assert!(
        env.app.set_retention(&Env::as_person(&env.courier), &env.site, shorter).await.is_err()
    );
    assert_eq!(env.app.retention(&admin, &env.site).await.unwrap(), Retention::DEFAULT);
    assert!(env.app.retention(&Env::as_person(&env.ann), &env.site).await.is_err());
});
