//! [`Tx`]: a unit of work's view of the store, with one method per thing the domain does.

use std::time::Duration;

use custody_audit::entry::{Entry, Sealed};
use custody_audit::merkle::{self as audit_merkle, Frontier};
use custody_core::alert::{
    AlertKind, AlertState, Channel, Debounce, LockdownRule, LockdownScope, SensorSettings, Severity,
};
use custody_core::approval::{ApprovalKind, ApprovalOutcome};
use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Outcome, SealedText, Target};
use custody_core::compartment::{CompartmentNumber, CompartmentState, DoorState, SizeClass};
use custody_core::parcel::ParcelState;
use custody_core::person::{Factor, Role};
use custody_core::site::PickupWindow;
use custody_core::text::{Email, Name, TrackingRef};
use custody_core::time::duration_millis;
use custody_core::{
    AlertId, ApiKeyId, ApprovalId, BadgeId, BankId, CarrierId, CodeId, CompartmentId, DeliveryId,
    DeviceId, EndpointId, MessageId, OrgId, ParcelId, PersonId, SessionId, SiteId, Timestamp,
};
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Row as _, Transaction};

use crate::rows::{
    ActiveCode, AlertEventRow, AlertRow, ApiKeyRow, ApprovalRow, AuditFilter, AuditRow, BadgeRow,
    BankRow, CarrierRow, CodeRefusal, CodeRefused, CompartmentNeeds, CompartmentRow, DeliveryRow,
    DeviceRow, EndpointRow, MalformedAuditRow, NewAlert, NewBadge, NewCompartment,
    NewEnrolmentToken, NewPickupCode, OfflineCodeRow, OrgRow, OutboxRow, ParcelRow, PersonRow,
    RedeemedCode, RowRef, SessionRow, SiteRow, StoredEntry, SubscriptionRow, TotpRow,
};
use crate::{Backend, StoreError};

pub(crate) mod remote_opens;

enum Conn {
    /// The SQLite writer's own connection; transactions are managed by the writer.
    Writer(AnyConnection),
    /// A PostgreSQL transaction, committed by [`crate::Store::write`].
    Postgres(Transaction<'static, Any>),
    /// A read connection.
    Reader(PoolConnection<Any>),
}

/// A unit of work's handle on the store.
pub struct Tx {
    conn: Conn,
    backend: Backend,
    /// Audit entries of this unit, appended to the tree when the unit ends (see
    /// [`Tx::append_audit`]).
    pending: Vec<AuditEvent>,
    /// On the SQLite writer, the savepoint of the unit under way.
    unit: Unit,
}

/// The savepoint of a unit of work in the SQLite writer's batch. It is opened just before the
/// unit's first statement: a unit that only records audit entries (a refused attempt, a sensor
/// reading) runs no statement at all, and so costs no savepoint round trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Not in a batched unit (PostgreSQL, readers, the writer between units).
    Outside,
    /// A unit has begun and has run no statement yet.
    Pending,
    /// The unit's savepoint is open.
    Open,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("backend", &self.backend).finish_non_exhaustive()
    }
}

// --- decoding -----------------------------------------------------------------------------

type R<T> = Result<T, StoreError>;

fn text(row: &AnyRow, col: &'static str) -> R<String> {
    row.try_get::<String, _>(col).map_err(|_| StoreError::Corrupt(col))
}
fn opt_text(row: &AnyRow, col: &'static str) -> R<Option<String>> {
    row.try_get::<Option<String>, _>(col).map_err(|_| StoreError::Corrupt(col))
}
fn int(row: &AnyRow, col: &'static str) -> R<i64> {
    row.try_get::<i64, _>(col).map_err(|_| StoreError::Corrupt(col))
}
fn opt_int(row: &AnyRow, col: &'static str) -> R<Option<i64>> {
    row.try_get::<Option<i64>, _>(col).map_err(|_| StoreError::Corrupt(col))
}
fn time(row: &AnyRow, col: &'static str) -> R<Timestamp> {
    int(row, col).map(Timestamp::from_millis)
}
fn opt_time(row: &AnyRow, col: &'static str) -> R<Option<Timestamp>> {
    opt_int(row, col).map(|v| v.map(Timestamp::from_millis))
}
fn flag(row: &AnyRow, col: &'static str) -> R<bool> {
    match int(row, col)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(StoreError::Corrupt(col)),
    }
}
fn blob(row: &AnyRow, col: &'static str) -> R<Vec<u8>> {
    row.try_get::<Vec<u8>, _>(col).map_err(|_| StoreError::Corrupt(col))
}
fn opt_blob(row: &AnyRow, col: &'static str) -> R<Option<Vec<u8>>> {
    row.try_get::<Option<Vec<u8>>, _>(col).map_err(|_| StoreError::Corrupt(col))
}
const BADGE_COLS: &str = "id, site_id, person_id, verifier, hint, created_at, revoked_at";

const ALERT_COLS: &str = "id, org_id, site_id, bank_id, compartment, kind, severity, state, \
     owner_id, readings, raised_at, updated_at";

fn alert_row(r: &AnyRow) -> R<AlertRow> {
    Ok(AlertRow {
        id: parse(r, "id", |s| AlertId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        bank: opt_parse(r, "bank_id", |s| BankId::parse(s).ok())?,
        compartment: opt_int(r, "compartment")?
            .map(|n| u16::try_from(n).map_err(|_| StoreError::Corrupt("compartment")))
            .transpose()?,
        kind: parse(r, "kind", AlertKind::parse)?,
        severity: parse(r, "severity", Severity::parse)?,
        state: parse(r, "state", AlertState::parse)?,
        owner: opt_parse(r, "owner_id", |s| PersonId::parse(s).ok())?,
        readings: u64::try_from(int(r, "readings")?)
            .map_err(|_| StoreError::Corrupt("readings"))?,
        raised_at: time(r, "raised_at")?,
        updated_at: time(r, "updated_at")?,
    })
}

fn badge_row(r: &AnyRow) -> R<BadgeRow> {
    Ok(BadgeRow {
        id: parse(r, "id", |s| BadgeId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        person: parse(r, "person_id", |s| PersonId::parse(s).ok())?,
        verifier: blob(r, "verifier")?,
        hint: text(r, "hint")?,
        created_at: time(r, "created_at")?,
        revoked_at: opt_time(r, "revoked_at")?,
    })
}

fn parse<T>(row: &AnyRow, col: &'static str, f: impl FnOnce(&str) -> Option<T>) -> R<T> {
    f(&text(row, col)?).ok_or(StoreError::Corrupt(col))
}
fn opt_parse<T>(
    row: &AnyRow,
    col: &'static str,
    f: impl FnOnce(&str) -> Option<T>,
) -> R<Option<T>> {
    match opt_text(row, col)? {
        Some(s) => f(&s).map(Some).ok_or(StoreError::Corrupt(col)),
        None => Ok(None),
    }
}
fn b(v: bool) -> i64 {
    i64::from(v)
}
/// Size classes compare by rank in SQL ("this size or larger").
fn size_rank(s: SizeClass) -> i64 {
    match s {
        SizeClass::Small => 1,
        SizeClass::Medium => 2,
        SizeClass::Large => 3,
        SizeClass::ExtraLarge => 4,
    }
}

fn org_row(r: &AnyRow) -> R<OrgRow> {
    Ok(OrgRow {
        id: parse(r, "id", |s| OrgId::parse(s).ok())?,
        name: parse(r, "name", |s| Name::parse(s).ok())?,
        created_at: time(r, "created_at")?,
    })
}

fn site_row(r: &AnyRow) -> R<SiteRow> {
    let window = Duration::from_millis(u64::try_from(int(r, "pickup_window_ms")?).unwrap_or(0));
    Ok(SiteRow {
        id: parse(r, "id", |s| SiteId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        name: parse(r, "name", |s| Name::parse(s).ok())?,
        time_zone: text(r, "time_zone")?,
        pickup_window: PickupWindow::new(window)
            .map_err(|_| StoreError::Corrupt("pickup_window_ms"))?,
        created_at: time(r, "created_at")?,
    })
}

fn bank_row(r: &AnyRow) -> R<BankRow> {
    Ok(BankRow {
        id: parse(r, "id", |s| BankId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        name: parse(r, "name", |s| Name::parse(s).ok())?,
        created_at: time(r, "created_at")?,
    })
}

const COMPARTMENT_COLS: &str = "id, bank_id, number, size, accessible, refrigerated, state, door, \
     parcel_id, reserved_until, updated_at";

fn compartment_row(r: &AnyRow) -> R<CompartmentRow> {
    let number = u16::try_from(int(r, "number")?).map_err(|_| StoreError::Corrupt("number"))?;
    Ok(CompartmentRow {
        id: parse(r, "id", |s| CompartmentId::parse(s).ok())?,
        bank: parse(r, "bank_id", |s| BankId::parse(s).ok())?,
        number: CompartmentNumber::new(number).map_err(|_| StoreError::Corrupt("number"))?,
        size: parse(r, "size", SizeClass::parse)?,
        accessible: flag(r, "accessible")?,
        refrigerated: flag(r, "refrigerated")?,
        state: parse(r, "state", CompartmentState::parse)?,
        door: parse(r, "door", DoorState::parse)?,
        parcel: opt_parse(r, "parcel_id", |s| ParcelId::parse(s).ok())?,
        reserved_until: opt_time(r, "reserved_until")?,
        updated_at: time(r, "updated_at")?,
    })
}

fn carrier_row(r: &AnyRow) -> R<CarrierRow> {
    Ok(CarrierRow {
        id: parse(r, "id", |s| CarrierId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        name: parse(r, "name", |s| Name::parse(s).ok())?,
        created_at: time(r, "created_at")?,
    })
}

const PERSON_COLS: &str =
    "id, org_id, email, name, role, site_id, carrier_id, password_hash, disabled_at, created_at";

fn person_row(r: &AnyRow) -> R<PersonRow> {
    Ok(PersonRow {
        id: parse(r, "id", |s| PersonId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        email: parse(r, "email", |s| Email::parse(s).ok())?,
        name: parse(r, "name", |s| Name::parse(s).ok())?,
        role: parse(r, "role", Role::parse)?,
        site: opt_parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        carrier: opt_parse(r, "carrier_id", |s| CarrierId::parse(s).ok())?,
        password_hash: opt_text(r, "password_hash")?,
        disabled_at: opt_time(r, "disabled_at")?,
        created_at: time(r, "created_at")?,
    })
}

const PARCEL_COLS: &str = "id, org_id, site_id, bank_id, compartment_id, carrier_id, recipient_id, \
     tracking_ref, size, needs_accessible, needs_refrigerated, state, created_at, deposited_at, \
     notified_at, expires_at, closed_at, updated_at";

fn parcel_row(r: &AnyRow) -> R<ParcelRow> {
    Ok(ParcelRow {
        id: parse(r, "id", |s| ParcelId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        bank: opt_parse(r, "bank_id", |s| BankId::parse(s).ok())?,
        compartment: opt_parse(r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
        carrier: parse(r, "carrier_id", |s| CarrierId::parse(s).ok())?,
        recipient: opt_parse(r, "recipient_id", |s| PersonId::parse(s).ok())?,
        tracking_ref: parse(r, "tracking_ref", |s| TrackingRef::parse(s).ok())?,
        size: parse(r, "size", SizeClass::parse)?,
        needs_accessible: flag(r, "needs_accessible")?,
        needs_refrigerated: flag(r, "needs_refrigerated")?,
        state: parse(r, "state", ParcelState::parse)?,
        created_at: time(r, "created_at")?,
        deposited_at: opt_time(r, "deposited_at")?,
        notified_at: opt_time(r, "notified_at")?,
        expires_at: opt_time(r, "expires_at")?,
        closed_at: opt_time(r, "closed_at")?,
        updated_at: time(r, "updated_at")?,
    })
}

/// The audit row's columns, in the order the verifier's scans read them by position.
pub(crate) const AUDIT_COLS: &str = "seq, at, actor_kind, actor_id, action, site_id, bank_id, compartment_id, parcel_id, outcome, reason, sealed_subject, sealed";

const APPROVAL_COLS: &str = "id, org_id, kind, subject_id, params, digest, requested_by, \
     requested_at, expires_at, decided_by, decided_at, outcome";

fn approval_row(r: &AnyRow) -> R<ApprovalRow> {
    let decision = match (
        opt_parse(r, "decided_by", |s| PersonId::parse(s).ok())?,
        opt_time(r, "decided_at")?,
        opt_parse(r, "outcome", ApprovalOutcome::parse)?,
    ) {
        (Some(by), Some(at), Some(outcome)) => Some((by, at, outcome)),
        (None, None, None) => None,
        _ => return Err(StoreError::Corrupt("approvals.decision")),
    };
    Ok(ApprovalRow {
        id: parse(r, "id", |s| ApprovalId::parse(s).ok())?,
        org: parse(r, "org_id", |s| OrgId::parse(s).ok())?,
        kind: parse(r, "kind", ApprovalKind::parse)?,
        subject: text(r, "subject_id")?,
        params: text(r, "params")?,
        digest: blob(r, "digest")?,
        requested_by: parse(r, "requested_by", |s| PersonId::parse(s).ok())?,
        requested_at: time(r, "requested_at")?,
        expires_at: time(r, "expires_at")?,
        decision,
    })
}

const SESSION_COLS: &str = "token_hash, id, person_id, created_at, last_seen_at, expires_at, \
     factor_at, factor, source, user_agent";

fn session_row(r: &AnyRow) -> R<SessionRow> {
    let factor = match (opt_parse(r, "factor", Factor::parse)?, opt_time(r, "factor_at")?) {
        (Some(f), Some(at)) => Some((f, at)),
        (None, None) => None,
        _ => return Err(StoreError::Corrupt("sessions.factor")),
    };
    Ok(SessionRow {
        token_hash: blob(r, "token_hash")?,
        id: parse(r, "id", |s| SessionId::parse(s).ok())?,
        person: parse(r, "person_id", |s| PersonId::parse(s).ok())?,
        created_at: time(r, "created_at")?,
        last_seen_at: time(r, "last_seen_at")?,
        expires_at: time(r, "expires_at")?,
        factor,
        source: text(r, "source")?,
        user_agent: text(r, "user_agent")?,
    })
}

/// Splits concatenated 32-byte hashes.
pub(crate) fn split_hashes(bytes: &[u8]) -> R<Vec<audit_merkle::Hash>> {
    if !bytes.len().is_multiple_of(32) {
        return Err(StoreError::Corrupt("hash list"));
    }
    bytes
        .chunks_exact(32)
        .map(|c| c.try_into().map_err(|_| StoreError::Corrupt("hash list")))
        .collect()
}

/// The audit entry (format v1) of an event at leaf `index`: what the store writes, and what a
/// verifier expects an entry's queryable fields to say.
pub fn entry_of(index: u64, e: &AuditEvent) -> Entry {
    let id = |v: Option<&str>| v.map(str::to_owned);
    Entry {
        index,
        at_ms: e.at.as_millis(),
        actor_kind: e.actor.kind.as_str().to_owned(),
        actor_id: e.actor.id.clone(),
        action: e.action.as_str().to_owned(),
        site: id(e.target.site.as_ref().map(SiteId::as_str)),
        bank: id(e.target.bank.as_ref().map(BankId::as_str)),
        compartment: id(e.target.compartment.as_ref().map(CompartmentId::as_str)),
        parcel: id(e.target.parcel.as_ref().map(ParcelId::as_str)),
        outcome: e.outcome.as_str().to_owned(),
        reason: e.reason.clone(),
        sealed: e.personal.as_ref().map(|p| Sealed {
            subject: p.subject.as_str().to_owned(),
            ciphertext: p.ciphertext.clone(),
        }),
        evidence: Vec::new(),
    }
}

fn audit_row(r: &AnyRow) -> R<AuditRow> {
    Ok(AuditRow {
        seq: int(r, "seq")?,
        event: AuditEvent {
            at: time(r, "at")?,
            actor: Actor {
                kind: parse(r, "actor_kind", ActorKind::parse)?,
                id: opt_text(r, "actor_id")?,
            },
            action: parse(r, "action", AuditAction::parse)?,
            target: Target {
                site: opt_parse(r, "site_id", |s| SiteId::parse(s).ok())?,
                bank: opt_parse(r, "bank_id", |s| BankId::parse(s).ok())?,
                compartment: opt_parse(r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
                parcel: opt_parse(r, "parcel_id", |s| ParcelId::parse(s).ok())?,
            },
            outcome: parse(r, "outcome", Outcome::parse)?,
            reason: opt_text(r, "reason")?,
            personal: match (
                opt_parse(r, "sealed_subject", |s| PersonId::parse(s).ok())?,
                opt_blob(r, "sealed")?,
            ) {
                (Some(subject), Some(ciphertext)) => Some(SealedText { subject, ciphertext }),
                (None, None) => None,
                _ => return Err(StoreError::Corrupt("audit_entries.sealed")),
            },
        },
    })
}

/// A row of `AUDIT_COLS, evidence, leaf_hash`, borrowed and read by position, parsing nothing.
pub(crate) fn audit_row_ref(r: &AnyRow) -> Result<RowRef<'_>, MalformedAuditRow> {
    let seq = r.try_get::<i64, _>(0).ok();
    let bad = |column| MalformedAuditRow { seq, column };
    let s = |i: usize, column| r.try_get::<&str, _>(i).map_err(|_| bad(column));
    let o = |i: usize, column| r.try_get::<Option<&str>, _>(i).map_err(|_| bad(column));
    let b = |i: usize, column| r.try_get::<&[u8], _>(i).map_err(|_| bad(column));
    Ok(RowRef {
        seq: seq.ok_or(bad("seq"))?,
        at: r.try_get::<i64, _>(1).map_err(|_| bad("at"))?,
        actor_kind: s(2, "actor_kind")?,
        actor_id: o(3, "actor_id")?,
        action: s(4, "action")?,
        target: [o(5, "site_id")?, o(6, "bank_id")?, o(7, "compartment_id")?, o(8, "parcel_id")?],
        outcome: s(9, "outcome")?,
        reason: o(10, "reason")?,
        sealed: (
            o(11, "sealed_subject")?,
            r.try_get::<Option<&[u8]>, _>(12).map_err(|_| bad("sealed"))?,
        ),
        evidence: b(13, "evidence")?,
        leaf_hash: b(14, "leaf_hash")?,
    })
}

const OUTBOX_COLS: &str = "id, channel, parcel_id, sealed, created_at, next_attempt_at, attempts, \
     delivered_at, dead_at, last_error";

fn outbox_row(r: &AnyRow) -> R<OutboxRow> {
    Ok(OutboxRow {
        id: parse(r, "id", |s| MessageId::parse(s).ok())?,
        channel: text(r, "channel")?,
        parcel: opt_parse(r, "parcel_id", |s| ParcelId::parse(s).ok())?,
        sealed: opt_blob(r, "sealed")?,
        created_at: time(r, "created_at")?,
        next_attempt_at: time(r, "next_attempt_at")?,
        attempts: u32::try_from(int(r, "attempts")?)
            .map_err(|_| StoreError::Corrupt("attempts"))?,
        delivered_at: opt_time(r, "delivered_at")?,
        dead_at: opt_time(r, "dead_at")?,
        last_error: opt_text(r, "last_error")?,
    })
}

const ENDPOINT_COLS: &str = "id, site_id, channel, target, secret, min_severity, created_at";

fn endpoint_row(r: &AnyRow) -> R<EndpointRow> {
    Ok(EndpointRow {
        id: parse(r, "id", |s| EndpointId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        channel: parse(r, "channel", Channel::parse)?,
        target: text(r, "target")?,
        secret: opt_blob(r, "secret")?,
        min_severity: parse(r, "min_severity", Severity::parse)?,
        created_at: time(r, "created_at")?,
    })
}

const DELIVERY_COLS: &str = "id, alert_id, site_id, channel, endpoint_id, person_id, event, \
     created_at, next_attempt_at, attempts, last_error, delivered_at, dead_at";

fn delivery_row(r: &AnyRow) -> R<DeliveryRow> {
    Ok(DeliveryRow {
        id: parse(r, "id", |s| DeliveryId::parse(s).ok())?,
        alert: parse(r, "alert_id", |s| AlertId::parse(s).ok())?,
        site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
        channel: parse(r, "channel", Channel::parse)?,
        endpoint: opt_parse(r, "endpoint_id", |s| EndpointId::parse(s).ok())?,
        person: opt_parse(r, "person_id", |s| PersonId::parse(s).ok())?,
        event: text(r, "event")?,
        created_at: time(r, "created_at")?,
        next_attempt_at: time(r, "next_attempt_at")?,
        attempts: u32::try_from(int(r, "attempts")?)
            .map_err(|_| StoreError::Corrupt("attempts"))?,
        last_error: opt_text(r, "last_error")?,
        delivered_at: opt_time(r, "delivered_at")?,
        dead_at: opt_time(r, "dead_at")?,
    })
}

fn device_row(r: &AnyRow) -> R<DeviceRow> {
    Ok(DeviceRow {
        id: parse(r, "id", |s| DeviceId::parse(s).ok())?,
        bank: parse(r, "bank_id", |s| BankId::parse(s).ok())?,
        cert_serial: text(r, "cert_serial")?,
        spki_sha256: blob(r, "spki_sha256")?,
        enrolled_at: time(r, "enrolled_at")?,
        cert_expires_at: time(r, "cert_expires_at")?,
        revoked_at: opt_time(r, "revoked_at")?,
        last_seen_at: opt_time(r, "last_seen_at")?,
    })
}

/// Builds a static SQL string from parts at compile time.
macro_rules! sql {
    ($($part:expr),+ $(,)?) => { const_format::concatcp!($($part),+) };
}

// --- the handle ----------------------------------------------------------------------------

/// Audit entries per INSERT statement (13 parameters each; well under both databases'
/// parameter limits).
pub(crate) const ENTRIES_PER_INSERT: usize = 64;
/// Subtree roots per INSERT statement.
pub(crate) const NODES_PER_INSERT: usize = 256;

/// `head` followed by `rows` groups of `columns` placeholders: `($1, $2), ($3, $4)` on
/// PostgreSQL, `(?, ?), (?, ?)` on SQLite. Only placeholders are generated; values are always
/// bound. SQLite gets anonymous ones because the driver looks up every numbered parameter's
/// name, and SQLite finds a name by scanning all of them: binding a statement of n numbered
/// parameters costs O(n²), most of a write batch's time at a few hundred rows.
pub(crate) fn values_sql(backend: Backend, head: &str, columns: usize, rows: usize) -> String {
    let mut sql = String::from(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(r * columns + c + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

impl Tx {
    pub(crate) fn writer(conn: AnyConnection, backend: Backend) -> Self {
        Self { conn: Conn::Writer(conn), backend, pending: Vec::new(), unit: Unit::Outside }
    }

    pub(crate) fn postgres(tx: Transaction<'static, Any>) -> Self {
        Self {
            conn: Conn::Postgres(tx),
            backend: Backend::Postgres,
            pending: Vec::new(),
            unit: Unit::Outside,
        }
    }

    pub(crate) fn reader(conn: PoolConnection<Any>, backend: Backend) -> Self {
        Self { conn: Conn::Reader(conn), backend, pending: Vec::new(), unit: Unit::Outside }
    }

    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        match &mut self.conn {
            Conn::Writer(c) => c,
            Conn::Postgres(t) => t,
            Conn::Reader(c) => c,
        }
    }

    pub(crate) async fn commit_postgres(self) -> R<()> {
        match self.conn {
            Conn::Postgres(t) => t.commit().await.map_err(StoreError::from),
            Conn::Writer(_) | Conn::Reader(_) => Ok(()),
        }
    }

    /// The connection for a write; refused on read-only handles.
    fn w(&mut self) -> R<&mut AnyConnection> {
        match &mut self.conn {
            Conn::Writer(c) => Ok(c),
            Conn::Postgres(t) => Ok(t),
            Conn::Reader(_) => Err(StoreError::ReadOnly),
        }
    }

    /// The writer starts a unit of work; its savepoint opens with its first statement.
    pub(crate) fn begin_unit(&mut self) {
        self.unit = Unit::Pending;
    }

    /// The writer ends a unit; `true` if its savepoint was opened and must be closed.
    pub(crate) fn end_unit(&mut self) -> bool {
        std::mem::replace(&mut self.unit, Unit::Outside) == Unit::Open
    }

    /// Opens the unit's savepoint before its first statement.
    async fn enter(&mut self) -> R<()> {
        if self.unit == Unit::Pending {
            sqlx::raw_sql("SAVEPOINT unit").execute(self.conn()).await?;
            self.unit = Unit::Open;
        }
        Ok(())
    }

    async fn one(
        &mut self,
        q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> R<Option<AnyRow>> {
        self.enter().await?;
        q.fetch_optional(self.conn()).await.map_err(StoreError::from)
    }

    async fn all(
        &mut self,
        q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> R<Vec<AnyRow>> {
        self.enter().await?;
        q.fetch_all(self.conn()).await.map_err(StoreError::from)
    }

    async fn exec(&mut self, q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>) -> R<u64> {
        self.w()?;
        self.enter().await?;
        Ok(q.execute(self.w()?).await?.rows_affected())
    }

    async fn fetch_write(
        &mut self,
        q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> R<Option<AnyRow>> {
        self.w()?;
        self.enter().await?;
        q.fetch_optional(self.w()?).await.map_err(StoreError::from)
    }

    // --- organisations, sites, banks -------------------------------------------------------

    /// Adds an organisation.
    pub async fn insert_org(&mut self, org: &OrgRow) -> R<()> {
        self.exec(
            sqlx::query("INSERT INTO organisations (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(org.id.as_str().to_owned())
                .bind(org.name.as_str().to_owned())
                .bind(org.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// An organisation.
    pub async fn org(&mut self, id: &OrgId) -> R<Option<OrgRow>> {
        let row = self
            .one(
                sqlx::query("SELECT id, name, created_at FROM organisations WHERE id = $1")
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(org_row).transpose()
    }

    /// Every organisation, oldest first.
    pub async fn orgs(&mut self) -> R<Vec<OrgRow>> {
        let rows = self
            .all(sqlx::query(
                "SELECT id, name, created_at FROM organisations ORDER BY created_at, id",
            ))
            .await?;
        rows.iter().map(org_row).collect()
    }

    /// Adds a site.
    pub async fn insert_site(&mut self, site: &SiteRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO sites (id, org_id, name, time_zone, pickup_window_ms, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(site.id.as_str().to_owned())
            .bind(site.org.as_str().to_owned())
            .bind(site.name.as_str().to_owned())
            .bind(site.time_zone.clone())
            .bind(duration_millis(site.pickup_window.get()))
            .bind(site.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A site.
    pub async fn site(&mut self, id: &SiteId) -> R<Option<SiteRow>> {
        let row = self
            .one(
                sqlx::query("SELECT id, org_id, name, time_zone, pickup_window_ms, created_at FROM sites WHERE id = $1")
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(site_row).transpose()
    }

    /// The sites of an organisation, by name.
    pub async fn sites(&mut self, org: &OrgId) -> R<Vec<SiteRow>> {
        let rows = self
            .all(
                sqlx::query("SELECT id, org_id, name, time_zone, pickup_window_ms, created_at FROM sites WHERE org_id = $1 ORDER BY name, id")
                    .bind(org.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(site_row).collect()
    }

    /// Adds a bank.
    pub async fn insert_bank(&mut self, bank: &BankRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO banks (id, site_id, name, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(bank.id.as_str().to_owned())
            .bind(bank.site.as_str().to_owned())
            .bind(bank.name.as_str().to_owned())
            .bind(bank.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A bank.
    pub async fn bank(&mut self, id: &BankId) -> R<Option<BankRow>> {
        let row = self
            .one(
                sqlx::query("SELECT id, site_id, name, created_at FROM banks WHERE id = $1")
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(bank_row).transpose()
    }

    /// The banks of a site, by name.
    pub async fn banks(&mut self, site: &SiteId) -> R<Vec<BankRow>> {
        let rows = self
            .all(
                sqlx::query("SELECT id, site_id, name, created_at FROM banks WHERE site_id = $1 ORDER BY name, id")
                    .bind(site.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(bank_row).collect()
    }

    // --- compartments ----------------------------------------------------------------------

    /// Adds a free compartment with its door in unknown state. `Conflict` if the number exists.
    pub async fn insert_compartment(&mut self, c: &NewCompartment, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO compartments (id, bank_id, number, size, size_rank, accessible, \
                 refrigerated, state, door, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(c.id.as_str().to_owned())
            .bind(c.bank.as_str().to_owned())
            .bind(i64::from(c.number.get()))
            .bind(c.size.as_str())
            .bind(size_rank(c.size))
            .bind(b(c.accessible))
            .bind(b(c.refrigerated))
            .bind(CompartmentState::Free.as_str())
            .bind(DoorState::Unknown.as_str())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A compartment.
    pub async fn compartment(&mut self, id: &CompartmentId) -> R<Option<CompartmentRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", COMPARTMENT_COLS, " FROM compartments WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(compartment_row).transpose()
    }

    /// A compartment by its number at a bank.
    pub async fn compartment_by_number(
        &mut self,
        bank: &BankId,
        number: CompartmentNumber,
    ) -> R<Option<CompartmentRow>> {
        let row = self
            .one(
                sqlx::query(sql!(
                    "SELECT ",
                    COMPARTMENT_COLS,
                    " FROM compartments WHERE bank_id = $1 AND number = $2"
                ))
                .bind(bank.as_str().to_owned())
                .bind(i64::from(number.get())),
            )
            .await?;
        row.as_ref().map(compartment_row).transpose()
    }

    /// The compartments of a bank, by number.
    pub async fn compartments(&mut self, bank: &BankId) -> R<Vec<CompartmentRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    COMPARTMENT_COLS,
                    " FROM compartments WHERE bank_id = $1 ORDER BY number"
                ))
                .bind(bank.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(compartment_row).collect()
    }

    /// Reserves the best free compartment of `bank` for `parcel` until `until`: the smallest
    /// that fits, preferring ones without special features so accessible and refrigerated
    /// compartments stay free for parcels that need them. `None` when none is free.
    ///
    /// The `state = 'free'` condition on the update settles races: of two deposits that pick
    /// the same compartment, one updates it and the other retries with the next.
    pub async fn reserve_compartment(
        &mut self,
        bank: &BankId,
        needs: CompartmentNeeds,
        parcel: &ParcelId,
        until: Timestamp,
        now: Timestamp,
    ) -> R<Option<CompartmentRow>> {
        /// The best candidate; `$4`–`$7` are bank, size rank, accessible, refrigerated.
        const CANDIDATE: &str = "SELECT id FROM compartments WHERE bank_id = $4 AND state = 'free' \
             AND size_rank >= $5 AND accessible >= $6 AND refrigerated >= $7 \
             ORDER BY size_rank, accessible, refrigerated, number LIMIT 1";
        /// Whether any candidate exists; `$1`–`$4` as above.
        const ANY_CANDIDATE: &str = "SELECT COUNT(*) AS n FROM compartments WHERE bank_id = $1 \
             AND state = 'free' AND size_rank >= $2 AND accessible >= $3 AND refrigerated >= $4";
        for _ in 0..16 {
            let row = self
                .fetch_write(
                    sqlx::query(sql!(
                        "UPDATE compartments SET state = 'reserved', parcel_id = $1, reserved_until = $2, \
                         updated_at = $3 WHERE id = (",
                        CANDIDATE,
                        ") AND state = 'free' RETURNING ",
                        COMPARTMENT_COLS
                    ))
                    .bind(parcel.as_str().to_owned())
                    .bind(until.as_millis())
                    .bind(now.as_millis())
                    .bind(bank.as_str().to_owned())
                    .bind(size_rank(needs.size))
                    .bind(b(needs.accessible))
                    .bind(b(needs.refrigerated)),
                )
                .await?;
            if let Some(row) = row {
                return compartment_row(&row).map(Some);
            }
            // Lost a race, or nothing fits: only retry while a candidate exists.
            let exists = self
                .one(
                    sqlx::query(ANY_CANDIDATE)
                        .bind(bank.as_str().to_owned())
                        .bind(size_rank(needs.size))
                        .bind(b(needs.accessible))
                        .bind(b(needs.refrigerated)),
                )
                .await?;
            if exists.map(|r| int(&r, "n")).transpose()?.unwrap_or(0) == 0 {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Reserves this compartment for `parcel` until `until`, only if it is free. Returns whether
    /// it was.
    pub async fn reserve_this_compartment(
        &mut self,
        id: &CompartmentId,
        parcel: &ParcelId,
        until: Timestamp,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE compartments SET state = 'reserved', parcel_id = $1, reserved_until = $2, \
                     updated_at = $3 WHERE id = $4 AND state = 'free'",
                )
                .bind(parcel.as_str().to_owned())
                .bind(until.as_millis())
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Moves a compartment from `from` to `to` (and sets its parcel) only if it is still in
    /// `from`. Returns whether it moved.
    pub async fn move_compartment(
        &mut self,
        id: &CompartmentId,
        from: CompartmentState,
        to: CompartmentState,
        parcel: Option<&ParcelId>,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE compartments SET state = $1, parcel_id = $2, reserved_until = NULL, updated_at = $3 \
                     WHERE id = $4 AND state = $5",
                )
                .bind(to.as_str())
                .bind(parcel.map(|p| p.as_str().to_owned()))
                .bind(now.as_millis())
                .bind(id.as_str().to_owned())
                .bind(from.as_str()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Records what the door sensor reported.
    pub async fn set_door(
        &mut self,
        id: &CompartmentId,
        door: DoorState,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("UPDATE compartments SET door = $1, updated_at = $2 WHERE id = $3")
                    .bind(door.as_str())
                    .bind(now.as_millis())
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Reservations whose time is up.
    pub async fn stale_reservations(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> R<Vec<CompartmentRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ", COMPARTMENT_COLS,
                    " FROM compartments WHERE state = 'reserved' AND reserved_until <= $1 ORDER BY reserved_until LIMIT $2"
                ))
                .bind(now.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(compartment_row).collect()
    }

    // --- alerts ------------------------------------------------------------------------------

    /// Raises `alert`, or, if one is live for the same thing, counts one more reading on it.
    /// Returns the alert's id and whether it is new. Settled by the live key's uniqueness, so
    /// two readings at once make one alert on both backends.
    pub async fn raise_alert(&mut self, alert: &NewAlert, now: Timestamp) -> R<(AlertId, bool)> {
        let key = alert.live_key();
        let inserted = self
            .exec(
                sqlx::query(
                    "INSERT INTO alerts (id, org_id, site_id, bank_id, compartment, kind, severity, \
                     state, readings, raised_at, updated_at, live_key) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', 1, $8, $8, $9) \
                     ON CONFLICT (live_key) DO NOTHING",
                )
                .bind(alert.id.as_str().to_owned())
                .bind(alert.org.as_str().to_owned())
                .bind(alert.site.as_str().to_owned())
                .bind(alert.bank.as_ref().map(|b| b.as_str().to_owned()))
                .bind(alert.compartment.map(i64::from))
                .bind(alert.kind.as_str())
                .bind(alert.severity.as_str())
                .bind(now.as_millis())
                .bind(key.clone()),
            )
            .await?;
        if inserted == 1 {
            return Ok((alert.id.clone(), true));
        }
        let row = self
            .fetch_write(
                sqlx::query(
                    "UPDATE alerts SET readings = readings + 1, updated_at = $1 WHERE live_key = $2 \
                     RETURNING id",
                )
                .bind(now.as_millis())
                .bind(key),
            )
            .await?
            .ok_or(StoreError::Corrupt("alerts.live_key"))?;
        Ok((parse(&row, "id", |s| AlertId::parse(s).ok())?, false))
    }

    /// The live alert holding `key` ([`crate::rows::live_key`]), if there is one.
    pub async fn live_alert(&mut self, key: &str) -> R<Option<AlertId>> {
        let row = self
            .one(sqlx::query("SELECT id FROM alerts WHERE live_key = $1").bind(key.to_owned()))
            .await?;
        row.map(|r| parse(&r, "id", |s| AlertId::parse(s).ok())).transpose()
    }

    /// Banks with an enrolled, unrevoked device, with their sites: whose agents should be
    /// connected.
    pub async fn enrolled_banks(&mut self) -> R<Vec<(BankId, SiteId)>> {
        let rows = self
            .all(sqlx::query(
                "SELECT DISTINCT d.bank_id, b.site_id FROM devices d JOIN banks b ON b.id = d.bank_id \
                 WHERE d.revoked_at IS NULL ORDER BY d.bank_id",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse(r, "bank_id", |s| BankId::parse(s).ok())?,
                    parse(r, "site_id", |s| SiteId::parse(s).ok())?,
                ))
            })
            .collect()
    }

    /// Moves an alert from `from` to `to` only if it is still in `from`, with its owner if
    /// `owner` names one; a resolved alert gives up its live key. Returns whether it moved.
    pub async fn move_alert(
        &mut self,
        id: &AlertId,
        from: AlertState,
        to: AlertState,
        owner: Option<&PersonId>,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE alerts SET state = $1, owner_id = COALESCE($2, owner_id), updated_at = $3, \
                     live_key = CASE WHEN $1 = 'resolved' THEN NULL ELSE live_key END \
                     WHERE id = $4 AND state = $5",
                )
                .bind(to.as_str())
                .bind(owner.map(|p| p.as_str().to_owned()))
                .bind(now.as_millis())
                .bind(id.as_str().to_owned())
                .bind(from.as_str()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Adds an entry to an alert's timeline, after its last.
    pub async fn add_alert_event(
        &mut self,
        alert: &AlertId,
        at: Timestamp,
        actor: &str,
        what: &str,
        note: Option<&str>,
    ) -> R<()> {
        // The next number is read from the events so far; on PostgreSQL two units adding to
        // one alert at once (an admin acknowledging while the fan-out records a delivery)
        // would read the same one. Updating the alert's row first holds it until the unit
        // ends, so they take turns (SQLite has one writer). Every unit that changes an alert
        // takes its row before its events, so the order is the same everywhere.
        self.exec(
            sqlx::query("UPDATE alerts SET updated_at = updated_at WHERE id = $1")
                .bind(alert.as_str().to_owned()),
        )
        .await?;
        self.exec(
            sqlx::query(
                "INSERT INTO alert_events (alert_id, seq, at, actor, what, note) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 FROM alert_events \
                 WHERE alert_id = $1",
            )
            .bind(alert.as_str().to_owned())
            .bind(at.as_millis())
            .bind(actor.to_owned())
            .bind(what.to_owned())
            .bind(note.map(str::to_owned)),
        )
        .await
        .map(|_| ())
    }

    /// The alert `id`.
    pub async fn alert(&mut self, id: &AlertId) -> R<Option<AlertRow>> {
        const Q: &str = sql!("SELECT ", ALERT_COLS, " FROM alerts WHERE id = $1");
        let row = self.one(sqlx::query(Q).bind(id.as_str().to_owned())).await?;
        row.as_ref().map(alert_row).transpose()
    }

    /// Open alerts of medium severity or above raised at or before `before` and not escalated
    /// yet, oldest first, at most `limit`.
    pub async fn alerts_to_escalate(&mut self, before: Timestamp, limit: u32) -> R<Vec<AlertRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    ALERT_COLS,
                    " FROM alerts WHERE state = 'open' AND escalated_at IS NULL AND severity <> 'low' \
                     AND raised_at <= $1 ORDER BY raised_at, id LIMIT $2"
                ))
                .bind(before.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(alert_row).collect()
    }

    /// Marks an alert escalated, if it is still open and was not; whether it was marked.
    pub async fn mark_escalated(&mut self, id: &AlertId, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE alerts SET escalated_at = $1, updated_at = $1 WHERE id = $2 \
                     AND state = 'open' AND escalated_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// A site's alerts, newest first, at most `limit`; with `live_only`, open and acknowledged
    /// ones only.
    pub async fn alerts_of_site(
        &mut self,
        site: &SiteId,
        live_only: bool,
        limit: u32,
    ) -> R<Vec<AlertRow>> {
        const Q: &str = sql!(
            "SELECT ",
            ALERT_COLS,
            " FROM alerts WHERE site_id = $1 AND ($2 = 0 OR state <> 'resolved') \
             ORDER BY raised_at DESC, id LIMIT $3"
        );
        let rows = self
            .all(
                sqlx::query(Q)
                    .bind(site.as_str().to_owned())
                    .bind(i64::from(live_only))
                    .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(alert_row).collect()
    }

    /// An alert's timeline, in order.
    pub async fn alert_events(&mut self, alert: &AlertId) -> R<Vec<AlertEventRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT seq, at, actor, what, note FROM alert_events WHERE alert_id = $1 \
                     ORDER BY seq",
                )
                .bind(alert.as_str().to_owned()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertEventRow {
                    seq: u64::try_from(int(r, "seq")?).map_err(|_| StoreError::Corrupt("seq"))?,
                    at: time(r, "at")?,
                    actor: text(r, "actor")?,
                    what: text(r, "what")?,
                    note: opt_text(r, "note")?,
                })
            })
            .collect()
    }

    // --- carriers and people ---------------------------------------------------------------

    /// Adds a carrier. `Conflict` if the organisation has one of that name.
    pub async fn insert_carrier(&mut self, c: &CarrierRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO carriers (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(c.id.as_str().to_owned())
            .bind(c.org.as_str().to_owned())
            .bind(c.name.as_str().to_owned())
            .bind(c.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A carrier.
    pub async fn carrier(&mut self, id: &CarrierId) -> R<Option<CarrierRow>> {
        let row = self
            .one(
                sqlx::query("SELECT id, org_id, name, created_at FROM carriers WHERE id = $1")
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(carrier_row).transpose()
    }

    /// The carriers of an organisation, by name.
    pub async fn carriers(&mut self, org: &OrgId) -> R<Vec<CarrierRow>> {
        let rows = self
            .all(
                sqlx::query("SELECT id, org_id, name, created_at FROM carriers WHERE org_id = $1 ORDER BY name, id")
                    .bind(org.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(carrier_row).collect()
    }

    /// Adds a person. `Conflict` if the e-mail address is taken.
    pub async fn insert_person(&mut self, p: &PersonRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO people (id, org_id, email, name, role, site_id, carrier_id, password_hash, \
                 disabled_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(p.id.as_str().to_owned())
            .bind(p.org.as_str().to_owned())
            .bind(p.email.as_str().to_owned())
            .bind(p.name.as_str().to_owned())
            .bind(p.role.as_str())
            .bind(p.site.as_ref().map(|s| s.as_str().to_owned()))
            .bind(p.carrier.as_ref().map(|c| c.as_str().to_owned()))
            .bind(p.password_hash.clone())
            .bind(p.disabled_at.map(Timestamp::as_millis))
            .bind(p.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A person.
    pub async fn person(&mut self, id: &PersonId) -> R<Option<PersonRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", PERSON_COLS, " FROM people WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(person_row).transpose()
    }

    /// A person by e-mail address.
    pub async fn person_by_email(&mut self, email: &Email) -> R<Option<PersonRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", PERSON_COLS, " FROM people WHERE email = $1"))
                    .bind(email.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(person_row).transpose()
    }

    /// The people of an organisation, by name.
    pub async fn people(&mut self, org: &OrgId) -> R<Vec<PersonRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    PERSON_COLS,
                    " FROM people WHERE org_id = $1 ORDER BY name, id"
                ))
                .bind(org.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(person_row).collect()
    }

    /// Takes the organisation's row lock until the unit ends, so that checks over its people
    /// (how many super-admins are left) and the change they guard are one step on PostgreSQL
    /// too; SQLite's single writer gives the same.
    async fn lock_org(&mut self, org: &OrgId) -> R<()> {
        self.exec(
            sqlx::query("UPDATE organisations SET name = name WHERE id = $1")
                .bind(org.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// Changes `person`'s role from `from` to `to`, if it still is `from`, they are not
    /// disabled, and they are not the last active super-admin of their organisation. Returns
    /// whether it changed.
    pub async fn set_role(&mut self, person: &PersonRow, from: Role, to: Role) -> R<bool> {
        self.lock_org(&person.org).await?;
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE people SET role = $3 WHERE id = $1 AND role = $2 \
                     AND disabled_at IS NULL AND ($2 <> 'super_admin' OR $3 = 'super_admin' \
                     OR EXISTS (SELECT 1 FROM people o WHERE o.org_id = $4 AND o.id <> $1 \
                     AND o.role = 'super_admin' AND o.disabled_at IS NULL))",
                )
                .bind(person.id.as_str().to_owned())
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(person.org.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Disables `person` and ends every session of theirs, unless they are the last active
    /// super-admin of their organisation or disabled already. Returns whether it happened.
    pub async fn disable_person(&mut self, person: &PersonRow, now: Timestamp) -> R<bool> {
        self.lock_org(&person.org).await?;
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE people SET disabled_at = $2 WHERE id = $1 AND disabled_at IS NULL \
                     AND (role <> 'super_admin' \
                     OR EXISTS (SELECT 1 FROM people o WHERE o.org_id = $3 AND o.id <> $1 \
                     AND o.role = 'super_admin' AND o.disabled_at IS NULL))",
                )
                .bind(person.id.as_str().to_owned())
                .bind(now.as_millis())
                .bind(person.org.as_str().to_owned()),
            )
            .await?;
        if n != 1 {
            return Ok(false);
        }
        self.delete_sessions_of(&person.id, None).await?;
        Ok(true)
    }

    /// Counts people with a role across all organisations (for first-run checks).
    pub async fn count_people_with_role(&mut self, role: Role) -> R<i64> {
        let row = self
            .one(
                sqlx::query("SELECT COUNT(*) AS n FROM people WHERE role = $1").bind(role.as_str()),
            )
            .await?;
        row.map(|r| int(&r, "n")).transpose().map(|n| n.unwrap_or(0))
    }

    // --- API keys and sessions -------------------------------------------------------------

    /// Stores a carrier API key and its sites.
    pub async fn insert_api_key(&mut self, k: &ApiKeyRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO api_keys (id, carrier_id, label, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(k.id.as_str().to_owned())
            .bind(k.carrier.as_str().to_owned())
            .bind(k.label.as_str().to_owned())
            .bind(k.secret_hash.clone())
            .bind(k.created_at.as_millis()),
        )
        .await?;
        for site in &k.sites {
            self.exec(
                sqlx::query("INSERT INTO api_key_sites (key_id, site_id) VALUES ($1, $2)")
                    .bind(k.id.as_str().to_owned())
                    .bind(site.as_str().to_owned()),
            )
            .await?;
        }
        Ok(())
    }

    /// An API key with its sites and organisation.
    pub async fn api_key(&mut self, id: &ApiKeyId) -> R<Option<ApiKeyRow>> {
        let Some(r) = self
            .one(
                sqlx::query(
                    "SELECT k.id, k.carrier_id, c.org_id, k.label, k.secret_hash, k.created_at, k.last_used_at, \
                     k.revoked_at FROM api_keys k JOIN carriers c ON c.id = k.carrier_id WHERE k.id = $1",
                )
                .bind(id.as_str().to_owned()),
            )
            .await?
        else {
            return Ok(None);
        };
        let sites = self
            .all(
                sqlx::query("SELECT site_id FROM api_key_sites WHERE key_id = $1 ORDER BY site_id")
                    .bind(id.as_str().to_owned()),
            )
            .await?
            .iter()
            .map(|s| parse(s, "site_id", |v| SiteId::parse(v).ok()))
            .collect::<R<Vec<_>>>()?;
        Ok(Some(ApiKeyRow {
            id: parse(&r, "id", |s| ApiKeyId::parse(s).ok())?,
            carrier: parse(&r, "carrier_id", |s| CarrierId::parse(s).ok())?,
            org: parse(&r, "org_id", |s| OrgId::parse(s).ok())?,
            label: parse(&r, "label", |s| Name::parse(s).ok())?,
            secret_hash: blob(&r, "secret_hash")?,
            sites,
            created_at: time(&r, "created_at")?,
            last_used_at: opt_time(&r, "last_used_at")?,
            revoked_at: opt_time(&r, "revoked_at")?,
        }))
    }

    /// Notes an authenticated use of a key.
    pub async fn touch_api_key(&mut self, id: &ApiKeyId, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// Makes a key stop working at `at` (now, to revoke it; later, to let its successor take
    /// over after a rotation). Returns whether it still worked until later than that, so a key
    /// is never given a longer life.
    pub async fn retire_api_key(&mut self, id: &ApiKeyId, at: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 \
                     AND (revoked_at IS NULL OR revoked_at > $1)",
                )
                .bind(at.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// A carrier's keys, newest first.
    pub async fn api_keys_of(&mut self, carrier: &CarrierId) -> R<Vec<ApiKeyRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT id FROM api_keys WHERE carrier_id = $1 ORDER BY created_at DESC, id",
                )
                .bind(carrier.as_str().to_owned()),
            )
            .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for r in &rows {
            let id = parse(r, "id", |s| ApiKeyId::parse(s).ok())?;
            keys.extend(self.api_key(&id).await?);
        }
        Ok(keys)
    }

    /// Stores a new session.
    pub async fn insert_session(&mut self, s: &SessionRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO sessions (token_hash, id, person_id, created_at, last_seen_at, \
                 expires_at, factor_at, factor, source, user_agent) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(s.token_hash.clone())
            .bind(s.id.as_str().to_owned())
            .bind(s.person.as_str().to_owned())
            .bind(s.created_at.as_millis())
            .bind(s.last_seen_at.as_millis())
            .bind(s.expires_at.as_millis())
            .bind(s.factor.map(|(_, at)| at.as_millis()))
            .bind(s.factor.map(|(f, _)| f.as_str()))
            .bind(s.source.clone())
            .bind(s.user_agent.clone()),
        )
        .await
        .map(|_| ())
    }

    /// A session by the keyed hash of its token.
    pub async fn session(&mut self, token_hash: &[u8]) -> R<Option<SessionRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", SESSION_COLS, " FROM sessions WHERE token_hash = $1"))
                    .bind(token_hash.to_vec()),
            )
            .await?;
        row.as_ref().map(session_row).transpose()
    }

    /// A person's sessions, newest first.
    pub async fn sessions_of(&mut self, person: &PersonId) -> R<Vec<SessionRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    SESSION_COLS,
                    " FROM sessions WHERE person_id = $1 ORDER BY created_at DESC, id"
                ))
                .bind(person.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(session_row).collect()
    }

    /// Notes activity on a session.
    pub async fn touch_session(&mut self, token_hash: &[u8], now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2")
                .bind(now.as_millis())
                .bind(token_hash.to_vec()),
        )
        .await
        .map(|_| ())
    }

    /// Ends a session.
    pub async fn delete_session(&mut self, token_hash: &[u8]) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash.to_vec()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends the session `id` of `person` (and no one else's); whether there was one.
    pub async fn delete_session_of(&mut self, person: &PersonId, id: &SessionId) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM sessions WHERE person_id = $1 AND id = $2")
                    .bind(person.as_str().to_owned())
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Ends every session of `person` but the one whose token hashes to `keep`; how many ended.
    pub async fn delete_sessions_of(&mut self, person: &PersonId, keep: Option<&[u8]>) -> R<u64> {
        self.exec(
            sqlx::query(
                "DELETE FROM sessions WHERE person_id = $1 AND ($2 IS NULL OR token_hash <> $2)",
            )
            .bind(person.as_str().to_owned())
            .bind(keep.map(<[u8]>::to_vec)),
        )
        .await
    }

    // --- passkeys ---------------------------------------------------------------------------

    /// A person's passkeys: credential id and passkey (JSON), oldest first.
    pub async fn passkeys_of(&mut self, person: &PersonId) -> R<Vec<(String, String)>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT credential_id, passkey FROM passkeys WHERE person_id = $1 \
                     ORDER BY created_at, credential_id",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(|r| Ok((text(r, "credential_id")?, text(r, "passkey")?))).collect()
    }

    /// Stores a new passkey of `person`. `Conflict` when the credential is registered already.
    pub async fn insert_passkey(
        &mut self,
        person: &PersonId,
        credential_id: &str,
        passkey: &str,
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO passkeys (credential_id, person_id, passkey, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(credential_id.to_owned())
            .bind(person.as_str().to_owned())
            .bind(passkey.to_owned())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Records a use of `person`'s passkey, with its updated counter.
    pub async fn use_passkey(
        &mut self,
        person: &PersonId,
        credential_id: &str,
        passkey: &str,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE passkeys SET passkey = $3, last_used_at = $4 \
                     WHERE person_id = $1 AND credential_id = $2",
                )
                .bind(person.as_str().to_owned())
                .bind(credential_id.to_owned())
                .bind(passkey.to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    /// The passkey with this credential id, and whose it is (people who are disabled
    /// included: the caller decides).
    pub async fn passkey(&mut self, credential_id: &str) -> R<Option<(PersonId, String)>> {
        let row = self
            .one(
                sqlx::query("SELECT person_id, passkey FROM passkeys WHERE credential_id = $1")
                    .bind(credential_id.to_owned()),
            )
            .await?;
        row.map(|r| {
            Ok((parse(&r, "person_id", |s| PersonId::parse(s).ok())?, text(&r, "passkey")?))
        })
        .transpose()
    }

    /// Keeps the state of a WebAuthn ceremony begun by `person` (none when it is a sign-in,
    /// begun before anyone is known), and forgets ceremonies that lapsed unanswered.
    pub async fn insert_ceremony(
        &mut self,
        id: &str,
        person: Option<&PersonId>,
        kind: &str,
        state: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at <= $1")
                .bind(now.as_millis()),
        )
        .await?;
        self.exec(
            sqlx::query(
                "INSERT INTO webauthn_ceremonies (id, person_id, kind, state, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.to_owned())
            .bind(person.map(|p| p.as_str().to_owned()))
            .bind(kind.to_owned())
            .bind(state.to_owned())
            .bind(expires_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Takes (deletes) ceremony `id` of `person` (none for a sign-in) and `kind`: its state,
    /// if it was there and had not lapsed at `now`. A ceremony is answered once.
    pub async fn take_ceremony(
        &mut self,
        id: &str,
        person: Option<&PersonId>,
        kind: &str,
        now: Timestamp,
    ) -> R<Option<String>> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "DELETE FROM webauthn_ceremonies WHERE id = $1 AND kind = $3 \
                     AND (person_id = $2 OR (person_id IS NULL AND $2 IS NULL)) \
                     RETURNING state, expires_at",
                )
                .bind(id.to_owned())
                .bind(person.map(|p| p.as_str().to_owned()))
                .bind(kind.to_owned()),
            )
            .await?;
        row.map(|r| Ok((text(&r, "state")?, time(&r, "expires_at")?))).transpose().map(
            |taken: Option<(String, Timestamp)>| {
                taken.filter(|(_, expires)| *expires > now).map(|(state, _)| state)
            },
        )
    }

    // --- courier codes ------------------------------------------------------------------------

    /// Keeps a courier's code (its keyed hash) until `valid_until`, and forgets lapsed ones.
    /// Keeping the same code again changes nothing.
    pub async fn keep_courier_code(
        &mut self,
        code_hash: &[u8],
        person: &PersonId,
        now: Timestamp,
        valid_until: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query("DELETE FROM courier_codes WHERE valid_until <= $1").bind(now.as_millis()),
        )
        .await?;
        self.exec(
            sqlx::query(
                "INSERT INTO courier_codes (code_hash, person_id, valid_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (code_hash) DO NOTHING",
            )
            .bind(code_hash.to_vec())
            .bind(person.as_str().to_owned())
            .bind(valid_until.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Whose courier code hashes to `code_hash`, if it is valid at `now`.
    pub async fn courier_by_code(
        &mut self,
        code_hash: &[u8],
        now: Timestamp,
    ) -> R<Option<PersonId>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT person_id FROM courier_codes WHERE code_hash = $1 AND valid_until > $2",
                )
                .bind(code_hash.to_vec())
                .bind(now.as_millis()),
            )
            .await?;
        row.map(|r| parse(&r, "person_id", |s| PersonId::parse(s).ok())).transpose()
    }

    // --- badges -------------------------------------------------------------------------------

    /// Registers a badge. `Conflict` when the site has a badge with that number already (not
    /// revoked).
    pub async fn insert_badge(&mut self, b: &NewBadge) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO badges (id, site_id, person_id, verifier, hint, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(b.id.as_str().to_owned())
            .bind(b.site.as_str().to_owned())
            .bind(b.person.as_str().to_owned())
            .bind(b.verifier.clone())
            .bind(b.hint.clone())
            .bind(b.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// The badge `id`.
    pub async fn badge(&mut self, id: &BadgeId) -> R<Option<BadgeRow>> {
        const Q: &str = sql!("SELECT ", BADGE_COLS, " FROM badges WHERE id = $1");
        let row = self.one(sqlx::query(Q).bind(id.as_str().to_owned())).await?;
        row.as_ref().map(badge_row).transpose()
    }

    /// The site's badge (not revoked) whose number has keyed hash `verifier`; one index probe.
    pub async fn badge_by_verifier(
        &mut self,
        site: &SiteId,
        verifier: &[u8],
    ) -> R<Option<BadgeRow>> {
        const Q: &str = sql!(
            "SELECT ",
            BADGE_COLS,
            " FROM badges WHERE site_id = $1 AND verifier = $2 AND revoked_at IS NULL"
        );
        let row =
            self.one(sqlx::query(Q).bind(site.as_str().to_owned()).bind(verifier.to_vec())).await?;
        row.as_ref().map(badge_row).transpose()
    }

    /// The site's badges, revoked ones too, oldest first, at most `limit`.
    pub async fn badges_of_site(&mut self, site: &SiteId, limit: u32) -> R<Vec<BadgeRow>> {
        const Q: &str = sql!(
            "SELECT ",
            BADGE_COLS,
            " FROM badges WHERE site_id = $1 ORDER BY created_at, id LIMIT $2"
        );
        let rows =
            self.all(sqlx::query(Q).bind(site.as_str().to_owned()).bind(i64::from(limit))).await?;
        rows.iter().map(badge_row).collect()
    }

    /// How many badges of the site are not revoked.
    pub async fn count_active_badges(&mut self, site: &SiteId) -> R<u64> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM badges WHERE site_id = $1 AND revoked_at IS NULL",
                )
                .bind(site.as_str().to_owned()),
            )
            .await?;
        let n = row.map(|r| int(&r, "n")).transpose()?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The keyed hashes of the site's badges that are not revoked: what its agents are sent.
    pub async fn active_badge_verifiers(&mut self, site: &SiteId) -> R<Vec<Vec<u8>>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT verifier FROM badges WHERE site_id = $1 AND revoked_at IS NULL ORDER BY verifier",
                )
                .bind(site.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(|r| blob(r, "verifier")).collect()
    }

    /// Revokes badge `id`; false when it was revoked already.
    pub async fn revoke_badge(&mut self, id: &BadgeId, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE badges SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    // --- lockdowns ----------------------------------------------------------------------------

    /// When bank `bank` was locked down and by whom (an actor id), if it is.
    pub async fn lockdown(&mut self, bank: &BankId) -> R<Option<(Timestamp, String)>> {
        let row = self
            .one(
                sqlx::query("SELECT engaged_at, engaged_by FROM lockdowns WHERE bank_id = $1")
                    .bind(bank.as_str().to_owned()),
            )
            .await?;
        row.map(|r| Ok((time(&r, "engaged_at")?, text(&r, "engaged_by")?))).transpose()
    }

    /// Locks bank `bank` down; false when it was already.
    pub async fn engage_lockdown(&mut self, bank: &BankId, by: &str, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "INSERT INTO lockdowns (bank_id, engaged_at, engaged_by) VALUES ($1, $2, $3) \
                     ON CONFLICT (bank_id) DO NOTHING",
                )
                .bind(bank.as_str().to_owned())
                .bind(now.as_millis())
                .bind(by.to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Sets the site's lockdown rule for its kind (or for any kind), replacing the one it had.
    pub async fn put_lockdown_rule(
        &mut self,
        site: &SiteId,
        rule: &LockdownRule,
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO lockdown_rules (site_id, kind, min_severity, scope, set_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (site_id, kind) DO UPDATE SET \
                 min_severity = excluded.min_severity, scope = excluded.scope, set_at = excluded.set_at",
            )
            .bind(site.as_str().to_owned())
            .bind(rule.kind_str())
            .bind(rule.min_severity.as_str())
            .bind(rule.scope.as_str())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Removes the site's lockdown rule for `kind` (`None`: the one for any kind); false when
    /// it had none.
    pub async fn delete_lockdown_rule(
        &mut self,
        site: &SiteId,
        kind: Option<AlertKind>,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM lockdown_rules WHERE site_id = $1 AND kind = $2")
                    .bind(site.as_str().to_owned())
                    .bind(kind.map_or(custody_core::alert::ANY_KIND, AlertKind::as_str)),
            )
            .await?;
        Ok(n == 1)
    }

    /// The site's lockdown rules.
    pub async fn lockdown_rules(&mut self, site: &SiteId) -> R<Vec<LockdownRule>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT kind, min_severity, scope FROM lockdown_rules WHERE site_id = $1 \
                     ORDER BY kind",
                )
                .bind(site.as_str().to_owned()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let kind = text(r, "kind")?;
                Ok(LockdownRule {
                    kind: LockdownRule::parse_kind(&kind)
                        .map_err(|_| StoreError::Corrupt("kind"))?,
                    min_severity: parse(r, "min_severity", Severity::parse)?,
                    scope: parse(r, "scope", LockdownScope::parse)?,
                })
            })
            .collect()
    }

    /// The bank's sensor settings: the defaults until an admin sets them.
    pub async fn sensor_settings(&mut self, bank: &BankId) -> R<SensorSettings> {
        let door = self
            .one(
                sqlx::query(
                    "SELECT door_left_open_after_ms FROM sensor_settings WHERE bank_id = $1",
                )
                .bind(bank.as_str().to_owned()),
            )
            .await?;
        let Some(door) = door else { return Ok(SensorSettings::default()) };
        let door = Duration::from_millis(
            u64::try_from(int(&door, "door_left_open_after_ms")?)
                .map_err(|_| StoreError::Corrupt("door_left_open_after_ms"))?,
        );
        let rows = self
            .all(
                sqlx::query(
                    "SELECT kind, threshold, window_ms, quiet_ms FROM sensor_rules \
                     WHERE bank_id = $1 ORDER BY kind",
                )
                .bind(bank.as_str().to_owned()),
            )
            .await?;
        let millis = |r: &AnyRow, col| -> R<Duration> {
            Ok(Duration::from_millis(
                u64::try_from(int(r, col)?).map_err(|_| StoreError::Corrupt(col))?,
            ))
        };
        let rules = rows
            .iter()
            .map(|r| {
                let rule = Debounce {
                    threshold: u32::try_from(int(r, "threshold")?)
                        .map_err(|_| StoreError::Corrupt("threshold"))?,
                    window: millis(r, "window_ms")?,
                    quiet: millis(r, "quiet_ms")?,
                };
                Ok((text(r, "kind")?, rule))
            })
            .collect::<R<Vec<_>>>()?;
        SensorSettings::new(rules, door).map_err(|_| StoreError::Corrupt("sensor_rules"))
    }

    /// Replaces the bank's sensor settings.
    pub async fn put_sensor_settings(
        &mut self,
        bank: &BankId,
        settings: &SensorSettings,
        now: Timestamp,
    ) -> R<()> {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.exec(
            sqlx::query(
                "INSERT INTO sensor_settings (bank_id, door_left_open_after_ms, set_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (bank_id) DO UPDATE SET \
                 door_left_open_after_ms = excluded.door_left_open_after_ms, set_at = excluded.set_at",
            )
            .bind(bank.as_str().to_owned())
            .bind(millis(settings.door_left_open_after))
            .bind(now.as_millis()),
        )
        .await?;
        self.exec(
            sqlx::query("DELETE FROM sensor_rules WHERE bank_id = $1")
                .bind(bank.as_str().to_owned()),
        )
        .await?;
        for (kind, rule) in &settings.debounce {
            self.exec(
                sqlx::query(
                    "INSERT INTO sensor_rules (bank_id, kind, threshold, window_ms, quiet_ms) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(bank.as_str().to_owned())
                .bind(kind.as_str())
                .bind(i64::from(rule.threshold))
                .bind(millis(rule.window))
                .bind(millis(rule.quiet)),
            )
            .await?;
        }
        Ok(())
    }

    /// Takes note of a device's sensor reading under its journal counter; false when it was
    /// taken already (the agent sent it again before it heard the acknowledgement).
    pub async fn note_sensor_reading(
        &mut self,
        device: &DeviceId,
        counter: i64,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "INSERT INTO sensor_readings (device_id, counter, received_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (device_id, counter) DO NOTHING",
                )
                .bind(device.as_str().to_owned())
                .bind(counter)
                .bind(now.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Lifts the lockdown of bank `bank` engaged at `engaged_at`; false when there was none,
    /// or it is another one than the caller read.
    pub async fn lift_lockdown(&mut self, bank: &BankId, engaged_at: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM lockdowns WHERE bank_id = $1 AND engaged_at = $2")
                    .bind(bank.as_str().to_owned())
                    .bind(engaged_at.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    // --- sign-in links -----------------------------------------------------------------------

    /// Stores a sign-in link for `person`.
    pub async fn insert_magic_link(
        &mut self,
        token_hash: &[u8],
        person: &PersonId,
        browser_hash: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO magic_links (token_hash, person_id, browser_hash, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash.to_vec())
            .bind(person.as_str().to_owned())
            .bind(browser_hash.to_vec())
            .bind(now.as_millis())
            .bind(expires_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Uses the sign-in link with this token, from the browser with this binding, at `now`:
    /// the person it signs in, if it was unused, unexpired and asked for by that browser.
    /// One conditional update, so a link works once however many requests race.
    pub async fn use_magic_link(
        &mut self,
        token_hash: &[u8],
        browser_hash: &[u8],
        now: Timestamp,
    ) -> R<Option<PersonId>> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "UPDATE magic_links SET used_at = $3 WHERE token_hash = $1 \
                     AND browser_hash = $2 AND used_at IS NULL AND expires_at > $3 \
                     RETURNING person_id",
                )
                .bind(token_hash.to_vec())
                .bind(browser_hash.to_vec())
                .bind(now.as_millis()),
            )
            .await?;
        row.map(|r| parse(&r, "person_id", |s| PersonId::parse(s).ok())).transpose()
    }

    // --- approvals --------------------------------------------------------------------------

    /// Stores a new request for approval.
    pub async fn insert_approval(&mut self, a: &ApprovalRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO approvals (id, org_id, kind, subject_id, params, digest, \
                 requested_by, requested_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(a.id.as_str().to_owned())
            .bind(a.org.as_str().to_owned())
            .bind(a.kind.as_str())
            .bind(a.subject.clone())
            .bind(a.params.clone())
            .bind(a.digest.clone())
            .bind(a.requested_by.as_str().to_owned())
            .bind(a.requested_at.as_millis())
            .bind(a.expires_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A request for approval.
    pub async fn approval(&mut self, id: &ApprovalId) -> R<Option<ApprovalRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", APPROVAL_COLS, " FROM approvals WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(approval_row).transpose()
    }

    /// An organisation's requests still waiting at `now`, oldest first.
    pub async fn pending_approvals(&mut self, org: &OrgId, now: Timestamp) -> R<Vec<ApprovalRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    APPROVAL_COLS,
                    " FROM approvals WHERE org_id = $1 AND decided_at IS NULL AND expires_at > $2 \
                     ORDER BY requested_at, id"
                ))
                .bind(org.as_str().to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        rows.iter().map(approval_row).collect()
    }

    /// Answers request `id` as `by`, if it still waits at `now` and `by` did not ask for it:
    /// `false` otherwise, so of two answers exactly one counts.
    pub async fn decide_approval(
        &mut self,
        id: &ApprovalId,
        by: &PersonId,
        now: Timestamp,
        outcome: ApprovalOutcome,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE approvals SET decided_by = $2, decided_at = $3, outcome = $4 \
                     WHERE id = $1 AND decided_at IS NULL AND expires_at > $3 \
                     AND (requested_by <> $2 OR $4 = 'rejected')",
                )
                .bind(id.as_str().to_owned())
                .bind(by.as_str().to_owned())
                .bind(now.as_millis())
                .bind(outcome.as_str()),
            )
            .await?;
        Ok(n == 1)
    }

    // --- second factors --------------------------------------------------------------------

    /// Starts (or restarts) setting up an authenticator app for `person`; a working one stays
    /// in place until the new one is confirmed.
    pub async fn put_totp_enrolment(
        &mut self,
        person: &PersonId,
        sealed_seed: &[u8],
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO totp_enrolments (person_id, sealed_seed, created_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (person_id) DO UPDATE \
                 SET sealed_seed = excluded.sealed_seed, created_at = excluded.created_at",
            )
            .bind(person.as_str().to_owned())
            .bind(sealed_seed.to_vec())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// The authenticator app `person` is setting up: its sealed seed and when it was begun.
    pub async fn totp_enrolment(&mut self, person: &PersonId) -> R<Option<(Vec<u8>, Timestamp)>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT sealed_seed, created_at FROM totp_enrolments WHERE person_id = $1",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        row.map(|r| Ok((blob(&r, "sealed_seed")?, time(&r, "created_at")?))).transpose()
    }

    /// Makes the app being set up with `sealed_seed` `person`'s authenticator app, with `step`
    /// (the step of the code that confirmed it) spent. `false` when that enrolment is no longer
    /// there (confirmed by a concurrent request, or restarted with another seed).
    pub async fn confirm_totp(
        &mut self,
        person: &PersonId,
        sealed_seed: &[u8],
        step: u64,
        now: Timestamp,
    ) -> R<bool> {
        let step = i64::try_from(step).map_err(|_| StoreError::Corrupt("last_step"))?;
        let taken = self
            .exec(
                sqlx::query(
                    "DELETE FROM totp_enrolments WHERE person_id = $1 AND sealed_seed = $2",
                )
                .bind(person.as_str().to_owned())
                .bind(sealed_seed.to_vec()),
            )
            .await?;
        if taken != 1 {
            return Ok(false);
        }
        self.exec(
            sqlx::query(
                "INSERT INTO totp_factors (person_id, sealed_seed, confirmed_at, last_step) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (person_id) DO UPDATE \
                 SET sealed_seed = excluded.sealed_seed, confirmed_at = excluded.confirmed_at, \
                 last_step = excluded.last_step, failures = 0",
            )
            .bind(person.as_str().to_owned())
            .bind(sealed_seed.to_vec())
            .bind(now.as_millis())
            .bind(step),
        )
        .await?;
        Ok(true)
    }

    /// `person`'s authenticator app.
    pub async fn totp(&mut self, person: &PersonId) -> R<Option<TotpRow>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT person_id, sealed_seed, confirmed_at, last_step, failures \
                     FROM totp_factors WHERE person_id = $1",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        row.map(|r| {
            Ok(TotpRow {
                person: parse(&r, "person_id", |s| PersonId::parse(s).ok())?,
                sealed_seed: blob(&r, "sealed_seed")?,
                confirmed_at: time(&r, "confirmed_at")?,
                last_step: u64::try_from(int(&r, "last_step")?)
                    .map_err(|_| StoreError::Corrupt("last_step"))?,
                failures: u32::try_from(int(&r, "failures")?)
                    .map_err(|_| StoreError::Corrupt("failures"))?,
            })
        })
        .transpose()
    }

    /// Spends time step `step` of `person`'s authenticator app and clears its count of wrong
    /// codes: `false` when that step or a later one was spent already, so of two requests with
    /// the same code exactly one wins.
    pub async fn spend_totp_step(&mut self, person: &PersonId, step: u64) -> R<bool> {
        let step = i64::try_from(step).map_err(|_| StoreError::Corrupt("last_step"))?;
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE totp_factors SET last_step = $2, failures = 0 \
                     WHERE person_id = $1 AND last_step < $2",
                )
                .bind(person.as_str().to_owned())
                .bind(step),
            )
            .await?;
        Ok(n == 1)
    }

    /// Counts a wrong code of `person`'s authenticator app; returns the wrong codes since the
    /// last right one (0 when the person has no app).
    pub async fn record_totp_failure(&mut self, person: &PersonId) -> R<u32> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "UPDATE totp_factors SET failures = failures + 1 WHERE person_id = $1 \
                     RETURNING failures",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        row.map_or(Ok(0), |r| {
            u32::try_from(int(&r, "failures")?).map_err(|_| StoreError::Corrupt("failures"))
        })
    }

    /// Removes `person`'s authenticator app.
    pub async fn delete_totp(&mut self, person: &PersonId) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("DELETE FROM totp_factors WHERE person_id = $1")
                    .bind(person.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Replaces `person`'s recovery codes with these keyed hashes.
    pub async fn replace_recovery_codes(
        &mut self,
        person: &PersonId,
        hashes: &[[u8; 32]],
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query("DELETE FROM recovery_codes WHERE person_id = $1")
                .bind(person.as_str().to_owned()),
        )
        .await?;
        for hash in hashes {
            self.exec(
                sqlx::query(
                    "INSERT INTO recovery_codes (person_id, code_hash, created_at) \
                     VALUES ($1, $2, $3)",
                )
                .bind(person.as_str().to_owned())
                .bind(hash.to_vec())
                .bind(now.as_millis()),
            )
            .await?;
        }
        Ok(())
    }

    /// Spends the recovery code of `person` with this keyed hash: `false` when there is no
    /// such unused code.
    pub async fn spend_recovery_code(
        &mut self,
        person: &PersonId,
        hash: &[u8],
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE recovery_codes SET used_at = $3 \
                     WHERE person_id = $1 AND code_hash = $2 AND used_at IS NULL",
                )
                .bind(person.as_str().to_owned())
                .bind(hash.to_vec())
                .bind(now.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    /// How many unused recovery codes `person` holds.
    pub async fn recovery_codes_left(&mut self, person: &PersonId) -> R<u32> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM recovery_codes \
                     WHERE person_id = $1 AND used_at IS NULL",
                )
                .bind(person.as_str().to_owned()),
            )
            .await?;
        let n = row.map(|r| int(&r, "n")).transpose()?.unwrap_or(0);
        u32::try_from(n).map_err(|_| StoreError::Corrupt("recovery_codes"))
    }

    // --- parcels ---------------------------------------------------------------------------

    /// Adds a parcel.
    pub async fn insert_parcel(&mut self, p: &ParcelRow) -> R<()> {
        self.exec(
            sqlx::query(sql!(
                "INSERT INTO parcels (", PARCEL_COLS, ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
            ))
            .bind(p.id.as_str().to_owned())
            .bind(p.org.as_str().to_owned())
            .bind(p.site.as_str().to_owned())
            .bind(p.bank.as_ref().map(|v| v.as_str().to_owned()))
            .bind(p.compartment.as_ref().map(|v| v.as_str().to_owned()))
            .bind(p.carrier.as_str().to_owned())
            .bind(p.recipient.as_ref().map(|v| v.as_str().to_owned()))
            .bind(p.tracking_ref.as_str().to_owned())
            .bind(p.size.as_str())
            .bind(b(p.needs_accessible))
            .bind(b(p.needs_refrigerated))
            .bind(p.state.as_str())
            .bind(p.created_at.as_millis())
            .bind(p.deposited_at.map(Timestamp::as_millis))
            .bind(p.notified_at.map(Timestamp::as_millis))
            .bind(p.expires_at.map(Timestamp::as_millis))
            .bind(p.closed_at.map(Timestamp::as_millis))
            .bind(p.updated_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A parcel.
    pub async fn parcel(&mut self, id: &ParcelId) -> R<Option<ParcelRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", PARCEL_COLS, " FROM parcels WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(parcel_row).transpose()
    }

    /// Parcels selected by `query` (`$1` = `value`, `$2` = `limit`), newest first.
    async fn newest_parcels(
        &mut self,
        query: &'static str,
        value: &str,
        limit: u32,
    ) -> R<Vec<ParcelRow>> {
        let rows =
            self.all(sqlx::query(query).bind(value.to_owned()).bind(i64::from(limit))).await?;
        rows.iter().map(parcel_row).collect()
    }

    /// A site's parcels, newest first, at most `limit`.
    pub async fn parcels_at_site(&mut self, site: &SiteId, limit: u32) -> R<Vec<ParcelRow>> {
        const Q: &str = sql!(
            "SELECT ",
            PARCEL_COLS,
            " FROM parcels WHERE site_id = $1 ORDER BY created_at DESC, id LIMIT $2"
        );
        self.newest_parcels(Q, site.as_str(), limit).await
    }

    /// A recipient's parcels, newest first, at most `limit`.
    pub async fn parcels_for_recipient(
        &mut self,
        person: &PersonId,
        limit: u32,
    ) -> R<Vec<ParcelRow>> {
        const Q: &str = sql!(
            "SELECT ",
            PARCEL_COLS,
            " FROM parcels WHERE recipient_id = $1 ORDER BY created_at DESC, id LIMIT $2"
        );
        self.newest_parcels(Q, person.as_str(), limit).await
    }

    /// A carrier's parcels, newest first, at most `limit`.
    pub async fn parcels_for_carrier(
        &mut self,
        carrier: &CarrierId,
        limit: u32,
    ) -> R<Vec<ParcelRow>> {
        const Q: &str = sql!(
            "SELECT ",
            PARCEL_COLS,
            " FROM parcels WHERE carrier_id = $1 ORDER BY created_at DESC, id LIMIT $2"
        );
        self.newest_parcels(Q, carrier.as_str(), limit).await
    }

    /// Parcels still in a compartment whose pickup window ended at or before `now`.
    pub async fn parcels_due_to_expire(&mut self, now: Timestamp, limit: u32) -> R<Vec<ParcelRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ", PARCEL_COLS,
                    " FROM parcels WHERE state IN ('deposited', 'notified') AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2"
                ))
                .bind(now.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(parcel_row).collect()
    }

    /// Deposited parcels whose recipient has not been notified yet (a notification that failed
    /// to queue is retried from here).
    pub async fn parcels_awaiting_notification(&mut self, limit: u32) -> R<Vec<ParcelRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    PARCEL_COLS,
                    " FROM parcels WHERE state = 'deposited' AND recipient_id IS NOT NULL \
                     ORDER BY deposited_at, id LIMIT $1"
                ))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(parcel_row).collect()
    }

    /// A site's parcels that no resident has been named for yet and that are still to be dealt
    /// with (announced, in a compartment, or expired there), oldest first.
    pub async fn unaddressed_parcels(&mut self, site: &SiteId, limit: u32) -> R<Vec<ParcelRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    PARCEL_COLS,
                    " FROM parcels WHERE site_id = $1 AND recipient_id IS NULL \
                     AND state IN ('expected', 'deposited', 'expired') \
                     ORDER BY created_at, id LIMIT $2"
                ))
                .bind(site.as_str().to_owned())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(parcel_row).collect()
    }

    /// Names the recipient of a parcel that had none. `false` when it already has one.
    pub async fn address_parcel(
        &mut self,
        parcel: &ParcelId,
        recipient: &PersonId,
        now: Timestamp,
    ) -> R<bool> {
        let done = self
            .exec(
                sqlx::query(
                    "UPDATE parcels SET recipient_id = $2, updated_at = $3 \
                     WHERE id = $1 AND recipient_id IS NULL",
                )
                .bind(parcel.as_str().to_owned())
                .bind(recipient.as_str().to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        Ok(done == 1)
    }

    /// Assigns a bank and compartment to an expected parcel (a deposit is under way).
    pub async fn assign_compartment(
        &mut self,
        id: &ParcelId,
        bank: &BankId,
        compartment: Option<&CompartmentId>,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query("UPDATE parcels SET bank_id = $1, compartment_id = $2, updated_at = $3 WHERE id = $4 AND state = 'expected'")
                    .bind(bank.as_str().to_owned())
                    .bind(compartment.map(|c| c.as_str().to_owned()))
                    .bind(now.as_millis())
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Moves a parcel from `from` to `to` only if it is still in `from`, stamping the time
    /// column that belongs to `to`. For `Deposited`, `expires_at` is the end of its window.
    /// Returns whether it moved.
    pub async fn move_parcel(
        &mut self,
        id: &ParcelId,
        from: ParcelState,
        to: ParcelState,
        now: Timestamp,
        expires_at: Option<Timestamp>,
    ) -> R<bool> {
        let q = match to {
            ParcelState::Deposited => sqlx::query(
                "UPDATE parcels SET state = $1, updated_at = $2, deposited_at = $2, expires_at = $3 WHERE id = $4 AND state = $5",
            ),
            ParcelState::Notified => sqlx::query(
                "UPDATE parcels SET state = $1, updated_at = $2, notified_at = $2, expires_at = COALESCE($3, expires_at) WHERE id = $4 AND state = $5",
            ),
            ParcelState::PickedUp | ParcelState::Returned | ParcelState::Retrieved => sqlx::query(
                "UPDATE parcels SET state = $1, updated_at = $2, closed_at = $2, expires_at = COALESCE($3, expires_at) WHERE id = $4 AND state = $5",
            ),
            ParcelState::Expected | ParcelState::Expired => sqlx::query(
                "UPDATE parcels SET state = $1, updated_at = $2, expires_at = COALESCE($3, expires_at) WHERE id = $4 AND state = $5",
            ),
        };
        let n = self
            .exec(
                q.bind(to.as_str())
                    .bind(now.as_millis())
                    .bind(expires_at.map(Timestamp::as_millis))
                    .bind(id.as_str().to_owned())
                    .bind(from.as_str()),
            )
            .await?;
        Ok(n == 1)
    }

    // --- pickup codes ----------------------------------------------------------------------

    /// Stores a pickup code's keyed hash. `Conflict` if the bank already has that code (the
    /// caller draws another).
    pub async fn insert_pickup_code(&mut self, c: &NewPickupCode) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO pickup_codes (id, parcel_id, bank_id, compartment_id, code_hash, offline_verifier, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(c.id.as_str().to_owned())
            .bind(c.parcel.as_str().to_owned())
            .bind(c.bank.as_str().to_owned())
            .bind(c.compartment.as_str().to_owned())
            .bind(c.code_hash.clone())
            .bind(c.offline_verifier.clone())
            .bind(c.created_at.as_millis())
            .bind(c.expires_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Redeems the code with hash `code_hash` at `bank`: marks it used if, and only if, it is
    /// unused, unrevoked and unexpired. Exactly one of any number of concurrent redemptions
    /// succeeds. On refusal, says why (for the audit log).
    pub async fn redeem_pickup_code(
        &mut self,
        bank: &BankId,
        code_hash: &[u8],
        now: Timestamp,
    ) -> R<Result<RedeemedCode, CodeRefused>> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "UPDATE pickup_codes SET used_at = $1 WHERE bank_id = $2 AND code_hash = $3 \
                     AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 RETURNING parcel_id, compartment_id",
                )
                .bind(now.as_millis())
                .bind(bank.as_str().to_owned())
                .bind(code_hash.to_vec()),
            )
            .await?;
        if let Some(r) = row {
            return Ok(Ok(RedeemedCode {
                parcel: parse(&r, "parcel_id", |s| ParcelId::parse(s).ok())?,
                compartment: parse(&r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
            }));
        }
        let why = self
            .one(
                sqlx::query("SELECT parcel_id, compartment_id, used_at, revoked_at FROM pickup_codes WHERE bank_id = $1 AND code_hash = $2")
                    .bind(bank.as_str().to_owned())
                    .bind(code_hash.to_vec()),
            )
            .await?;
        let Some(r) = why else {
            return Ok(Err(CodeRefused { reason: CodeRefusal::Unknown, code: None }));
        };
        let reason = if opt_int(&r, "used_at")?.is_some() {
            CodeRefusal::Used
        } else if opt_int(&r, "revoked_at")?.is_some() {
            CodeRefusal::Revoked
        } else {
            CodeRefusal::Expired
        };
        let code = RedeemedCode {
            parcel: parse(&r, "parcel_id", |s| ParcelId::parse(s).ok())?,
            compartment: parse(&r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
        };
        Ok(Err(CodeRefused { reason, code: Some(code) }))
    }

    /// The pickup code record `id` at `bank`: its keyed hash, to redeem it by
    /// [`Tx::redeem_pickup_code`] (a QR token names its code record, not the code), with its
    /// parcel and compartment.
    pub async fn pickup_code_hash(
        &mut self,
        bank: &BankId,
        id: &CodeId,
    ) -> R<Option<(Vec<u8>, RedeemedCode)>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT code_hash, parcel_id, compartment_id FROM pickup_codes WHERE id = $1 AND bank_id = $2",
                )
                .bind(id.as_str().to_owned())
                .bind(bank.as_str().to_owned()),
            )
            .await?;
        row.map(|r| {
            let code = RedeemedCode {
                parcel: parse(&r, "parcel_id", |s| ParcelId::parse(s).ok())?,
                compartment: parse(&r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
            };
            Ok((blob(&r, "code_hash")?, code))
        })
        .transpose()
    }

    /// The codes that work at `bank` at `now` (unused, unrevoked, unexpired) and have an
    /// offline verifier, with their compartment numbers: what its agent is sent.
    pub async fn offline_codes(&mut self, bank: &BankId, now: Timestamp) -> R<Vec<OfflineCodeRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT p.id, c.number, p.offline_verifier, p.expires_at FROM pickup_codes p \
                     JOIN compartments c ON c.id = p.compartment_id \
                     WHERE p.bank_id = $1 AND p.used_at IS NULL AND p.revoked_at IS NULL \
                     AND p.expires_at > $2 AND p.offline_verifier IS NOT NULL ORDER BY p.id",
                )
                .bind(bank.as_str().to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let number =
                    u16::try_from(int(r, "number")?).map_err(|_| StoreError::Corrupt("number"))?;
                Ok(OfflineCodeRow {
                    id: parse(r, "id", |s| CodeId::parse(s).ok())?,
                    compartment: CompartmentNumber::new(number)
                        .map_err(|_| StoreError::Corrupt("number"))?,
                    verifier: blob(r, "offline_verifier")?,
                    expires_at: Timestamp::from_millis(int(r, "expires_at")?),
                })
            })
            .collect()
    }

    /// Records that `device` reported the offline use `use_id`; false when it had already,
    /// so a report sent twice is consumed once.
    pub async fn record_offline_use(
        &mut self,
        device: &DeviceId,
        use_id: &str,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "INSERT INTO offline_uses (device_id, use_id, received_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (device_id, use_id) DO NOTHING",
                )
                .bind(device.as_str().to_owned())
                .bind(use_id.to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    /// A parcel's code that still works (unused, unrevoked, unexpired), if any.
    pub async fn active_pickup_code(
        &mut self,
        parcel: &ParcelId,
        now: Timestamp,
    ) -> R<Option<ActiveCode>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT id, bank_id, compartment_id, expires_at FROM pickup_codes \
                     WHERE parcel_id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
                     ORDER BY created_at DESC LIMIT 1",
                )
                .bind(parcel.as_str().to_owned())
                .bind(now.as_millis()),
            )
            .await?;
        row.map(|r| {
            Ok(ActiveCode {
                id: parse(&r, "id", |s| CodeId::parse(s).ok())?,
                bank: parse(&r, "bank_id", |s| BankId::parse(s).ok())?,
                compartment: parse(&r, "compartment_id", |s| CompartmentId::parse(s).ok())?,
                expires_at: Timestamp::from_millis(int(&r, "expires_at")?),
            })
        })
        .transpose()
    }

    /// Marks the code with this hash at `bank` as re-opened, if it was used after
    /// `used_after` and has not been re-opened before; true when it was. Once per code.
    pub async fn reopen_pickup_code(
        &mut self,
        bank: &BankId,
        code_hash: &[u8],
        used_after: Timestamp,
        now: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE pickup_codes SET reopened_at = $1 WHERE bank_id = $2 AND code_hash = $3 \
                     AND used_at IS NOT NULL AND used_at > $4 AND reopened_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(bank.as_str().to_owned())
                .bind(code_hash.to_vec())
                .bind(used_after.as_millis()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Revokes a parcel's unused codes; returns how many.
    pub async fn revoke_pickup_codes(&mut self, parcel: &ParcelId, now: Timestamp) -> R<u64> {
        self.exec(
            sqlx::query("UPDATE pickup_codes SET revoked_at = $1 WHERE parcel_id = $2 AND used_at IS NULL AND revoked_at IS NULL")
                .bind(now.as_millis())
                .bind(parcel.as_str().to_owned()),
        )
        .await
    }

    // --- throttles -------------------------------------------------------------------------

    /// Counts one more failure for `key` in the window starting at `window_start` and returns
    /// the new count. Counting first and checking after makes check-and-count one atomic step.
    pub async fn add_failure(&mut self, key: &str, window_start: Timestamp) -> R<u32> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "INSERT INTO throttle_counters (key, window_start, failures) VALUES ($1, $2, 1) \
                     ON CONFLICT (key, window_start) DO UPDATE SET failures = throttle_counters.failures + 1 \
                     RETURNING failures",
                )
                .bind(key.to_owned())
                .bind(window_start.as_millis()),
            )
            .await?
            .ok_or(StoreError::Corrupt("throttle_counters"))?;
        u32::try_from(int(&row, "failures")?).map_err(|_| StoreError::Corrupt("failures"))
    }

    /// Takes back one counted failure (the attempt it reserved succeeded).
    pub async fn refund_failure(&mut self, key: &str, window_start: Timestamp) -> R<()> {
        self.exec(
            sqlx::query("UPDATE throttle_counters SET failures = failures - 1 WHERE key = $1 AND window_start = $2 AND failures > 0")
                .bind(key.to_owned())
                .bind(window_start.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Failures counted for `key` in the window starting at `window_start`.
    pub async fn failures(&mut self, key: &str, window_start: Timestamp) -> R<u32> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT failures FROM throttle_counters WHERE key = $1 AND window_start = $2",
                )
                .bind(key.to_owned())
                .bind(window_start.as_millis()),
            )
            .await?;
        row.map(|r| int(&r, "failures"))
            .transpose()
            .map(|n| u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX))
    }

    /// Drops counters of windows that started before `before`.
    pub async fn prune_throttles(&mut self, before: Timestamp) -> R<u64> {
        self.exec(
            sqlx::query("DELETE FROM throttle_counters WHERE window_start < $1")
                .bind(before.as_millis()),
        )
        .await
    }

    // --- audit log -------------------------------------------------------------------------

    /// Records an audit entry as part of this unit of work. Entries are appended to the Merkle
    /// tree after all other writes of the transaction (when the unit ends on PostgreSQL, when
    /// the write batch ends on SQLite), so the lock on the tree head is the last one taken and
    /// is held only until commit: two units can never wait on each other through it. If the
    /// append fails, the unit fails and nothing it changed is kept. An entry that could not be
    /// read back (over the format's size limit) is refused here, so that it fails its own unit
    /// and not the write batch it would have shared with others.
    pub fn append_audit(&mut self, e: &AuditEvent) -> R<()> {
        self.w()?;
        let entry = entry_of(0, e);
        entry
            .borrowed(&entry.evidence_bytes())
            .encode_into(&mut Vec::new())
            .map_err(|err| StoreError::Refused(format!("audit entry: {err}")))?;
        self.pending.push(e.clone());
        Ok(())
    }

    /// How many entries are queued (the writer marks where a unit's entries begin).
    pub(crate) fn pending_audit_len(&self) -> usize {
        self.pending.len()
    }

    /// Forgets the entries queued after the first `len` (a rolled-back unit's).
    pub(crate) fn truncate_pending_audit(&mut self, len: usize) {
        self.pending.truncate(len);
    }

    /// Appends the queued entries: each becomes leaf `size` of the tree, its completed subtree
    /// roots are stored for proofs, and the head moves, all in this transaction. Rows go in
    /// multi-row statements: on SQLite the cost of a write batch is mostly per statement.
    pub(crate) async fn flush_audit(&mut self) -> R<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Taking the head with an UPDATE locks the row on PostgreSQL until commit, so leaf
        // indexes are dense and in commit order; SQLite's single writer gives the same.
        let head = self
            .fetch_write(sqlx::query(
                "UPDATE audit_tree SET size = size WHERE id = 1 RETURNING size, peaks",
            ))
            .await?
            .ok_or(StoreError::Corrupt("audit_tree"))?;
        let size =
            u64::try_from(int(&head, "size")?).map_err(|_| StoreError::Corrupt("audit_tree"))?;
        let mut frontier = Frontier::from_parts(size, split_hashes(&blob(&head, "peaks")?)?)
            .map_err(|_| StoreError::Corrupt("audit_tree"))?;
        let pending = std::mem::take(&mut self.pending);
        let mut scratch = Vec::with_capacity(512);
        let mut nodes: Vec<(i64, i64, Vec<u8>)> = Vec::new();
        for chunk in pending.chunks(ENTRIES_PER_INSERT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(values_sql(
                self.backend,
                "INSERT INTO audit_entries (seq, at, actor_kind, actor_id, action, site_id, \
                 bank_id, compartment_id, parcel_id, outcome, reason, sealed_subject, sealed, \
                 evidence, leaf_hash) VALUES ",
                15,
                chunk.len(),
            )));
            for e in chunk {
                let index = frontier.size();
                let entry = entry_of(index, e);
                let evidence = entry.evidence_bytes();
                // Checked by append_audit already; an entry that could not be read back is
                // never written.
                let leaf = entry
                    .borrowed(&evidence)
                    .leaf_hash(&mut scratch)
                    .map_err(|err| StoreError::Refused(format!("audit entry: {err}")))?;
                for (level, idx, hash) in frontier.push(leaf) {
                    if level > 0 {
                        let idx =
                            i64::try_from(idx).map_err(|_| StoreError::Corrupt("audit node"))?;
                        nodes.push((i64::from(level), idx, hash.to_vec()));
                    }
                }
                q = q
                    .bind(i64::try_from(index).map_err(|_| StoreError::Corrupt("audit size"))?)
                    .bind(e.at.as_millis())
                    .bind(e.actor.kind.as_str())
                    .bind(e.actor.id.clone())
                    .bind(e.action.as_str())
                    .bind(e.target.site.as_ref().map(|v| v.as_str().to_owned()))
                    .bind(e.target.bank.as_ref().map(|v| v.as_str().to_owned()))
                    .bind(e.target.compartment.as_ref().map(|v| v.as_str().to_owned()))
                    .bind(e.target.parcel.as_ref().map(|v| v.as_str().to_owned()))
                    .bind(e.outcome.as_str())
                    .bind(e.reason.clone())
                    .bind(e.personal.as_ref().map(|p| p.subject.as_str().to_owned()))
                    .bind(e.personal.as_ref().map(|p| p.ciphertext.clone()))
                    .bind(evidence)
                    .bind(leaf.to_vec());
            }
            self.exec(q).await?;
        }
        for chunk in nodes.chunks(NODES_PER_INSERT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(values_sql(
                self.backend,
                "INSERT INTO audit_nodes (level, idx, hash) VALUES ",
                3,
                chunk.len(),
            )));
            for (level, idx, hash) in chunk {
                q = q.bind(*level).bind(*idx).bind(hash.clone());
            }
            self.exec(q).await?;
        }
        let peaks: Vec<u8> = frontier.peaks().concat();
        self.exec(
            sqlx::query("UPDATE audit_tree SET size = $1, peaks = $2 WHERE id = 1")
                .bind(
                    i64::try_from(frontier.size())
                        .map_err(|_| StoreError::Corrupt("audit size"))?,
                )
                .bind(peaks),
        )
        .await?;
        Ok(())
    }

    /// The tree head: size and frontier, as stored.
    pub async fn tree_head(&mut self) -> R<Frontier> {
        let head = self
            .one(sqlx::query("SELECT size, peaks FROM audit_tree WHERE id = 1"))
            .await?
            .ok_or(StoreError::Corrupt("audit_tree"))?;
        let size =
            u64::try_from(int(&head, "size")?).map_err(|_| StoreError::Corrupt("audit_tree"))?;
        Frontier::from_parts(size, split_hashes(&blob(&head, "peaks")?)?)
            .map_err(|_| StoreError::Corrupt("audit_tree"))
    }

    /// Stored entries `from..from + limit` with their evidence and leaf hashes, in order.
    pub async fn audit_leaves(&mut self, from: u64, limit: u32) -> R<Vec<StoredEntry>> {
        self.audit_rows(from, limit)
            .await?
            .iter()
            .map(|r| {
                Ok(StoredEntry {
                    row: audit_row(r)?,
                    evidence: split_hashes(&blob(r, "evidence")?)?,
                    leaf_hash: blob(r, "leaf_hash")?,
                })
            })
            .collect()
    }

    /// Starts a read-only transaction whose reads all see one snapshot (the verifier's scan).
    pub(crate) async fn begin_snapshot(&mut self) -> R<()> {
        let sql = match self.backend {
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            Backend::Sqlite => "BEGIN",
        };
        sqlx::raw_sql(sql).execute(self.conn()).await?;
        Ok(())
    }

    /// Ends the snapshot begun by [`Tx::begin_snapshot`]; the connection goes back clean.
    pub(crate) async fn end_snapshot(&mut self) -> R<()> {
        sqlx::raw_sql("ROLLBACK").execute(self.conn()).await?;
        Ok(())
    }

    /// Stored entries `from..from + limit` as rows of `AUDIT_COLS, evidence, leaf_hash`, in order:
    /// the verifier's scan reads them with [`audit_row_ref`], [`Tx::audit_leaves`] parses them.
    pub(crate) async fn audit_rows(&mut self, from: u64, limit: u32) -> R<Vec<AnyRow>> {
        self.all(
            sqlx::query(sql!(
                "SELECT ",
                AUDIT_COLS,
                ", evidence, leaf_hash FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2"
            ))
            .bind(i64::try_from(from).map_err(|_| StoreError::Corrupt("seq"))?)
            .bind(i64::from(limit)),
        )
        .await
    }

    /// Stored subtree roots of `level` with index in `from..from + limit`, in order.
    pub async fn audit_nodes(
        &mut self,
        level: u32,
        from: u64,
        limit: u32,
    ) -> R<Vec<(u64, Vec<u8>)>> {
        let rows = self
            .all(
                sqlx::query("SELECT idx, hash FROM audit_nodes WHERE level = $1 AND idx >= $2 ORDER BY idx LIMIT $3")
                    .bind(i64::from(level))
                    .bind(i64::try_from(from).map_err(|_| StoreError::Corrupt("idx"))?)
                    .bind(i64::from(limit)),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    u64::try_from(int(r, "idx")?).map_err(|_| StoreError::Corrupt("idx"))?,
                    blob(r, "hash")?,
                ))
            })
            .collect()
    }

    /// The stored hash of tree node `(level, idx)`: a leaf hash for level 0, a subtree root
    /// above.
    pub async fn audit_node(&mut self, level: u32, idx: u64) -> R<Option<Vec<u8>>> {
        let idx = i64::try_from(idx).map_err(|_| StoreError::Corrupt("idx"))?;
        let row = if level == 0 {
            self.one(
                sqlx::query("SELECT leaf_hash AS hash FROM audit_entries WHERE seq = $1").bind(idx),
            )
            .await?
        } else {
            self.one(
                sqlx::query("SELECT hash FROM audit_nodes WHERE level = $1 AND idx = $2")
                    .bind(i64::from(level))
                    .bind(idx),
            )
            .await?
        };
        row.map(|r| blob(&r, "hash")).transpose()
    }

    /// Stored entries that match `filter`, with `seq` in `from..before`, oldest first, at most
    /// `limit`.
    pub async fn audit_select(
        &mut self,
        filter: &AuditFilter,
        from: u64,
        before: u64,
        limit: u32,
    ) -> R<Vec<StoredEntry>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    AUDIT_COLS,
                    ", evidence, leaf_hash FROM audit_entries WHERE seq >= $1 AND seq < $2 \
                     AND ($3 IS NULL OR parcel_id = $3) AND ($4 IS NULL OR compartment_id = $4) \
                     AND ($5 IS NULL OR actor_id = $5 OR sealed_subject = $5) AND ($6 IS NULL OR at >= $6) AND ($7 IS NULL OR at < $7) \
                     AND ($9 IS NULL OR site_id = $9) ORDER BY seq LIMIT $8"
                ))
                .bind(i64::try_from(from).map_err(|_| StoreError::Corrupt("seq"))?)
                .bind(i64::try_from(before).map_err(|_| StoreError::Corrupt("seq"))?)
                .bind(filter.parcel.as_ref().map(|v| v.as_str().to_owned()))
                .bind(filter.compartment.as_ref().map(|v| v.as_str().to_owned()))
                .bind(filter.actor.clone())
                .bind(filter.since.map(Timestamp::as_millis))
                .bind(filter.until.map(Timestamp::as_millis))
                .bind(i64::from(limit))
                .bind(filter.site.as_ref().map(|v| v.as_str().to_owned())),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEntry {
                    row: audit_row(r)?,
                    evidence: split_hashes(&blob(r, "evidence")?)?,
                    leaf_hash: blob(r, "leaf_hash")?,
                })
            })
            .collect()
    }

    /// Stores a signed checkpoint; `false` when one of that size exists already (another server
    /// instance signed it first).
    pub async fn insert_checkpoint(
        &mut self,
        size: u64,
        root: &[u8],
        note: &str,
        now: Timestamp,
    ) -> R<bool> {
        let result = self
            .exec(
                sqlx::query("INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(i64::try_from(size).map_err(|_| StoreError::Corrupt("size"))?)
                    .bind(root.to_vec())
                    .bind(note.to_owned())
                    .bind(now.as_millis()),
            )
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The latest stored checkpoint: size and signed note.
    pub async fn latest_checkpoint(&mut self) -> R<Option<(u64, String)>> {
        let row = self
            .one(sqlx::query("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"))
            .await?;
        row.map(|r| {
            Ok((
                u64::try_from(int(&r, "size")?).map_err(|_| StoreError::Corrupt("size"))?,
                text(&r, "note")?,
            ))
        })
        .transpose()
    }

    /// A parcel's audit entries, oldest first.
    pub async fn audit_for_parcel(&mut self, parcel: &ParcelId) -> R<Vec<AuditRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    AUDIT_COLS,
                    " FROM audit_entries WHERE parcel_id = $1 ORDER BY seq"
                ))
                .bind(parcel.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(audit_row).collect()
    }

    /// The newest `limit` entries of a site, newest first.
    pub async fn audit_for_site(&mut self, site: &SiteId, limit: u32) -> R<Vec<AuditRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    AUDIT_COLS,
                    " FROM audit_entries WHERE site_id = $1 ORDER BY seq DESC LIMIT $2"
                ))
                .bind(site.as_str().to_owned())
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(audit_row).collect()
    }

    /// Entries with `seq >= from`, oldest first, at most `limit`.
    pub async fn audit_from(&mut self, from: u64, limit: u32) -> R<Vec<AuditRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    AUDIT_COLS,
                    " FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2"
                ))
                .bind(i64::try_from(from).map_err(|_| StoreError::Corrupt("seq"))?)
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(audit_row).collect()
    }

    // --- subject keys ----------------------------------------------------------------------

    /// A subject's wrapped key: `None` when they have none yet, `Some(None)` once erased.
    pub async fn subject_key(&mut self, subject: &PersonId) -> R<Option<Option<Vec<u8>>>> {
        let row = self
            .one(
                sqlx::query("SELECT wrapped FROM subject_keys WHERE subject = $1")
                    .bind(subject.as_str().to_owned()),
            )
            .await?;
        row.map(|r| opt_blob(&r, "wrapped")).transpose()
    }

    /// Stores a subject's first key, unless one (or its erasure) is there already: two units
    /// racing to create it keep the first, and both then read that one back.
    pub async fn insert_subject_key(
        &mut self,
        subject: &PersonId,
        wrapped: &[u8],
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO subject_keys (subject, wrapped, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (subject) DO NOTHING",
            )
            .bind(subject.as_str().to_owned())
            .bind(wrapped.to_vec())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Destroys a subject's key for good (and records the erasure if they had none, so nothing
    /// about them is sealed afterwards). `false` if it was erased already.
    pub async fn erase_subject_key(&mut self, subject: &PersonId, now: Timestamp) -> R<bool> {
        self.exec(
            sqlx::query(
                "INSERT INTO subject_keys (subject, wrapped, created_at, erased_at) \
                 VALUES ($1, NULL, $2, $2) ON CONFLICT (subject) DO UPDATE \
                 SET wrapped = NULL, erased_at = $2 WHERE subject_keys.erased_at IS NULL",
            )
            .bind(subject.as_str().to_owned())
            .bind(now.as_millis()),
        )
        .await
        .map(|n| n > 0)
    }

    // --- alert fan-out -----------------------------------------------------------------------

    /// Adds a site's alert endpoint.
    pub async fn insert_alert_endpoint(&mut self, e: &EndpointRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO alert_endpoints (id, site_id, channel, target, secret, min_severity, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(e.id.as_str().to_owned())
            .bind(e.site.as_str().to_owned())
            .bind(e.channel.as_str())
            .bind(e.target.clone())
            .bind(e.secret.clone())
            .bind(e.min_severity.as_str())
            .bind(e.created_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// A site's alert endpoints (not removed), oldest first.
    pub async fn alert_endpoints(&mut self, site: &SiteId) -> R<Vec<EndpointRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    ENDPOINT_COLS,
                    " FROM alert_endpoints WHERE site_id = $1 AND removed_at IS NULL ORDER BY created_at, id"
                ))
                .bind(site.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(endpoint_row).collect()
    }

    /// An alert endpoint, unless it was removed.
    pub async fn alert_endpoint(&mut self, id: &EndpointId) -> R<Option<EndpointRow>> {
        let row = self
            .one(
                sqlx::query(sql!(
                    "SELECT ",
                    ENDPOINT_COLS,
                    " FROM alert_endpoints WHERE id = $1 AND removed_at IS NULL"
                ))
                .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(endpoint_row).transpose()
    }

    /// Removes an endpoint (its deliveries stay on record); false when it was gone already.
    pub async fn remove_alert_endpoint(&mut self, id: &EndpointId, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE alert_endpoints SET removed_at = $1, secret = NULL WHERE id = $2 AND removed_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Queues one notification, due at once.
    pub async fn enqueue_alert_delivery(&mut self, d: &DeliveryRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO alert_deliveries (id, alert_id, site_id, channel, endpoint_id, person_id, event, \
                 created_at, next_attempt_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0)",
            )
            .bind(d.id.as_str().to_owned())
            .bind(d.alert.as_str().to_owned())
            .bind(d.site.as_str().to_owned())
            .bind(d.channel.as_str())
            .bind(d.endpoint.as_ref().map(|e| e.as_str().to_owned()))
            .bind(d.person.as_ref().map(|p| p.as_str().to_owned()))
            .bind(d.event.clone())
            .bind(d.created_at.as_millis())
            .bind(d.next_attempt_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Takes up to `limit` due notifications, each leased until `lease_until` (a lapsed lease
    /// makes it due again), most urgent first.
    pub async fn lease_alert_deliveries(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> R<Vec<DeliveryRow>> {
        let candidates = self
            .all(
                sqlx::query(
                    "SELECT id FROM alert_deliveries WHERE delivered_at IS NULL AND dead_at IS NULL \
                     AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) \
                     ORDER BY next_attempt_at, id LIMIT $2",
                )
                .bind(now.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        let mut leased = Vec::with_capacity(candidates.len());
        for c in candidates {
            let row = self
                .fetch_write(
                    sqlx::query(sql!(
                        "UPDATE alert_deliveries SET lease_until = $1 WHERE id = $2 AND delivered_at IS NULL \
                         AND dead_at IS NULL AND (lease_until IS NULL OR lease_until <= $3) RETURNING ",
                        DELIVERY_COLS
                    ))
                    .bind(lease_until.as_millis())
                    .bind(text(&c, "id")?)
                    .bind(now.as_millis()),
                )
                .await?;
            if let Some(r) = row {
                leased.push(delivery_row(&r)?);
            }
        }
        Ok(leased)
    }

    /// Records a delivery.
    pub async fn alert_delivered(&mut self, id: &DeliveryId, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query(
                "UPDATE alert_deliveries SET delivered_at = $1, lease_until = NULL, attempts = attempts + 1, \
                 last_error = NULL WHERE id = $2",
            )
            .bind(now.as_millis())
            .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// Records a failed try: again at `retry_at`, or into the dead-letter list when `None`.
    pub async fn alert_delivery_failed(
        &mut self,
        id: &DeliveryId,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> R<()> {
        let (next, dead) = match retry_at {
            Some(at) => (Some(at.as_millis()), None),
            None => (None, Some(now.as_millis())),
        };
        self.exec(
            sqlx::query(
                "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = $1, \
                 next_attempt_at = COALESCE($2, next_attempt_at), dead_at = $3, lease_until = NULL WHERE id = $4",
            )
            .bind(error.to_owned())
            .bind(next)
            .bind(dead)
            .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// Puts a notification from the dead-letter list back in the queue, due now, with its
    /// tries counted afresh; false when it was not dead.
    pub async fn retry_alert_delivery(&mut self, id: &DeliveryId, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE alert_deliveries SET dead_at = NULL, attempts = 0, next_attempt_at = $1, \
                     lease_until = NULL WHERE id = $2 AND dead_at IS NOT NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// One notification.
    pub async fn alert_delivery(&mut self, id: &DeliveryId) -> R<Option<DeliveryRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", DELIVERY_COLS, " FROM alert_deliveries WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(delivery_row).transpose()
    }

    /// A site's notifications, newest first; with `dead_only`, the dead-letter list.
    pub async fn alert_deliveries(
        &mut self,
        site: &SiteId,
        dead_only: bool,
        limit: u32,
    ) -> R<Vec<DeliveryRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    DELIVERY_COLS,
                    " FROM alert_deliveries WHERE site_id = $1 AND ($2 = 0 OR dead_at IS NOT NULL) \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ))
                .bind(site.as_str().to_owned())
                .bind(i64::from(dead_only))
                .bind(i64::from(limit)),
            )
            .await?;
        rows.iter().map(delivery_row).collect()
    }

    /// Records a person's consent to hear of a site's alerts on a channel, replacing the one
    /// they gave before.
    pub async fn put_alert_subscription(&mut self, s: &SubscriptionRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO alert_subscriptions (person_id, site_id, channel, phone, min_severity, consented_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (person_id, site_id, channel) DO UPDATE SET \
                 phone = excluded.phone, min_severity = excluded.min_severity, consented_at = excluded.consented_at",
            )
            .bind(s.person.as_str().to_owned())
            .bind(s.site.as_str().to_owned())
            .bind(s.channel.as_str())
            .bind(s.phone.clone())
            .bind(s.min_severity.as_str())
            .bind(s.consented_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Withdraws a consent; false when there was none.
    pub async fn delete_alert_subscription(
        &mut self,
        person: &PersonId,
        site: &SiteId,
        channel: Channel,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "DELETE FROM alert_subscriptions WHERE person_id = $1 AND site_id = $2 AND channel = $3",
                )
                .bind(person.as_str().to_owned())
                .bind(site.as_str().to_owned())
                .bind(channel.as_str()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Deletes every consent of a person (their data is being erased).
    pub async fn delete_alert_subscriptions_of(&mut self, person: &PersonId) -> R<u64> {
        self.exec(
            sqlx::query("DELETE FROM alert_subscriptions WHERE person_id = $1")
                .bind(person.as_str().to_owned()),
        )
        .await
    }

    /// A person's consents, or a site's, or both.
    pub async fn alert_subscriptions(
        &mut self,
        person: Option<&PersonId>,
        site: Option<&SiteId>,
    ) -> R<Vec<SubscriptionRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT person_id, site_id, channel, phone, min_severity, consented_at \
                     FROM alert_subscriptions WHERE ($1 IS NULL OR person_id = $1) \
                     AND ($2 IS NULL OR site_id = $2) ORDER BY site_id, person_id, channel",
                )
                .bind(person.map(|p| p.as_str().to_owned()))
                .bind(site.map(|s| s.as_str().to_owned())),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SubscriptionRow {
                    person: parse(r, "person_id", |s| PersonId::parse(s).ok())?,
                    site: parse(r, "site_id", |s| SiteId::parse(s).ok())?,
                    channel: parse(r, "channel", Channel::parse)?,
                    phone: opt_text(r, "phone")?,
                    min_severity: parse(r, "min_severity", Severity::parse)?,
                    consented_at: time(r, "consented_at")?,
                })
            })
            .collect()
    }

    // --- outbox ----------------------------------------------------------------------------

    /// Queues a sealed message for delivery at `now`.
    pub async fn enqueue_message(
        &mut self,
        id: &MessageId,
        channel: &str,
        parcel: Option<&ParcelId>,
        sealed: &[u8],
        now: Timestamp,
    ) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO outbox (id, channel, parcel_id, sealed, created_at, next_attempt_at, attempts) \
                 VALUES ($1, $2, $3, $4, $5, $5, 0)",
            )
            .bind(id.as_str().to_owned())
            .bind(channel.to_owned())
            .bind(parcel.map(|p| p.as_str().to_owned()))
            .bind(sealed.to_vec())
            .bind(now.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Takes up to `limit` due messages for delivery, leasing each until `lease_until` so that
    /// another worker does not send it too. A lease that lapses (the worker died) makes the
    /// message due again.
    pub async fn lease_due_messages(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> R<Vec<OutboxRow>> {
        let candidates = self
            .all(
                sqlx::query(
                    "SELECT id FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $1 \
                     AND (lease_until IS NULL OR lease_until <= $1) ORDER BY next_attempt_at, id LIMIT $2",
                )
                .bind(now.as_millis())
                .bind(i64::from(limit)),
            )
            .await?;
        let mut leased = Vec::with_capacity(candidates.len());
        for c in candidates {
            let id = text(&c, "id")?;
            let row = self
                .fetch_write(
                    sqlx::query(sql!(
                        "UPDATE outbox SET lease_until = $1 WHERE id = $2 AND delivered_at IS NULL AND dead_at IS NULL \
                         AND (lease_until IS NULL OR lease_until <= $3) RETURNING ",
                        OUTBOX_COLS
                    ))
                    .bind(lease_until.as_millis())
                    .bind(id)
                    .bind(now.as_millis()),
                )
                .await?;
            if let Some(r) = row {
                leased.push(outbox_row(&r)?);
            }
        }
        Ok(leased)
    }

    /// Marks a message delivered and wipes its sealed body.
    pub async fn message_delivered(&mut self, id: &MessageId, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query(
                "UPDATE outbox SET delivered_at = $1, sealed = NULL, lease_until = NULL, attempts = attempts + 1, last_error = NULL WHERE id = $2",
            )
            .bind(now.as_millis())
            .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }

    /// Records a failed try: retry at `retry_at`, or give up (and wipe the body) when `None`.
    pub async fn message_failed(
        &mut self,
        id: &MessageId,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> R<()> {
        let q = match retry_at {
            Some(at) => sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, lease_until = NULL WHERE id = $3",
            )
            .bind(error.to_owned())
            .bind(at.as_millis())
            .bind(id.as_str().to_owned()),
            None => sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $1, dead_at = $2, sealed = NULL, lease_until = NULL WHERE id = $3",
            )
            .bind(error.to_owned())
            .bind(now.as_millis())
            .bind(id.as_str().to_owned()),
        };
        self.exec(q).await.map(|_| ())
    }

    /// A message.
    pub async fn message(&mut self, id: &MessageId) -> R<Option<OutboxRow>> {
        let row = self
            .one(
                sqlx::query(sql!("SELECT ", OUTBOX_COLS, " FROM outbox WHERE id = $1"))
                    .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(outbox_row).transpose()
    }

    /// Messages about a parcel, oldest first.
    pub async fn messages_for_parcel(&mut self, parcel: &ParcelId) -> R<Vec<OutboxRow>> {
        let rows = self
            .all(
                sqlx::query(sql!(
                    "SELECT ",
                    OUTBOX_COLS,
                    " FROM outbox WHERE parcel_id = $1 ORDER BY created_at, id"
                ))
                .bind(parcel.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    // --- devices ---------------------------------------------------------------------------

    /// Stores an enrolment token's keyed hash.
    pub async fn insert_enrolment_token(&mut self, t: &NewEnrolmentToken) -> R<()> {
        self.exec(
            sqlx::query("INSERT INTO enrolment_tokens (id, bank_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(t.id.as_str().to_owned())
                .bind(t.bank.as_str().to_owned())
                .bind(t.token_hash.clone())
                .bind(t.created_at.as_millis())
                .bind(t.expires_at.as_millis()),
        )
        .await
        .map(|_| ())
    }

    /// Uses an enrolment token: succeeds once, before expiry, and returns its bank.
    pub async fn consume_enrolment_token(
        &mut self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> R<Option<BankId>> {
        let row = self
            .fetch_write(
                sqlx::query(
                    "UPDATE enrolment_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING bank_id",
                )
                .bind(now.as_millis())
                .bind(token_hash.to_vec()),
            )
            .await?;
        row.map(|r| parse(&r, "bank_id", |s| BankId::parse(s).ok())).transpose()
    }

    /// Stores an enrolled device.
    pub async fn insert_device(&mut self, d: &DeviceRow) -> R<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO devices (id, bank_id, cert_serial, spki_sha256, enrolled_at, cert_expires_at, revoked_at, last_seen_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(d.id.as_str().to_owned())
            .bind(d.bank.as_str().to_owned())
            .bind(d.cert_serial.clone())
            .bind(d.spki_sha256.clone())
            .bind(d.enrolled_at.as_millis())
            .bind(d.cert_expires_at.as_millis())
            .bind(d.revoked_at.map(Timestamp::as_millis))
            .bind(d.last_seen_at.map(Timestamp::as_millis)),
        )
        .await
        .map(|_| ())
    }

    /// A device.
    pub async fn device(&mut self, id: &DeviceId) -> R<Option<DeviceRow>> {
        let row = self
            .one(
                sqlx::query(
                    "SELECT id, bank_id, cert_serial, spki_sha256, enrolled_at, cert_expires_at, revoked_at, last_seen_at FROM devices WHERE id = $1",
                )
                .bind(id.as_str().to_owned()),
            )
            .await?;
        row.as_ref().map(device_row).transpose()
    }

    /// The devices of a bank, newest first.
    pub async fn devices_of_bank(&mut self, bank: &BankId) -> R<Vec<DeviceRow>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT id, bank_id, cert_serial, spki_sha256, enrolled_at, cert_expires_at, revoked_at, last_seen_at FROM devices \
                     WHERE bank_id = $1 ORDER BY enrolled_at DESC, id",
                )
                .bind(bank.as_str().to_owned()),
            )
            .await?;
        rows.iter().map(device_row).collect()
    }

    /// Revokes every live device of a bank except `keep` (a re-enrolled bank has one identity).
    pub async fn revoke_devices_of_bank(
        &mut self,
        bank: &BankId,
        keep: &DeviceId,
        now: Timestamp,
    ) -> R<u64> {
        self.exec(
            sqlx::query("UPDATE devices SET revoked_at = $1 WHERE bank_id = $2 AND id <> $3 AND revoked_at IS NULL")
                .bind(now.as_millis())
                .bind(bank.as_str().to_owned())
                .bind(keep.as_str().to_owned()),
        )
        .await
    }

    /// Revokes a device; returns whether it was live.
    pub async fn revoke_device(&mut self, id: &DeviceId, now: Timestamp) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE devices SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Replaces a live device's certificate (serial, key, expiry); returns whether it was live.
    pub async fn renew_device(
        &mut self,
        id: &DeviceId,
        serial: &str,
        spki_sha256: &[u8],
        expires_at: Timestamp,
    ) -> R<bool> {
        let n = self
            .exec(
                sqlx::query(
                    "UPDATE devices SET cert_serial = $1, spki_sha256 = $2, cert_expires_at = $3 \
                     WHERE id = $4 AND revoked_at IS NULL",
                )
                .bind(serial.to_owned())
                .bind(spki_sha256.to_vec())
                .bind(expires_at.as_millis())
                .bind(id.as_str().to_owned()),
            )
            .await?;
        Ok(n == 1)
    }

    /// Serial numbers of revoked certificates still within their validity: what the gateway
    /// refuses at the handshake (an expired one is refused anyway).
    pub async fn revoked_device_serials(&mut self, now: Timestamp) -> R<Vec<String>> {
        let rows = self
            .all(
                sqlx::query(
                    "SELECT cert_serial FROM devices WHERE revoked_at IS NOT NULL AND cert_expires_at > $1",
                )
                .bind(now.as_millis()),
            )
            .await?;
        rows.iter().map(|r| text(r, "cert_serial")).collect()
    }

    /// Notes that a device connected.
    pub async fn touch_device(&mut self, id: &DeviceId, now: Timestamp) -> R<()> {
        self.exec(
            sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
                .bind(now.as_millis())
                .bind(id.as_str().to_owned()),
        )
        .await
        .map(|_| ())
    }
}
