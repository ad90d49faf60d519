-- The rest of what reaches a person is sealed, like their address and name (migration 23).
-- Under the person's own data key: where a session was started from (address and browser),
-- the phone number given for alerts by text message, and a badge's hint (its number's last
-- four hex digits). Under the installation's tracking key, bound to the parcel: a parcel's
-- tracking number (a parcel may have no recipient yet, and the carrier's number is the
-- carrier's too); it is dropped when the recipient is erased.
--
-- Sessions are short-lived and hold nothing to keep: every session from before ends, and
-- people sign in again. Phone numbers, hints and tracking numbers from before wait in
-- clear_phone, clear_hint and clear_tracking_ref until the first `custody` command after the
-- upgrade seals them in place; each is NULL for every sealed row.
--
-- SQLite cannot drop a NOT NULL constraint, so badges and parcels are rebuilt the way SQLite documents
-- (https://sqlite.org/lang_altertable.html, "other kinds of table schema changes"): the
-- runner turns foreign keys off around this migration and checks every reference before it
-- commits.
DELETE FROM sessions;
ALTER TABLE sessions DROP COLUMN source;
ALTER TABLE sessions DROP COLUMN user_agent;
ALTER TABLE sessions ADD COLUMN client_sealed BLOB NOT NULL DEFAULT x'';

ALTER TABLE alert_subscriptions RENAME COLUMN phone TO clear_phone;
ALTER TABLE alert_subscriptions ADD COLUMN phone_sealed BLOB;

CREATE TABLE badges_rebuilt (
    id          TEXT PRIMARY KEY,
    site_id     TEXT NOT NULL REFERENCES sites (id),
    person_id   TEXT NOT NULL REFERENCES people (id),
    verifier    BLOB NOT NULL,
    hint_sealed BLOB,
    clear_hint  TEXT,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
INSERT INTO badges_rebuilt (id, site_id, person_id, verifier, clear_hint, created_at,
    revoked_at)
SELECT id, site_id, person_id, verifier, hint, created_at, revoked_at FROM badges;
DROP TABLE badges;
ALTER TABLE badges_rebuilt RENAME TO badges;
CREATE UNIQUE INDEX badges_active ON badges (site_id, verifier) WHERE revoked_at IS NULL;
CREATE INDEX badges_person ON badges (person_id);
CREATE INDEX badges_in_clear ON badges (id) WHERE clear_hint IS NOT NULL;

CREATE TABLE parcels_rebuilt (
    id                 TEXT PRIMARY KEY,
    org_id             TEXT NOT NULL REFERENCES organisations (id),
    site_id            TEXT NOT NULL REFERENCES sites (id),
    bank_id            TEXT REFERENCES banks (id),
    compartment_id     TEXT REFERENCES compartments (id),
    carrier_id         TEXT NOT NULL REFERENCES carriers (id),
    recipient_id       TEXT REFERENCES people (id),
    tracking_sealed    BLOB,
    clear_tracking_ref TEXT,
    size               TEXT NOT NULL,
    needs_accessible   INTEGER NOT NULL,
    needs_refrigerated INTEGER NOT NULL,
    state              TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    deposited_at       INTEGER,
    notified_at        INTEGER,
    expires_at         INTEGER,
    closed_at          INTEGER,
    updated_at         INTEGER NOT NULL
);
INSERT INTO parcels_rebuilt (id, org_id, site_id, bank_id, compartment_id, carrier_id,
    recipient_id, clear_tracking_ref, size, needs_accessible, needs_refrigerated, state,
    created_at, deposited_at, notified_at, expires_at, closed_at, updated_at)
SELECT id, org_id, site_id, bank_id, compartment_id, carrier_id, recipient_id, tracking_ref,
    size, needs_accessible, needs_refrigerated, state, created_at, deposited_at, notified_at,
    expires_at, closed_at, updated_at
FROM parcels;
DROP TABLE parcels;
ALTER TABLE parcels_rebuilt RENAME TO parcels;
CREATE INDEX parcels_site_state ON parcels (site_id, state);
CREATE INDEX parcels_recipient ON parcels (recipient_id);
CREATE INDEX parcels_carrier ON parcels (carrier_id);
CREATE INDEX parcels_expiry ON parcels (state, expires_at);
CREATE INDEX parcels_unaddressed ON parcels (site_id, created_at) WHERE recipient_id IS NULL;
CREATE INDEX parcels_in_clear ON parcels (id) WHERE clear_tracking_ref IS NOT NULL;
