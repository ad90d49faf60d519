-- Requests that need a second person's approval before they run (granting super-admin now;
-- bulk opens and lifting a lockdown later).
--
-- A request names what it would do exactly: kind, target and the parameters, with a SHA-256
-- digest of them, so that what is approved is what runs. It expires unanswered; decided_at
-- is set once, by a conditional update, so of two answers exactly one counts, and never an
-- approval by the person who asked (they may withdraw it).

CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organisations (id),
    kind         TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    params       TEXT NOT NULL,
    digest       BLOB NOT NULL,
    requested_by TEXT NOT NULL REFERENCES people (id),
    requested_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    decided_by   TEXT REFERENCES people (id),
    decided_at   INTEGER,
    outcome      TEXT,
    CHECK ((decided_at IS NULL) = (outcome IS NULL))
);
CREATE INDEX approvals_org ON approvals (org_id, requested_at);
