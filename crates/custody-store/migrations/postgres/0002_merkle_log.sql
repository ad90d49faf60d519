-- The tamper-evident audit log: entries as leaves of an RFC 6962 Merkle tree.
--
-- audit_entries holds each entry's canonical bytes (custody-audit entry format v1) and leaf
-- hash, plus copies of its fields for queries; the verifier checks that the copies match the
-- bytes. audit_nodes holds the roots of complete perfect subtrees (level >= 1) for proofs.
-- audit_tree is the head: size and the frontier's peaks, updated in the same transaction as
-- every append. The foundation's plain audit_log stays as it was, read-only, and is no longer
-- written.

CREATE TABLE audit_entries (
    seq            BIGINT PRIMARY KEY,
    at             BIGINT NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT,
    action         TEXT NOT NULL,
    site_id        TEXT,
    bank_id        TEXT,
    compartment_id TEXT,
    parcel_id      TEXT,
    outcome        TEXT NOT NULL,
    reason         TEXT,
    entry          BYTEA NOT NULL,
    leaf_hash      BYTEA NOT NULL
);
CREATE INDEX audit_entries_parcel ON audit_entries (parcel_id, seq);
CREATE INDEX audit_entries_site ON audit_entries (site_id, seq);
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE audit_nodes (
    level BIGINT NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TRIGGER audit_nodes_append_only BEFORE UPDATE OR DELETE ON audit_nodes
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_nodes_no_truncate BEFORE TRUNCATE ON audit_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE audit_tree (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    size  BIGINT NOT NULL,
    peaks BYTEA NOT NULL
);
INSERT INTO audit_tree (id, size, peaks) VALUES (1, 0, ''::bytea);

CREATE TABLE audit_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       BYTEA NOT NULL,
    note       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
