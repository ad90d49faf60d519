-- Doors opened without a parcel's own credential (remote opens, bulk opens, retrievals): one
-- row per door, counted over a sliding window per opener and per bank, so that many small
-- opens add up to what one bulk open may do (DESIGN.md §4 invariant 11, docs/SECURITY.md).
-- `approved_by` names the second person when one approved it.

CREATE TABLE remote_opens (
    opener      TEXT NOT NULL,
    bank_id     TEXT NOT NULL REFERENCES banks (id),
    opened_at   BIGINT NOT NULL,
    approved_by TEXT
);
CREATE INDEX remote_opens_opener ON remote_opens (opener, opened_at);
CREATE INDEX remote_opens_bank ON remote_opens (bank_id, opened_at);

-- One row per opener and per bank, updated by every unit that counts their opens: the update
-- holds the row until the unit ends, so two units cannot both count the same window and both
-- find room in it (on PostgreSQL; SQLite has one writer).
CREATE TABLE remote_open_heads (
    key   TEXT PRIMARY KEY,
    opens BIGINT NOT NULL
);
