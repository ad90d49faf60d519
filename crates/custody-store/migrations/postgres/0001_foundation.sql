-- Custody foundation schema, PostgreSQL dialect. Times are integer milliseconds since the Unix epoch
-- (UTC); ids are opaque text; flags are 0/1 integers. Keep in step with ../sqlite.

CREATE TABLE organisations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE sites (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organisations (id),
    name             TEXT NOT NULL,
    time_zone        TEXT NOT NULL,
    pickup_window_ms BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX sites_org ON sites (org_id);

CREATE TABLE banks (
    id          TEXT PRIMARY KEY,
    site_id     TEXT NOT NULL REFERENCES sites (id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX banks_site ON banks (site_id);

CREATE TABLE compartments (
    id             TEXT PRIMARY KEY,
    bank_id        TEXT NOT NULL REFERENCES banks (id),
    number         BIGINT NOT NULL CHECK (number BETWEEN 1 AND 999),
    size           TEXT NOT NULL,
    size_rank      BIGINT NOT NULL,
    accessible     BIGINT NOT NULL,
    refrigerated   BIGINT NOT NULL,
    state          TEXT NOT NULL,
    door           TEXT NOT NULL,
    parcel_id      TEXT,
    reserved_until BIGINT,
    updated_at     BIGINT NOT NULL,
    UNIQUE (bank_id, number)
);
CREATE INDEX compartments_free ON compartments (bank_id, state, size_rank);

CREATE TABLE carriers (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organisations (id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
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
    disabled_at   BIGINT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX people_org ON people (org_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    carrier_id   TEXT NOT NULL REFERENCES carriers (id),
    label        TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE TABLE api_key_sites (
    key_id   TEXT NOT NULL REFERENCES api_keys (id),
    site_id  TEXT NOT NULL REFERENCES sites (id),
    PRIMARY KEY (key_id, site_id)
);

CREATE TABLE sessions (
    token_hash   BYTEA PRIMARY KEY,
    person_id    TEXT NOT NULL REFERENCES people (id),
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
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
    needs_accessible   BIGINT NOT NULL,
    needs_refrigerated BIGINT NOT NULL,
    state              TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    deposited_at       BIGINT,
    notified_at        BIGINT,
    expires_at         BIGINT,
    closed_at          BIGINT,
    updated_at         BIGINT NOT NULL
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
    code_hash      BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    revoked_at     BIGINT,
    UNIQUE (bank_id, code_hash)
);
CREATE INDEX pickup_codes_parcel ON pickup_codes (parcel_id);

CREATE TABLE throttle_counters (
    key          TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    failures     BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);

-- Append-only: the triggers refuse every update and delete, whoever asks.
CREATE TABLE audit_log (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             BIGINT NOT NULL,
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
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Outgoing notifications. The message (address, subject, body with the pickup code) is sealed
-- with AES-256-GCM and wiped once delivered or abandoned.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    parcel_id       TEXT REFERENCES parcels (id),
    sealed          BYTEA,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    lease_until     BIGINT,
    delivered_at    BIGINT,
    dead_at         BIGINT,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND dead_at IS NULL;

CREATE TABLE enrolment_tokens (
    id          TEXT PRIMARY KEY,
    bank_id     TEXT NOT NULL REFERENCES banks (id),
    token_hash  BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    bank_id         TEXT NOT NULL REFERENCES banks (id),
    cert_serial     TEXT NOT NULL,
    spki_sha256     BYTEA NOT NULL,
    enrolled_at     BIGINT NOT NULL,
    cert_expires_at BIGINT NOT NULL,
    revoked_at      BIGINT,
    last_seen_at    BIGINT
);
CREATE INDEX devices_bank ON devices (bank_id);
