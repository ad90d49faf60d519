-- Second factors and sessions that know how their owner signed in.
--
-- sessions is rebuilt: each session gains a public id (for "your sessions" lists, never the
-- token), the time and kind of the second factor last proven in it (NULL: password only),
-- and where it was started. Sessions from before carry none of that, so they end here and
-- everyone signs in again once.
--
-- totp_factors holds each person's authenticator-app seed, sealed under the master key, and
-- the time step of the last code accepted: a code of that step or an earlier one is refused.
-- failures counts wrong codes since the last right one; past a limit the app is locked.
-- totp_enrolments holds a seed being set up, until the person types its first valid code; a
-- working app stays in totp_factors meanwhile.
-- recovery_codes holds keyed hashes of single-use recovery codes.

DROP TABLE sessions;
CREATE TABLE sessions (
    token_hash   BLOB PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    person_id    TEXT NOT NULL REFERENCES people (id),
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    factor_at    INTEGER,
    factor       TEXT,
    source       TEXT NOT NULL,
    user_agent   TEXT NOT NULL,
    CHECK ((factor_at IS NULL) = (factor IS NULL))
);
CREATE INDEX sessions_person ON sessions (person_id);

CREATE TABLE totp_factors (
    person_id    TEXT PRIMARY KEY REFERENCES people (id),
    sealed_seed  BLOB NOT NULL,
    confirmed_at INTEGER NOT NULL,
    last_step    INTEGER NOT NULL,
    failures     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE totp_enrolments (
    person_id   TEXT PRIMARY KEY REFERENCES people (id),
    sealed_seed BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE recovery_codes (
    person_id  TEXT NOT NULL REFERENCES people (id),
    code_hash  BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER,
    PRIMARY KEY (person_id, code_hash)
);
