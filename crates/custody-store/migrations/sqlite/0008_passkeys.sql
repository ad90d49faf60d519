-- Passkeys (WebAuthn) and the state of ceremonies under way.
--
-- passkeys holds each registered passkey: its credential id, whose it is, and the passkey
-- itself (public key, signature counter, flags) as webauthn-rs serialises it. No secret is
-- stored: the private key never leaves the authenticator.
-- webauthn_ceremonies holds a registration or authentication begun and not yet answered: its
-- challenge lives here, server-side, and is taken (deleted) by the answer, so a challenge
-- is used once; unanswered ones lapse at expires_at.

CREATE TABLE passkeys (
    credential_id TEXT PRIMARY KEY,
    person_id     TEXT NOT NULL REFERENCES people (id),
    passkey       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX passkeys_person ON passkeys (person_id);

CREATE TABLE webauthn_ceremonies (
    id         TEXT PRIMARY KEY,
    person_id  TEXT NOT NULL REFERENCES people (id),
    kind       TEXT NOT NULL,
    state      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
