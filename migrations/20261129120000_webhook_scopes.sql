-- A delivery id is remembered per scope: the binding whose URL received it, or on the shared
-- URL the bindings whose secret checked out. One tenant can then neither learn another's
-- delivery ids nor squat one so that the real push is answered `duplicate`.
ALTER TABLE webhook_deliveries ADD COLUMN scope text NOT NULL DEFAULT '';
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_pkey;
ALTER TABLE webhook_deliveries ADD PRIMARY KEY (provider, scope, delivery_id);

-- The shared URL (/api/webhooks/{provider}) checks a delivery against every binding of the
-- repository it names. Only bindings made before each binding had a URL of its own are served
-- there, so nobody can add candidates and make each delivery cost more.
ALTER TABLE git_bindings ADD COLUMN shared_url boolean NOT NULL DEFAULT false;
UPDATE git_bindings SET shared_url = true;
