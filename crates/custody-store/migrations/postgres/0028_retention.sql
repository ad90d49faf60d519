-- How long each site keeps personal data that has served its purpose, in days. A site without
-- a row keeps the defaults (custody_core::site::Retention::DEFAULT), which the sweeper passes
-- in, so the defaults live in one place.
CREATE TABLE site_retention (
    site_id       TEXT PRIMARY KEY REFERENCES sites (id),
    parcel_days   BIGINT NOT NULL,
    session_days  BIGINT NOT NULL,
    delivery_days BIGINT NOT NULL,
    evidence_days BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- When a closed parcel's tracking number and recipient were dropped under its site's
-- retention; the parcel's own facts (where, when, which states) stay, as the log does.
ALTER TABLE parcels ADD COLUMN anonymised_at BIGINT;

-- What the sweeper looks for, oldest first, without reading what it has already done.
CREATE INDEX parcels_to_anonymise ON parcels (closed_at)
    WHERE closed_at IS NOT NULL AND anonymised_at IS NULL;
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX outbox_finished ON outbox (COALESCE(delivered_at, dead_at))
    WHERE delivered_at IS NOT NULL OR dead_at IS NOT NULL;
CREATE INDEX alert_deliveries_finished ON alert_deliveries (COALESCE(delivered_at, dead_at))
    WHERE delivered_at IS NOT NULL OR dead_at IS NOT NULL;
