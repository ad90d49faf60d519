-- The key-encryption key (KEK) new subject keys are wrapped under, as every process on this
-- database must agree: a process still holding an older KEK (a server started before a
-- rotation) refuses to wrap a new key rather than wrap it under a KEK about to be retired.
-- The row is taken (locked) by every unit that wraps a new key and by every change to it, so
-- a retirement that finds no key naming an old KEK cannot race a unit still wrapping under
-- it. Set by the first process that wraps a key, and by each rotation.
CREATE TABLE current_kek (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    kek TEXT NOT NULL
);
