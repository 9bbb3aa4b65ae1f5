-- The pipeline step a run claimed the deployment for (`PipelineStep::rank`). Cache-warm and
-- deploy both run while a deployment is `deploying`: without the step, a re-delivered cache-warm
-- would take over from the deploy it already handed on to, and the deployment would stall.
ALTER TABLE deployments ADD COLUMN run_step smallint;
