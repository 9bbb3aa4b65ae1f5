-- Runtime controls (seed 004): disabling serving, and a log phase for restarts and recycles.

ALTER TABLE functions ADD COLUMN enabled boolean NOT NULL DEFAULT true;

ALTER TABLE deployment_logs DROP CONSTRAINT deployment_logs_phase_check;
ALTER TABLE deployment_logs ADD CONSTRAINT deployment_logs_phase_check
    CHECK (phase IN ('build', 'push', 'deploy', 'rollback', 'runtime'));
