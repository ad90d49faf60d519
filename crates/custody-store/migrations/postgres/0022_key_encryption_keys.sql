-- Each subject's key names the key-encryption key (KEK) that wrapped it, so keys can be
-- re-wrapped under a new KEK while Custody runs and an old KEK retired once nothing names it.
-- Keys stored before KEKs had files of their own were wrapped under the one derived from the
-- master key, whose id is 'master'.
ALTER TABLE subject_keys ADD COLUMN kek TEXT NOT NULL DEFAULT 'master';
