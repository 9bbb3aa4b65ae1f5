-- The api caches where each function is served from and who each key belongs to, so an
-- invocation costs no database round trip. Every change that could make a cached entry wrong
-- announces itself here, in the transaction that makes it (a NOTIFY is delivered at commit, and
-- never for a rolled-back change): the api drops what it cached (api/src/hot_cache.rs).

-- A function's route: its status, state, enabled flag or owner changed, or it went away.
CREATE FUNCTION slipway_notify_function_route() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('slipway_routes', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER functions_route_changed
    AFTER UPDATE OF status, state, state_reason, enabled, owner_id OR DELETE ON functions
    FOR EACH ROW EXECUTE FUNCTION slipway_notify_function_route();

-- The active deployment or its endpoint changed (a deploy, a rollback, a restart, an idle stop).
CREATE FUNCTION slipway_notify_deployment_route() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('slipway_routes', OLD.function_id::text);
    ELSIF NEW.is_active OR OLD.is_active
          OR NEW.runtime_endpoint IS DISTINCT FROM OLD.runtime_endpoint THEN
        PERFORM pg_notify('slipway_routes', NEW.function_id::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER deployments_route_changed
    AFTER UPDATE OF is_active, runtime_endpoint, version OR DELETE ON deployments
    FOR EACH ROW EXECUTE FUNCTION slipway_notify_deployment_route();

-- A key revoked or removed, or its owner's rights changed: keys are few and change rarely, so
-- the api forgets every key it cached.
CREATE FUNCTION slipway_notify_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('slipway_keys', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_changed
    AFTER UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION slipway_notify_keys();

CREATE TRIGGER users_rights_changed
    AFTER UPDATE OF operator OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION slipway_notify_keys();
