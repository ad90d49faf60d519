-- Offline operation. Each pickup code also gets a keyed hash under its bank's offline key,
-- computed when the code is drawn, since the clear code is never kept: the bank's agent is
-- sent these verifiers and checks a typed code against them while the server is unreachable.
-- Codes drawn before this migration have none and work only online.
--
-- Every use an agent reports on reconnect is recorded here once, by the agent's own id for it,
-- so a report sent twice (its acknowledgement lost with the link) is consumed once.

ALTER TABLE pickup_codes ADD COLUMN offline_verifier BYTEA;

CREATE TABLE offline_uses (
    device_id   TEXT NOT NULL REFERENCES devices (id),
    use_id      TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, use_id)
);
