//! Verifying the stored audit log, and catching someone who changed it behind the platform's
//! back: with database access, the append-only triggers dropped, and a plan.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::audit::{Verdict, verify_store, verify_store_in_batches};
use custody_testkit::attacker::Attacker;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;

async fn intact(env: &Env) -> u64 {
    match verify_store(env.app.store(), None, |_, _| {}).await.unwrap() {
        Verdict::Intact { size, .. } => size,
        Verdict::Tampered(t) => panic!("untouched log reported as tampered: {t}"),
    }
}

/// Runs `sql` as someone with full database access: the append-only triggers are removed first.
async fn attack(env: &Env, statements: &[String]) {
    let mut attacker = Attacker::new(&env.store.url, env.app.store().backend()).await;
    for sql in statements {
        attacker.run(sql).await;
    }
}

async fn tampered_at(env: &Env) -> (u64, String) {
    match verify_store(env.app.store(), None, |_, _| {}).await.unwrap() {
        Verdict::Tampered(t) => (t.index, t.problem),
        Verdict::Intact { size, .. } => {
            panic!("tampering went unnoticed ({size} entries verified)")
        }
    }
}

backends!(an_untouched_log_verifies_and_reports_progress, |t: TestStore| async move {
    let env = Env::new(t).await;
    let size = intact(&env).await;
    assert!(size > 10, "the seeded site wrote {size} entries");
    let mut seen = Vec::new();
    verify_store(env.app.store(), None, |done, total| seen.push((done, total))).await.unwrap();
    assert_eq!(seen.last(), Some(&(size, size)));
});

backends!(editing_a_field_is_caught, |t: TestStore| async move {
    let env = Env::new(t).await;
    intact(&env).await;
    attack(&env, &["UPDATE audit_entries SET outcome = 'failure' WHERE seq = 7".into()]).await;
    let (index, problem) = tampered_at(&env).await;
    assert_eq!(index, 7);
    assert!(problem.contains("do not hash"), "{problem}");
});

backends!(rewriting_an_entry_with_a_matching_leaf_hash_is_caught, |t: TestStore| async move {
    let env = Env::new(t).await;
    intact(&env).await;
    // The attacker rewrites entry 5's actor and its leaf hash consistently.
    let leaves = env
        .app
        .store()
        .read(|tx| async move { tx.audit_leaves(5, 1).await }.boxed())
        .await
        .unwrap();
    let mut entry = leaves[0].entry();
    entry.actor_id = Some("per_someoneelseentirely0000".into());
    let mut attacker = Attacker::new(&env.store.url, env.app.store().backend()).await;
    let leaf = attacker.blob(&entry.leaf_hash());
    attacker
        .run(&format!(
            "UPDATE audit_entries SET actor_id = 'per_someoneelseentirely0000', leaf_hash = {leaf} WHERE seq = 5"
        ))
        .await;
    let (index, problem) = tampered_at(&env).await;
    assert_eq!(index, 4, "the subtree over entries 4–5 no longer matches: {problem}");
    assert!(problem.contains("subtree"), "{problem}");
});

async fn fresh(t: TestStore) -> (Env, u64) {
    let env = Env::new(t).await;
    let size = intact(&env).await;
    (env, size)
}

backends!(deleting_is_caught, |t: TestStore| async move {
    let (env, _) = fresh(t).await;
    attack(&env, &["DELETE FROM audit_entries WHERE seq = 3".into()]).await;
    let (index, problem) = tampered_at(&env).await;
    assert_eq!(index, 3);
    assert!(problem.contains("missing"), "{problem}");
});

backends!(reordering_is_caught, |t: TestStore| async move {
    let (env, _) = fresh(t).await;
    attack(
        &env,
        &[
            "UPDATE audit_entries SET seq = -1 WHERE seq = 2".into(),
            "UPDATE audit_entries SET seq = 2 WHERE seq = 9".into(),
            "UPDATE audit_entries SET seq = 9 WHERE seq = -1".into(),
        ],
    )
    .await;
    let (index, problem) = tampered_at(&env).await;
    assert_eq!(index, 2);
    assert!(problem.contains("moved"), "{problem}");
});

backends!(duplicating_is_caught, |t: TestStore| async move {
    let (env, size) = fresh(t).await;
    attack(
        &env,
        &[format!(
            "INSERT INTO audit_entries (seq, at, actor_kind, actor_id, action, site_id, bank_id, compartment_id, parcel_id, outcome, reason, evidence, leaf_hash) \
             SELECT {size}, at, actor_kind, actor_id, action, site_id, bank_id, compartment_id, parcel_id, outcome, reason, evidence, leaf_hash FROM audit_entries WHERE seq = 0"
        )],
    )
    .await;
    let (index, problem) = tampered_at(&env).await;
    assert_eq!(index, size);
    assert!(problem.contains("outside the tree") && problem.contains("copied"), "{problem}");
});

backends!(truncating_is_caught, |t: TestStore| async move {
    let (env, size) = fresh(t).await;
    attack(&env, &[format!("DELETE FROM audit_entries WHERE seq >= {}", size - 3)]).await;
    let (index, problem) = tampered_at(&env).await;
    assert!(index <= size - 3, "{index}: {problem}");
});

/// Rolls the database back to its first `k` entries, consistently.
async fn roll_back_to(env: &Env, k: u64) {
    Attacker::new(&env.store.url, env.app.store().backend())
        .await
        .roll_back(env.app.store(), k)
        .await;
}

backends!(a_log_that_grows_while_it_is_verified_verifies_as_it_stood, |t: TestStore| async move {
    // The server checks its own log while it keeps writing: entries committed during the scan
    // are neither read nor mistaken for entries added outside the tree.
    let env = Env::new(t).await;
    let size = intact(&env).await;
    let (paused, at_pause) = tokio::sync::oneshot::channel();
    let (resume, resumed) = std::sync::mpsc::channel::<()>();
    let store = env.app.store().clone();
    let verifying = tokio::spawn(async move {
        let mut paused = Some(paused);
        // Small batches, so the scan is still under way when the log grows.
        verify_store_in_batches(&store, None, 2, move |_, _| {
            if let Some(paused) = paused.take() {
                let _ = paused.send(());
                tokio::task::block_in_place(|| resumed.recv().unwrap());
            }
        })
        .await
        .unwrap()
    });
    at_pause.await.unwrap();
    for n in 0..5 {
        env.app
            .create_org(&custody_app::Caller::Operator, &format!("Meanwhile {n}"))
            .await
            .unwrap();
    }
    resume.send(()).unwrap();
    match verifying.await.unwrap() {
        Verdict::Intact { size: verified, .. } => assert_eq!(verified, size),
        Verdict::Tampered(t) => panic!("a growing log was reported as tampered: {t}"),
    }
    assert_eq!(intact(&env).await, size + 5);
});

backends!(stored_roots_in_another_physical_order_still_verify, |t: TestStore| async move {
    // The verifier reads stored subtree roots in the order they were appended and looks a
    // root up by its key only when the next one stored is another; a table rewritten in
    // another order (a restore, a vacuum) is slower to check, not tampered with.
    let env = Env::new(t).await;
    let size = intact(&env).await;
    attack(
        &env,
        &[
            "CREATE TABLE nodes_copy AS SELECT level, idx, hash FROM audit_nodes".into(),
            "DELETE FROM audit_nodes".into(),
            "INSERT INTO audit_nodes (level, idx, hash) \
             SELECT level, idx, hash FROM nodes_copy ORDER BY level DESC, idx DESC"
                .into(),
            "DROP TABLE nodes_copy".into(),
        ],
    )
    .await;
    for batch in [1, 3, 50_000] {
        match verify_store_in_batches(env.app.store(), None, batch, |_, _| {}).await.unwrap() {
            Verdict::Intact { size: verified, .. } => assert_eq!(verified, size),
            Verdict::Tampered(t) => panic!("reordered roots reported as tampered: {t}"),
        }
    }
    // Still checked by key: a wrong root is found in any order.
    attack(&env, &["UPDATE audit_nodes SET hash = leaf_hash FROM audit_entries WHERE seq = 0 AND level = 1 AND idx = 2".into()]).await;
    let (index, problem) = tampered_at(&env).await;
    assert_eq!(index, 4, "{problem}");
    assert!(problem.contains("level 1, index 2"), "{problem}");
});

backends!(checkpoints_are_signed_as_the_log_grows, |t: TestStore| async move {
    let env = Env::new(t).await;
    let first = env.app.checkpoint().await.unwrap().expect("a first checkpoint");
    let verifier =
        custody_audit::checkpoint::NoteVerifier::parse(&env.app.checkpoint_verifier_key()).unwrap();
    let opened = verifier.open_checkpoint(&first.note, verifier.name()).unwrap();
    assert_eq!(opened, first.checkpoint);
    assert_eq!(opened.size, intact(&env).await);
    assert!(env.app.checkpoint().await.unwrap().is_none(), "nothing new, nothing signed");
    env.app
        .create_carrier(&custody_app::Caller::Operator, &env.org, "Second Carrier")
        .await
        .unwrap();
    let second = env.app.checkpoint().await.unwrap().expect("the log grew");
    assert_eq!(second.checkpoint.size, first.checkpoint.size + 1);
});

backends!(a_rollback_is_caught_only_with_a_trusted_checkpoint, |t: TestStore| async move {
    let env = Env::new(t).await;
    let shipped = env.app.checkpoint().await.unwrap().unwrap().checkpoint;
    roll_back_to(&env, shipped.size - 4).await;
    // Inside the database everything is consistent again…
    assert_eq!(intact(&env).await, shipped.size - 4);
    // …but not with the checkpoint that left the machine.
    match verify_store(env.app.store(), Some(&shipped), |_, _| {}).await.unwrap() {
        Verdict::Tampered(t) => assert!(t.problem.contains("rolled back"), "{t}"),
        Verdict::Intact { .. } => panic!("rollback went unnoticed"),
    }
});

backends!(
    a_consistent_rewrite_of_history_is_caught_with_a_trusted_checkpoint,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let shipped = env.app.checkpoint().await.unwrap().unwrap().checkpoint;
        // Roll back to before entry 3 and write history anew from there.
        roll_back_to(&env, 3).await;
        env.app.create_org(&custody_app::Caller::Operator, "A different history").await.unwrap();
        while env
            .app
            .store()
            .read(|tx| async move { tx.tree_head().await }.boxed())
            .await
            .unwrap()
            .size()
            < shipped.size + 2
        {
            env.app.create_org(&custody_app::Caller::Operator, "Padding").await.unwrap();
        }
        assert!(intact(&env).await > shipped.size);
        match verify_store(env.app.store(), Some(&shipped), |_, _| {}).await.unwrap() {
            Verdict::Tampered(t) => assert_eq!(t.index, shipped.size - 1, "{t}"),
            Verdict::Intact { .. } => panic!("the rewrite went unnoticed"),
        }
        assert!(
            matches!(
                verify_store(env.app.store(), None, |_, _| {}).await.unwrap(),
                Verdict::Intact { .. }
            ),
            "without the checkpoint it looks fine"
        );
    }
);

backends!(exports_verify_offline_and_select_what_was_asked, |t: TestStore| async move {
    let env = Env::new(t).await;
    let mut all = Vec::new();
    let summary = env
        .app
        .export_audit(&custody_store::AuditFilter::default(), |line| {
            all.push(serde_json::to_string(line).unwrap());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(summary.entries, all.len() - 1);
    let verifier =
        custody_audit::checkpoint::NoteVerifier::parse(&env.app.checkpoint_verifier_key()).unwrap();
    let verified = custody_audit::export::verify_export(&all.join("\n"), &verifier).unwrap();
    assert_eq!(
        (verified.entries, verified.checkpoint.size),
        (summary.entries, summary.checkpoint_size)
    );

    // One person's entries only.
    let filter = custody_store::AuditFilter {
        actor: Some("operator".into()),
        ..custody_store::AuditFilter::default()
    };
    let mut mine = Vec::new();
    env.app
        .export_audit(&filter, |line| {
            mine.push(serde_json::to_string(line).unwrap());
            Ok(())
        })
        .await
        .unwrap();
    assert!(mine.len() > 1 && mine.len() < all.len(), "{} of {}", mine.len(), all.len());
    assert!(mine.iter().skip(1).all(|l| l.contains("\"actor_id\":\"operator\"")));
    custody_audit::export::verify_export(&mine.join("\n"), &verifier).unwrap();

    // A line forged in the file is caught, by line number.
    let forged = all.join("\n").replacen("\"outcome\":\"success\"", "\"outcome\":\"denied\"", 1);
    assert_eq!(custody_audit::export::verify_export(&forged, &verifier).unwrap_err().line, 2);
});

backends!(the_self_check_finds_a_rollback_the_database_hides, |t: TestStore| async move {
    let env = Env::new(t).await;
    let shipped = tempfile::tempdir().unwrap();
    let signed = env.app.checkpoint().await.unwrap().unwrap();
    let size = signed.checkpoint.size;
    std::fs::write(shipped.path().join(format!("{size:020}.checkpoint")), &signed.note).unwrap();
    assert_eq!(env.app.self_check(Some(shipped.path())).await.unwrap(), None, "untouched");
    // The attacker rolls the log back and removes the checkpoints stored beside it.
    roll_back_to(&env, size - 4).await;
    attack(&env, &["DELETE FROM audit_checkpoints".into()]).await;
    assert_eq!(env.app.self_check(None).await.unwrap(), None, "the database alone agrees");
    let finding = env.app.self_check(Some(shipped.path())).await.unwrap().expect("caught");
    assert!(finding.contains("rolled back"), "{finding}");
});

backends!(the_self_check_rejects_a_checkpoint_it_did_not_sign, |t: TestStore| async move {
    let env = Env::new(t).await;
    let shipped = tempfile::tempdir().unwrap();
    let size = intact(&env).await;
    let forger = custody_audit::checkpoint::NoteSigner::new(
        &env.app.checkpoint().await.unwrap().unwrap().checkpoint.origin,
        custody_crypto::sign::SigningKey::from_seed(&[7; 32]).unwrap(),
    )
    .unwrap();
    let forged = forger
        .sign_checkpoint(&custody_audit::checkpoint::Checkpoint {
            origin: forger.name().to_owned(),
            size: size + 10,
            root: [0; 32],
            extensions: Vec::new(),
        })
        .unwrap();
    std::fs::write(shipped.path().join(format!("{:020}.checkpoint", size + 10)), forged).unwrap();
    let finding = env.app.self_check(Some(shipped.path())).await.unwrap().expect("caught");
    assert!(finding.contains("shipped checkpoint"), "{finding}");
});

/// Exports `site`'s entries as `caller`, for `reason`: the lines, or the error's code.
async fn export_site(
    env: &Env,
    caller: &custody_app::Caller,
    site: &custody_core::SiteId,
    reason: &str,
) -> Result<Vec<String>, &'static str> {
    let filter = custody_store::AuditFilter {
        site: Some(site.clone()),
        ..custody_store::AuditFilter::default()
    };
    let mut lines = Vec::new();
    env.app
        .export_site_audit(caller, &filter, reason, |line| {
            lines.push(serde_json::to_string(line).unwrap());
            Ok(())
        })
        .await
        .map(|_| lines)
        .map_err(|e| e.code())
}

/// The last audit entry: its action, outcome and reason code.
async fn last_entry(env: &Env) -> (String, String) {
    let size = env.app.current_checkpoint().await.unwrap().0.size;
    let filter = custody_store::AuditFilter::default();
    let rows = env
        .app
        .store()
        .read(move |tx| async move { tx.audit_select(&filter, size - 1, size, 1).await }.boxed())
        .await
        .unwrap();
    let row = &rows[0].row;
    (row.event.action.as_str().to_owned(), row.event.outcome.as_str().to_owned())
}

backends!(
    a_site_export_needs_a_step_up_a_reason_and_the_site_in_scope,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        // An auditor without a fresh second factor: refused, and the refusal is in the log.
        let auditor = Env::as_person(&env.auditor);
        assert_eq!(
            export_site(&env, &auditor, &env.site, "quarterly review").await,
            Err("step_up_required")
        );
        assert_eq!(last_entry(&env).await, ("audit.export".into(), "denied".into()));
        // Stepped up, but no reason.
        let auditor = env.stepped_up(&env.auditor);
        assert_eq!(export_site(&env, &auditor, &env.site, "  ").await, Err("invalid_request"));
        // Residents and couriers export nothing, even of their own site.
        for person in [&env.ann, &env.courier] {
            assert_eq!(
                export_site(&env, &env.stepped_up(person), &env.site, "curious").await,
                Err("forbidden")
            );
        }
        // A site admin, of another site: as for anything out of scope, it is not there.
        let root = env.stepped_up(&env.super_admin);
        let elsewhere =
            env.app.create_site(&root, &env.org, "North Lobby", "UTC", None).await.unwrap();
        assert_eq!(
            export_site(&env, &env.stepped_up(&env.admin), &elsewhere.id, "curious").await,
            Err("not_found")
        );

        // The auditor, stepped up, with a reason: the site's entries, verifiable offline.
        let lines = export_site(&env, &auditor, &env.site, "quarterly review").await.unwrap();
        let verifier =
            custody_audit::checkpoint::NoteVerifier::parse(&env.app.checkpoint_verifier_key())
                .unwrap();
        let verified = custody_audit::export::verify_export(&lines.join("\n"), &verifier).unwrap();
        assert!(verified.entries > 0);
        for line in &lines[1..] {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(entry["site"], env.site.as_str(), "only the site asked for: {line}");
        }
        // The export is on the record, with its reason sealed to the auditor.
        assert_eq!(last_entry(&env).await, ("audit.export".into(), "success".into()));
    }
);
