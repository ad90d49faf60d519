-- The tamper-evident audit log: entries as leaves of an RFC 6962 Merkle tree.
--
-- audit_entries holds each entry's canonical bytes (custody-audit entry format v1) and leaf
-- hash, plus copies of its fields for queries; the verifier checks that the copies match the
-- bytes. audit_nodes holds the roots of complete perfect subtrees (level >= 1) for proofs.
-- audit_tree is the head: size and the frontier's peaks, updated in the same transaction as
-- every append. The foundation's plain audit_log stays as it was, read-only, and is no longer
-- written.

CREATE TABLE audit_entries (
    seq            INTEGER PRIMARY KEY,
    at             INTEGER NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT,
    action         TEXT NOT NULL,
    site_id        TEXT,
    bank_id        TEXT,
    compartment_id TEXT,
    parcel_id      TEXT,
    outcome        TEXT NOT NULL,
    reason         TEXT,
    entry          BLOB NOT NULL,
    leaf_hash      BLOB NOT NULL
);
CREATE INDEX audit_entries_parcel ON audit_entries (parcel_id, seq);
CREATE INDEX audit_entries_site ON audit_entries (site_id, seq);
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

CREATE TABLE audit_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TRIGGER audit_nodes_no_update BEFORE UPDATE ON audit_nodes
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;
CREATE TRIGGER audit_nodes_no_delete BEFORE DELETE ON audit_nodes
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

CREATE TABLE audit_tree (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    size  INTEGER NOT NULL,
    peaks BLOB NOT NULL
);
INSERT INTO audit_tree (id, size, peaks) VALUES (1, 0, x'');

CREATE TABLE audit_checkpoints (
    size       INTEGER PRIMARY KEY,
    root       BLOB NOT NULL,
    note       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
