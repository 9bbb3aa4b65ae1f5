-- Deployments with their function's name: one by id (optionally only the owner's), or a page of
-- one function's history, newest first.
SELECT
    d.id,
    d.function_id,
    f.name AS function_name,
    f.owner_id,
    d.version,
    d.archive_key,
    d.archive_sha256,
    d.archive_bytes,
    d.env,
    d.status AS "status: DeploymentStatus",
    d.is_active,
    d.image_tag,
    d.image_digest,
    d.runtime_endpoint,
    d.container_id,
    d.error,
    d.created_at,
    d.build_started_at,
    d.built_at,
    d.pushed_at,
    d.deployed_at,
    d.pruned_at,
    d.git_binding_id,
    d.commit_sha,
    d.commit_message,
    d.committed_at,
    d.superseded_by,
    d.run_token,
    d.build_reused_from,
    d.hold
FROM deployments d
JOIN functions f ON f.id = d.function_id
WHERE ($1::uuid IS NULL OR d.id = $1)
  AND ($2::uuid IS NULL OR d.function_id = $2)
  AND ($3::uuid IS NULL OR f.owner_id = $3)
ORDER BY d.version DESC
LIMIT $4 OFFSET $5
