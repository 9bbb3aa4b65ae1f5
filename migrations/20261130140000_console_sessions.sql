-- Operators' console sessions (`/ops/`). Signing in with an operator key makes one; the browser
-- holds only a random token, the table only its SHA-256. A session ends when it expires, when
-- the operator signs out, or with the key it was made from (revoked or removed).
CREATE TABLE console_sessions (
    token_sha256 bytea PRIMARY KEY,
    key_id uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
