-- Custody foundation schema, SQLite dialect. Times are integer milliseconds since the Unix epoch
-- (UTC); ids are opaque text; flags are 0/1 integers. Keep in step with ../postgres.

CREATE TABLE organisations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE sites (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organisations (id),
    name             TEXT NOT NULL,
    time_zone        TEXT NOT NULL,
    pickup_window_ms INTEGER NOT NULL,
    created_at       INTEGER NOT NULL
);
CREATE INDEX sites_org ON sites (org_id);

CREATE TABLE banks (
    id          TEXT PRIMARY KEY,
    site_id     TEXT NOT NULL REFERENCES sites (id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX banks_site ON banks (site_id);

CREATE TABLE compartments (
    id             TEXT PRIMARY KEY,
    bank_id        TEXT NOT NULL REFERENCES banks (id),
    number         INTEGER NOT NULL CHECK (number BETWEEN 1 AND 999),
    size           TEXT NOT NULL,
    size_rank      INTEGER NOT NULL,
    accessible     INTEGER NOT NULL,
    refrigerated   INTEGER NOT NULL,
    state          TEXT NOT NULL,
    door           TEXT NOT NULL,
    parcel_id      TEXT,
    reserved_until INTEGER,
    updated_at     INTEGER NOT NULL,
    UNIQUE (bank_id, number)
);
CREATE INDEX compartments_free ON compartments (bank_id, state, size_rank);

CREATE TABLE carriers (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organisations (id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE people (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organisations (id),
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    site_id       TEXT REFERENCES sites (id),
    carrier_id    TEXT REFERENCES carriers (id),
    password_hash TEXT,
    disabled_at   INTEGER,
    created_at    INTEGER NOT NULL
);
CREATE INDEX people_org ON people (org_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    carrier_id   TEXT NOT NULL REFERENCES carriers (id),
    label        TEXT NOT NULL,
    secret_hash  BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);

CREATE TABLE api_key_sites (
    key_id   TEXT NOT NULL REFERENCES api_keys (id),
    site_id  TEXT NOT NULL REFERENCES sites (id),
    PRIMARY KEY (key_id, site_id)
);

CREATE TABLE sessions (
    token_hash   BLOB PRIMARY KEY,
    person_id    TEXT NOT NULL REFERENCES people (id),
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX sessions_person ON sessions (person_id);

CREATE TABLE parcels (
    id                 TEXT PRIMARY KEY,
    org_id             TEXT NOT NULL REFERENCES organisations (id),
    site_id            TEXT NOT NULL REFERENCES sites (id),
    bank_id            TEXT REFERENCES banks (id),
    compartment_id     TEXT REFERENCES compartments (id),
    carrier_id         TEXT NOT NULL REFERENCES carriers (id),
    recipient_id       TEXT NOT NULL REFERENCES people (id),
    tracking_ref       TEXT NOT NULL,
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
CREATE INDEX parcels_site_state ON parcels (site_id, state);
CREATE INDEX parcels_recipient ON parcels (recipient_id);
CREATE INDEX parcels_carrier ON parcels (carrier_id);
CREATE INDEX parcels_expiry ON parcels (state, expires_at);

-- A pickup code is stored only as HMAC(bank, code) under a key outside the database. Unique per
-- bank, so a code entered at a kiosk is found by one index probe, never by a scan.
CREATE TABLE pickup_codes (
    id             TEXT PRIMARY KEY,
    parcel_id      TEXT NOT NULL REFERENCES parcels (id),
    bank_id        TEXT NOT NULL REFERENCES banks (id),
    compartment_id TEXT NOT NULL REFERENCES compartments (id),
    code_hash      BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER,
    revoked_at     INTEGER,
    UNIQUE (bank_id, code_hash)
);
CREATE INDEX pickup_codes_parcel ON pickup_codes (parcel_id);

CREATE TABLE throttle_counters (
    key          TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    failures     INTEGER NOT NULL,
    PRIMARY KEY (key, window_start)
);

-- Append-only: the triggers refuse every update and delete, whoever asks.
CREATE TABLE audit_log (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT,
    action         TEXT NOT NULL,
    site_id        TEXT,
    bank_id        TEXT,
    compartment_id TEXT,
    parcel_id      TEXT,
    outcome        TEXT NOT NULL,
    reason         TEXT
);
CREATE INDEX audit_log_parcel ON audit_log (parcel_id, seq);
CREATE INDEX audit_log_site ON audit_log (site_id, seq);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

-- Outgoing notifications. The message (address, subject, body with the pickup code) is sealed
-- with AES-256-GCM and wiped once delivered or abandoned.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    parcel_id       TEXT REFERENCES parcels (id),
    sealed          BLOB,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    lease_until     INTEGER,
    delivered_at    INTEGER,
    dead_at         INTEGER,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND dead_at IS NULL;

CREATE TABLE enrolment_tokens (
    id          TEXT PRIMARY KEY,
    bank_id     TEXT NOT NULL REFERENCES banks (id),
    token_hash  BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    bank_id         TEXT NOT NULL REFERENCES banks (id),
    cert_serial     TEXT NOT NULL,
    spki_sha256     BLOB NOT NULL,
    enrolled_at     INTEGER NOT NULL,
    cert_expires_at INTEGER NOT NULL,
    revoked_at      INTEGER,
    last_seen_at    INTEGER
);
CREATE INDEX devices_bank ON devices (bank_id);
