-- The words staff give on an alert (a note, a reason to acknowledge or resolve it) are sealed
-- under the writer's own data key, as their words in the audit log are: erasing them makes
-- the words unreadable. The system's own notes on a timeline (the channel a notification went
-- by, the bank a lockdown closed) name nobody and stay in note. Staff's notes from before wait
-- in note until the first `custody` command after the upgrade seals them in place.
ALTER TABLE alert_events ADD COLUMN note_sealed BYTEA;
