-- Keys created through the API can carry a label, so a user can tell "ci" from "laptop" in a
-- listing that only shows prefixes.
ALTER TABLE api_keys ADD COLUMN name text CHECK (length(name) BETWEEN 1 AND 64);
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);
