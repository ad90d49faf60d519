-- Personal data in the audit log is sealed under a key of its subject's own.
--
-- audit_entries gains copies of an entry's sealed part (whose data it is, and the ciphertext),
-- checked against the entry's bytes like every other copy. subject_keys holds each subject's
-- key, wrapped under the master key; erasing a subject sets wrapped to NULL, after which their
-- sealed data cannot be read by anyone, while every hash in the log still verifies.

ALTER TABLE audit_entries ADD COLUMN sealed_subject TEXT, ADD COLUMN sealed BYTEA;
CREATE INDEX audit_entries_sealed_subject ON audit_entries (sealed_subject, seq);

CREATE TABLE subject_keys (
    subject    TEXT PRIMARY KEY,
    wrapped    BYTEA,
    created_at BIGINT NOT NULL,
    erased_at  BIGINT,
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL))
);
-- Once erased, a key stays erased: a key cannot be put back.
CREATE FUNCTION subject_keys_stay_erased() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.erased_at IS NOT NULL THEN
        RAISE EXCEPTION 'an erased subject key stays erased';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER subject_keys_stay_erased BEFORE UPDATE ON subject_keys
    FOR EACH ROW EXECUTE FUNCTION subject_keys_stay_erased();
