-- The rest of what reaches a person is sealed, like their address and name (migration 23).
-- Under the person's own data key: where a session was started from (address and browser),
-- the phone number given for alerts by text message, and a badge's hint (its number's last
-- four hex digits). Under the installation's tracking key, bound to the parcel: a parcel's
-- tracking number (a parcel may have no recipient yet, and the carrier's number is the
-- carrier's too); it is dropped when the recipient is erased.
--
-- Sessions are short-lived and hold nothing to keep: every session from before ends, and
-- people sign in again. Phone numbers, hints and tracking numbers from before wait in
-- clear_phone, clear_hint and clear_tracking_ref until the first `custody` command after the
-- upgrade seals them in place; each is NULL for every sealed row.
DELETE FROM sessions;
ALTER TABLE sessions DROP COLUMN source;
ALTER TABLE sessions DROP COLUMN user_agent;
ALTER TABLE sessions ADD COLUMN client_sealed BYTEA NOT NULL DEFAULT '\x'::bytea;

ALTER TABLE alert_subscriptions RENAME COLUMN phone TO clear_phone;
ALTER TABLE alert_subscriptions ADD COLUMN phone_sealed BYTEA;

ALTER TABLE badges RENAME COLUMN hint TO clear_hint;
ALTER TABLE badges ALTER COLUMN clear_hint DROP NOT NULL;
ALTER TABLE badges ADD COLUMN hint_sealed BYTEA;
CREATE INDEX badges_in_clear ON badges (id) WHERE clear_hint IS NOT NULL;

ALTER TABLE parcels RENAME COLUMN tracking_ref TO clear_tracking_ref;
ALTER TABLE parcels ALTER COLUMN clear_tracking_ref DROP NOT NULL;
ALTER TABLE parcels ADD COLUMN tracking_sealed BYTEA;
CREATE INDEX parcels_in_clear ON parcels (id) WHERE clear_tracking_ref IS NOT NULL;
