//! Someone with full access to the database server, for the tests that prove the audit log
//! catches what they do: the append-only triggers dropped, then any statement they like.

use custody_store::{Backend, Store};
use futures_util::FutureExt as _;
use sqlx::Connection as _;

/// A connection with the powers of the database's owner.
#[derive(Debug)]
pub struct Attacker {
    conn: sqlx::AnyConnection,
    backend: Backend,
}

impl Attacker {
    /// Connects to the database at `url` and removes the audit log's append-only triggers.
    pub async fn new(url: &str, backend: Backend) -> Self {
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
        let disarm = match backend {
            Backend::Sqlite => {
                "DROP TRIGGER IF EXISTS audit_entries_no_update; DROP TRIGGER IF EXISTS audit_entries_no_delete; \
                 DROP TRIGGER IF EXISTS audit_nodes_no_update; DROP TRIGGER IF EXISTS audit_nodes_no_delete;"
            }
            Backend::Postgres => {
                "ALTER TABLE audit_entries DISABLE TRIGGER USER; ALTER TABLE audit_nodes DISABLE TRIGGER USER;"
            }
        };
        sqlx::raw_sql(disarm).execute(&mut conn).await.unwrap();
        Self { conn, backend }
    }

    /// Runs `sql`; fails the test if the database refuses it.
    pub async fn run(&mut self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut self.conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// `bytes` as an SQL literal of this backend.
    pub fn blob(&self, bytes: &[u8]) -> String {
        let hex = data_encoding::HEXLOWER.encode(bytes);
        match self.backend {
            Backend::Sqlite => format!("x'{hex}'"),
            Backend::Postgres => format!("'\\x{hex}'::bytea"),
        }
    }

    /// Cuts the log back to its first `keep` entries the way a careful attacker (or a restored
    /// old backup) would: entries, subtree roots and head all consistent with each other.
    pub async fn roll_back(&mut self, store: &Store, keep: u64) {
        let leaves = store
            .read(move |tx| {
                async move { tx.audit_leaves(0, u32::try_from(keep).unwrap()).await }.boxed()
            })
            .await
            .unwrap();
        let mut frontier = custody_audit::merkle::Frontier::new();
        for l in &leaves {
            frontier.push(l.leaf_hash.clone().try_into().unwrap());
        }
        self.run(&format!("DELETE FROM audit_entries WHERE seq >= {keep}")).await;
        for level in 1..40 {
            self.run(&format!(
                "DELETE FROM audit_nodes WHERE level = {level} AND idx >= {}",
                keep >> level
            ))
            .await;
        }
        let peaks = self.blob(&frontier.peaks().concat());
        self.run(&format!("UPDATE audit_tree SET size = {keep}, peaks = {peaks} WHERE id = 1"))
            .await;
    }
}
