-- People's names and e-mail addresses are sealed under each person's own data key (the one in
-- subject_keys, wrapped under a key-encryption key), so a copy of the database names nobody
-- and erasing a person (destroying that key) makes their row unreadable too. Signing in and
-- looking a person up by address use email_index, a keyed hash of the address (a blind index)
-- that only the master key can compute; it is NULL once the person is erased.
--
-- Rows stored before this migration keep their clear values in clear_email and clear_name
-- until Custody seals them in place: the first `custody` command to open the store after the
-- upgrade does it before anything else, with progress. Both are NULL for every sealed row.
--
-- SQLite cannot drop a NOT NULL or UNIQUE constraint, so the table is rebuilt the way SQLite
-- documents (https://sqlite.org/lang_altertable.html, "other kinds of table schema changes"):
-- the runner turns foreign keys off around this migration and checks every reference before
-- it commits.
CREATE TABLE people_rebuilt (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organisations (id),
    email_index   BLOB UNIQUE,
    email_sealed  BLOB,
    name_sealed   BLOB,
    clear_email   TEXT UNIQUE,
    clear_name    TEXT,
    role          TEXT NOT NULL,
    site_id       TEXT REFERENCES sites (id),
    carrier_id    TEXT REFERENCES carriers (id),
    password_hash TEXT,
    disabled_at   INTEGER,
    created_at    INTEGER NOT NULL
);
INSERT INTO people_rebuilt (id, org_id, clear_email, clear_name, role, site_id, carrier_id,
    password_hash, disabled_at, created_at)
SELECT id, org_id, email, name, role, site_id, carrier_id, password_hash, disabled_at,
    created_at
FROM people;
DROP TABLE people;
ALTER TABLE people_rebuilt RENAME TO people;
CREATE INDEX people_org ON people (org_id);
CREATE INDEX people_in_clear ON people (id) WHERE clear_email IS NOT NULL;
