-- RFID badges registered to people. The number is kept only as a keyed hash (the verifier),
-- under a key the site's agents hold too, so a kiosk checks a read against the list it was
-- sent and a copy of the database names no badge. The hint (last four hex digits) tells a
-- person's badges apart. A revoked badge stays, for the audit trail, and frees its number.

CREATE TABLE badges (
    id         TEXT PRIMARY KEY,
    site_id    TEXT NOT NULL REFERENCES sites (id),
    person_id  TEXT NOT NULL REFERENCES people (id),
    verifier   BLOB NOT NULL,
    hint       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE UNIQUE INDEX badges_active ON badges (site_id, verifier) WHERE revoked_at IS NULL;
CREATE INDEX badges_person ON badges (person_id);
