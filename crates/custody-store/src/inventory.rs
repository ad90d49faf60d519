//! What every table and column holds, and why: the store's side of the record of processing
//! (GDPR Art. 30). A store test compares it with the schema of both backends, so a table or
//! column added without saying what it holds fails the build's tests; `custody admin
//! record-of-processing` and `docs/compliance/record-of-processing.md` are rendered from it.

use std::fmt::Write as _;

/// What a column holds, and how it is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Not about a person: states, sizes, times, counts, settings, names of places.
    Fact,
    /// A row's id or a reference to another row. A person's id is a pseudonym: it names nobody
    /// without their row, which erasure clears.
    Id,
    /// Personal, sealed (AES-256-GCM) under the person's own data key: unreadable for good
    /// once they are erased.
    SealedPerPerson,
    /// Personal, sealed under an installation key bound to its row (a parcel may have no
    /// recipient yet; a queued message is wiped once delivered).
    SealedPerRow,
    /// A keyed blind index (HMAC-SHA256) of a personal value: equality look-ups, nothing more.
    BlindIndex,
    /// A keyed hash (HMAC-SHA256) or an Argon2id hash of a secret: codes, tokens, passwords.
    SecretHash,
    /// A secret sealed under a key derived from the master key: authenticator seeds, webhook
    /// secrets, ceremony state.
    SealedSecret,
    /// A data key wrapped under a key-encryption key.
    WrappedKey,
    /// A public key or a credential's public part.
    PublicKey,
    /// Personal data from before sealing, in clear: emptied by the first `custody` command
    /// after the upgrade.
    LegacyClear,
    /// What a delivery provider answered (control characters stripped, at most 200
    /// characters), which may repeat the address it was sent to; deleted under retention.
    ProviderReply,
    /// A contact the organisation's admins set for its alerts: a webhook URL, an address or a
    /// number, usually a desk's rather than a person's.
    OrgContact,
}

impl Holds {
    /// Whether the column holds personal data in any form (sealed, indexed, or in clear).
    pub fn is_personal(self) -> bool {
        matches!(
            self,
            Self::SealedPerPerson
                | Self::SealedPerRow
                | Self::BlindIndex
                | Self::LegacyClear
                | Self::ProviderReply
                | Self::OrgContact
        )
    }

    /// How the record of processing names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fact => "fact",
            Self::Id => "id",
            Self::SealedPerPerson => "sealed under the person's key",
            Self::SealedPerRow => "sealed under an installation key",
            Self::BlindIndex => "blind index (keyed hash)",
            Self::SecretHash => "keyed or Argon2id hash of a secret",
            Self::SealedSecret => "secret, sealed",
            Self::WrappedKey => "wrapped key",
            Self::PublicKey => "public key",
            Self::LegacyClear => "clear until sealed after an upgrade",
            Self::ProviderReply => "provider's reply",
            Self::OrgContact => "organisation's contact",
        }
    }
}

/// One table: why it exists, whom it is about, how long rows stay, and each column.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// The table's name.
    pub name: &'static str,
    /// What it is for.
    pub purpose: &'static str,
    /// Whose data it holds, if anyone's.
    pub subjects: &'static str,
    /// How long rows stay.
    pub retention: &'static str,
    /// Every column, in no particular order.
    pub columns: &'static [(&'static str, Holds)],
}

use Holds::{
    BlindIndex, Fact, Id, LegacyClear, OrgContact, ProviderReply, PublicKey, SealedPerPerson,
    SealedPerRow, SealedSecret, SecretHash, WrappedKey,
};

const NOBODY: &str = "nobody";
const RESIDENTS_STAFF: &str = "residents, staff, couriers";
const UNTIL_ERASED: &str = "while the account exists; cleared when the person is erased";

/// Every table of the schema.
pub const INVENTORY: &[Table] = &[
    Table {
        name: "people",
        purpose: "accounts: who may sign in, in which role, where",
        subjects: RESIDENTS_STAFF,
        retention: UNTIL_ERASED,
        columns: &[
            ("id", Id),
            ("org_id", Id),
            ("email_index", BlindIndex),
            ("email_sealed", SealedPerPerson),
            ("name_sealed", SealedPerPerson),
            ("clear_email", LegacyClear),
            ("clear_name", LegacyClear),
            ("role", Fact),
            ("site_id", Id),
            ("carrier_id", Id),
            ("password_hash", SecretHash),
            ("disabled_at", Fact),
            ("created_at", Fact),
        ],
    },
    Table {
        name: "subject_keys",
        purpose: "each person's own data key, wrapped; destroying it erases what it sealed",
        subjects: RESIDENTS_STAFF,
        retention: "until the person is erased (the key is destroyed, the row kept as a tombstone)",
        columns: &[
            ("subject", Id),
            ("wrapped", WrappedKey),
            ("kek", Fact),
            ("created_at", Fact),
            ("erased_at", Fact),
        ],
    },
    Table {
        name: "current_kek",
        purpose: "the key-encryption key new data keys are wrapped under",
        subjects: NOBODY,
        retention: "one row, always",
        columns: &[("id", Id), ("kek", Fact)],
    },
    Table {
        name: "sessions",
        purpose: "signed-in sessions, with where each was started from, for their owner to review",
        subjects: RESIDENTS_STAFF,
        retention: "deleted at sign-out, or the site's session retention after they end",
        columns: &[
            ("token_hash", SecretHash),
            ("id", Id),
            ("person_id", Id),
            ("created_at", Fact),
            ("last_seen_at", Fact),
            ("expires_at", Fact),
            ("factor_at", Fact),
            ("factor", Fact),
            ("client_sealed", SealedPerPerson),
        ],
    },
    Table {
        name: "totp_factors",
        purpose: "authenticator apps: the second factor",
        subjects: RESIDENTS_STAFF,
        retention: "while set up; deleted when the person is erased",
        columns: &[
            ("person_id", Id),
            ("sealed_seed", SealedSecret),
            ("confirmed_at", Fact),
            ("last_step", Fact),
            ("failures", Fact),
        ],
    },
    Table {
        name: "totp_enrolments",
        purpose: "an authenticator app being set up",
        subjects: RESIDENTS_STAFF,
        retention: "until confirmed or replaced",
        columns: &[("person_id", Id), ("sealed_seed", SealedSecret), ("created_at", Fact)],
    },
    Table {
        name: "recovery_codes",
        purpose: "single-use codes that stand in for the second factor",
        subjects: RESIDENTS_STAFF,
        retention: "until used or replaced",
        columns: &[
            ("person_id", Id),
            ("code_hash", SecretHash),
            ("created_at", Fact),
            ("used_at", Fact),
        ],
    },
    Table {
        name: "passkeys",
        purpose: "passkeys (WebAuthn) a person registered",
        subjects: RESIDENTS_STAFF,
        retention: "until removed; deleted when the person is erased",
        columns: &[
            ("credential_id", Id),
            ("person_id", Id),
            ("passkey", PublicKey),
            ("created_at", Fact),
            ("last_used_at", Fact),
        ],
    },
    Table {
        name: "webauthn_ceremonies",
        purpose: "a passkey registration or sign-in under way",
        subjects: RESIDENTS_STAFF,
        retention: "minutes: until finished or expired",
        columns: &[
            ("id", Id),
            ("person_id", Id),
            ("kind", Fact),
            ("state", SealedSecret),
            ("expires_at", Fact),
        ],
    },
    Table {
        name: "magic_links",
        purpose: "e-mailed sign-in links, bound to the browser that asked",
        subjects: "residents",
        retention: "minutes: single use, then expired",
        columns: &[
            ("token_hash", SecretHash),
            ("person_id", Id),
            ("browser_hash", SecretHash),
            ("created_at", Fact),
            ("expires_at", Fact),
            ("used_at", Fact),
        ],
    },
    Table {
        name: "throttle_counters",
        purpose: "failed attempts per account, address, kiosk and bank, to slow guessing",
        subjects: "whoever tries (keyed hashes of what they typed or where from)",
        retention: "the throttle's windows",
        columns: &[("key", SecretHash), ("window_start", Fact), ("failures", Fact)],
    },
    Table {
        name: "parcels",
        purpose: "parcels from announcement to pickup: the chain of custody",
        subjects: "residents (recipients)",
        retention: "recipient and tracking number dropped the site's parcel retention after closing",
        columns: &[
            ("id", Id),
            ("org_id", Id),
            ("site_id", Id),
            ("bank_id", Id),
            ("compartment_id", Id),
            ("carrier_id", Id),
            ("recipient_id", Id),
            ("tracking_sealed", SealedPerRow),
            ("clear_tracking_ref", LegacyClear),
            ("size", Fact),
            ("needs_accessible", Fact),
            ("needs_refrigerated", Fact),
            ("state", Fact),
            ("created_at", Fact),
            ("deposited_at", Fact),
            ("notified_at", Fact),
            ("expires_at", Fact),
            ("closed_at", Fact),
            ("updated_at", Fact),
            ("anonymised_at", Fact),
        ],
    },
    Table {
        name: "pickup_codes",
        purpose: "pickup codes, stored only as keyed hashes",
        subjects: "residents (recipients)",
        retention: "with the parcel",
        columns: &[
            ("id", Id),
            ("parcel_id", Id),
            ("bank_id", Id),
            ("compartment_id", Id),
            ("code_hash", SecretHash),
            ("created_at", Fact),
            ("expires_at", Fact),
            ("used_at", Fact),
            ("revoked_at", Fact),
            ("reopened_at", Fact),
            ("offline_verifier", SecretHash),
        ],
    },
    Table {
        name: "outbox",
        purpose: "messages to residents (pickup codes, sign-in links) until delivered",
        subjects: "residents",
        retention: "content wiped on delivery; the record deleted the site's delivery retention later",
        columns: &[
            ("id", Id),
            ("channel", Fact),
            ("parcel_id", Id),
            ("sealed", SealedPerRow),
            ("created_at", Fact),
            ("next_attempt_at", Fact),
            ("attempts", Fact),
            ("lease_until", Fact),
            ("delivered_at", Fact),
            ("dead_at", Fact),
            ("last_error", ProviderReply),
        ],
    },
    Table {
        name: "badges",
        purpose: "access badges: a keyed verifier of the number, and a hint for staff",
        subjects: "residents",
        retention: "until revoked; revoked when the person is erased",
        columns: &[
            ("id", Id),
            ("site_id", Id),
            ("person_id", Id),
            ("verifier", SecretHash),
            ("hint_sealed", SealedPerPerson),
            ("clear_hint", LegacyClear),
            ("created_at", Fact),
            ("revoked_at", Fact),
        ],
    },
    Table {
        name: "courier_codes",
        purpose: "couriers' daily kiosk codes",
        subjects: "couriers",
        retention: "a day",
        columns: &[("code_hash", SecretHash), ("person_id", Id), ("valid_until", Fact)],
    },
    Table {
        name: "alert_subscriptions",
        purpose: "people's consents to hear of a site's alerts",
        subjects: "staff",
        retention: "until withdrawn; deleted when the person is erased",
        columns: &[
            ("person_id", Id),
            ("site_id", Id),
            ("channel", Fact),
            ("phone_sealed", SealedPerPerson),
            ("clear_phone", LegacyClear),
            ("min_severity", Fact),
            ("consented_at", Fact),
        ],
    },
    Table {
        name: "consent_history",
        purpose: "every consent given or withdrawn, in order (GDPR Art. 7(1))",
        subjects: "staff",
        retention: UNTIL_ERASED,
        columns: &[
            ("person_id", Id),
            ("site_id", Id),
            ("channel", Fact),
            ("change", Fact),
            ("min_severity", Fact),
            ("at", Fact),
        ],
    },
    Table {
        name: "alerts",
        purpose: "tamper and fault alerts, one per thing going on",
        subjects: NOBODY,
        retention: "kept with the log",
        columns: &[
            ("id", Id),
            ("org_id", Id),
            ("site_id", Id),
            ("bank_id", Id),
            ("compartment", Fact),
            ("kind", Fact),
            ("severity", Fact),
            ("state", Fact),
            ("owner_id", Id),
            ("readings", Fact),
            ("raised_at", Fact),
            ("updated_at", Fact),
            ("live_key", Fact),
            ("escalated_at", Fact),
        ],
    },
    Table {
        name: "alert_events",
        purpose: "each alert's timeline, with staff's notes",
        subjects: "staff (their notes)",
        retention: "kept with the alert; notes unreadable once their writer is erased",
        columns: &[
            ("alert_id", Id),
            ("seq", Fact),
            ("at", Fact),
            ("actor", Id),
            ("what", Fact),
            ("note", LegacyClear),
            ("note_sealed", SealedPerPerson),
        ],
    },
    Table {
        name: "alert_endpoints",
        purpose: "where a site's alerts are sent besides its staff",
        subjects: "the organisation (a desk's contact)",
        retention: "until removed",
        columns: &[
            ("id", Id),
            ("site_id", Id),
            ("channel", Fact),
            ("target", OrgContact),
            ("secret", SealedSecret),
            ("min_severity", Fact),
            ("created_at", Fact),
            ("removed_at", Fact),
        ],
    },
    Table {
        name: "alert_deliveries",
        purpose: "alert notifications until delivered",
        subjects: "staff",
        retention: "deleted the site's delivery retention after delivery or giving up",
        columns: &[
            ("id", Id),
            ("alert_id", Id),
            ("site_id", Id),
            ("channel", Fact),
            ("endpoint_id", Id),
            ("person_id", Id),
            ("event", Fact),
            ("created_at", Fact),
            ("next_attempt_at", Fact),
            ("lease_until", Fact),
            ("attempts", Fact),
            ("last_error", ProviderReply),
            ("delivered_at", Fact),
            ("dead_at", Fact),
        ],
    },
    Table {
        name: "audit_entries",
        purpose: "the audit log: every action, tamper-evident; people's words sealed",
        subjects: RESIDENTS_STAFF,
        retention: "kept whole (its hashes must verify); words unreadable once their person is erased",
        columns: &[
            ("seq", Fact),
            ("at", Fact),
            ("actor_kind", Fact),
            ("actor_id", Id),
            ("action", Fact),
            ("site_id", Id),
            ("bank_id", Id),
            ("compartment_id", Id),
            ("parcel_id", Id),
            ("outcome", Fact),
            ("reason", Fact),
            ("leaf_hash", Fact),
            ("sealed_subject", Id),
            ("sealed", SealedPerPerson),
            ("evidence", Fact),
        ],
    },
    Table {
        name: "audit_log",
        purpose: "the log as the first version kept it; read, never written",
        subjects: RESIDENTS_STAFF,
        retention: "kept whole",
        columns: &[
            ("seq", Fact),
            ("at", Fact),
            ("actor_kind", Fact),
            ("actor_id", Id),
            ("action", Fact),
            ("site_id", Id),
            ("bank_id", Id),
            ("compartment_id", Id),
            ("parcel_id", Id),
            ("outcome", Fact),
            ("reason", Fact),
        ],
    },
    Table {
        name: "audit_nodes",
        purpose: "the log's Merkle tree",
        subjects: NOBODY,
        retention: "kept whole",
        columns: &[("level", Fact), ("idx", Fact), ("hash", Fact)],
    },
    Table {
        name: "audit_tree",
        purpose: "the log's head",
        subjects: NOBODY,
        retention: "one row, always",
        columns: &[("id", Id), ("size", Fact), ("peaks", Fact)],
    },
    Table {
        name: "audit_checkpoints",
        purpose: "signed checkpoints of the log",
        subjects: NOBODY,
        retention: "kept whole",
        columns: &[("size", Fact), ("root", Fact), ("note", Fact), ("created_at", Fact)],
    },
    Table {
        name: "breaches",
        purpose: "personal-data breaches declared by staff, and the clocks they start",
        subjects: "staff (who declared it; their account of it may name others)",
        retention: "kept with the log",
        columns: &[
            ("id", Id),
            ("org_id", Id),
            ("site_id", Id),
            ("bank_id", Id),
            ("alert_id", Id),
            ("summary_sealed", SealedPerRow),
            ("window_from", Fact),
            ("window_to", Fact),
            ("discovered_at", Fact),
            ("declared_at", Fact),
            ("declared_by", Id),
        ],
    },
    Table {
        name: "breach_affected",
        purpose: "whom the audit log shows a breach reached: the notices go to them",
        subjects: RESIDENTS_STAFF,
        retention: "kept with the breach",
        columns: &[("breach_id", Id), ("person_id", Id)],
    },
    Table {
        name: "breach_steps",
        purpose: "each step in answering a breach: who was told, when, by whom",
        subjects: "staff",
        retention: "kept with the breach",
        columns: &[("breach_id", Id), ("step", Fact), ("at", Fact), ("by_person", Id)],
    },
    Table {
        name: "approvals",
        purpose: "actions that need a second person",
        subjects: "staff",
        retention: "kept with the log",
        columns: &[
            ("id", Id),
            ("org_id", Id),
            ("kind", Fact),
            ("subject_id", Id),
            ("params", Fact),
            ("digest", Fact),
            ("requested_by", Id),
            ("requested_at", Fact),
            ("expires_at", Fact),
            ("decided_by", Id),
            ("decided_at", Fact),
            ("outcome", Fact),
        ],
    },
    Table {
        name: "remote_opens",
        purpose: "doors opened without a parcel's credential, for the per-person budget",
        subjects: "staff",
        retention: "pruned past every budget window",
        columns: &[("opener", Id), ("bank_id", Id), ("opened_at", Fact), ("approved_by", Id)],
    },
    Table {
        name: "remote_open_heads",
        purpose: "the budget's running counts",
        subjects: "staff",
        retention: "pruned with the opens",
        columns: &[("key", Id), ("opens", Fact)],
    },
    Table {
        name: "lockdowns",
        purpose: "banks locked down, and by whom",
        subjects: "staff",
        retention: "until lifted",
        columns: &[("bank_id", Id), ("engaged_at", Fact), ("engaged_by", Id)],
    },
    Table {
        name: "lockdown_rules",
        purpose: "which alerts lock a site's banks down",
        subjects: NOBODY,
        retention: "until changed",
        columns: &[
            ("site_id", Id),
            ("kind", Fact),
            ("min_severity", Fact),
            ("scope", Fact),
            ("set_at", Fact),
        ],
    },
    Table {
        name: "api_keys",
        purpose: "carriers' API keys, stored as keyed hashes",
        subjects: NOBODY,
        retention: "until revoked",
        columns: &[
            ("id", Id),
            ("carrier_id", Id),
            ("label", Fact),
            ("secret_hash", SecretHash),
            ("created_at", Fact),
            ("last_used_at", Fact),
            ("revoked_at", Fact),
        ],
    },
    Table {
        name: "api_key_sites",
        purpose: "the sites each API key reaches",
        subjects: NOBODY,
        retention: "with the key",
        columns: &[("key_id", Id), ("site_id", Id)],
    },
    Table {
        name: "organisations",
        purpose: "tenants",
        subjects: NOBODY,
        retention: "while the organisation uses Custody",
        columns: &[("id", Id), ("name", Fact), ("created_at", Fact)],
    },
    Table {
        name: "sites",
        purpose: "buildings and campuses",
        subjects: NOBODY,
        retention: "while the organisation uses Custody",
        columns: &[
            ("id", Id),
            ("org_id", Id),
            ("name", Fact),
            ("time_zone", Fact),
            ("pickup_window_ms", Fact),
            ("created_at", Fact),
        ],
    },
    Table {
        name: "site_retention",
        purpose: "how long each site keeps personal data",
        subjects: NOBODY,
        retention: "until changed",
        columns: &[
            ("site_id", Id),
            ("parcel_days", Fact),
            ("session_days", Fact),
            ("delivery_days", Fact),
            ("evidence_days", Fact),
            ("updated_at", Fact),
        ],
    },
    Table {
        name: "banks",
        purpose: "locker banks",
        subjects: NOBODY,
        retention: "while installed",
        columns: &[("id", Id), ("site_id", Id), ("name", Fact), ("created_at", Fact)],
    },
    Table {
        name: "compartments",
        purpose: "compartments and their doors",
        subjects: NOBODY,
        retention: "while installed",
        columns: &[
            ("id", Id),
            ("bank_id", Id),
            ("number", Fact),
            ("size", Fact),
            ("size_rank", Fact),
            ("accessible", Fact),
            ("refrigerated", Fact),
            ("state", Fact),
            ("door", Fact),
            ("parcel_id", Id),
            ("reserved_until", Fact),
            ("updated_at", Fact),
        ],
    },
    Table {
        name: "carriers",
        purpose: "carriers that deliver to the organisation",
        subjects: NOBODY,
        retention: "while they deliver",
        columns: &[("id", Id), ("org_id", Id), ("name", Fact), ("created_at", Fact)],
    },
    Table {
        name: "devices",
        purpose: "enrolled bank agents and their certificates",
        subjects: NOBODY,
        retention: "until revoked",
        columns: &[
            ("id", Id),
            ("bank_id", Id),
            ("cert_serial", Fact),
            ("spki_sha256", PublicKey),
            ("enrolled_at", Fact),
            ("cert_expires_at", Fact),
            ("revoked_at", Fact),
            ("last_seen_at", Fact),
        ],
    },
    Table {
        name: "enrolment_tokens",
        purpose: "single-use tokens that enrol a bank's agent",
        subjects: NOBODY,
        retention: "a day: single use, then expired",
        columns: &[
            ("id", Id),
            ("bank_id", Id),
            ("token_hash", SecretHash),
            ("created_at", Fact),
            ("expires_at", Fact),
            ("used_at", Fact),
        ],
    },
    Table {
        name: "offline_uses",
        purpose: "codes used while a bank was offline, reconciled once",
        subjects: NOBODY,
        retention: "kept with the log",
        columns: &[("device_id", Id), ("use_id", Id), ("received_at", Fact)],
    },
    Table {
        name: "sensor_readings",
        purpose: "the last reading counter of each device, so each reading counts once",
        subjects: NOBODY,
        retention: "one row per device",
        columns: &[("device_id", Id), ("counter", Fact), ("received_at", Fact)],
    },
    Table {
        name: "sensor_rules",
        purpose: "each bank's debounce rules",
        subjects: NOBODY,
        retention: "until changed",
        columns: &[
            ("bank_id", Id),
            ("kind", Fact),
            ("threshold", Fact),
            ("window_ms", Fact),
            ("quiet_ms", Fact),
        ],
    },
    Table {
        name: "sensor_settings",
        purpose: "each bank's door timer",
        subjects: NOBODY,
        retention: "until changed",
        columns: &[("bank_id", Id), ("door_left_open_after_ms", Fact), ("set_at", Fact)],
    },
    Table {
        name: "schema_migrations",
        purpose: "the schema's version",
        subjects: NOBODY,
        retention: "always",
        columns: &[("version", Fact), ("name", Fact)],
    },
];

/// The tables a backend keeps for itself, which Custody does not define.
pub const BACKEND_TABLES: &[&str] = &["sqlite_sequence"];

/// The record of processing as Markdown: for each table, its purpose, subjects, retention and
/// every column with what it holds; personal columns first.
pub fn record_of_processing() -> String {
    let mut out = String::from(
        "# Record of processing: what Custody stores\n\n\
         Generated from `crates/custody-store/src/inventory.rs`, which a test holds to the \
         schema of both backends (`custody admin record-of-processing` prints it with each \
         site's retention). The controller's part of the record (its name, its DPO, the \
         legal basis, transfers) is in `docs/compliance/dpia-template.md`.\n\n\
         Every value marked *sealed* is AES-256-GCM; a person's own key is wrapped under a \
         key-encryption key (a file or an HSM) and destroyed when they are erased. No column \
         holds a code, token, password or badge number in clear.\n",
    );
    let mut tables: Vec<&Table> = INVENTORY.iter().collect();
    tables.sort_by_key(|t| (t.subjects == NOBODY, t.name));
    for t in tables {
        let _ = write!(
            out,
            "\n## `{}`\n\n- Purpose: {}.\n- Whose data: {}.\n- Kept: {}.\n",
            t.name, t.purpose, t.subjects, t.retention
        );
        let mut columns: Vec<_> = t.columns.iter().collect();
        columns.sort_by_key(|(name, holds)| (!holds.is_personal(), *holds == Fact, *name));
        let line: Vec<String> =
            columns.iter().map(|(name, holds)| format!("`{name}` ({})", holds.label())).collect();
        let _ = writeln!(out, "- Columns: {}.", line.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_table_and_column_is_named_once() {
        let mut tables: Vec<_> = INVENTORY.iter().map(|t| t.name).collect();
        tables.sort_unstable();
        let before = tables.len();
        tables.dedup();
        assert_eq!(before, tables.len(), "a table named twice");
        for t in INVENTORY {
            let mut columns: Vec<_> = t.columns.iter().map(|(c, _)| *c).collect();
            columns.sort_unstable();
            let before = columns.len();
            columns.dedup();
            assert_eq!(before, columns.len(), "a column of {} named twice", t.name);
        }
    }
}
