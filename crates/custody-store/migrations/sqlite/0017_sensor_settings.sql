-- Sensor settings per bank (docs/design/0007-incidents.md): how long a door may stand open,
-- and the debounce rules that differ from each kind's default. The bank's agent is sent them
-- and applies them to its readings.

CREATE TABLE sensor_settings (
    bank_id                 TEXT PRIMARY KEY REFERENCES banks (id),
    door_left_open_after_ms INTEGER NOT NULL,
    set_at                  INTEGER NOT NULL
);

CREATE TABLE sensor_rules (
    bank_id   TEXT NOT NULL REFERENCES banks (id),
    kind      TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    window_ms INTEGER NOT NULL,
    quiet_ms  INTEGER NOT NULL,
    PRIMARY KEY (bank_id, kind)
);

-- The readings each device reported, by its journal counter: an agent sends a reading again
-- until it is acknowledged, and a reading that arrives twice is taken once.
CREATE TABLE sensor_readings (
    device_id   TEXT NOT NULL REFERENCES devices (id),
    counter     INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, counter)
);
