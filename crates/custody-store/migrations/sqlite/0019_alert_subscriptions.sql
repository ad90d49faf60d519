-- Staff who agreed to hear of a site's alerts by e-mail or text message
-- (docs/design/0007-incidents.md): one row per person, site and channel, from a least severity.
-- A text message needs the number the person gave; it is deleted with the subscription.

CREATE TABLE alert_subscriptions (
    person_id    TEXT NOT NULL REFERENCES people (id),
    site_id      TEXT NOT NULL REFERENCES sites (id),
    channel      TEXT NOT NULL,
    phone        TEXT,
    min_severity TEXT NOT NULL,
    consented_at INTEGER NOT NULL,
    PRIMARY KEY (person_id, site_id, channel)
);
CREATE INDEX alert_subscriptions_site ON alert_subscriptions (site_id);

-- When an alert left unacknowledged was escalated: to everyone who agreed to hear of the
-- site's alerts, whatever the least severity they chose. Once per alert.
ALTER TABLE alerts ADD COLUMN escalated_at INTEGER;
