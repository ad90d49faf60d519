//! Migrations: the schema both backends build, and migrations that reshape tables holding data,
//! run on a database as an older Custody left it; on both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_core::compartment::SizeClass;
use custody_core::parcel::ParcelState;
use custody_core::text::{Email, Name};
use custody_core::{BankId, CarrierId, CodeId, CompartmentId, OrgId, ParcelId, PersonId, SiteId};
use custody_store::{ParcelRow, PersonDetails, StoreError, StoredText, WrappedKeyRow, migrate_to};
use custody_testkit::{TEST_EPOCH, TestDatabase, TestStore, backends};
use futures_util::FutureExt as _;
use sqlx::{Connection as _, Row as _};

/// The rows' ids, as their types print them.
struct Ids {
    org: String,
    site: String,
    carrier: String,
    person: String,
    bank: String,
    compartment: String,
    parcel: String,
    code: String,
}

fn ids() -> Ids {
    Ids {
        org: OrgId::from_random([1; 16]).to_string(),
        site: SiteId::from_random([2; 16]).to_string(),
        carrier: CarrierId::from_random([3; 16]).to_string(),
        person: PersonId::from_random([4; 16]).to_string(),
        bank: BankId::from_random([5; 16]).to_string(),
        compartment: CompartmentId::from_random([6; 16]).to_string(),
        parcel: ParcelId::from_random([7; 16]).to_string(),
        code: CodeId::from_random([8; 16]).to_string(),
    }
}

/// A site with one notified parcel and its pickup code, written as schema version 20 stored
/// them (every parcel had a recipient).
async fn version_20_parcel(url: &str) {
    let Ids { org, site, carrier, person, bank, compartment, parcel, code } = ids();
    migrate_to(url, 20).await.unwrap();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let at = TEST_EPOCH.as_millis();
    let rows: [(&str, Vec<&String>); 8] = [
        ("INSERT INTO organisations (id, name, created_at) VALUES ($1, 'Harbour', $2)", vec![&org]),
        (
            "INSERT INTO sites (id, org_id, name, time_zone, pickup_window_ms, created_at) \
             VALUES ($1, $3, 'Harbour Court', 'UTC', 604800000, $2)",
            vec![&site, &org],
        ),
        (
            "INSERT INTO carriers (id, org_id, name, created_at) VALUES ($1, $3, 'Parcelco', $2)",
            vec![&carrier, &org],
        ),
        (
            "INSERT INTO people (id, org_id, email, name, role, site_id, created_at) \
             VALUES ($1, $3, 'ann@harbour.example', 'Ann', 'resident', $4, $2)",
            vec![&person, &org, &site],
        ),
        (
            "INSERT INTO banks (id, site_id, name, created_at) VALUES ($1, $3, 'Lobby', $2)",
            vec![&bank, &site],
        ),
        (
            "INSERT INTO compartments (id, bank_id, number, size, size_rank, accessible, \
             refrigerated, state, door, parcel_id, updated_at) \
             VALUES ($1, $3, 1, 'small', 1, 0, 0, 'occupied', 'closed', $4, $2)",
            vec![&compartment, &bank, &parcel],
        ),
        (
            "INSERT INTO parcels (id, org_id, site_id, bank_id, compartment_id, carrier_id, \
             recipient_id, tracking_ref, size, needs_accessible, needs_refrigerated, state, \
             created_at, deposited_at, notified_at, expires_at, updated_at) \
             VALUES ($1, $3, $4, $5, $6, $7, $8, '1Z999AA10123456784', 'small', 0, 0, \
             'notified', $2, $2, $2, $2, $2)",
            vec![&parcel, &org, &site, &bank, &compartment, &carrier, &person],
        ),
        (
            "INSERT INTO pickup_codes (id, parcel_id, bank_id, compartment_id, code_hash, \
             created_at, expires_at) VALUES ($1, $3, $4, $5, $6, $2, $2)",
            vec![&code, &parcel, &bank, &compartment],
        ),
    ];
    for (sql, ids) in rows {
        let mut q = sqlx::query(sql).bind(ids[0].as_str()).bind(at);
        for id in &ids[1..] {
            q = q.bind(id.as_str());
        }
        if sql.contains("pickup_codes") {
            q = q.bind(vec![7_u8; 32]);
        }
        q.execute(&mut conn).await.unwrap();
    }
}

async fn parcels_may_have_no_recipient(db: TestDatabase) {
    let Ids { site, person, bank, compartment, parcel, .. } = ids();
    version_20_parcel(&db.url).await;
    let t = db.open().await;
    let id = ParcelId::parse(&parcel).unwrap();
    let kept = t.store.read(move |tx| async move { tx.parcel(&id).await }.boxed()).await.unwrap();
    let kept = kept.expect("the parcel is still there");
    assert_eq!(kept.recipient, Some(PersonId::parse(&person).unwrap()));
    assert_eq!(kept.state, ParcelState::Notified);

    // A parcel nobody is named for can be stored now, and is listed for the site's staff.
    let unaddressed = ParcelRow {
        id: ParcelId::from_random([9; 16]),
        recipient: None,
        state: ParcelState::Expected,
        bank: None,
        compartment: None,
        tracking_ref: Some(StoredText::Sealed(b"sealed tracking number".to_vec())),
        size: SizeClass::Small,
        ..kept
    };
    let row = unaddressed.clone();
    let site = SiteId::parse(&site).unwrap();
    let listed = t
        .store
        .write(move |tx| {
            async move {
                tx.insert_parcel(&row).await?;
                tx.unaddressed_parcels(&site, 10).await
            }
            .boxed()
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![unaddressed]);

    // References are still enforced, both ways: a code for a parcel that does not exist, and a
    // parcel for a person who does not exist, are refused.
    let mut conn = sqlx::AnyConnection::connect(&t.url).await.unwrap();
    let orphan = sqlx::query(
        "INSERT INTO pickup_codes (id, parcel_id, bank_id, compartment_id, code_hash, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, 0, 0)",
    )
    .bind(CodeId::from_random([10; 16]).to_string())
    .bind(ParcelId::from_random([11; 16]).to_string())
    .bind(bank)
    .bind(compartment)
    .bind(vec![8_u8; 32])
    .execute(&mut conn)
    .await;
    assert!(orphan.is_err(), "a code for no parcel was stored");
    let id = ParcelId::from_random([9; 16]);
    let nobody = PersonId::from_random([12; 16]);
    let named = t
        .store
        .write(move |tx| async move { tx.address_parcel(&id, &nobody, TEST_EPOCH).await }.boxed())
        .await;
    assert!(matches!(named, Err(StoreError::Database(_))), "{named:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    parcels_may_have_no_recipient(custody_testkit::sqlite_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let Some(db) = custody_testkit::postgres_database("migrations::postgres").await else {
        return;
    };
    parcels_may_have_no_recipient(db).await;
}

/// Subjects' keys stored before key-encryption keys had ids (schema 21) were wrapped under the
/// one derived from the master key: after the migration they name it, and an erased key stays
/// erased.
async fn subject_keys_from_before_name_the_master_kek(db: TestDatabase) {
    migrate_to(&db.url, 21).await.unwrap();
    let (kept, erased) = (PersonId::from_random([4; 16]), PersonId::from_random([5; 16]));
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    for (subject, wrapped, erased_at) in
        [(&kept, Some(vec![3_u8; 60]), None), (&erased, None, Some(TEST_EPOCH.as_millis()))]
    {
        sqlx::query(
            "INSERT INTO subject_keys (subject, wrapped, created_at, erased_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(subject.to_string())
        .bind(wrapped)
        .bind(TEST_EPOCH.as_millis())
        .bind(erased_at)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();
    let t = db.open().await;
    let key = |subject: &PersonId| {
        let subject = subject.clone();
        t.store.read(move |tx| async move { tx.subject_key(&subject).await }.boxed())
    };
    let want = WrappedKeyRow { kek: "master".into(), wrapped: vec![3; 60] };
    assert_eq!(key(&kept).await.unwrap(), Some(Some(want)));
    assert_eq!(key(&erased).await.unwrap(), Some(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_keys_name_their_kek_sqlite() {
    subject_keys_from_before_name_the_master_kek(custody_testkit::sqlite_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_keys_name_their_kek_postgres() {
    let Some(db) = custody_testkit::postgres_database("migrations::kek").await else { return };
    subject_keys_from_before_name_the_master_kek(db).await;
}

/// People and parcels stored before they were sealed (schema 22) keep their address, name and
/// tracking number in clear through the migrations, readable and listed for sealing in place;
/// sealing leaves no clear column, finds people by blind index, and happens once.
async fn people_from_before_wait_in_clear_to_be_sealed(db: TestDatabase) {
    let Ids { person, .. } = ids();
    version_20_parcel(&db.url).await;
    let t = db.open().await;
    let id = PersonId::parse(&person).unwrap();
    let waiting = t
        .store
        .read(|tx| {
            async move {
                Ok::<_, StoreError>((tx.count_in_clear().await?, tx.people_in_clear(10).await?))
            }
            .boxed()
        })
        .await
        .unwrap();
    // Ann, and her parcel's tracking number.
    assert_eq!(waiting.0, 2);
    let [ann] = waiting.1.as_slice() else { panic!("{waiting:?}") };
    assert_eq!(ann.id, id);
    assert_eq!(ann.email_index, None);
    assert_eq!(
        ann.details,
        PersonDetails::Clear {
            email: Email::parse("ann@harbour.example").unwrap(),
            name: Name::parse("Ann").unwrap(),
        }
    );

    let seal = |id: PersonId| {
        t.store.write(move |tx| {
            async move { tx.seal_person(&id, b"index", b"sealed address", b"sealed name").await }
                .boxed()
        })
    };
    assert!(seal(id.clone()).await.unwrap());
    assert!(!seal(id.clone()).await.unwrap(), "a row is sealed once");
    let found = t
        .store
        .read(|tx| async move { tx.person_by_email_index(b"index").await }.boxed())
        .await
        .unwrap()
        .expect("found by blind index");
    assert_eq!(found.id, id);
    assert_eq!(
        found.details,
        PersonDetails::Sealed { email: b"sealed address".to_vec(), name: b"sealed name".to_vec() }
    );
    let Ids { parcel, .. } = ids();
    let parcel = ParcelId::parse(&parcel).unwrap();
    let (waiting, sealed) = t
        .store
        .write(move |tx| {
            async move {
                let waiting = tx.parcels_in_clear(10).await?;
                let sealed = tx.seal_tracking_ref(&parcel, b"sealed tracking number").await?;
                Ok::<_, StoreError>((waiting, sealed))
            }
            .boxed()
        })
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].tracking_ref, Some(StoredText::Clear("1Z999AA10123456784".into())));
    assert!(sealed);
    let mut conn = sqlx::AnyConnection::connect(&t.url).await.unwrap();
    let clear: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM people WHERE clear_email IS NOT NULL \
         OR clear_name IS NOT NULL) + (SELECT COUNT(*) FROM parcels \
         WHERE clear_tracking_ref IS NOT NULL)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(clear, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_wait_in_clear_to_be_sealed_sqlite() {
    people_from_before_wait_in_clear_to_be_sealed(custody_testkit::sqlite_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_wait_in_clear_to_be_sealed_postgres() {
    let Some(db) = custody_testkit::postgres_database("migrations::people").await else { return };
    people_from_before_wait_in_clear_to_be_sealed(db).await;
}

/// A column: its table, its name, its type's family, and whether it may be null.
type Column = (String, String, &'static str, bool);

/// Every table's columns, from the database's own catalogue.
async fn schema(url: &str, sqlite: bool) -> Vec<Column> {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let family = |t: &str| match t.to_ascii_lowercase().as_str() {
        "integer" | "bigint" | "int" | "int8" | "smallint" => "integer",
        "text" | "character varying" => "text",
        "blob" | "bytea" => "bytes",
        other => panic!("a column of type {other}: give it a family here"),
    };
    let mut out = Vec::new();
    if sqlite {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for table in tables {
            let columns =
                sqlx::query("SELECT name, type, \"notnull\" AS nn, pk FROM pragma_table_info($1)")
                    .bind(&table)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            for c in columns {
                let (name, ty): (String, String) = (c.get("name"), c.get("type"));
                // A primary key is never null, whether or not SQLite was told so.
                let nullable = c.get::<i64, _>("nn") == 0 && c.get::<i64, _>("pk") == 0;
                out.push((table.clone(), name, family(&ty), nullable));
            }
        }
    } else {
        let columns = sqlx::query(
            "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty, \
             is_nullable::text AS n FROM information_schema.columns WHERE table_schema = 'public'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for c in columns {
            let (t, name, ty, n): (String, String, String, String) =
                (c.get("t"), c.get("c"), c.get("ty"), c.get("n"));
            out.push((t, name, family(&ty), n == "YES"));
        }
    }
    out.sort();
    out
}

/// The two backends' migrations build the same schema: the same tables, each with the same
/// columns, of the same kind, null where the other allows null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_build_the_same_schema() {
    let Some(pg) = custody_testkit::postgres_database("migrations::same_schema").await else {
        return;
    };
    let lite = custody_testkit::sqlite_database();
    let (pg, lite) = (pg.open().await, lite.open().await);
    let (on_pg, on_lite) = (schema(&pg.url, false).await, schema(&lite.url, true).await);
    assert!(on_lite.len() > 100, "{} columns read", on_lite.len());
    let only = |a: &[Column], b: &[Column]| -> Vec<Column> {
        a.iter().filter(|c| !b.contains(c)).cloned().collect()
    };
    assert!(
        on_pg == on_lite,
        "only on PostgreSQL: {:#?}\nonly on SQLite: {:#?}",
        only(&on_pg, &on_lite),
        only(&on_lite, &on_pg)
    );
}

// The inventory behind the record of processing names every table and column the migrations
// build, and nothing they do not: a column added without saying what it holds fails here.
backends!(the_inventory_names_every_column_of_the_schema, |t: TestStore| async move {
    use custody_store::inventory::{BACKEND_TABLES, INVENTORY};
    let columns =
        t.store.read(|tx| async move { tx.schema_columns().await }.boxed()).await.unwrap();
    let built: std::collections::BTreeSet<(String, String)> = columns
        .into_iter()
        .filter(|(table, _)| !BACKEND_TABLES.contains(&table.as_str()))
        .collect();
    let named: std::collections::BTreeSet<(String, String)> = INVENTORY
        .iter()
        .flat_map(|t| t.columns.iter().map(|(c, _)| (t.name.to_owned(), (*c).to_owned())))
        .collect();
    let unnamed: Vec<_> = built.difference(&named).collect();
    let stale: Vec<_> = named.difference(&built).collect();
    assert!(
        unnamed.is_empty() && stale.is_empty(),
        "in the schema, not the inventory: {unnamed:?}\nin the inventory, not the schema: {stale:?}"
    );
});
