-- Redeploys without a build (issue 17): a successful build records what went into it (the
-- SHA-256 of its prepared context: the archive after .dockerignore and `# syntax=` handling,
-- plus the build settings), and a later deployment of the same function with the same inputs
-- reuses its image, after checking the digest is still in the registry. `build_reused_from`
-- names the deployment whose image was reused; history shows it.
ALTER TABLE deployments
    ADD COLUMN build_inputs_sha256 text,
    ADD COLUMN build_reused_from uuid REFERENCES deployments (id) ON DELETE SET NULL;

CREATE INDEX deployments_build_inputs ON deployments (function_id, build_inputs_sha256)
    WHERE build_inputs_sha256 IS NOT NULL AND image_digest IS NOT NULL;
