-- Fencing for the jobs of a deployment's pipeline. Each run of a job claims the deployment by
-- writing a fresh token, and every write it makes is conditional on still holding it: a run
-- that a re-delivered copy of its job overtook (a missed heartbeat re-runs a job beside the
-- original) stops at its next write instead of undoing the newer run's work.
ALTER TABLE deployments ADD COLUMN run_token uuid;
