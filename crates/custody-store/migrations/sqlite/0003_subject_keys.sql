-- Personal data in the audit log is sealed under a key of its subject's own.
--
-- audit_entries gains copies of an entry's sealed part (whose data it is, and the ciphertext),
-- checked against the entry's bytes like every other copy. subject_keys holds each subject's
-- key, wrapped under the master key; erasing a subject sets wrapped to NULL, after which their
-- sealed data cannot be read by anyone, while every hash in the log still verifies.

ALTER TABLE audit_entries ADD COLUMN sealed_subject TEXT;
ALTER TABLE audit_entries ADD COLUMN sealed BLOB;
CREATE INDEX audit_entries_sealed_subject ON audit_entries (sealed_subject, seq);

CREATE TABLE subject_keys (
    subject    TEXT PRIMARY KEY,
    wrapped    BLOB,
    created_at INTEGER NOT NULL,
    erased_at  INTEGER,
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL))
);
-- Once erased, a key stays erased: a key cannot be put back.
CREATE TRIGGER subject_keys_stay_erased BEFORE UPDATE ON subject_keys
WHEN OLD.erased_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'an erased subject key stays erased');
END;
