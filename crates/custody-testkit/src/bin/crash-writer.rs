//! Appends audit entries through `Store::write` from many concurrent callers until it is
//! killed, printing the number of entries of each unit as its commit is acknowledged. The crash
//! test kills it in the middle of a batch and checks what the database kept.
#![allow(clippy::print_stdout, reason = "stdout is how the test learns what was acknowledged")]

use std::io::Write as _;

use anyhow::Context as _;
use custody_core::Timestamp;
use custody_core::audit::{Actor, AuditAction, AuditEvent, Target};
use custody_store::{Store, StoreError};
use futures_util::FutureExt as _;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args().nth(1).context("usage: crash-writer DATABASE_URL")?;
    let store = Store::open(&url).await?;
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel::<u64>();
    for writer in 0..32_u64 {
        let (store, acks) = (store.clone(), acks.clone());
        tokio::spawn(async move {
            for unit in 0_u64.. {
                let entries = 1 + (writer + unit) % 3;
                let event = AuditEvent::success(
                    Timestamp::from_millis(1_795_000_000_000),
                    Actor::system(),
                    AuditAction::DoorReport,
                    Target::default(),
                )
                .because(format!("writer {writer} unit {unit}"));
                let written = store
                    .write(move |tx| {
                        async move {
                            for _ in 0..entries {
                                tx.append_audit(&event)?;
                            }
                            Ok::<_, StoreError>(())
                        }
                        .boxed()
                    })
                    .await;
                if written.is_err() || acks.send(entries).is_err() {
                    return;
                }
            }
        });
    }
    drop(acks);
    let mut out = std::io::stdout().lock();
    while let Some(entries) = acked.recv().await {
        writeln!(out, "{entries}")?;
        out.flush()?;
    }
    Ok(())
}
