//! Schema migrations: ordered SQL files per backend, each applied once in its own transaction.

use sqlx::{AnyConnection, Row as _};

use crate::{Backend, StoreError};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
    /// The SQLite side rebuilds a table another table refers to: it runs with foreign keys
    /// off (they cannot be switched inside a transaction) and every reference is checked
    /// before it commits.
    sqlite_rebuilds: bool,
}

/// Every migration, oldest first. Append only; never edit one that has shipped.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "foundation",
        sqlite: include_str!("../migrations/sqlite/0001_foundation.sql"),
        postgres: include_str!("../migrations/postgres/0001_foundation.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 2,
        name: "merkle_log",
        sqlite: include_str!("../migrations/sqlite/0002_merkle_log.sql"),
        postgres: include_str!("../migrations/postgres/0002_merkle_log.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 3,
        name: "subject_keys",
        sqlite: include_str!("../migrations/sqlite/0003_subject_keys.sql"),
        postgres: include_str!("../migrations/postgres/0003_subject_keys.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 4,
        name: "entries_stored_once",
        sqlite: include_str!("../migrations/sqlite/0004_entries_stored_once.sql"),
        postgres: include_str!("../migrations/postgres/0004_entries_stored_once.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 5,
        name: "second_factors",
        sqlite: include_str!("../migrations/sqlite/0005_second_factors.sql"),
        postgres: include_str!("../migrations/postgres/0005_second_factors.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 6,
        name: "approvals",
        sqlite: include_str!("../migrations/sqlite/0006_approvals.sql"),
        postgres: include_str!("../migrations/postgres/0006_approvals.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 7,
        name: "magic_links",
        sqlite: include_str!("../migrations/sqlite/0007_magic_links.sql"),
        postgres: include_str!("../migrations/postgres/0007_magic_links.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 8,
        name: "passkeys",
        sqlite: include_str!("../migrations/sqlite/0008_passkeys.sql"),
        postgres: include_str!("../migrations/postgres/0008_passkeys.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 9,
        name: "passkey_sign_in",
        sqlite: include_str!("../migrations/sqlite/0009_passkey_sign_in.sql"),
        postgres: include_str!("../migrations/postgres/0009_passkey_sign_in.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 10,
        name: "lockdowns",
        sqlite: include_str!("../migrations/sqlite/0010_lockdowns.sql"),
        postgres: include_str!("../migrations/postgres/0010_lockdowns.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 11,
        name: "courier_codes",
        sqlite: include_str!("../migrations/sqlite/0011_courier_codes.sql"),
        postgres: include_str!("../migrations/postgres/0011_courier_codes.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 12,
        name: "pickup_reopen",
        sqlite: include_str!("../migrations/sqlite/0012_pickup_reopen.sql"),
        postgres: include_str!("../migrations/postgres/0012_pickup_reopen.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 13,
        name: "badges",
        sqlite: include_str!("../migrations/sqlite/0013_badges.sql"),
        postgres: include_str!("../migrations/postgres/0013_badges.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 14,
        name: "offline_codes",
        sqlite: include_str!("../migrations/sqlite/0014_offline_codes.sql"),
        postgres: include_str!("../migrations/postgres/0014_offline_codes.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 15,
        name: "alerts",
        sqlite: include_str!("../migrations/sqlite/0015_alerts.sql"),
        postgres: include_str!("../migrations/postgres/0015_alerts.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 16,
        name: "lockdown_rules",
        sqlite: include_str!("../migrations/sqlite/0016_lockdown_rules.sql"),
        postgres: include_str!("../migrations/postgres/0016_lockdown_rules.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 17,
        name: "sensor_settings",
        sqlite: include_str!("../migrations/sqlite/0017_sensor_settings.sql"),
        postgres: include_str!("../migrations/postgres/0017_sensor_settings.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 18,
        name: "alert_deliveries",
        sqlite: include_str!("../migrations/sqlite/0018_alert_deliveries.sql"),
        postgres: include_str!("../migrations/postgres/0018_alert_deliveries.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 19,
        name: "alert_subscriptions",
        sqlite: include_str!("../migrations/sqlite/0019_alert_subscriptions.sql"),
        postgres: include_str!("../migrations/postgres/0019_alert_subscriptions.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 20,
        name: "remote_opens",
        sqlite: include_str!("../migrations/sqlite/0020_remote_opens.sql"),
        postgres: include_str!("../migrations/postgres/0020_remote_opens.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 21,
        name: "unaddressed_parcels",
        sqlite: include_str!("../migrations/sqlite/0021_unaddressed_parcels.sql"),
        postgres: include_str!("../migrations/postgres/0021_unaddressed_parcels.sql"),
        sqlite_rebuilds: true,
    },
    Migration {
        version: 22,
        name: "key_encryption_keys",
        sqlite: include_str!("../migrations/sqlite/0022_key_encryption_keys.sql"),
        postgres: include_str!("../migrations/postgres/0022_key_encryption_keys.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 23,
        name: "people_sealed",
        sqlite: include_str!("../migrations/sqlite/0023_people_sealed.sql"),
        postgres: include_str!("../migrations/postgres/0023_people_sealed.sql"),
        sqlite_rebuilds: true,
    },
    Migration {
        version: 24,
        name: "personal_fields_sealed",
        sqlite: include_str!("../migrations/sqlite/0024_personal_fields_sealed.sql"),
        postgres: include_str!("../migrations/postgres/0024_personal_fields_sealed.sql"),
        sqlite_rebuilds: true,
    },
    Migration {
        version: 25,
        name: "alert_notes_sealed",
        sqlite: include_str!("../migrations/sqlite/0025_alert_notes_sealed.sql"),
        postgres: include_str!("../migrations/postgres/0025_alert_notes_sealed.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 26,
        name: "current_kek",
        sqlite: include_str!("../migrations/sqlite/0026_current_kek.sql"),
        postgres: include_str!("../migrations/postgres/0026_current_kek.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 27,
        name: "alert_notes_in_clear",
        sqlite: include_str!("../migrations/sqlite/0027_alert_notes_in_clear.sql"),
        postgres: include_str!("../migrations/postgres/0027_alert_notes_in_clear.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 28,
        name: "retention",
        sqlite: include_str!("../migrations/sqlite/0028_retention.sql"),
        postgres: include_str!("../migrations/postgres/0028_retention.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 29,
        name: "consent_history",
        sqlite: include_str!("../migrations/sqlite/0029_consent_history.sql"),
        postgres: include_str!("../migrations/postgres/0029_consent_history.sql"),
        sqlite_rebuilds: false,
    },
    Migration {
        version: 30,
        name: "breaches",
        sqlite: include_str!("../migrations/sqlite/0030_breaches.sql"),
        postgres: include_str!("../migrations/postgres/0030_breaches.sql"),
        sqlite_rebuilds: false,
    },
];

/// Names this build's schema on `backend`: its latest version and a digest (64-bit FNV-1a) of
/// every migration's SQL, so a database migrated by another build (or before a migration was
/// edited during development) is told apart.
pub(crate) fn digest(backend: Backend) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for m in MIGRATIONS {
        let sql = match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        for byte in m.version.to_le_bytes().iter().chain(sql.as_bytes()) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{}_{hash:016x}", latest_version())
}

pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

pub(crate) async fn run(conn: &mut AnyConnection, backend: Backend) -> Result<(), StoreError> {
    run_to(conn, backend, latest_version()).await
}

/// Applies the migrations up to and including `target`.
pub(crate) async fn run_to(
    conn: &mut AnyConnection,
    backend: Backend,
    target: i64,
) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version BIGINT PRIMARY KEY, name TEXT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let applied: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await?
        .try_get("v")?;
    let applied = applied.unwrap_or(0);
    if applied > latest_version() {
        return Err(StoreError::Migration {
            version: applied,
            message: "the database was migrated by a newer Custody; upgrade this binary".into(),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > applied && m.version <= target) {
        let sql = match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        let fail =
            |e: sqlx::Error| StoreError::Migration { version: m.version, message: e.to_string() };
        let rebuilds = backend == Backend::Sqlite && m.sqlite_rebuilds;
        if rebuilds {
            sqlx::raw_sql("PRAGMA foreign_keys = OFF").execute(&mut *conn).await.map_err(fail)?;
        }
        let applied = apply(conn, m, sql, rebuilds).await;
        if rebuilds {
            sqlx::raw_sql("PRAGMA foreign_keys = ON").execute(&mut *conn).await.map_err(fail)?;
        }
        applied?;
        tracing::info!(
            version = m.version,
            name = m.name,
            backend = backend.as_str(),
            "applied migration"
        );
    }
    Ok(())
}

/// Applies one migration in its own transaction. A rebuild checks, before it commits, that
/// every reference still finds its row (foreign keys were off while the table was replaced).
async fn apply(
    conn: &mut AnyConnection,
    m: &Migration,
    sql: &'static str,
    rebuilds: bool,
) -> Result<(), StoreError> {
    let fail = |message: String| StoreError::Migration { version: m.version, message };
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.map_err(|e| fail(e.to_string()))?;
    let applied = async {
        sqlx::raw_sql(sql).execute(&mut *conn).await.map_err(|e| fail(e.to_string()))?;
        if rebuilds {
            let broken = sqlx::raw_sql("PRAGMA foreign_key_check")
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| fail(e.to_string()))?;
            if !broken.is_empty() {
                return Err(fail(format!(
                    "{} rows refer to rows that are gone; the database was left as it was",
                    broken.len()
                )));
            }
        }
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *conn)
            .await
            .map_err(|e| fail(e.to_string()))?;
        sqlx::raw_sql("COMMIT").execute(&mut *conn).await.map_err(|e| fail(e.to_string()))
    }
    .await;
    if applied.is_err() {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    }
    applied.map(drop)
}
