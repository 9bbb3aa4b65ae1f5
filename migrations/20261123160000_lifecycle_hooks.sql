-- Lifecycle hooks (seed 002) per function, and log phases for hook calls and cache-warm pulls.

-- {"initializer": {"timeout_s": N}, "pre_stop": {"timeout_s": N}}, either optional; NULL = none.
ALTER TABLE functions ADD COLUMN lifecycle jsonb
    CHECK (lifecycle IS NULL OR jsonb_typeof(lifecycle) = 'object');

ALTER TABLE deployment_logs DROP CONSTRAINT deployment_logs_phase_check;
ALTER TABLE deployment_logs ADD CONSTRAINT deployment_logs_phase_check
    CHECK (phase IN ('build', 'push', 'cache-warm', 'deploy', 'rollback', 'runtime', 'hook'));
