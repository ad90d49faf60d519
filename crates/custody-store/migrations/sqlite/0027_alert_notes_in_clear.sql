-- Every `custody` command first counts what is still stored in clear (people's words on alerts
-- among it); without this index that count read the whole alert timeline each time. It holds
-- only the rows the count and the sealing pass look for: a person's words from before they
-- were sealed, none once they are.
CREATE INDEX alert_events_in_clear ON alert_events (alert_id, seq)
    WHERE note IS NOT NULL AND what IN ('note', 'acknowledged', 'resolved');
