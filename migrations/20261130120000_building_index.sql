-- Builds holding a slot: counted per owner when a build claims one, and in total at each metrics
-- scrape. Few rows are ever `building`, so the index stays tiny.
CREATE INDEX deployments_building ON deployments (build_started_at) WHERE status = 'building';
