//! `rollback`: bring a superseded version back. Its digest must still be in the registry (a
//! local copy in the engine does not count: another runtime host could not start it; the check is
//! `start_and_switch`'s, as for every start); then it is started, traffic switches to it, and the
//! version it replaces is stopped. A rollback that fails
//! leaves the active version serving and says why in the target's log.

use std::sync::Arc;

use slipway_shared::{db, domain::PipelineStep, jobs::RollbackJob};
use tracing::{error, warn};

use super::{RunJob, StepError, claim, log_info, log_lines, update_failed};
use crate::{
    Environment,
    runtime::lifecycle::{Activation, discard_instance, start_and_switch},
};

const STEP: PipelineStep = PipelineStep::Rollback;
const PHASE: &str = STEP.phase();

impl RunJob for RollbackJob {
    #[tracing::instrument(name = "rollback", skip_all, fields(deployment_id = %self.deployment_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        let Some(deployment) = claim(&env, self.deployment_id, STEP).await? else {
            return Ok(());
        };
        if let Err(e) = rollback(&env, &deployment).await {
            if let StepError::LostClaim = e {
                warn!("another run of this rollback took over; stopping");
                return Ok(());
            }
            let reason = e.into_reason();
            error!(%reason, "rollback failed");
            discard_instance(&env, &deployment).await;
            let line = format!(
                "rollback to version {} failed: {reason}",
                deployment.version
            );
            record_failed_rollback(&env, &deployment, &line).await?;
            log_lines(
                &env,
                deployment.id,
                PHASE,
                vec![("error".into(), line.clone())],
            )
            .await;
            // The job fails with the reason, where operators look for failures.
            anyhow::bail!("{line}");
        }
        Ok(())
    }
}

/// The rollback was an update of the function: its failure shows in the last update status.
async fn record_failed_rollback(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    reason: &str,
) -> anyhow::Result<()> {
    let mut tx = env.pool.begin().await?;
    db::functions::lock(&mut tx, deployment.function_id).await?;
    update_failed(&mut tx, deployment.function_id, deployment.id, reason).await?;
    tx.commit().await?;
    Ok(())
}

async fn rollback(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
) -> Result<(), StepError> {
    if deployment.pruned_at.is_some() {
        return Err(StepError::Permanent(format!(
            "version {} is past the retention window; its image was removed",
            deployment.version
        )));
    }
    log_info(
        env,
        deployment.id,
        PHASE,
        format!("rolling back to version {}", deployment.version),
    )
    .await;
    start_and_switch(env, deployment, PHASE, Activation::Reinstate).await
}
