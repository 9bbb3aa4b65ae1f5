-- Nonces of signed requests, so a captured signature cannot be sent twice. A row is needed only
-- while its request's timestamp is inside the accepted skew: after that the timestamp alone
-- refuses a replay, so rows older than the window are deleted as new ones arrive.
CREATE TABLE request_nonces (
    api_key_id  uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    nonce       text NOT NULL CHECK (nonce ~ '^[A-Za-z0-9_-]{16,128}$'),
    -- The request's own X-Slipway-Timestamp, which decides when the row may go.
    signed_at   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, nonce)
);
CREATE INDEX request_nonces_by_signed_at ON request_nonces (signed_at);
