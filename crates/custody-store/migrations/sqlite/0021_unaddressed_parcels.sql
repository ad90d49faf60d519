-- A carrier may announce a parcel for an address that belongs to no resident of the site. The
-- carrier gets the same answer as for anyone else (it must not learn who lives where), and the
-- parcel is kept with no recipient for the site's staff to address or send back
-- (docs/SECURITY.md, "Answers tell the truth and nothing more").
--
-- SQLite cannot drop a NOT NULL constraint, so the table is rebuilt the way SQLite documents
-- (https://sqlite.org/lang_altertable.html, "other kinds of table schema changes"): the runner
-- turns foreign keys off around this migration and checks every reference before it commits.
CREATE TABLE parcels_rebuilt (
    id                 TEXT PRIMARY KEY,
    org_id             TEXT NOT NULL REFERENCES organisations (id),
    site_id            TEXT NOT NULL REFERENCES sites (id),
    bank_id            TEXT REFERENCES banks (id),
    compartment_id     TEXT REFERENCES compartments (id),
    carrier_id         TEXT NOT NULL REFERENCES carriers (id),
    recipient_id       TEXT REFERENCES people (id),
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
INSERT INTO parcels_rebuilt (id, org_id, site_id, bank_id, compartment_id, carrier_id,
    recipient_id, tracking_ref, size, needs_accessible, needs_refrigerated, state, created_at,
    deposited_at, notified_at, expires_at, closed_at, updated_at)
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
