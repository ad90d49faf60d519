-- Alerts (docs/design/0007-incidents.md): what the agents' sensors and the server's own checks
-- raise. While an alert is live (open or acknowledged) it holds its live key (site, bank,
-- compartment and kind), so a new reading of the same thing joins its timeline instead of
-- raising another; resolving it clears the key. Every step is a timeline entry here and an
-- audit entry.

CREATE TABLE alerts (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organisations (id),
    site_id     TEXT NOT NULL REFERENCES sites (id),
    bank_id     TEXT REFERENCES banks (id),
    compartment INTEGER,
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    state       TEXT NOT NULL,
    owner_id    TEXT REFERENCES people (id),
    readings    INTEGER NOT NULL,
    raised_at   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    live_key    TEXT UNIQUE
);

CREATE INDEX alerts_by_site ON alerts (site_id, raised_at);

CREATE TABLE alert_events (
    alert_id TEXT NOT NULL REFERENCES alerts (id),
    seq      INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    what     TEXT NOT NULL,
    note     TEXT,
    PRIMARY KEY (alert_id, seq)
);
