//! `runtime`: restart or recycle the instance of a function's active version (seed 004). The
//! recorded digest is verified at the registry first and the result applied to the function
//! (drift reported; a lost image fails it and nothing restarts). Then the old container goes and
//! a fresh one starts from `image@digest` on the same endpoint, so routing does not change;
//! a recycle also drops the cached image and pulls it again. PreStop is called before the old
//! instance stops and the Initializer before the new one counts as started.

use std::sync::Arc;

use anyhow::Context;
use slipway_shared::{
    db,
    domain::{ServingEvent, ServingState},
    jobs::{RuntimeAction, RuntimeJob},
};
use tracing::warn;

use super::{
    RunJob, StepError, cache_warm, log_info, log_lines, recorded_endpoint, recorded_image, verify,
    with_retries,
};
use crate::{
    Environment, hooks,
    runtime::lifecycle::{runtime_step, start_instance},
};

const PHASE: &str = "runtime";

impl RunJob for RuntimeJob {
    #[tracing::instrument(name = "runtime", skip_all, fields(function_id = %self.function_id, action = ?self.action))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        let deployment = {
            let mut conn = env.pool.acquire().await?;
            let Some(active) =
                db::deployments::active_for_function(&mut conn, self.function_id).await?
            else {
                warn!("no active version; nothing to restart");
                return Ok(());
            };
            db::deployments::get(&mut conn, active.id)
                .await?
                .context("the active deployment vanished")?
        };
        if let Err(e) = replace_instance(&env, &deployment, &self).await {
            let reason = e.into_reason();
            let line = format!("{:?} failed: {reason}", self.action).to_lowercase();
            log_lines(&env, deployment.id, PHASE, vec![("error".into(), line)]).await;
        }
        Ok(())
    }
}

async fn replace_instance(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    job: &RuntimeJob,
) -> Result<(), StepError> {
    let (image, digest) = recorded_image(deployment)?;
    let endpoint = recorded_endpoint(deployment)?;

    let serving = verify::verify_and_record(env, deployment, &image, &digest).await?;
    // A function whose instance failed (its memory) comes back with a fresh one; one whose
    // image is gone does not.
    if serving.state == ServingState::Failed && !serving.failed_by_instance() {
        return Err(StepError::Permanent(format!(
            "not restarted: the function is Failed ({})",
            serving.state_reason.unwrap_or_default()
        )));
    }

    let lifecycle = {
        let mut conn = env.pool.acquire().await?;
        db::functions::lifecycle(&mut conn, deployment.function_id).await?
    };
    let started = tokio::time::Instant::now();
    if let Some(hook) = lifecycle.pre_stop {
        hooks::pre_stop(env, deployment.id, &endpoint, hook).await;
    }
    if let Some(old) = &deployment.container_id {
        with_retries(env, "stopping the instance", || async {
            env.runtime.remove(old).await.map_err(runtime_step)
        })
        .await?;
    }
    if job.action == RuntimeAction::Recycle {
        with_retries(env, "dropping the cached image", || async {
            env.runtime
                .remove_version_image(&image, Some(&digest))
                .await
                .map_err(runtime_step)
        })
        .await?;
        cache_warm::pull(env, &image, &digest).await?;
    }
    let suffix = format!("-r{}", &job.request_id.simple().to_string()[..6]);
    let (instance, _) = start_instance(
        env,
        deployment,
        &image.pinned(&digest),
        &suffix,
        None,
        PHASE,
    )
    .await?;
    {
        let mut tx = env.pool.begin().await?;
        db::functions::lock(&mut tx, deployment.function_id).await?;
        if db::functions::serving(&mut tx, deployment.function_id)
            .await
            .map_err(StepError::Transient)?
            .failed_by_instance()
        {
            db::functions::transition_serving(
                &mut tx,
                deployment.function_id,
                &ServingEvent::InstanceReplaced,
            )
            .await
            .map_err(StepError::Transient)?;
        }
        tx.commit().await?;
    }
    log_info(
        env,
        deployment.id,
        PHASE,
        format!(
            "{} {}: answering on {} after {} ms",
            match job.action {
                RuntimeAction::Restart => "restarted",
                RuntimeAction::Recycle => "recycled (image pulled again)",
            },
            image.pinned(&digest),
            instance.endpoint,
            started.elapsed().as_millis()
        ),
    )
    .await;
    Ok(())
}
