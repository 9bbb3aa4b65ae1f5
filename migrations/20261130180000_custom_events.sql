-- Custom events (issue 18, seed 003's `POST /api/v3/events`): a caller records an event of its
-- own (`USER_CREATED`, `ORDER_PLACED`, …) for one of its functions, listed beside invocation
-- events with the same filters. A custom event has data and no request line; an invocation
-- event has a request line and no data. `FUNCTION_INVOCATION` is the platform's alone.
ALTER TABLE invocation_events
    ADD COLUMN source text NOT NULL DEFAULT 'invocation' CHECK (source IN ('invocation', 'custom')),
    ADD COLUMN data jsonb,
    ALTER COLUMN method DROP NOT NULL,
    ALTER COLUMN path DROP NOT NULL,
    ADD CONSTRAINT invocation_events_shape_of_source CHECK (
        CASE source
            WHEN 'invocation' THEN method IS NOT NULL AND path IS NOT NULL AND data IS NULL
            ELSE method IS NULL AND path IS NULL AND data IS NOT NULL
                 AND type <> 'FUNCTION_INVOCATION' AND status <> 'PENDING'
        END);
