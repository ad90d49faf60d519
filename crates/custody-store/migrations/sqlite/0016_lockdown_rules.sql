-- Lockdown by policy (docs/design/0007-incidents.md): a site's rules, one per alert kind (or
-- 'any'), saying from which severity a new alert of that kind locks down its bank or the whole
-- site, in the unit of work that raises it.

CREATE TABLE lockdown_rules (
    site_id      TEXT NOT NULL REFERENCES sites (id),
    kind         TEXT NOT NULL,
    min_severity TEXT NOT NULL,
    scope        TEXT NOT NULL,
    set_at       INTEGER NOT NULL,
    PRIMARY KEY (site_id, kind)
);
