-- Deploys from git pushes: bindings from a provider's repository and branch to a function, the
-- webhook deliveries already handled, and deployments whose archive is fetched from a commit.

CREATE TABLE git_bindings (
    id              uuid PRIMARY KEY,
    function_id     uuid NOT NULL REFERENCES functions (id),
    provider        text NOT NULL CHECK (provider IN ('github', 'gitlab', 'gitea')),
    -- As the provider names it in its payloads: `owner/name`, or GitLab's `group/sub/project`.
    repository      text NOT NULL CHECK (length(repository) BETWEEN 1 AND 256),
    clone_url       text NOT NULL,
    branch          text NOT NULL,
    -- '' is the repository's root.
    subdirectory    text NOT NULL DEFAULT '',
    -- The webhook secret is needed in clear to check HMACs, so it cannot be stored hashed: it is
    -- sealed (AES-256-GCM under SLIPWAY_SECRETS_KEY, `shared::secrets`), as are the clone
    -- credentials (`{"username", "password"}` or `{"ssh_key", "known_hosts"}` as JSON). The api
    -- never returns either.
    secret_sealed       text NOT NULL CHECK (secret_sealed LIKE 'v1:%'),
    credentials_sealed  text CHECK (credentials_sealed LIKE 'v1:%'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (function_id, provider, repository, branch, subdirectory)
);
-- A delivery is matched by provider and repository (case-insensitively, as providers name them)
-- before its signature can be checked.
CREATE INDEX git_bindings_by_repository ON git_bindings (provider, lower(repository));

-- Only deliveries whose signature checked out are stored, so a provider's redelivery (same id)
-- is recognised and changes nothing.
CREATE TABLE webhook_deliveries (
    provider      text NOT NULL CHECK (provider IN ('github', 'gitlab', 'gitea')),
    delivery_id   text NOT NULL CHECK (length(delivery_id) BETWEEN 1 AND 200),
    event         text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    -- What the first delivery answered, returned again to a redelivery.
    response      jsonb NOT NULL,
    PRIMARY KEY (provider, delivery_id)
);

-- A deployment from a push exists from the moment the push is accepted (`fetching`), before its
-- archive does; a newer push can overtake it (`superseded`, final) before it ever serves.
ALTER TABLE deployments
    ALTER COLUMN archive_key DROP NOT NULL,
    ALTER COLUMN archive_sha256 DROP NOT NULL,
    ALTER COLUMN archive_bytes DROP NOT NULL,
    ADD COLUMN git_binding_id uuid REFERENCES git_bindings (id) ON DELETE SET NULL,
    ADD COLUMN commit_sha text CHECK (commit_sha ~ '^[0-9a-f]{40}([0-9a-f]{24})?$'),
    -- The ref's value before the push, as the provider reported it: orders deliveries that arrive
    -- out of order.
    ADD COLUMN parent_sha text CHECK (parent_sha ~ '^[0-9a-f]{40}([0-9a-f]{24})?$'),
    ADD COLUMN committed_at timestamptz,
    ADD COLUMN commit_message text,
    ADD COLUMN superseded_by uuid REFERENCES deployments (id),
    DROP CONSTRAINT deployments_status_check,
    ADD CONSTRAINT deployments_status_check CHECK (status IN
        ('fetching', 'building', 'pushing', 'deploying', 'active', 'inactive', 'failed', 'superseded')),
    ADD CONSTRAINT deployments_archive_once_fetched CHECK (
        status IN ('fetching', 'superseded', 'failed')
        OR (archive_key IS NOT NULL AND archive_sha256 IS NOT NULL AND archive_bytes IS NOT NULL)),
    ADD CONSTRAINT deployments_source_is_a_commit CHECK (
        status <> 'fetching' OR commit_sha IS NOT NULL);

CREATE INDEX deployments_by_binding ON deployments (git_binding_id, version DESC)
    WHERE git_binding_id IS NOT NULL;

ALTER TABLE deployment_logs DROP CONSTRAINT deployment_logs_phase_check;
ALTER TABLE deployment_logs ADD CONSTRAINT deployment_logs_phase_check
    CHECK (phase IN ('source', 'build', 'push', 'cache-warm', 'deploy', 'rollback', 'runtime', 'hook'));
