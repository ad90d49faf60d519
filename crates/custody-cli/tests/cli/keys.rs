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

/// Runs `custody --data-dir <data> <args>` where it finds `hsm`'s token.
fn custody_with(
    hsm: &custody_testkit::softhsm::SoftHsm,
    data: &Path,
    args: &[&str],
) -> std::process::Output {
    hsm.command(env!("CARGO_BIN_EXE_custody"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

/// What a command printed, or a panic naming `what` when it failed.
fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// An operator moves the installation's KEK into an HSM (SoftHSM2 here) and back: people's
/// keys are re-wrapped inside the module, the file KEK is retired, their data still opens with
/// only the token's key, a wrong PIN stops every command, and the token's key is destroyed
/// once the KEK moves out again.
#[test]
fn the_kek_moves_into_a_pkcs11_token_and_out_again() {
    let Some(hsm) =
        custody_testkit::softhsm::SoftHsm::token("the_kek_moves_into_a_pkcs11_token_and_out_again")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = data.join("keys");
    let run = |args: &[&str]| custody_with(&hsm, &data, args);
    ok(&run(&["init"]), "init");
    let org = ok(&run(&["admin", "create-org", "Northside"]), "org");
    let org = org.lines().next().unwrap().trim().to_owned();
    let site = ok(&run(&["admin", "create-site", "--org", &org, "Tower"]), "site");
    let site = site.lines().next().unwrap().trim().to_owned();
    let person = ok(
        &run(&[
            "admin",
            "add-person",
            "--org",
            &org,
            "--site",
            &site,
            "--role",
            "resident",
            "--email",
            "alice@example.org",
            "--name",
            "Alice Example",
        ]),
        "person",
    );
    let person = person.lines().next().unwrap().trim().to_owned();
    let file_kek = std::fs::read_to_string(keys.join("kek.current")).unwrap().trim().to_owned();

    hsm.configure(&keys);
    let rotated = ok(&run(&["admin", "rotate-keys"]), "rotate to the token");
    let hsm_kek = std::fs::read_to_string(keys.join("kek.current")).unwrap().trim().to_owned();
    assert!(hsm_kek.starts_with("hsm-"), "{rotated}");
    assert!(rotated.contains(&format!("re-wrapped 1 keys under {hsm_kek}")), "{rotated}");
    let retired = ok(&run(&["admin", "retire-keks"]), "retire the file");
    assert!(retired.contains(&format!("retired {file_kek}")), "{retired}");
    assert!(!keys.join(format!("kek-{file_kek}.key")).exists());

    // Only the token's key is left, and it opens Alice's data.
    let export = ok(&run(&["admin", "export-personal-data", &person]), "export");
    assert!(export.contains("alice@example.org") && export.contains("Alice Example"), "{export}");
    let objects = hsm.objects();
    assert!(objects.contains(&format!("custody-kek-{hsm_kek}")), "{objects}");
    assert!(objects.contains("never extractable"), "{objects}");

    // A wrong PIN: nothing starts, and the error says where to look.
    std::fs::write(keys.join("hsm.pin"), "00000000").unwrap();
    let refused = run(&["admin", "export-personal-data", &person]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(said.contains("pkcs11.toml") && said.contains("PinIncorrect"), "{said}");
    assert!(!said.contains(custody_testkit::softhsm::PIN) && !said.contains("00000000"), "{said}");
    std::fs::write(keys.join("hsm.pin"), custody_testkit::softhsm::PIN).unwrap();

    // And out again: a file KEK, the token's key destroyed when nothing needs it.
    let back = ok(&run(&["admin", "rotate-keys", "--to", "file"]), "rotate to a file");
    assert!(back.contains("re-wrapped 1 keys under file-"), "{back}");
    let retired = ok(&run(&["admin", "retire-keks"]), "retire the token's key");
    assert!(retired.contains(&format!("retired {hsm_kek}")), "{retired}");
    assert!(!hsm.objects().contains("custody-kek-"), "the key is gone from the token");
    let export = ok(&run(&["admin", "export-personal-data", &person]), "export");
    assert!(export.contains("alice@example.org"), "{export}");
}
