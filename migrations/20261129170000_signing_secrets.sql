-- Request signing with a secret that never travels (README, "Signed requests"). Every key made
-- from now on has a signing secret, shown once beside the key and never sent on a request. The
-- server must read it back to check HMACs, so it keeps it sealed with SLIPWAY_SECRETS_KEY
-- (AES-256-GCM, bound to the key's prefix): a copy of this table signs nothing. Keys made before
-- have none: they sign with the deprecated v1 scheme (HMAC under the bearer key) until their
-- owners rotate them.
ALTER TABLE api_keys ADD COLUMN signing_secret text
    CHECK (signing_secret IS NULL OR length(signing_secret) BETWEEN 16 AND 1024);
