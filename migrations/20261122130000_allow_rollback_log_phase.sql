-- Rollbacks write to the log of the deployment they bring back.
ALTER TABLE deployment_logs DROP CONSTRAINT deployment_logs_phase_check;
ALTER TABLE deployment_logs ADD CONSTRAINT deployment_logs_phase_check
    CHECK (phase IN ('build', 'push', 'deploy', 'rollback'));
