-- Aliases: a stable name for one version of a function (Lambda's aliases, Cloud Run's tags),
-- invoked at /api/v1/functions/invoke/{id}@{name}. A rollback moves the active version, never an
-- alias; retention never prunes a version an alias points at.
CREATE TABLE function_aliases (
    function_id uuid NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    deployment_id uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (function_id, name)
);

CREATE INDEX function_aliases_deployment ON function_aliases (deployment_id);

-- An instance of a version that is not the active one, started on demand when an alias or a
-- version number (`@3`) is invoked, and released when idle. It is kept apart from the
-- deployment's own instance columns, which belong to the deploy/rollback/wake lifecycle: a
-- rollback to this version starts its own instance and this one idles out.
-- `run_token` fences the job that starts it: a newer request replaces the token, and the older
-- run's writes then match nothing.
CREATE TABLE version_instances (
    deployment_id uuid PRIMARY KEY REFERENCES deployments (id) ON DELETE CASCADE,
    function_id uuid NOT NULL REFERENCES functions (id) ON DELETE CASCADE,
    state text NOT NULL CHECK (state IN ('starting', 'ready', 'failed')),
    run_token uuid NOT NULL,
    container_id text,
    endpoint text,
    reason text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    last_invoked_at timestamptz,
    release_enqueued_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'ready' OR endpoint IS NOT NULL)
);

CREATE INDEX version_instances_function ON version_instances (function_id);
CREATE INDEX version_instances_container ON version_instances (container_id)
    WHERE container_id IS NOT NULL;

-- The api caches qualified routes with the function's (hot_cache.rs): a change of an alias or of
-- a version instance announces the function, as changes of its deployments do.
CREATE FUNCTION slipway_notify_function_of_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('slipway_routes', COALESCE(NEW.function_id, OLD.function_id)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER function_aliases_route_changed
    AFTER INSERT OR UPDATE OR DELETE ON function_aliases
    FOR EACH ROW EXECUTE FUNCTION slipway_notify_function_of_row();

CREATE TRIGGER version_instances_route_changed
    AFTER INSERT OR UPDATE OF state, endpoint OR DELETE ON version_instances
    FOR EACH ROW EXECUTE FUNCTION slipway_notify_function_of_row();

-- A version's status or pruning changes what `@N` may reach.
CREATE TRIGGER deployments_version_route_changed
    AFTER UPDATE OF status, prune_started_at ON deployments
    FOR EACH ROW EXECUTE FUNCTION slipway_notify_function_of_row();
