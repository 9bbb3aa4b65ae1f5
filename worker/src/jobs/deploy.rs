//! `deploy`: start the recorded digest (never the tag) with the deployment's env and `$PORT`,
//! wait until it answers, then switch traffic in one transaction (previous active → inactive,
//! this → active), and only after a drain stop the previous version's instance. How is
//! `runtime::lifecycle`'s; this job only decides that a new version goes live.

use std::sync::Arc;

use slipway_shared::{db, domain::PipelineStep, jobs::DeployJob};

use super::{RunJob, StepError, run_step};
use crate::{
    Environment,
    runtime::lifecycle::{Activation, discard_instance, overtaken, start_and_switch},
};

const STEP: PipelineStep = PipelineStep::Deploy;
const PHASE: &str = STEP.phase();

impl RunJob for DeployJob {
    #[tracing::instrument(name = "deploy", skip_all, fields(deployment_id = %self.deployment_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        run_step(
            env,
            self.deployment_id,
            STEP,
            |env, deployment| async move {
                let outcome = deploy(&env, &deployment).await;
                if outcome.is_err() {
                    // The new instance never took traffic: nothing may keep running on its behalf.
                    discard_instance(&env, &deployment).await;
                }
                outcome
            },
        )
        .await
    }
}

async fn deploy(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
) -> Result<(), StepError> {
    // Checked before anything starts, and again under the lock when traffic would move.
    let mut conn = env.pool.acquire().await?;
    overtaken(&mut conn, deployment).await?;
    drop(conn);
    start_and_switch(env, deployment, PHASE, Activation::NewVersion).await
}
