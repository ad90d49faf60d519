-- Courier codes: the code a courier types at a kiosk, one a day. Only its keyed hash is kept,
-- so the kiosk's lookup is one indexed read and a copy of the database reveals no code. A
-- code stops working at valid_until (the end of its UTC day), when its courier is disabled or
-- is a courier no more.

CREATE TABLE courier_codes (
    code_hash   BYTEA PRIMARY KEY,
    person_id   TEXT NOT NULL REFERENCES people (id),
    valid_until BIGINT NOT NULL
);
CREATE INDEX courier_codes_expiry ON courier_codes (valid_until);
