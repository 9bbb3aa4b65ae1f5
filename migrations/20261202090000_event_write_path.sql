-- The invocation events' write path (issue 17): under load (15k invocations/s through the proxy)
-- the database spent most of its time on each event row's checks rather than on storing it.
--
-- 1. The foreign keys go. Each was a query per row at commit, and the one to `functions` took a
--    FOR KEY SHARE lock on the function's row for every invocation, beside the invocations' own
--    `last_invoked_at` marks on that row. Events are written only by Slipway, from a route it has
--    just resolved (or, for custom events, a function the caller owns), and functions, users and
--    deployments are never deleted (deletion is a status; purge keeps the row), so the keys
--    never refused anything; a batch they did refuse would have been retried whole, forever.
ALTER TABLE invocation_events
    DROP CONSTRAINT invocation_events_function_id_fkey,
    DROP CONSTRAINT invocation_events_owner_id_fkey,
    DROP CONSTRAINT invocation_events_deployment_id_fkey;

-- 2. The outbox triggers run once per statement (a batch), not once per row: the same rows reach
--    the outbox, with one PL/pgSQL call per batch. Transition tables cannot go with a column list
--    or a WHEN clause, so the conditions moved into the queries.
DROP TRIGGER invocation_events_settled_to_outbox ON invocation_events;
DROP TRIGGER invocation_events_settling_to_outbox ON invocation_events;
DROP FUNCTION event_outbox_add();

CREATE FUNCTION event_outbox_add_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT enabled FROM event_stream) THEN
        INSERT INTO event_outbox (event_id, routing_key, payload)
        SELECT settled.id, 'functions.' || settled.function_id || '.' || settled.type,
               jsonb_strip_nulls(to_jsonb(settled) - 'owner_id')
        FROM inserted AS settled
        WHERE settled.status <> 'PENDING';
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION event_outbox_add_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT enabled FROM event_stream) THEN
        INSERT INTO event_outbox (event_id, routing_key, payload)
        SELECT settled.id, 'functions.' || settled.function_id || '.' || settled.type,
               jsonb_strip_nulls(to_jsonb(settled) - 'owner_id')
        FROM updated AS settled
        JOIN previous ON previous.id = settled.id
        WHERE previous.status = 'PENDING' AND settled.status <> 'PENDING';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER invocation_events_settled_to_outbox
    AFTER INSERT ON invocation_events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_add_inserted();

CREATE TRIGGER invocation_events_settling_to_outbox
    AFTER UPDATE ON invocation_events
    REFERENCING OLD TABLE AS previous NEW TABLE AS updated
    FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_add_updated();
