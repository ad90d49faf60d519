//! Key rotation as an operator runs it, killed part-way the way a crash or an impatient
//! operator would kill it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::path::Path;
use std::sync::Arc;

use custody_core::{PersonId, Timestamp};
use custody_crypto::Rng;
use custody_crypto::kek::{Kek as _, KekRing, LocalKek, SubjectKey, Wrapped};
use custody_store::{Store, WrappedKeyRow};
use futures_util::FutureExt as _;
use tokio::process::Command;

/// Subjects whose keys the rotation moves: enough that it is still at work when it is killed.
const SUBJECTS: usize = 20_000;

/// The key-encryption keys in a data directory, as Custody loads them.
fn ring_in(data: &Path) -> KekRing {
    custody_app::setup::DataDir::new(data).keks().unwrap()
}

async fn counts(store: &Store) -> Vec<(String, i64)> {
    let mut counts =
        store.read(|tx| async move { tx.subject_keys_by_kek().await }.boxed()).await.unwrap();
    counts.sort();
    counts
}

#[tokio::test]
async fn a_rotation_killed_part_way_resumes_and_loses_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = Command::new(env!("CARGO_BIN_EXE_custody"))
        .arg("--data-dir")
        .arg(&data)
        .arg("init")
        .output()
        .await
        .unwrap();
    assert!(init.status.success());
    let store = Store::open(&custody_store::sqlite_url_in(&data)).await.unwrap();

    // The database is Custody's: private, as `custody` insists.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("custody.db") {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    // Many subjects' keys, wrapped as Custody wraps them, under the KEK `init` made.
    let (keks, rng) = (ring_in(&data), Rng::new());
    let old = keks.current().to_owned();
    let mut subjects = std::collections::BTreeSet::new();
    for _ in 0..SUBJECTS / 10_000 {
        let mut rows = Vec::new();
        for _ in 0..10_000 {
            let subject = PersonId::from_random(rng.bytes().unwrap());
            let wrapped =
                SubjectKey::generate(&rng).unwrap().wrap(&keks, subject.as_str()).unwrap();
            rows.push((subject, WrappedKeyRow { kek: wrapped.kek, wrapped: wrapped.bytes }));
        }
        subjects.extend(rows.iter().map(|(s, _)| s.to_string()));
        store
            .write(move |tx| {
                async move {
                    for (subject, row) in &rows {
                        tx.insert_subject_key(subject, row, Timestamp::from_millis(0)).await?;
                    }
                    Ok::<_, custody_store::StoreError>(())
                }
                .boxed()
            })
            .await
            .unwrap();
    }

    // The rotation is killed (SIGKILL) as soon as its first batch is committed.
    let mut rotation = Command::new(env!("CARGO_BIN_EXE_custody"))
        .arg("--data-dir")
        .arg(&data)
        .args(["admin", "rotate-keys"])
        .env("CUSTODY_LOG", "warn")
        .env_remove("CUSTODY_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("rotation.log")).unwrap())
        .spawn()
        .unwrap();
    let log = dir.path().join("rotation.log");
    custody_testkit::eventually("the rotation's first batch", || async {
        let shown = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!shown.contains("error"), "the rotation failed: {shown}");
        counts(&store).await.len() > 1
    })
    .await;
    rotation.start_kill().unwrap();
    let status = rotation.wait().await.unwrap();
    assert!(!status.success(), "killed before it finished");
    let stopped = counts(&store).await;
    let new = ring_in(&data).current().to_owned();
    assert_ne!(new, old);
    let total: i64 = stopped.iter().map(|(_, n)| n).sum();
    assert_eq!(total, i64::try_from(SUBJECTS).unwrap(), "no key lost: {stopped:?}");
    assert!(stopped.iter().any(|(kek, n)| *kek == old && *n > 0), "some keys left: {stopped:?}");

    // Resumed, it moves the rest; every key opens under the new KEK alone.
    let resumed = Command::new(env!("CARGO_BIN_EXE_custody"))
        .arg("--data-dir")
        .arg(&data)
        .args(["admin", "rotate-keys", "--resume"])
        .env("CUSTODY_LOG", "warn")
        .env_remove("CUSTODY_DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(counts(&store).await, [(new.clone(), i64::try_from(SUBJECTS).unwrap())]);
    let all = store
        .read(|tx| async move { tx.subject_keys_not_under("", "", 1_000_000).await }.boxed())
        .await
        .unwrap();
    let current = LocalKek::load_all(&data.join("keys"))
        .unwrap()
        .into_iter()
        .find(|k| k.id() == new)
        .unwrap();
    let only_new = KekRing::new(Arc::new(current), []);
    assert_eq!(all.len(), SUBJECTS);
    for (subject, row) in &all {
        let wrapped = Wrapped { kek: row.kek.clone(), bytes: row.wrapped.clone() };
        SubjectKey::unwrap(&only_new, subject.as_str(), &wrapped).unwrap();
    }
    assert!(all.iter().all(|(s, _)| subjects.contains(s.as_str())));
}
