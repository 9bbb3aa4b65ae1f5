-- Invocation events (seed 003): one row per invocation through the proxy, written in batches
-- off the request path (a crash loses at most the batch in memory).
CREATE TABLE invocation_events (
    id                  uuid PRIMARY KEY,
    function_id         uuid NOT NULL REFERENCES functions (id),
    owner_id            uuid NOT NULL REFERENCES users (id),
    deployment_id       uuid REFERENCES deployments (id),
    version             integer,
    type                text NOT NULL DEFAULT 'FUNCTION_INVOCATION'
                        CHECK (type IN ('FUNCTION_INVOCATION', 'USER_CREATED', 'ORDER_PLACED',
                                        'PAYMENT_PROCESSED', 'ITEM_SHIPPED', 'OTHER')),
    status              text NOT NULL CHECK (status IN ('PENDING', 'SUCCESS', 'FAILURE')),
    request_id          text NOT NULL,
    method              text NOT NULL,
    path                text NOT NULL,
    status_code         integer,
    failure_reason      text,
    request_bytes       bigint NOT NULL DEFAULT 0 CHECK (request_bytes >= 0),
    response_bytes      bigint CHECK (response_bytes >= 0),
    processing_time_ms  double precision CHECK (processing_time_ms >= 0),
    created_at          timestamptz NOT NULL,
    completed_at        timestamptz,
    CHECK ((status = 'PENDING') = (completed_at IS NULL))
);
-- Listings: an owner's events newest first, optionally one function's or one status's.
CREATE INDEX invocation_events_by_owner ON invocation_events (owner_id, created_at DESC, id);
CREATE INDEX invocation_events_by_function ON invocation_events (function_id, created_at DESC, id);
-- Retention (a scheduler sweep) is still to come: events are kept until then.
