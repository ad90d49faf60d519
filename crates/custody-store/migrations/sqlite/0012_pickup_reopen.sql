-- A grace re-open: shortly after a pickup the same code opens the now empty compartment once
-- more (a bag left behind). reopened_at records that it did, so it happens once.

ALTER TABLE pickup_codes ADD COLUMN reopened_at INTEGER;
