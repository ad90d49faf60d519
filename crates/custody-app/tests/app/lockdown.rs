//! Lockdowns: while a bank is locked down nothing of it opens, whoever asks and whatever
//! they hold (DESIGN.md §4 invariant 9); lifting one takes a step-up, a reason and a second
//! person. On both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::approvals::Decided;
use custody_app::bulk::BulkOpening;
use custody_app::lockdown::Lift;
use custody_app::parcels::PickupOutcome;
use custody_app::{AppConfig, Caller};
use custody_core::approval::ApprovalOutcome;
use custody_core::audit::{AuditAction, Outcome};
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;

/// The audit entries with `action`: outcome and reason code, oldest first.
async fn entries(env: &Env, action: AuditAction) -> Vec<(Outcome, Option<String>)> {
    let size = env.app.current_checkpoint().await.unwrap().0.size;
    let filter = custody_store::AuditFilter::default();
    let rows = env
        .app
        .store()
        .read(move |tx| async move { tx.audit_select(&filter, 0, size, 100_000).await }.boxed())
        .await
        .unwrap();
    rows.into_iter()
        .filter(|r| r.row.event.action == action)
        .map(|r| (r.row.event.outcome, r.row.event.reason))
        .collect()
}

fn code<T: std::fmt::Debug>(r: Result<T, custody_app::AppError>) -> &'static str {
    r.unwrap_err().code()
}

backends!(a_locked_down_bank_opens_for_nobody, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, pickup) = env.delivered("ann@harbour.example").await;
    let (other, _) = env.delivered("bob@harbour.example").await;
    let admin = env.stepped_up(&env.admin);
    // Residents and auditors cannot lock a bank down; staff can, with a reason, at once.
    assert_eq!(
        code(env.app.engage_lockdown(&env.stepped_up(&env.ann), &env.bank, "just curious").await),
        "forbidden"
    );
    assert_eq!(code(env.app.engage_lockdown(&admin, &env.bank, " ").await), "invalid_request");
    let first = env.app.engage_lockdown(&Env::as_person(&env.admin), &env.bank, "pry alarm").await;
    assert_eq!(first.unwrap().engaged_by, env.admin.id.as_str());

    // Every way in is refused, and each refusal is on the record.
    assert!(matches!(
        env.app.redeem_code(&env.device, &pickup).await.unwrap(),
        PickupOutcome::Refused
    ));
    let qr = env.qr_sent_for(&other).await;
    assert!(matches!(env.app.redeem_qr(&env.device, &qr).await.unwrap(), PickupOutcome::Refused));
    let presence = env.presence_code(&env.bank);
    let bob = Env::as_person(&env.bob);
    assert_eq!(code(env.app.open_from_app(&bob, &other, &presence).await), "locked_down");
    assert_eq!(
        code(env.app.remote_open(&admin, &env.compartments[2].id, "inspection").await),
        "locked_down"
    );
    assert_eq!(
        code(env.app.bulk_open(&admin, &env.bank, &[3, 4], "cleaning").await),
        "locked_down"
    );
    assert_eq!(code(env.app.retrieve(&admin, &other, "recalled").await), "locked_down");
    let carrier = env.carrier().await;
    let announced = env
        .announce("ann@harbour.example", "LOCKED-1", custody_core::compartment::SizeClass::Medium)
        .await;
    assert_eq!(
        code(env.app.start_deposit(&carrier, &announced.id, &env.bank).await),
        "locked_down"
    );
    for action in [
        AuditAction::PickupAttempt,
        AuditAction::RemoteOpen,
        AuditAction::BulkOpen,
        AuditAction::Retrieve,
        AuditAction::DepositReserve,
    ] {
        let refused = entries(&env, action)
            .await
            .into_iter()
            .filter(|(o, r)| {
                // A pickup attempt names its method: `code_locked_down`, `qr_…`, `app_…`.
                *o == Outcome::Denied && r.as_deref().is_some_and(|r| r.ends_with("locked_down"))
            })
            .count();
        // The pickup attempts are a typed code, a scanned QR code and an open from the app.
        let tried = if action == AuditAction::PickupAttempt { 3 } else { 1 };
        assert_eq!(refused, tried, "{action} refused and recorded");
    }
    // The pickup code was not spent: it works once the lockdown is lifted.
    let lifted = env.app.lift_lockdown(&admin, &env.bank, "false alarm, checked on site").await;
    let Lift::Pending(request) = lifted.unwrap() else { panic!("a lift needs a second person") };
    let root = env.stepped_up(&env.super_admin);
    let Decided { request: answered, .. } =
        env.app.decide_approval(&root, &request.id, ApprovalOutcome::Approved).await.unwrap();
    assert_eq!(answered.decision.map(|d| d.2), Some(ApprovalOutcome::Approved));
    assert!(env.app.lockdown(&admin, &env.bank).await.unwrap().is_none());
    assert!(matches!(
        env.app.redeem_code(&env.device, &pickup).await.unwrap(),
        PickupOutcome::Accepted { .. }
    ));
    let _ = parcel;
});

backends!(
    lifting_a_lockdown_takes_a_step_up_a_reason_and_a_second_person,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let admin = env.stepped_up(&env.admin);
        assert_eq!(
            code(env.app.lift_lockdown(&admin, &env.bank, "nothing to lift").await),
            "not_locked_down"
        );
        env.app.engage_lockdown(&admin, &env.bank, "drill alarm").await.unwrap();
        // No step-up, no reason, no standing: refused.
        assert_eq!(
            code(
                env.app
                    .lift_lockdown(&Env::as_person(&env.admin), &env.bank, "all clear now")
                    .await
            ),
            "step_up_required"
        );
        assert_eq!(code(env.app.lift_lockdown(&admin, &env.bank, "").await), "invalid_request");
        assert_eq!(
            code(
                env.app
                    .lift_lockdown(&env.stepped_up(&env.auditor), &env.bank, "all clear now")
                    .await
            ),
            "forbidden"
        );
        // Asked: nothing lifts until someone else approves; the asker cannot.
        let Lift::Pending(request) =
            env.app.lift_lockdown(&admin, &env.bank, "checked").await.unwrap()
        else {
            panic!("pending");
        };
        assert!(env.app.lockdown(&admin, &env.bank).await.unwrap().is_some());
        assert_eq!(
            code(env.app.decide_approval(&admin, &request.id, ApprovalOutcome::Approved).await),
            "same_person"
        );
        // The approver must be stepped up too.
        assert_eq!(
            code(
                env.app
                    .decide_approval(
                        &Env::as_person(&env.super_admin),
                        &request.id,
                        ApprovalOutcome::Approved
                    )
                    .await
            ),
            "step_up_required"
        );
        // Lifted and engaged again meanwhile: the old request no longer matches.
        let root = env.stepped_up(&env.super_admin);
        let Lift::Pending(second) =
            env.app.lift_lockdown(&admin, &env.bank, "again").await.unwrap()
        else {
            panic!("pending");
        };
        env.app.decide_approval(&root, &second.id, ApprovalOutcome::Approved).await.unwrap();
        env.clock.advance(custody_core::time::minutes(1));
        env.app.engage_lockdown(&admin, &env.bank, "second alarm").await.unwrap();
        assert_eq!(
            code(env.app.decide_approval(&root, &request.id, ApprovalOutcome::Approved).await),
            "approval_stale"
        );
        assert!(env.app.lockdown(&admin, &env.bank).await.unwrap().is_some(), "still locked down");
        assert_eq!(
            entries(&env, AuditAction::LockdownLift)
                .await
                .into_iter()
                .filter(|(o, _)| *o == Outcome::Success)
                .count(),
            1
        );
    }
);

backends!(without_approvals_a_stepped_up_admin_lifts_alone, |t: TestStore| async move {
    let config = AppConfig { lockdown_lift_needs_approval: false, ..AppConfig::default() };
    let env = Env::with_config(t, config).await;
    let admin = env.stepped_up(&env.admin);
    env.app.engage_lockdown(&admin, &env.bank, "pry alarm").await.unwrap();
    assert!(matches!(
        env.app.lift_lockdown(&admin, &env.bank, "checked").await.unwrap(),
        Lift::Lifted
    ));
    assert!(env.app.lockdown(&admin, &env.bank).await.unwrap().is_none());
    assert!(matches!(
        env.app.bulk_open(&admin, &env.bank, &[3, 4], "cleaning").await.unwrap(),
        BulkOpening::Opened(_)
    ));
    // The operator at the command line is no person: no step-up to ask of them either.
    env.app.engage_lockdown(&Caller::Operator, &env.bank, "maintenance").await.unwrap();
});
