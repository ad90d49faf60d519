-- A carrier may announce a parcel for an address that belongs to no resident of the site. The
-- carrier gets the same answer as for anyone else (it must not learn who lives where), and the
-- parcel is kept with no recipient for the site's staff to address or send back
-- (docs/SECURITY.md, "Answers tell the truth and nothing more").
ALTER TABLE parcels ALTER COLUMN recipient_id DROP NOT NULL;
CREATE INDEX parcels_unaddressed ON parcels (site_id, created_at) WHERE recipient_id IS NULL;
