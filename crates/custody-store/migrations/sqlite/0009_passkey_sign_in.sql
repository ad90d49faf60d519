-- Signing in with a passkey alone: such a ceremony is begun before anyone is known, so a
-- ceremony's person may be empty. Ceremonies live five minutes; any under way when this runs
-- are dropped and their people simply begin again.

DROP TABLE webauthn_ceremonies;

CREATE TABLE webauthn_ceremonies (
    id         TEXT PRIMARY KEY,
    person_id  TEXT REFERENCES people (id),
    kind       TEXT NOT NULL,
    state      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX webauthn_ceremonies_expiry ON webauthn_ceremonies (expires_at);
