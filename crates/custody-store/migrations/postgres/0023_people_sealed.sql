-- People's names and e-mail addresses are sealed under each person's own data key (the one in
-- subject_keys, wrapped under a key-encryption key), so a copy of the database names nobody
-- and erasing a person (destroying that key) makes their row unreadable too. Signing in and
-- looking a person up by address use email_index, a keyed hash of the address (a blind index)
-- that only the master key can compute; it is NULL once the person is erased.
--
-- Rows stored before this migration keep their clear values in clear_email and clear_name
-- until Custody seals them in place: the first `custody` command to open the store after the
-- upgrade does it before anything else, with progress. Both are NULL for every sealed row.
ALTER TABLE people RENAME COLUMN email TO clear_email;
ALTER TABLE people RENAME COLUMN name TO clear_name;
ALTER TABLE people ALTER COLUMN clear_email DROP NOT NULL;
ALTER TABLE people ALTER COLUMN clear_name DROP NOT NULL;
ALTER TABLE people ADD COLUMN email_index BYTEA UNIQUE;
ALTER TABLE people ADD COLUMN email_sealed BYTEA;
ALTER TABLE people ADD COLUMN name_sealed BYTEA;
CREATE INDEX people_in_clear ON people (id) WHERE clear_email IS NOT NULL;
