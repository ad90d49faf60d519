-- Personal-data breaches declared by staff: the clocks the law starts run from discovered_at.
-- The account of what happened may name people, so it is sealed under an installation key
-- bound to the breach.
CREATE TABLE breaches (
    id             TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL REFERENCES organisations (id),
    site_id        TEXT NOT NULL REFERENCES sites (id),
    bank_id        TEXT REFERENCES banks (id),
    alert_id       TEXT REFERENCES alerts (id),
    summary_sealed BYTEA NOT NULL,
    window_from    BIGINT NOT NULL,
    window_to      BIGINT NOT NULL,
    discovered_at  BIGINT NOT NULL,
    declared_at    BIGINT NOT NULL,
    declared_by    TEXT NOT NULL REFERENCES people (id),
    CHECK (window_from <= window_to)
);
CREATE INDEX breaches_site ON breaches (site_id, declared_at);

-- Who the audit log shows a breach reached, fixed when it was declared: the notices go to
-- them.
CREATE TABLE breach_affected (
    breach_id TEXT NOT NULL REFERENCES breaches (id),
    person_id TEXT NOT NULL REFERENCES people (id),
    PRIMARY KEY (breach_id, person_id)
);

-- Each step in answering a breach, once.
CREATE TABLE breach_steps (
    breach_id TEXT NOT NULL REFERENCES breaches (id),
    step      TEXT NOT NULL,
    at        BIGINT NOT NULL,
    by_person TEXT NOT NULL REFERENCES people (id),
    PRIMARY KEY (breach_id, step)
);

