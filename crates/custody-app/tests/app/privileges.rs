//! Privilege rules against the real use cases, on both backends: grants go only downwards,
//! nobody changes themselves, scope holds, the last super-admin stays, disabling ends every
//! session at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::Caller;
use custody_app::bulk::BulkOpening;
use custody_app::people::NewPerson;
use custody_app::people::Person;
use custody_app::people::RoleChange;
use custody_app::sessions::Client;
use custody_core::alert::AlertKind;
use custody_core::approval::{ApprovalKind, ApprovalOutcome};
use custody_core::audit::{AuditAction, Outcome};
use custody_core::person::Role;
use custody_core::time::minutes;
use custody_testkit::env::PASSWORD;
use custody_testkit::{Env, TestStore, backends};
use zeroize::Zeroizing;

async fn add(env: &Env, email: &str, role: Role, org_wide: bool) -> Person {
    let new = NewPerson {
        org: env.org.clone(),
        email: email.into(),
        name: "Someone New".into(),
        role,
        site: (!org_wide).then(|| env.site.clone()),
        carrier: None,
        password: Some(Zeroizing::new(PASSWORD.into())),
        reason: None,
    };
    env.app.create_person(&Caller::Operator, new).await.unwrap()
}

backends!(grants_go_down_and_nobody_changes_themselves, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = env.stepped_up(&env.admin);
    let root = env.stepped_up(&env.super_admin);
    let code = |r: Result<RoleChange, custody_app::AppError>| r.map(|_| ()).unwrap_err().code();
    // Upwards or sideways: refused.
    assert_eq!(
        code(env.app.change_role(&admin, &env.ann.id, Role::Admin, "duty rota").await),
        "forbidden"
    );
    assert_eq!(
        code(env.app.change_role(&admin, &env.super_admin.id, Role::Resident, "duty rota").await),
        "forbidden",
        "an admin cannot touch a super-admin"
    );
    assert!(
        matches!(
            env.app.change_role(&root, &env.admin.id, Role::SuperAdmin, "duty rota").await,
            Ok(RoleChange::Pending(_))
        ),
        "a super-admin only asks for another super-admin"
    );
    // Themselves: refused, whatever the direction.
    assert_eq!(
        code(env.app.change_role(&admin, &env.admin.id, Role::Auditor, "duty rota").await),
        "forbidden"
    );
    assert_eq!(
        env.app.disable_person(&admin, &env.admin.id).await.unwrap_err().code(),
        "forbidden"
    );
    // Downwards, within scope, stepped up: fine, and it takes effect on the next request.
    let token = env.sign_in(&env.admin).await;
    assert!(env.app.sites_for(&env.app.session(&token).await.unwrap().caller).await.is_ok());
    let demoted =
        env.app.change_role(&root, &env.admin.id, Role::Auditor, "duty rota").await.unwrap();
    assert!(matches!(demoted, RoleChange::Changed(p) if p.role == Role::Auditor));
    let info = env.app.session(&token).await.unwrap();
    assert_eq!(info.person.role, Role::Auditor);
    let slot = env.compartments[0].id.clone();
    assert_eq!(
        env.app.remote_open(&info.caller, &slot, "still an admin?").await.unwrap_err().code(),
        "forbidden"
    );
});

backends!(role_changes_need_a_step_up_and_respect_scope, |t: TestStore| async move {
    let env = Env::new(t).await;
    let org_auditor = &env.auditor;
    let site_auditor = add(&env, "site-auditor@acme.example", Role::Auditor, false).await;
    // Without a fresh factor, a role change is refused and audited.
    assert_eq!(
        env.app
            .change_role(&Env::as_person(&env.admin), &site_auditor.id, Role::Resident, "moved out")
            .await
            .unwrap_err()
            .code(),
        "step_up_required"
    );
    let admin = env.stepped_up(&env.admin);
    // A site admin reaches people of their site, not org-wide ones.
    assert_eq!(
        env.app
            .change_role(&admin, &org_auditor.id, Role::Resident, "duty rota")
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert!(
        env.app.change_role(&admin, &site_auditor.id, Role::Resident, "duty rota").await.is_ok()
    );
    // Couriers keep their carrier; turning someone into one is refused with a reason.
    let err =
        env.app.change_role(&admin, &env.ann.id, Role::Courier, "duty rota").await.unwrap_err();
    assert_eq!(err.code(), "invalid_request");
});

backends!(the_last_super_admin_stays, |t: TestStore| async move {
    let env = Env::new(t).await;
    let op = Caller::Operator;
    let root = &env.super_admin;
    let last = env.app.change_role(&op, &root.id, Role::Admin, "duty rota").await.unwrap_err();
    assert_eq!(last.code(), "last_super_admin");
    assert_eq!(env.app.disable_person(&op, &root.id).await.unwrap_err().code(), "last_super_admin");
    // With a second one, either may go, but never both, however the requests race.
    let second = add(&env, "second-root@acme.example", Role::SuperAdmin, true).await;
    let (a, b) = tokio::join!(
        env.app.change_role(&op, &root.id, Role::Admin, "duty rota"),
        env.app.disable_person(&op, &second.id),
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one of the two wins: {a:?} {b:?}");
    let people = env
        .app
        .store()
        .read({
            let org = env.org.clone();
            move |tx| Box::pin(async move { tx.people(&org).await })
        })
        .await
        .unwrap();
    let left =
        people.iter().filter(|p| p.role == Role::SuperAdmin && p.disabled_at.is_none()).count();
    assert_eq!(left, 1);
});

backends!(disabling_ends_every_session_at_once, |t: TestStore| async move {
    let env = Env::new(t).await;
    let client = Client::new("198.51.100.20", "privileges-test");
    let phone = env.sign_in(&env.ann).await;
    let laptop = env.sign_in(&env.ann).await;
    env.app.disable_person(&Env::as_person(&env.admin), &env.ann.id).await.unwrap();
    assert!(env.app.session(&phone).await.is_err());
    assert!(env.app.session(&laptop).await.is_err());
    let again = env
        .app
        .login(env.ann.email.as_str(), Zeroizing::new(PASSWORD.into()), &client)
        .await
        .unwrap_err();
    assert_eq!(again.code(), "authentication_failed", "the same answer as a wrong password");
    // Disabling twice is a conflict, not a second entry.
    env.clock.advance(minutes(1));
    let twice = env.app.disable_person(&Env::as_person(&env.admin), &env.ann.id).await;
    assert_eq!(twice.unwrap_err().code(), "disabled");
});

backends!(a_super_admin_grant_needs_a_second_super_admin, |t: TestStore| async move {
    let env = Env::new(t).await;
    let second = add(&env, "second-root@acme.example", Role::SuperAdmin, true).await;
    let root = env.stepped_up(&env.super_admin);
    let ask = || async {
        match env
            .app
            .change_role(&root, &env.admin.id, Role::SuperAdmin, "duty rota")
            .await
            .unwrap()
        {
            RoleChange::Pending(request) => request,
            RoleChange::Changed(_) => panic!("granted without a second person"),
        }
    };
    let request = ask().await;
    let decide = |caller: Caller, outcome| {
        let id = request.id.clone();
        let app = env.app.clone();
        async move { app.decide_approval(&caller, &id, outcome).await }
    };
    let code = |r: Result<_, custody_app::AppError>| r.map(|_| ()).unwrap_err().code();
    // Not the one who asked, not an admin, not without a fresh factor.
    assert_eq!(code(decide(root.clone(), ApprovalOutcome::Approved).await), "same_person");
    assert_eq!(
        code(decide(env.stepped_up(&env.admin), ApprovalOutcome::Approved).await),
        "forbidden"
    );
    assert_eq!(
        code(decide(Env::as_person(&second), ApprovalOutcome::Approved).await),
        "step_up_required"
    );
    assert!(env.app.pending_approvals(&root).await.unwrap().iter().any(|a| a.id == request.id));
    let for_second = env.app.pending_approvals(&Env::as_person(&second)).await.unwrap();
    assert_eq!(for_second.len(), 1, "the other super-admin sees what waits for them");
    assert!(env.app.pending_approvals(&Env::as_person(&env.admin)).await.unwrap().is_empty());
    // The second super-admin approves: it runs, once.
    let done = decide(env.stepped_up(&second), ApprovalOutcome::Approved).await.unwrap();
    assert_eq!(
        done.request.decision.map(|(by, _, o)| (by, o)),
        Some((second.id.clone(), ApprovalOutcome::Approved))
    );
    let admin = env.app.store().read({
        let id = env.admin.id.clone();
        move |tx| Box::pin(async move { tx.person(&id).await })
    });
    assert_eq!(admin.await.unwrap().unwrap().role, Role::SuperAdmin);
    assert_eq!(
        code(decide(env.stepped_up(&second), ApprovalOutcome::Approved).await),
        "approval_closed"
    );
    let log = env
        .app
        .store()
        .read(|tx| Box::pin(async move { tx.audit_from(0, 100_000).await }))
        .await
        .unwrap();
    let grant = log.iter().rev().find(|r| r.event.action == AuditAction::PersonRoleChange).unwrap();
    assert_eq!(grant.event.actor.id.as_deref(), Some(second.id.as_str()), "the approver acted");
    assert!(
        grant
            .event
            .reason
            .as_deref()
            .unwrap()
            .ends_with(&format!("requested_by:{}", env.super_admin.id)),
        "and the one who asked is named"
    );
});

backends!(approvals_lapse_go_stale_and_can_be_withdrawn, |t: TestStore| async move {
    let env = Env::new(t).await;
    let second = add(&env, "second-root@acme.example", Role::SuperAdmin, true).await;
    let target = add(&env, "org-admin@acme.example", Role::Admin, true).await;
    let ask = || async {
        let root = env.stepped_up(&env.super_admin);
        match env.app.change_role(&root, &target.id, Role::SuperAdmin, "duty rota").await.unwrap() {
            RoleChange::Pending(request) => request,
            RoleChange::Changed(_) => panic!("granted without a second person"),
        }
    };
    // Unanswered for fifteen minutes, a request lapses.
    let lapsed = ask().await;
    env.clock.advance(minutes(16));
    let approver = env.stepped_up(&second);
    let late = env.app.decide_approval(&approver, &lapsed.id, ApprovalOutcome::Approved).await;
    assert_eq!(late.unwrap_err().code(), "approval_closed");
    // If the person changes meanwhile, what was asked no longer holds.
    let stale = ask().await;
    env.app.change_role(&Caller::Operator, &target.id, Role::Auditor, "duty rota").await.unwrap();
    let approver = env.stepped_up(&second);
    let approve = env.app.decide_approval(&approver, &stale.id, ApprovalOutcome::Approved).await;
    assert_eq!(approve.unwrap_err().code(), "approval_stale");
    // The one who asked may withdraw.
    env.app.change_role(&Caller::Operator, &target.id, Role::Admin, "duty rota").await.unwrap();
    let withdrawn = ask().await;
    let root = env.stepped_up(&env.super_admin);
    let answer =
        env.app.decide_approval(&root, &withdrawn.id, ApprovalOutcome::Rejected).await.unwrap();
    assert_eq!(answer.request.decision.map(|(_, _, o)| o), Some(ApprovalOutcome::Rejected));
});

fn opened(result: BulkOpening) -> usize {
    match result {
        BulkOpening::Opened(openings) => openings.len(),
        BulkOpening::Pending(_) => panic!("asked for approval instead of opening"),
    }
}

backends!(a_small_bulk_open_runs_at_once_after_a_step_up, |t: TestStore| async move {
    let env = Env::new(t).await;
    let reason = "cleaning crew, ticket 4411";
    let code = |r: Result<BulkOpening, custody_app::AppError>| r.map(|_| ()).unwrap_err().code();
    assert_eq!(
        code(env.app.bulk_open(&Env::as_person(&env.admin), &env.bank, &[1, 2, 3], reason).await),
        "step_up_required"
    );
    assert_eq!(
        code(env.app.bulk_open(&env.stepped_up(&env.auditor), &env.bank, &[1, 2, 3], reason).await),
        "forbidden"
    );
    assert_eq!(
        code(env.app.bulk_open(&env.stepped_up(&env.admin), &env.bank, &[2, 2], reason).await),
        "invalid_request",
        "one compartment is a remote open"
    );
    let admin = env.stepped_up(&env.admin);
    assert_eq!(opened(env.app.bulk_open(&admin, &env.bank, &[3, 1, 2], reason).await.unwrap()), 3);
    let log = env
        .app
        .store()
        .read(|tx| Box::pin(async move { tx.audit_from(0, 100_000).await }))
        .await
        .unwrap();
    let bulk: Vec<_> = log.iter().filter(|r| r.event.action == AuditAction::BulkOpen).collect();
    assert_eq!(bulk.len(), 4, "two refusals, the request with its sealed reason, the run");
    assert!(bulk[2].event.personal.is_some(), "the words are sealed");
    assert_eq!(bulk[3].event.reason.as_deref(), Some("ran:alone:3"));
});

backends!(a_larger_bulk_open_waits_for_a_second_person, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = env.stepped_up(&env.admin);
    let request =
        match env.app.bulk_open(&admin, &env.bank, &[1, 2, 3, 4, 5], "empty the bank").await {
            Ok(BulkOpening::Pending(request)) => request,
            other => panic!("{other:?}"),
        };
    let own = env.app.decide_approval(&admin, &request.id, ApprovalOutcome::Approved).await;
    assert_eq!(own.unwrap_err().code(), "same_person");
    // Staff of the site (here the org-wide super-admin), stepped up, approve it: it runs.
    let root = env.stepped_up(&env.super_admin);
    assert!(env.app.pending_approvals(&root).await.unwrap().iter().any(|a| a.id == request.id));
    let decided =
        env.app.decide_approval(&root, &request.id, ApprovalOutcome::Approved).await.unwrap();
    assert_eq!(decided.openings.len(), 5);
    assert_eq!(decided.openings[4].command.command.purpose, "bulk_open");
    let again = env.app.decide_approval(&root, &request.id, ApprovalOutcome::Approved).await;
    assert_eq!(again.unwrap_err().code(), "approval_closed");
});

backends!(bulk_opens_are_capped_per_person_whatever_the_approvals, |t: TestStore| async move {
    // A remote-open budget wider than the cap, so the cap is what holds here.
    let budget = custody_core::approval::RemoteOpenBudget {
        per_opener: 64,
        per_bank: 64,
        ..custody_core::approval::RemoteOpenBudget::default()
    };
    let config =
        custody_app::AppConfig { remote_opens: budget, ..custody_app::AppConfig::default() };
    let env = Env::with_config(t, config).await;
    let admin = env.stepped_up(&env.admin);
    // Twenty-four compartments an hour, three at a time.
    for _ in 0..8 {
        assert_eq!(
            opened(env.app.bulk_open(&admin, &env.bank, &[4, 5, 6], "inspection").await.unwrap()),
            3
        );
    }
    let over = env.app.bulk_open(&admin, &env.bank, &[4, 5], "inspection").await;
    assert_eq!(over.map(|_| ()).unwrap_err().code(), "bulk_open_cap");
    // An approval does not lift the cap of the person who asked.
    let request = match env.app.bulk_open(&admin, &env.bank, &[1, 2, 3, 4], "more").await {
        Ok(BulkOpening::Pending(request)) => request,
        other => panic!("{other:?}"),
    };
    let root = env.stepped_up(&env.super_admin);
    let approved = env.app.decide_approval(&root, &request.id, ApprovalOutcome::Approved).await;
    assert_eq!(approved.unwrap_err().code(), "bulk_open_cap");
    // Both refusals are on the record, and someone emptying a bank is an alert for its site.
    let refused = env
        .site_log(100)
        .await
        .into_iter()
        .filter(|r| r.event.action == AuditAction::BulkOpen && r.event.outcome == Outcome::Denied)
        .filter(|r| r.event.reason.as_deref().is_some_and(|r| r.starts_with("over_cap:")))
        .count();
    assert_eq!(refused, 2);
    let alerts = env.app.alerts(&admin, &env.site, true).await.unwrap();
    let kinds: Vec<_> = alerts.iter().map(|a| (a.kind, a.readings)).collect();
    assert_eq!(kinds, [(AlertKind::BulkOpen, 2)]);
    // Another person is not held by the admin's cap, and an hour on the admin is free again.
    assert_eq!(opened(env.app.bulk_open(&root, &env.bank, &[1, 2], "check").await.unwrap()), 2);
    env.clock.advance(custody_core::time::hours(1));
    let admin = env.stepped_up(&env.admin);
    assert_eq!(opened(env.app.bulk_open(&admin, &env.bank, &[1, 2], "check").await.unwrap()), 2);
});

/// The remote-open budget, read back from the audit log: requests held for a second person.
async fn held_for_approval(env: &Env) -> usize {
    env.site_log(1000)
        .await
        .iter()
        .filter(|r| r.event.reason.as_deref().is_some_and(|r| r.starts_with("over_budget:asked:")))
        .count()
}

// DESIGN.md §4 invariant 11: one admin with a fresh step-up opens a few doors alone; past the
// budget each further single remote open waits for a second person, and the site is alerted.
backends!(
    single_remote_opens_past_the_budget_wait_for_a_second_person,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let admin = env.stepped_up(&env.admin);
        let budget = custody_core::approval::RemoteOpenBudget::default();
        let slots = &env.compartments;
        for c in &slots[..4] {
            let opening = env.app.remote_open(&admin, &c.id, "jammed door").await.unwrap();
            assert!(opening.opened().is_ok(), "within the budget of {}", budget.per_opener);
        }
        let held = env.app.remote_open(&admin, &slots[4].id, "jammed door").await.unwrap();
        let request = held.opened().unwrap_err();
        assert_eq!(request.kind, ApprovalKind::RemoteOpen);
        assert_eq!(held_for_approval(&env).await, 1, "the request is on the record");
        let alerts = env.app.alerts(&admin, &env.site, true).await.unwrap();
        assert_eq!(alerts.iter().map(|a| a.kind).collect::<Vec<_>>(), [AlertKind::BulkOpen]);
        // Nothing opened for it: the asker cannot approve it, another member of staff does.
        let own = env.app.decide_approval(&admin, &request.id, ApprovalOutcome::Approved).await;
        assert_eq!(own.unwrap_err().code(), "same_person");
        let root = env.stepped_up(&env.super_admin);
        let decided =
            env.app.decide_approval(&root, &request.id, ApprovalOutcome::Approved).await.unwrap();
        let opened = &decided.openings[0];
        assert_eq!(
            (&opened.compartment.id, opened.command.command.purpose.as_str()),
            (&slots[4].id, "remote_open")
        );
        // An approved open counts too: the next one still waits.
        let next = env.app.remote_open(&admin, &slots[5].id, "jammed door").await.unwrap();
        assert!(next.opened().is_err());
        // The window slides: a day after the first four, the admin opens alone again.
        env.clock.advance(budget.window);
        let admin = env.stepped_up(&env.admin);
        let later = env.app.remote_open(&admin, &slots[5].id, "jammed door").await.unwrap();
        assert!(later.opened().is_ok());
    }
);

// Remote opens, bulk opens and retrievals spend one budget: small bulk opens add up.
backends!(every_way_to_open_without_a_code_spends_one_budget, |t: TestStore| async move {
    let env = Env::new(t).await;
    let admin = env.stepped_up(&env.admin);
    let (first, _) = env.delivered("ann@harbour.example").await;
    let (second, _) = env.delivered("bob@harbour.example").await;
    let (first_slot, second_slot) = {
        let (a, b) = (first.clone(), second.clone());
        let store = env.app.store();
        let slot = |id| async move {
            store.read(move |tx| Box::pin(async move { tx.parcel(&id).await })).await.unwrap()
        };
        (slot(a).await.unwrap().compartment.unwrap(), slot(b).await.unwrap().compartment.unwrap())
    };
    let free: Vec<u16> = env
        .compartments
        .iter()
        .filter(|c| c.id != first_slot && c.id != second_slot)
        .map(|c| c.number.get())
        .collect();
    assert_eq!(opened(env.app.bulk_open(&admin, &env.bank, &free[..2], "clean").await.unwrap()), 2);
    let taken = env.app.retrieve(&admin, &first, "held at the front desk").await.unwrap();
    assert_eq!(taken.opened().unwrap().0.state, custody_core::parcel::ParcelState::Retrieved);
    let remote = env.compartments.iter().find(|c| c.number.get() == free[2]).unwrap();
    assert!(env.app.remote_open(&admin, &remote.id, "jammed").await.unwrap().opened().is_ok());
    // Four doors: the retrieval of the second parcel waits, and so does a bulk open of two.
    let held = env.app.retrieve(&admin, &second, "held at the front desk").await.unwrap();
    let request = held.opened().unwrap_err();
    assert_eq!(request.kind, ApprovalKind::Retrieve);
    let bulk = env.app.bulk_open(&admin, &env.bank, &free[..2], "clean").await.unwrap();
    assert_eq!(bulk.opened().unwrap_err().kind, ApprovalKind::BulkOpen);
    assert_eq!(held_for_approval(&env).await, 2);
    // The parcel stays in its compartment until someone else approves.
    let ann_view = env.app.parcel(&admin, &second).await.unwrap();
    assert_eq!(ann_view.state, custody_core::parcel::ParcelState::Notified);
    let root = env.stepped_up(&env.super_admin);
    let decided =
        env.app.decide_approval(&root, &request.id, ApprovalOutcome::Approved).await.unwrap();
    assert_eq!(decided.openings[0].command.command.purpose, "retrieve");
    let after = env.app.parcel(&admin, &second).await.unwrap();
    assert_eq!(after.state, custody_core::parcel::ParcelState::Retrieved);
});

// The bank's budget holds whoever opens: a colleague who opened nothing still waits once the
// bank's doors are spent, and of two opens racing for the last door exactly one opens.
backends!(a_banks_budget_holds_whoever_opens_and_races_for_it, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (admin, root) = (env.stepped_up(&env.admin), env.stepped_up(&env.super_admin));
    let slots = &env.compartments;
    for c in &slots[..4] {
        assert!(env.app.remote_open(&admin, &c.id, "inspection").await.unwrap().opened().is_ok());
    }
    for c in &slots[..3] {
        assert!(env.app.remote_open(&root, &c.id, "inspection").await.unwrap().opened().is_ok());
    }
    let third = add(&env, "third@harbour.example", Role::Admin, false).await;
    let third = env.stepped_up(&third);
    let (a, b) = tokio::join!(
        env.app.remote_open(&root, &slots[4].id, "inspection"),
        env.app.remote_open(&third, &slots[5].id, "inspection"),
    );
    let outcomes = [a.unwrap().opened().is_ok(), b.unwrap().opened().is_ok()];
    assert_eq!(outcomes.iter().filter(|o| **o).count(), 1, "one door was left: {outcomes:?}");
    let again = env.app.remote_open(&third, &slots[5].id, "inspection").await.unwrap();
    assert!(again.opened().is_err(), "the bank's eight doors are spent");
});
