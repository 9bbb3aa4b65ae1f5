//! Scale to zero and back (seed 001's Inactive state). `release`: an idle function's instance is
//! stopped (PreStop first) and its cached image dropped; the function is Inactive and keeps its
//! endpoint reserved. `wake`: an invocation (or an operator) asked for it again, so the function
//! is Pending while its recorded `image@digest` is verified, pulled, started and initialized;
//! then Active. A wake that fails leaves it Inactive with the reason (a lost image: Failed).

use std::sync::Arc;

use anyhow::Context;
use slipway_shared::{
    db,
    domain::{Digest, ImageRef, ServingEvent, ServingState},
    jobs::{ReleaseJob, WakeJob},
};
use tracing::{info, warn};

use super::{
    RunJob, StepError, cache_warm, log_info, log_lines, recorded_image, verify, with_retries,
};
use crate::{
    Environment, hooks,
    runtime::lifecycle::{registry_step, start_instance, start_version_instance},
};

const PHASE: &str = "runtime";

impl RunJob for ReleaseJob {
    #[tracing::instrument(name = "release", skip_all, fields(function_id = %self.function_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        if let Some(deployment_id) = self.version_instance {
            return release_version_instance(&env, deployment_id).await;
        }
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
            let digest = active
                .image_digest
                .as_deref()
                .and_then(|d| Digest::parse(d).ok());
            env.runtime
                .remove_version_image(&image, digest.as_ref())
                .await?;
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
        if let Some(deployment_id) = self.version_instance {
            return wake_version(&env, deployment_id, self.request_id).await;
        }
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

/// Releases an idle version instance: it leaves routing first (its row goes, unless it was
/// invoked since the sweep picked it), then PreStop and the container. The image stays cached:
/// the version's repository is the function's, which the active version uses too.
async fn release_version_instance(
    env: &Environment,
    deployment_id: uuid::Uuid,
) -> anyhow::Result<()> {
    let released = {
        let mut conn = env.pool.acquire().await?;
        db::aliases::take_for_release(&mut conn, deployment_id).await?
    };
    let Some(released) = released else {
        info!(%deployment_id, "version instance invoked since the idle sweep picked it, or gone; staying");
        return Ok(());
    };
    let lifecycle = {
        let mut conn = env.pool.acquire().await?;
        db::functions::lifecycle(&mut conn, released.function_id).await?
    };
    if let (Some(hook), Some(endpoint)) = (lifecycle.pre_stop, released.endpoint.as_deref()) {
        hooks::pre_stop(env, deployment_id, endpoint, hook).await;
    }
    if let Some(container) = &released.container_id {
        env.runtime.remove(container).await?;
    }
    log_info(
        env,
        deployment_id,
        PHASE,
        "idle: version instance released".to_owned(),
    )
    .await;
    Ok(())
}

/// Starts an instance of a version that is not the active one, asked for by an invocation of an
/// alias or of `@N` under `run_token`. A failure is recorded on the version instance, where the
/// waiting invocations read it; the next invocation asks again.
async fn wake_version(
    env: &Environment,
    deployment_id: uuid::Uuid,
    run_token: uuid::Uuid,
) -> anyhow::Result<()> {
    let deployment = {
        let mut conn = env.pool.acquire().await?;
        if !db::aliases::starting_instance(&mut conn, deployment_id, run_token).await? {
            return Ok(());
        }
        db::deployments::get(&mut conn, deployment_id)
            .await?
            .context("the deployment vanished")?
    };
    let started = tokio::time::Instant::now();
    let outcome = async {
        if deployment.pruned_at.is_some() {
            return Err(StepError::Permanent(format!(
                "version {} is past the retention window; its image was removed",
                deployment.version
            )));
        }
        let (image, digest) = recorded_image(&deployment)?;
        let present = with_retries(env, "checking the version's image", || async {
            env.registry
                .manifest_exists(&image, &digest)
                .await
                .map_err(registry_step)
        })
        .await?;
        if !present {
            return Err(StepError::Permanent(format!(
                "{} is no longer in the registry",
                image.pinned(&digest)
            )));
        }
        cache_warm::pull(env, &image, &digest).await?;
        let instance =
            start_version_instance(env, &deployment, &image.pinned(&digest), run_token, PHASE)
                .await?;
        let mut conn = env.pool.acquire().await?;
        if !db::aliases::mark_ready(&mut conn, deployment_id, run_token).await? {
            // Released or asked for again meanwhile: this instance is nobody's.
            env.runtime.remove(&instance.container_id).await.ok();
            return Err(StepError::LostClaim);
        }
        Ok(instance)
    }
    .await;
    match outcome {
        Ok(instance) => {
            log_info(
                env,
                deployment_id,
                PHASE,
                format!(
                    "version {} started for its alias: {:.12} answering on {} after {} ms",
                    deployment.version,
                    instance.container_id,
                    instance.endpoint,
                    started.elapsed().as_millis()
                ),
            )
            .await;
        }
        Err(StepError::LostClaim) => {}
        Err(e) => {
            let reason = e.into_reason();
            log_lines(
                env,
                deployment_id,
                PHASE,
                vec![(
                    "error".into(),
                    format!("version {} did not start: {reason}", deployment.version),
                )],
            )
            .await;
            let mut conn = env.pool.acquire().await?;
            db::aliases::mark_failed(&mut conn, deployment_id, run_token, &reason).await?;
        }
    }
    Ok(())
}
