-- A function of one owner with its active deployment: by id (tombstones included, their history
-- stays readable), by name, or all of them (live functions only, like the name lookup).
SELECT
    f.id,
    f.owner_id,
    f.name,
    f.status AS "status: FunctionStatus",
    f.skip_signing,
    f.env,
    f.last_version,
    f.created_at,
    f.updated_at,
    f.deleted_at,
    f.state,
    f.state_reason,
    f.last_update_status,
    f.last_update_status_reason,
    f.on_tag_overwrite,
    f.image_drift,
    f.verified_at,
    f.enabled,
    f.lifecycle,
    f.memory_mb,
    f.cpu_millis,
    f.pids,
    f.read_only_root,
    f.description,
    f.template,
    f.handler,
    d.container_id AS "container_id?",
    d.runtime_endpoint AS "runtime_endpoint?",
    d.version AS "active_version?",
    d.image_tag AS "image_tag?",
    d.image_digest AS "image_digest?"
FROM functions f
LEFT JOIN deployments d ON d.function_id = f.id AND d.is_active
WHERE f.owner_id = $1
  AND ($2::uuid IS NULL OR f.id = $2)
  AND ($3::text IS NULL OR f.name = $3)
  AND ($2::uuid IS NOT NULL OR f.status <> 'deleted')
ORDER BY f.created_at DESC, f.id
