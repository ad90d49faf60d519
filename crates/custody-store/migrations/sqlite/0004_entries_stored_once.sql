-- Each audit entry is stored once, as its fields.
--
-- Until now audit_entries held an entry's canonical bytes beside copies of its fields, and the
-- verifier checked that the two agreed. The bytes are a function of the fields, so they are
-- dropped: the verifier re-encodes the fields (custody-audit entry format v1) and checks the
-- result against the stored leaf hash, which the Merkle tree and the signed checkpoints
-- cover. The one part of an entry the fields did not hold, its evidence hashes, gets a column
-- of its own (32 bytes per hash, laid end to end).
--
-- Custody has only ever written entries without evidence hashes. Should a row's bytes end
-- with any (their last four bytes not a zero count), the migration stops before changing
-- anything: the CHECK below fails and the transaction rolls back.

CREATE TEMP TABLE migration_0004_entries_without_evidence (
    entry_without_evidence INTEGER NOT NULL CHECK (entry_without_evidence = 1)
);
INSERT INTO migration_0004_entries_without_evidence
    SELECT 0 FROM audit_entries WHERE substr(entry, -4) <> x'00000000' LIMIT 1;
DROP TABLE migration_0004_entries_without_evidence;

ALTER TABLE audit_entries ADD COLUMN evidence BLOB NOT NULL DEFAULT x'';
ALTER TABLE audit_entries DROP COLUMN entry;
