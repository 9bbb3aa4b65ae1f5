-- Event streaming to a broker (issue 18): with SLIPWAY_EVENTS_AMQP_URL set, the api publishes
-- every settled event to a topic exchange. An event reaches the outbox in the transaction that
-- settles it (this trigger), and leaves it only once the broker confirmed it: a broker outage
-- loses nothing, a crash between the two publishes it again (at least once; the message id is
-- the event's). The outbox fills only while streaming is on: `event_stream.enabled`, set by an
-- api that streams. Retention deletes old events, and their unpublished rows with them.
CREATE TABLE event_stream (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    enabled   boolean NOT NULL DEFAULT false
);
INSERT INTO event_stream DEFAULT VALUES;

CREATE TABLE event_outbox (
    id          bigserial PRIMARY KEY,
    event_id    uuid NOT NULL REFERENCES invocation_events (id) ON DELETE CASCADE,
    routing_key text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_outbox_by_event ON event_outbox (event_id);

-- The triggers' WHEN clauses keep the function out of the invocation path's PENDING writes and
-- of late rewrites: it runs once per event, when the event settles.
CREATE FUNCTION event_outbox_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT enabled FROM event_stream) THEN
        INSERT INTO event_outbox (event_id, routing_key, payload)
        VALUES (NEW.id, 'functions.' || NEW.function_id || '.' || NEW.type,
                jsonb_strip_nulls(to_jsonb(NEW) - 'owner_id'));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER invocation_events_settled_to_outbox
    AFTER INSERT ON invocation_events
    FOR EACH ROW WHEN (NEW.status <> 'PENDING')
    EXECUTE FUNCTION event_outbox_add();

CREATE TRIGGER invocation_events_settling_to_outbox
    AFTER UPDATE OF status ON invocation_events
    FOR EACH ROW WHEN (OLD.status = 'PENDING' AND NEW.status <> 'PENDING')
    EXECUTE FUNCTION event_outbox_add();
