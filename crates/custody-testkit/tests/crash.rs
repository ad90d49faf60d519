//! A writer killed in the middle of a batch leaves a log that verifies and holds every entry
//! whose commit was acknowledged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::audit::{Verdict, verify_store};
use custody_testkit::{TestStore, backends};
use futures_util::FutureExt as _;
use tokio::io::AsyncBufReadExt as _;

/// Entries to see acknowledged before the kill: enough for many batches to be in flight.
const ACKNOWLEDGED_BEFORE_KILL: u64 = 3000;

backends!(a_crash_mid_batch_leaves_a_consistent_log, |t: TestStore| async move {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(&t.url)
        .env("CUSTODY_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = 0_u64;
    while acknowledged < ACKNOWLEDGED_BEFORE_KILL {
        let line = lines.next_line().await.unwrap().expect("the writer runs until killed");
        acknowledged += line.parse::<u64>().unwrap();
    }
    // SIGKILL: no destructor, no rollback, the writer's batch is cut wherever it was.
    child.kill().await.unwrap();
    // Acknowledgements already printed count too.
    while let Ok(Some(line)) = lines.next_line().await {
        acknowledged += line.parse::<u64>().unwrap();
    }
    match verify_store(&t.store, None, |_, _| {}).await.unwrap() {
        Verdict::Intact { size, .. } => {
            assert!(size >= acknowledged, "{size} entries kept, {acknowledged} acknowledged");
        }
        Verdict::Tampered(problem) => panic!("a crash left an inconsistent log: {problem}"),
    }
    // The log takes new entries after the crash, on the same tree.
    t.store
        .write(|tx| {
            async move {
                tx.append_audit(&custody_core::audit::AuditEvent {
                    at: custody_core::Timestamp::from_millis(1_795_000_000_001),
                    actor: custody_core::audit::Actor::system(),
                    action: custody_core::audit::AuditAction::DoorReport,
                    target: custody_core::audit::Target::default(),
                    outcome: custody_core::audit::Outcome::Success,
                    reason: None,
                    personal: None,
                })?;
                Ok::<_, custody_store::StoreError>(())
            }
            .boxed()
        })
        .await
        .unwrap();
    assert!(matches!(
        verify_store(&t.store, None, |_, _| {}).await.unwrap(),
        Verdict::Intact { .. }
    ));
});
