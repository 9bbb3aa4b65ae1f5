//! Scale to zero and back (seed 001's Inactive state). `release`: an idle function's instance is
//! stopped (PreStop first) and its cached image dropped; the function is Inactive and keeps its
//! endpoint reserved. `wake`: an invocation (or an operator) asked for it again, so the function
//! is Pending while its recorded `image@digest` is verified, pulled, started and initialized;
//! then Active. A wake that fails leaves it Inactive with the reason (a lost image: Failed).

use std::sync::Arc;

use anyhow::Context;
use slipway_shared::{
    db,
    domain::{ImageRef, ServingEvent, ServingState},
    jobs::{ReleaseJob, WakeJob},
};
use tracing::{info, warn};

use super::{RunJob, StepError, cache_warm, log_info, log_lines, recorded_image, verify};
use crate::{Environment, hooks, runtime::lifecycle::start_instance};

const PHASE: &str = "runtime";

impl RunJob for ReleaseJob {
    #[tracing::instrument(name = "release", skip_all, fields(function_id = %self.function_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        let mut tx = env.pool.begin().await?;
        db::functions::lock(&mut tx, self.function_id).await?;
        let serving = db::functions::serving(&mut tx, self.function_id).await?;
        let active = db::deployments::active_for_function(&mut tx, self.function_id).await?;
        let (Some(active), ServingState::Active) = (active, serving.state) else {
            return Ok(());
        };
        let (Some(container), Some(endpoint)) = (active.container_id, active.runtime_endpoint)
        else {
            return Ok(());
        };
        if db::functions::invoked_since_release_enqueued(&mut tx, self.function_id).await? {
            info!("invoked since the idle sweep picked it; staying up");
            return Ok(());
        }
        db::functions::transition_serving(&mut tx, self.function_id, &ServingEvent::IdleReleased)
            .await?;
        let lifecycle = db::functions::lifecycle(&mut tx, self.function_id).await?;
        tx.commit().await?;

        // Nothing routes to it any more (the proxy sees Inactive); now free what it holds.
        if let Some(hook) = lifecycle.pre_stop {
            hooks::pre_stop(&env, active.id, &endpoint, hook).await;
        }
        let kept = env.runtime.suspend(&container).await?;
        if let Some(image) = active.image_tag.as_deref().and_then(ImageRef::parse_tagged) {
            env.runtime.remove_images(&image.name()).await?;
        }
        let mut conn = env.pool.acquire().await?;
        // A swarm service kept at zero replicas is still the deployment's, for the wake.
        if !kept {
            db::deployments::forget_active_container(&mut conn, active.id, &container).await?;
        }
        db::logs::append(
            &mut conn,
            active.id,
            PHASE,
            &[(
                "info".into(),
                "idle: instance released, function Inactive".into(),
            )],
        )
        .await?;
        Ok(())
    }
}

impl RunJob for WakeJob {
    #[tracing::instrument(name = "wake", skip_all, fields(function_id = %self.function_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        let deployment = {
            let mut conn = env.pool.acquire().await?;
            if db::functions::serving(&mut conn, self.function_id)
                .await?
                .state
                != ServingState::Pending
            {
                return Ok(());
            }
            let Some(active) =
                db::deployments::active_for_function(&mut conn, self.function_id).await?
            else {
                warn!("no active version to wake");
                return Ok(());
            };
            db::deployments::get(&mut conn, active.id)
                .await?
                .context("the active deployment vanished")?
        };
        let outcome = wake(&env, &deployment, &self).await;
        let Err(e) = outcome else {
            return Ok(());
        };
        let reason = e.into_reason();
        let line = format!("wake failed: {reason}");
        log_lines(&env, deployment.id, PHASE, vec![("error".into(), line)]).await;
        let mut tx = env.pool.begin().await?;
        db::functions::lock(&mut tx, self.function_id).await?;
        // Still Pending unless verification already failed it (a lost image).
        if db::functions::serving(&mut tx, self.function_id)
            .await?
            .state
            == ServingState::Pending
        {
            db::functions::transition_serving(
                &mut tx,
                self.function_id,
                &ServingEvent::WakeFailed { reason },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn wake(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    job: &WakeJob,
) -> Result<(), StepError> {
    let (image, digest) = recorded_image(deployment)?;
    let started = tokio::time::Instant::now();

    let serving = verify::verify_and_record(env, deployment, &image, &digest).await?;
    if serving.state == ServingState::Failed {
        return Err(StepError::Permanent(format!(
            "the function is Failed ({})",
            serving.state_reason.unwrap_or_default()
        )));
    }
    cache_warm::pull(env, &image, &digest).await?;
    let suffix = format!("-w{}", &job.request_id.simple().to_string()[..6]);
    let (instance, _) = start_instance(
        env,
        deployment,
        &image.pinned(&digest),
        &suffix,
        deployment.container_id.as_deref(),
        PHASE,
    )
    .await?;
    let mut tx = env.pool.begin().await?;
    db::functions::lock(&mut tx, deployment.function_id).await?;
    db::functions::transition_serving(&mut tx, deployment.function_id, &ServingEvent::Woken)
        .await
        .map_err(StepError::Transient)?;
    tx.commit().await?;
    log_info(
        env,
        deployment.id,
        PHASE,
        format!(
            "woken: {} in {:.12} answering on {} after {} ms",
            image.pinned(&digest),
            instance.container_id,
            instance.endpoint,
            started.elapsed().as_millis()
        ),
    )
    .await;
    Ok(())
}
