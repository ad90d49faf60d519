-- Each consent a person gave or withdrew to hear of a site's alerts, in order: what they
-- agreed to and when, for their export and for the site to show (GDPR Art. 7(1)). The current
-- consents stay in alert_subscriptions; this is their history. Erasing the person deletes it
-- (the log keeps the same facts under their id alone).
CREATE TABLE consent_history (
    person_id    TEXT NOT NULL REFERENCES people (id),
    site_id      TEXT NOT NULL REFERENCES sites (id),
    channel      TEXT NOT NULL,
    change       TEXT NOT NULL CHECK (change IN ('given', 'withdrawn')),
    min_severity TEXT,
    at           BIGINT NOT NULL
);
CREATE INDEX consent_history_person ON consent_history (person_id, at);

-- The consents standing at the upgrade, as given when they were.
INSERT INTO consent_history (person_id, site_id, channel, change, min_severity, at)
SELECT person_id, site_id, channel, 'given', min_severity, consented_at FROM alert_subscriptions;
