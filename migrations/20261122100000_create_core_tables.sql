-- Users, API keys, functions, deployments and build logs: the spine of Slipway.
-- The job tables belong to apalis-postgres and live in its own schema (`apalis`), migrated by it.

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Keys are shown once, at creation; only a SHA-256 of the whole key is kept. The prefix lets a
-- user recognise a key in listings without it being usable.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    prefix      text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE functions (
    id            uuid PRIMARY KEY,
    owner_id      uuid NOT NULL REFERENCES users (id),
    name          text NOT NULL,
    status        text NOT NULL DEFAULT 'init'
                  CHECK (status IN ('init', 'building', 'active', 'pending_deletion', 'deleted')),
    skip_signing  boolean NOT NULL DEFAULT false,
    env           jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(env) = 'object'),
    -- Versions are handed out from this counter under the function's row lock, so a version
    -- number is never reused, even after its deployment fails.
    last_version  integer NOT NULL DEFAULT 0 CHECK (last_version >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name)
);

CREATE TABLE deployments (
    id                uuid PRIMARY KEY,
    function_id       uuid NOT NULL REFERENCES functions (id),
    version           integer NOT NULL CHECK (version > 0),
    archive_key       text NOT NULL,
    archive_sha256    text NOT NULL CHECK (archive_sha256 ~ '^[0-9a-f]{64}$'),
    archive_bytes     bigint NOT NULL CHECK (archive_bytes > 0),
    env               jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(env) = 'object'),
    status            text NOT NULL
                      CHECK (status IN ('building', 'pushing', 'deploying', 'active', 'inactive', 'failed')),
    is_active         boolean NOT NULL DEFAULT false,
    image_tag         text,
    image_digest      text CHECK (image_digest ~ '^sha256:[0-9a-f]{64}$'),
    -- Where the running container answers (host:port) and which container it is, while it runs.
    runtime_endpoint  text,
    container_id      text,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    build_started_at  timestamptz,
    built_at          timestamptz,
    pushed_at         timestamptz,
    deployed_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (function_id, version),
    CHECK (is_active = (status = 'active')),
    -- An active deployment always runs a pinned digest somewhere reachable.
    CHECK (status <> 'active' OR (image_digest IS NOT NULL AND runtime_endpoint IS NOT NULL)),
    CHECK (status <> 'failed' OR error IS NOT NULL)
);

-- Exactly one active deployment per function, enforced here and not only in code.
CREATE UNIQUE INDEX deployments_one_active_per_function ON deployments (function_id) WHERE is_active;
CREATE INDEX deployments_by_function_version ON deployments (function_id, version DESC);

CREATE TABLE deployment_logs (
    id             bigserial PRIMARY KEY,
    deployment_id  uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    phase          text NOT NULL CHECK (phase IN ('build', 'push', 'deploy')),
    stream         text NOT NULL CHECK (stream IN ('step', 'stdout', 'stderr', 'error', 'info')),
    message        text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deployment_logs_by_deployment ON deployment_logs (deployment_id, id);
