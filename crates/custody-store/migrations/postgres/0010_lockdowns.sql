-- Lockdowns: a bank with a row here is locked down. While it is, the server issues no open
-- command for any of its compartments, whatever the credential or the caller. Engaging and
-- lifting are audited; the row keeps who engaged it and when, for the portal and the API.

CREATE TABLE lockdowns (
    bank_id    TEXT PRIMARY KEY REFERENCES banks (id),
    engaged_at BIGINT NOT NULL,
    engaged_by TEXT NOT NULL
);
