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
-- anything.

DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM audit_entries
        WHERE substring(entry FROM length(entry) - 3) <> '\x00000000'::bytea
    ) THEN
        RAISE EXCEPTION 'audit_entries holds entries with evidence hashes, which this migration cannot move';
    END IF;
END
$$;

ALTER TABLE audit_entries ADD COLUMN evidence BYTEA NOT NULL DEFAULT ''::bytea;
ALTER TABLE audit_entries DROP COLUMN entry;
