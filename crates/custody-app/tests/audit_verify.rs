//! Verifying the stored audit log, and catching someone who changed it behind the platform's
//! back: with database access, the append-only triggers dropped, and a plan.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::audit::{Verdict, verify_store};
use custody_audit::entry::Entry;
use custody_store::Backend;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;
use sqlx::Connection as _;

async fn intact(env: &Env) -> u64 {
    match verify_store(env.app.store(), |_, _| {}).await.unwrap() {
        Verdict::Intact { size, .. } => size,
        Verdict::Tampered(t) => panic!("untouched log reported as tampered: {t}"),
    }
}

/// Runs `sql` as someone with full database access: the append-only triggers are removed first.
async fn attack(env: &Env, statements: &[String]) {
    let mut conn = sqlx::AnyConnection::connect(&env.store.url).await.unwrap();
    let disarm = match env.app.store().backend() {
        Backend::Sqlite => {
            "DROP TRIGGER audit_entries_no_update; DROP TRIGGER audit_entries_no_delete; \
                            DROP TRIGGER audit_nodes_no_update; DROP TRIGGER audit_nodes_no_delete;"
        }
        Backend::Postgres => {
            "ALTER TABLE audit_entries DISABLE TRIGGER USER; ALTER TABLE audit_nodes DISABLE TRIGGER USER;"
        }
    };
    sqlx::raw_sql(disarm).execute(&mut conn).await.unwrap();
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(&mut conn).await.unwrap();
    }
}

async fn tampered_at(env: &Env) -> (u64, String) {
    match verify_store(env.app.store(), |_, _| {}).await.unwrap() {
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
    verify_store(env.app.store(), |done, total| seen.push((done, total))).await.unwrap();
    assert_eq!(seen.last(), Some(&(size, size)));
});

backends!(editing_a_field_is_caught, |t: TestStore| async move {
    let env = Env::new(t).await;
    intact(&env).await;
    attack(&env, &["UPDATE audit_entries SET outcome = 'failure' WHERE seq = 7".into()]).await;
    let (index, problem) = tampered_at(&env).await;
    assert_eq!(index, 7);
    assert!(problem.contains("differ"), "{problem}");
});

backends!(rewriting_an_entry_with_a_matching_leaf_hash_is_caught, |t: TestStore| async move {
    let env = Env::new(t).await;
    intact(&env).await;
    // The attacker rewrites entry 5's bytes and leaf hash consistently (and its columns).
    let leaves = env
        .app
        .store()
        .read(|tx| async move { tx.audit_leaves(5, 1).await }.boxed())
        .await
        .unwrap();
    let mut entry = Entry::decode(&leaves[0].entry).unwrap();
    entry.actor_id = Some("per_someoneelseentirely0000".into());
    let bytes = entry.encode();
    let leaf = custody_audit::merkle::leaf_hash(&bytes);
    let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
    let literal = |b: &[u8]| match env.app.store().backend() {
        Backend::Sqlite => format!("x'{}'", hex(b)),
        Backend::Postgres => format!("'\\x{}'::bytea", hex(b)),
    };
    attack(
        &env,
        &[format!(
            "UPDATE audit_entries SET actor_id = 'per_someoneelseentirely0000', entry = {}, leaf_hash = {} WHERE seq = 5",
            literal(&bytes),
            literal(&leaf)
        )],
    )
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
    assert!(problem.contains("says it is number 9"), "{problem}");
});

backends!(duplicating_is_caught, |t: TestStore| async move {
    let (env, size) = fresh(t).await;
    attack(
        &env,
        &[format!(
            "INSERT INTO audit_entries (seq, at, actor_kind, actor_id, action, site_id, bank_id, compartment_id, parcel_id, outcome, reason, entry, leaf_hash) \
             SELECT {size}, at, actor_kind, actor_id, action, site_id, bank_id, compartment_id, parcel_id, outcome, reason, entry, leaf_hash FROM audit_entries WHERE seq = 0"
        )],
    )
    .await;
    let (index, problem) = tampered_at(&env).await;
    assert_eq!(index, size);
    assert!(problem.contains("says it is number 0"), "{problem}");
});

backends!(truncating_is_caught, |t: TestStore| async move {
    let (env, size) = fresh(t).await;
    attack(&env, &[format!("DELETE FROM audit_entries WHERE seq >= {}", size - 3)]).await;
    let (index, problem) = tampered_at(&env).await;
    assert!(index <= size - 3, "{index}: {problem}");
});
