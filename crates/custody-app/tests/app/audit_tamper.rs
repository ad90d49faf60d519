//! Property test: random logs, random tamperings at the database level, every one caught.
//!
//! Each case grows the log by a random batch of random entries (concurrent units, so group
//! commit is in play), takes the auditor's trusted checkpoint, then does one random thing an
//! attacker with full database access could do, the append-only triggers dropped: edit a field,
//! flip a bit of an entry's leaf hash or sealed ciphertext, add an evidence hash, delete,
//! reorder, duplicate, truncate, roll back consistently, or put back an older copy of the log. `verify_store` must report it at or
//! before the first index touched. The log is then restored and must verify again, so the next
//! case tampers with a bigger, still honest log. Runs on both backends.
//!
//! The seed is random per run and printed on failure; `CUSTODY_TAMPER_SEED=<hex>` replays one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::audit::{Verdict, verify_store_in_batches};
use custody_audit::checkpoint::Checkpoint;
use custody_core::audit::{Actor, ActorKind, AuditAction, AuditEvent, Outcome, SealedText, Target};
use custody_core::{BankId, CompartmentId, ParcelId, PersonId, SiteId, Timestamp};
use custody_store::{Store, StoreError};
use custody_testkit::attacker::Attacker;
use custody_testkit::{TestStore, backends};
use futures_util::FutureExt as _;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const CASES: usize = 64;
const TABLES: [&str; 3] = ["audit_entries", "audit_nodes", "audit_tree"];

/// One random entry's ingredients.
#[derive(Debug, Clone)]
struct Spec {
    action: usize,
    outcome: usize,
    actor: Option<u8>,
    target: [Option<u8>; 4],
    reason: Option<String>,
    sealed: Option<(u8, Vec<u8>)>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..ACTIONS.len(),
        0..3_usize,
        proptest::option::of(any::<u8>()),
        [
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u8>()),
        ],
        proptest::option::of("[a-z_:]{1,24}"),
        proptest::option::of((any::<u8>(), proptest::collection::vec(any::<u8>(), 1..48))),
    )
        .prop_map(|(action, outcome, actor, target, reason, sealed)| Spec {
            action,
            outcome,
            actor,
            target,
            reason,
            sealed,
        })
}

const ACTIONS: [AuditAction; 6] = [
    AuditAction::PickupAttempt,
    AuditAction::Deposit,
    AuditAction::DoorReport,
    AuditAction::RemoteOpen,
    AuditAction::Login,
    AuditAction::OpenCommand,
];

fn event(s: &Spec, at: i64) -> AuditEvent {
    let id = |b: u8| [b; 16];
    AuditEvent {
        at: Timestamp::from_millis(at),
        actor: match s.actor {
            Some(b) => Actor {
                kind: ActorKind::Person,
                id: Some(PersonId::from_random(id(b)).to_string()),
            },
            None => Actor::system(),
        },
        action: ACTIONS[s.action],
        target: Target {
            site: s.target[0].map(|b| SiteId::from_random(id(b))),
            bank: s.target[1].map(|b| BankId::from_random(id(b))),
            compartment: s.target[2].map(|b| CompartmentId::from_random(id(b))),
            parcel: s.target[3].map(|b| ParcelId::from_random(id(b))),
        },
        outcome: [Outcome::Success, Outcome::Failure, Outcome::Denied][s.outcome],
        reason: s.reason.clone(),
        personal: s.sealed.as_ref().map(|(subject, ciphertext)| SealedText {
            subject: PersonId::from_random(id(*subject)),
            ciphertext: ciphertext.clone(),
        }),
    }
}

/// A field an attacker edits in place, each edit a real change.
#[derive(Debug, Clone, Copy)]
enum Column {
    At,
    Actor,
    Action,
    Site,
    Outcome,
    Reason,
    SealedSubject,
}

impl Column {
    fn set(self) -> &'static str {
        match self {
            Self::At => "at = at + 1",
            Self::Actor => "actor_id = COALESCE(actor_id, '') || 'x'",
            Self::Action => "action = action || '.x'",
            Self::Site => "site_id = COALESCE(site_id, '') || 'x'",
            Self::Outcome => {
                "outcome = CASE outcome WHEN 'success' THEN 'failure' ELSE 'success' END"
            }
            Self::Reason => "reason = COALESCE(reason, '') || 'x'",
            Self::SealedSubject => "sealed_subject = COALESCE(sealed_subject, '') || 'x'",
        }
    }
}

/// A stored byte string an attacker flips a bit of.
#[derive(Debug, Clone, Copy)]
enum Bytes {
    LeafHash,
    /// The sealed ciphertext; the leaf hash when the entry has none.
    Sealed,
    /// The evidence hashes with one more (all zeros) appended: the flip makes it a new one.
    Evidence,
}

#[derive(Debug, Clone)]
enum Tamper {
    Edit(Index, Column),
    FlipBit {
        index: Index,
        bytes: Bytes,
        byte: Index,
        bit: u8,
    },
    Delete(Index),
    Swap(Index, Index),
    /// One entry's row copied over another's position.
    Overwrite {
        from: Index,
        to: Index,
    },
    /// One entry's row copied past the end of the log.
    DuplicateAtEnd(Index),
    /// Entries from a point on deleted, the head left alone.
    Truncate(Index),
    /// Entries, subtree roots and head all cut back consistently.
    RollBack(Index),
    /// The log replaced by an older, consistent copy of itself.
    RestoreOldCopy,
}

fn tamper() -> impl Strategy<Value = Tamper> {
    let column = prop_oneof![
        Just(Column::At),
        Just(Column::Actor),
        Just(Column::Action),
        Just(Column::Site),
        Just(Column::Outcome),
        Just(Column::Reason),
        Just(Column::SealedSubject),
    ];
    prop_oneof![
        (any::<Index>(), column).prop_map(|(i, c)| Tamper::Edit(i, c)),
        (
            any::<Index>(),
            prop_oneof![Just(Bytes::LeafHash), Just(Bytes::Sealed), Just(Bytes::Evidence)],
            any::<Index>(),
            0..8_u8
        )
            .prop_map(|(index, bytes, byte, bit)| Tamper::FlipBit {
                index,
                bytes,
                byte,
                bit
            }),
        any::<Index>().prop_map(Tamper::Delete),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Tamper::Swap(a, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Tamper::Overwrite { from, to }),
        any::<Index>().prop_map(Tamper::DuplicateAtEnd),
        any::<Index>().prop_map(Tamper::Truncate),
        any::<Index>().prop_map(Tamper::RollBack),
        Just(Tamper::RestoreOldCopy),
    ]
}

/// One case: entries to append (in units of one to three, concurrently), then a tampering.
fn case() -> impl Strategy<Value = (Vec<Spec>, Tamper)> {
    (proptest::collection::vec(spec(), 1..40), tamper())
}

/// What the property test does with the attacker's powers.
trait Tampering {
    async fn copy(&mut self, prefix: &str);
    async fn restore(&mut self, prefix: &str);
    async fn tamper(&mut self, store: &Store, tamper: &Tamper, size: u64) -> u64;
    async fn duplicate(&mut self, from: u64, to: u64);
}

impl Tampering for Attacker {
    /// Copies the log's tables to `<prefix>_<table>`.
    async fn copy(&mut self, prefix: &str) {
        for t in TABLES {
            self.run(&format!("DROP TABLE IF EXISTS {prefix}_{t}")).await;
            self.run(&format!("CREATE TABLE {prefix}_{t} AS SELECT * FROM {t}")).await;
        }
    }

    /// Puts the log's tables back from `<prefix>_<table>`.
    async fn restore(&mut self, prefix: &str) {
        for t in TABLES {
            self.run(&format!("DELETE FROM {t}")).await;
            self.run(&format!("INSERT INTO {t} SELECT * FROM {prefix}_{t}")).await;
        }
    }

    /// Does `tamper` to a log of `size` entries; returns the first index it touched.
    async fn tamper(&mut self, store: &Store, tamper: &Tamper, size: u64) -> u64 {
        let pick = |i: &Index| i.index(usize::try_from(size).unwrap()) as u64;
        let other = |i: &Index, not: u64| (not + 1 + pick(i) % (size - 1)) % size;
        match tamper {
            Tamper::Edit(i, column) => {
                let i = pick(i);
                self.run(&format!("UPDATE audit_entries SET {} WHERE seq = {i}", column.set()))
                    .await;
                i
            }
            Tamper::FlipBit { index, bytes, byte, bit } => {
                let i = pick(index);
                let stored = store
                    .read(move |tx| async move { tx.audit_leaves(i, 1).await }.boxed())
                    .await
                    .unwrap();
                let stored = &stored[0];
                let (column, mut bytes) = match (bytes, &stored.row.event.personal) {
                    (Bytes::Sealed, Some(sealed)) => ("sealed", sealed.ciphertext.clone()),
                    (Bytes::LeafHash | Bytes::Sealed, _) => ("leaf_hash", stored.leaf_hash.clone()),
                    (Bytes::Evidence, _) => {
                        let mut evidence = stored.evidence.concat();
                        evidence.extend([0; 32]);
                        ("evidence", evidence)
                    }
                };
                let at = byte.index(bytes.len());
                bytes[at] ^= 1 << bit;
                let value = self.blob(&bytes);
                self.run(&format!("UPDATE audit_entries SET {column} = {value} WHERE seq = {i}"))
                    .await;
                i
            }
            Tamper::Delete(i) => {
                let i = pick(i);
                self.run(&format!("DELETE FROM audit_entries WHERE seq = {i}")).await;
                i
            }
            Tamper::Swap(a, b) => {
                let a = pick(a);
                let b = other(b, a);
                self.run(&format!("UPDATE audit_entries SET seq = -1 WHERE seq = {a}")).await;
                self.run(&format!("UPDATE audit_entries SET seq = {a} WHERE seq = {b}")).await;
                self.run(&format!("UPDATE audit_entries SET seq = {b} WHERE seq = -1")).await;
                a.min(b)
            }
            Tamper::Overwrite { from, to } => {
                let from = pick(from);
                let to = other(to, from);
                self.run(&format!("DELETE FROM audit_entries WHERE seq = {to}")).await;
                self.duplicate(from, to).await;
                to
            }
            Tamper::DuplicateAtEnd(i) => {
                self.duplicate(pick(i), size).await;
                size
            }
            Tamper::Truncate(i) => {
                let keep = pick(i);
                self.run(&format!("DELETE FROM audit_entries WHERE seq >= {keep}")).await;
                keep
            }
            Tamper::RollBack(i) => {
                let keep = pick(i);
                self.roll_back(store, keep).await;
                keep
            }
            Tamper::RestoreOldCopy => {
                self.restore("old").await;
                0
            }
        }
    }

    async fn duplicate(&mut self, from: u64, to: u64) {
        self.run(&format!(
            "INSERT INTO audit_entries SELECT {to}, at, actor_kind, actor_id, action, site_id, bank_id, \
             compartment_id, parcel_id, outcome, reason, leaf_hash, sealed_subject, sealed, \
             evidence FROM audit_entries WHERE seq = {from}"
        ))
        .await;
    }
}

/// Appends `specs` as units of one to three entries, all in flight at once.
async fn grow(store: &Store, specs: &[Spec], first_at: i64) {
    let units = specs.chunks(3).enumerate().map(|(u, chunk)| {
        let events: Vec<AuditEvent> = chunk
            .iter()
            .enumerate()
            .map(|(k, s)| event(s, first_at + i64::try_from(u * 3 + k).unwrap()))
            .collect();
        store.write(move |tx| {
            async move {
                for e in &events {
                    tx.append_audit(e)?;
                }
                Ok::<_, StoreError>(())
            }
            .boxed()
        })
    });
    for r in futures_util::future::join_all(units).await {
        r.unwrap();
    }
}

async fn head(store: &Store) -> Checkpoint {
    let f = store.read(|tx| async move { tx.tree_head().await }.boxed()).await.unwrap();
    Checkpoint {
        origin: "test/custody-audit".into(),
        size: f.size(),
        root: f.root(),
        extensions: Vec::new(),
    }
}

fn seed() -> [u8; 32] {
    match std::env::var("CUSTODY_TAMPER_SEED") {
        Ok(hex) => data_encoding::HEXLOWER
            .decode(hex.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .expect("CUSTODY_TAMPER_SEED is 64 hex digits"),
        Err(_) => custody_crypto::Rng::new().bytes().unwrap(),
    }
}

backends!(every_random_tampering_of_a_random_log_is_caught, |t: TestStore| async move {
    let seed = seed();
    let replay = data_encoding::HEXLOWER.encode(&seed);
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let mut attacker = Attacker::new(&t.url, t.store.backend()).await;
    let mut at = 1_795_000_000_000_i64;
    // The first cases only grow the log, so every tampering has something to work on.
    grow(&t.store, &case().new_tree(&mut runner).unwrap().current().0, at).await;
    attacker.copy("old").await;
    for n in 0..CASES {
        let (specs, tamper) = case().new_tree(&mut runner).unwrap().current();
        at += 1000;
        grow(&t.store, &specs, at).await;
        let trusted = head(&t.store).await;
        // Small batches put neighbouring entries on different scanning threads.
        let batch = prop_oneof![1_u32..=8, Just(50_000)].new_tree(&mut runner).unwrap().current();
        assert!(
            matches!(
                verify_store_in_batches(&t.store, Some(&trusted), batch, |_, _| {}).await.unwrap(),
                Verdict::Intact { .. }
            ),
            "case {n}: the honest log does not verify (CUSTODY_TAMPER_SEED={replay})"
        );
        attacker.copy("honest").await;

        let touched = attacker.tamper(&t.store, &tamper, trusted.size).await;
        // A consistent rollback or an old copy is caught by the trusted checkpoint, wherever
        // the two part; anything else at or before the first entry touched.
        let bound = match tamper {
            Tamper::RollBack(_) | Tamper::RestoreOldCopy => u64::MAX,
            _ => touched,
        };
        match verify_store_in_batches(&t.store, Some(&trusted), batch, |_, _| {}).await.unwrap() {
            Verdict::Tampered(found) => assert!(
                found.index <= bound,
                "case {n}: {tamper:?} at {touched} reported later, at {found} \
                 (batches of {batch}; CUSTODY_TAMPER_SEED={replay})"
            ),
            Verdict::Intact { size, .. } => panic!(
                "case {n}: {tamper:?} of a log of {} went unnoticed ({size} verified; \
                 CUSTODY_TAMPER_SEED={replay})",
                trusted.size
            ),
        }

        attacker.restore("honest").await;
        if n % 6 == 5 {
            attacker.copy("old").await;
        }
    }
});
