-- An identical redeploy without a restart (issue 17): each deployment records the SHA-256 of
-- the spec its instance was last started with (pinned image, env, limits, read-only root). A new
-- version whose spec is the same as that of the instance serving takes that instance over in
-- the switch's transaction instead of starting another: same image, same configuration.
ALTER TABLE deployments ADD COLUMN instance_spec_sha256 text;
