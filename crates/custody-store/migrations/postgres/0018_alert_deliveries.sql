-- Fan-out of alerts (docs/design/0007-incidents.md): where a site's alerts go besides its
-- staff (webhooks, syslog receivers), and one outbox row per alert and target, delivered
-- with retries and left in the dead-letter list after the last try.

CREATE TABLE alert_endpoints (
    id           TEXT PRIMARY KEY,
    site_id      TEXT NOT NULL REFERENCES sites (id),
    channel      TEXT NOT NULL,
    target       TEXT NOT NULL,
    secret       BYTEA,
    min_severity TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    removed_at   BIGINT
);
CREATE INDEX alert_endpoints_site ON alert_endpoints (site_id);

CREATE TABLE alert_deliveries (
    id              TEXT PRIMARY KEY,
    alert_id        TEXT NOT NULL REFERENCES alerts (id),
    site_id         TEXT NOT NULL REFERENCES sites (id),
    channel         TEXT NOT NULL,
    endpoint_id     TEXT REFERENCES alert_endpoints (id),
    person_id       TEXT REFERENCES people (id),
    event           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    delivered_at    BIGINT,
    dead_at         BIGINT
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX alert_deliveries_site ON alert_deliveries (site_id, created_at);
