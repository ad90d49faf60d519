-- Sign-in links e-mailed to residents: the token and the browser that asked for it are stored
-- only as keyed hashes. A link works once (used_at is set by a conditional update), until
-- expires_at, and only in the browser that asked for it.

CREATE TABLE magic_links (
    token_hash   BLOB PRIMARY KEY,
    person_id    TEXT NOT NULL REFERENCES people (id),
    browser_hash BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER
);
