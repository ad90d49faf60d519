//! The SQLite writer: one connection, group commit, a savepoint per unit of work that runs a
//! statement.

use sqlx::AnyConnection;
use tokio::sync::mpsc;

use crate::tx::Tx;
use crate::{Backend, Completion, Job, StoreError};

/// Most units in one commit. Bounds the latency one batch adds for the last caller in it.
const MAX_BATCH: usize = 512;
/// Units waiting for the writer before callers are made to wait to enqueue (back-pressure).
const QUEUE: usize = 4096;

pub(crate) fn spawn(conn: AnyConnection, backend: Backend) -> mpsc::Sender<Job> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(run(Tx::writer(conn, backend), receiver));
    sender
}

async fn exec(tx: &mut Tx, sql: &'static str) -> Result<(), StoreError> {
    sqlx::raw_sql(sql).execute(tx.conn()).await.map(|_| ()).map_err(StoreError::from)
}

async fn run(mut tx: Tx, mut receiver: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Err(e) = exec(&mut tx, "BEGIN IMMEDIATE").await {
            // Dropping the units answers their callers with `Unavailable`.
            tracing::error!(error = %e, units = batch.len(), "could not start a write batch");
            batch.clear();
            continue;
        }
        let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
        tx.truncate_pending_audit(0);
        for job in batch.drain(..) {
            tx.begin_unit();
            let mark = tx.pending_audit_len();
            let (ok, completion) = job(&mut tx).await;
            if !ok {
                tx.truncate_pending_audit(mark);
            }
            if !tx.end_unit() {
                // The unit ran no statement (it only recorded audit entries, or failed first).
                completions.push(completion);
                continue;
            }
            let end = if ok { "RELEASE unit" } else { "ROLLBACK TO unit; RELEASE unit" };
            if let Err(e) = exec(&mut tx, end).await {
                // The unit's writes cannot be separated from the batch: fail the whole batch.
                tracing::error!(error = %e, "could not close a savepoint; batch rolled back");
                completions.push(completion);
                let _ = exec(&mut tx, "ROLLBACK").await;
                for c in completions.drain(..) {
                    c(Err(e.clone()));
                }
                break;
            }
            completions.push(completion);
        }
        if completions.is_empty() {
            let _ = exec(&mut tx, "ROLLBACK").await;
            continue;
        }
        // The batch's audit entries go in last, in unit order, in the same transaction as the
        // changes they record. If they cannot be written, nothing in the batch is kept and
        // every caller is told (fail closed).
        let committed = match tx.flush_audit().await {
            Ok(()) => exec(&mut tx, "COMMIT").await,
            Err(e) => Err(e),
        };
        tx.truncate_pending_audit(0);
        if committed.is_err() {
            let _ = exec(&mut tx, "ROLLBACK").await;
        }
        for c in completions.drain(..) {
            c(committed.clone());
        }
    }
}
