-- Idempotency-Key records: the first answer to a mutating request, replayed to retries of the
-- same request for 24 hours. Scoped per user; rows past their lifetime are ignored and replaced
-- by the next request using the key.
CREATE TABLE idempotency_keys (
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 of method, path and body: the same key on a different request is refused.
    request_hash     bytea NOT NULL CHECK (length(request_hash) = 32),
    -- Changes on every claim, so a stale handler cannot complete or release a newer claim.
    claim_id         uuid NOT NULL,
    -- NULL while the first request is still running.
    response_status  smallint CHECK (response_status BETWEEN 100 AND 599),
    response_type    text,
    response_body    bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    PRIMARY KEY (user_id, key),
    CHECK ((completed_at IS NULL) = (response_status IS NULL)),
    CHECK ((completed_at IS NULL) = (response_body IS NULL))
);
