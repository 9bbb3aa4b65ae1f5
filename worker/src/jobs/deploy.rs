//! `deploy`: start the recorded digest (never the tag) with the deployment's env and `$PORT`,
//! wait until it answers, then switch traffic in one transaction (previous active → inactive,
//! this → active), and only after a drain stop the previous version's container.

use std::sync::Arc;

use anyhow::Context;

use slipway_shared::{
    db,
    domain::{DeploymentStatus, Digest, ImageRef, ServingEvent, Verification},
    integrity::{self, OnTagOverwrite},
    jobs::{DeployJob, Job, PurgeJob},
    lifecycle::Lifecycle,
};
use tracing::info;

use super::{RunJob, StepError, log_info, recorded_image, run_step, settle_function, with_retries};
use crate::{
    Environment, hooks,
    registry::RegistryError,
    runtime::{ContainerSpec, RuntimeError, pick_free_port},
};

const PHASE: &str = "deploy";

impl RunJob for DeployJob {
    #[tracing::instrument(name = "deploy", skip_all, fields(deployment_id = %self.deployment_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        let status = DeploymentStatus::Deploying;
        run_step(
            env,
            self.deployment_id,
            status,
            PHASE,
            |env, deployment| async move {
                let outcome = deploy(&env, &deployment).await;
                if outcome.is_err() {
                    // The new container never took traffic: nothing may keep running on its behalf.
                    discard_container(&env, deployment.id).await;
                }
                outcome
            },
        )
        .await
    }
}

pub(super) fn runtime_step(e: RuntimeError) -> StepError {
    match e {
        RuntimeError::Unavailable(m) => StepError::Transient(anyhow::anyhow!(m)),
        RuntimeError::Function(m) => StepError::Permanent(m),
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

/// Builds finish in any order: a version older than one that has already served never takes
/// the traffic back from it.
async fn overtaken(
    conn: &mut sqlx::PgConnection,
    deployment: &db::deployments::DeploymentRow,
) -> Result<(), StepError> {
    match db::deployments::newer_served(conn, deployment.function_id, deployment.version).await? {
        Some((newer, newer_version)) => Err(StepError::Overtaken {
            newer,
            newer_version,
        }),
        None => Ok(()),
    }
}

/// Which transition puts the started deployment in front of traffic.
#[derive(Debug, Clone, Copy)]
pub enum Activation {
    /// A fresh deployment: deploying → active.
    NewVersion,
    /// A rollback: a previously superseded deployment, inactive → active.
    Reinstate,
}

/// Starts the deployment's recorded digest, waits until it answers, switches traffic to it in one
/// transaction, then (after the drain) stops the version it replaced.
pub async fn start_and_switch(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    phase: &str,
    activation: Activation,
) -> Result<(), StepError> {
    let (image, digest) = recorded_image(deployment)?;
    verify_before_start(env, deployment, &image, &digest, phase).await?;

    // A previous run of this job may have died after starting a container.
    discard_container(env, deployment.id).await;

    let endpoint = reserve_endpoint(env, deployment.id).await?;
    let (_, lifecycle) =
        start_instance(env, deployment, &image, &digest, &endpoint, "", phase).await?;

    let previous = switch_traffic(env, deployment, phase, activation).await?;
    info!(version = deployment.version, %endpoint, "active");

    if let Some(previous) = previous {
        // Requests already routed to the previous container get the drain period to finish.
        tokio::time::sleep(env.config.drain).await;
        // A released (Inactive) previous version has an endpoint but no instance to tell.
        if let (Some(hook), Some(endpoint), Some(_)) = (
            lifecycle.pre_stop,
            &previous.runtime_endpoint,
            &previous.container_id,
        ) {
            hooks::pre_stop(env, previous.id, endpoint, hook).await;
        }
        if let Some(container) = &previous.container_id {
            with_retries(env, "stopping the previous version", || async {
                env.runtime.remove(container).await.map_err(runtime_step)
            })
            .await?;
        }
        let mut conn = env.pool.acquire().await?;
        db::deployments::clear_container(&mut conn, previous.id, previous.container_id.as_deref())
            .await?;
        log_info(
            env,
            deployment.id,
            phase,
            format!("stopped version {}", previous.version),
        )
        .await;
    }
    Ok(())
}

/// Every start runs `image@digest`; before it, the registry must still hold that digest. A tag
/// moved elsewhere is only logged, unless the function's policy says to fail on it.
pub(super) async fn verify_before_start(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    image: &ImageRef,
    digest: &Digest,
    phase: &str,
) -> Result<(), StepError> {
    let verification = with_retries(env, "verifying the image at the registry", || async {
        env.registry
            .verify(image, digest)
            .await
            .map_err(registry_step)
    })
    .await?;
    let policy = {
        let mut conn = env.pool.acquire().await?;
        db::functions::on_tag_overwrite(&mut conn, deployment.function_id).await?
    };
    let policy = OnTagOverwrite::parse(&policy)
        .ok_or_else(|| StepError::Permanent(format!("unknown on_tag_overwrite {policy:?}")))?;
    if let Some(ServingEvent::ImageLost { failure, detail }) =
        integrity::failure_of(image, &verification, policy)
    {
        return Err(StepError::Permanent(format!(
            "the image {} is no longer in the registry as recorded ({}: {detail})",
            image.pinned(digest),
            failure.code()
        )));
    }
    if let Verification::Drifted { current } = &verification {
        log_info(
            env,
            deployment.id,
            phase,
            format!(
                "{} now points at {}; running the recorded {digest}",
                image.tagged(),
                current.as_ref().map_or("nothing", Digest::as_str)
            ),
        )
        .await;
    }
    Ok(())
}

pub(super) fn registry_step(e: RegistryError) -> StepError {
    match e {
        RegistryError::Unavailable(m) => StepError::Transient(anyhow::anyhow!(m)),
        RegistryError::Refused(m) => StepError::Permanent(m),
    }
}

/// Starts `image@digest` for the deployment on `endpoint` and records the container at once (a
/// crash then leaves it findable), waits until it answers and runs the Initializer the function
/// asked for. Returns the container and the function's hooks. If the instance never gets there
/// it is removed again.
pub(super) async fn start_instance(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    image: &ImageRef,
    digest: &Digest,
    endpoint: &str,
    suffix: &str,
    phase: &str,
) -> Result<(String, Lifecycle), StepError> {
    let pinned = image.pinned(digest);
    let spec = container_spec(deployment, image, &pinned, endpoint, suffix);
    log_info(
        env,
        deployment.id,
        phase,
        format!("starting {pinned} on {endpoint}"),
    )
    .await;
    let container = with_retries(env, "starting the container", || async {
        env.runtime.start(&spec).await.map_err(runtime_step)
    })
    .await?;
    {
        let mut conn = env.pool.acquire().await?;
        db::deployments::record_container(&mut conn, deployment.id, &container).await?;
    }
    let ready = async {
        let waited = env
            .runtime
            .wait_until_answering(&container, endpoint, env.config.start_timeout)
            .await
            .map_err(runtime_step)?;
        log_info(
            env,
            deployment.id,
            phase,
            format!("answering on {endpoint} after {} ms", waited.as_millis()),
        )
        .await;
        let lifecycle = {
            let mut conn = env.pool.acquire().await?;
            db::functions::lifecycle(&mut conn, deployment.function_id).await?
        };
        if let Some(hook) = lifecycle.initializer {
            hooks::initialize(env, deployment.id, &container, endpoint, hook).await?;
        }
        Ok(lifecycle)
    }
    .await;
    match ready {
        Ok(lifecycle) => Ok((container, lifecycle)),
        Err(e) => {
            env.runtime.remove(&container).await.ok();
            if let Ok(mut conn) = env.pool.acquire().await {
                db::deployments::forget_active_container(&mut conn, deployment.id, &container)
                    .await
                    .ok();
            }
            Err(e)
        }
    }
}

/// The container for `deployment` listening on `endpoint`'s port; `suffix` keeps the names of a
/// restarted instance and the one it replaces apart.
pub(super) fn container_spec<'a>(
    deployment: &db::deployments::DeploymentRow,
    image: &ImageRef,
    pinned: &'a str,
    endpoint: &str,
    suffix: &str,
) -> ContainerSpec<'a> {
    let port = endpoint
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default();
    let mut env: Vec<String> = deployment
        .env
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    env.push(format!("PORT={port}"));
    ContainerSpec {
        function_id: deployment.function_id,
        deployment_id: deployment.id,
        name: format!(
            "slipway-{}-v{}-{}{suffix}",
            image.repository,
            deployment.version,
            &deployment.id.simple().to_string()[..8]
        ),
        pinned_image: pinned,
        env,
    }
}

/// Picks a port and records it on the deployment under a lock shared by every worker.
async fn reserve_endpoint(
    env: &Environment,
    deployment_id: uuid::Uuid,
) -> Result<String, StepError> {
    let mut tx = env.pool.begin().await?;
    db::deployments::lock_endpoint_allocation(&mut tx).await?;
    let in_use = db::deployments::endpoints_in_use(&mut tx).await?;
    let host = &env.config.runtime_host;
    let port = pick_free_port(&env.config.port_range, host, &in_use).ok_or_else(|| {
        StepError::Transient(anyhow::anyhow!(
            "no free port in {:?}",
            env.config.port_range
        ))
    })?;
    let endpoint = format!("{host}:{port}");
    db::deployments::reserve_endpoint(&mut tx, deployment_id, &endpoint).await?;
    tx.commit().await?;
    Ok(endpoint)
}

/// The switch itself: one transaction, under the function's row lock.
async fn switch_traffic(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    phase: &str,
    activation: Activation,
) -> Result<Option<db::deployments::ActiveDeployment>, StepError> {
    let mut tx = env.pool.begin().await?;
    let function = db::functions::lock(&mut tx, deployment.function_id)
        .await?
        .ok_or_else(|| StepError::Permanent("the function is gone".into()))?;
    if let Activation::NewVersion = activation {
        overtaken(&mut tx, deployment).await?;
    }
    let previous = db::deployments::active_for_function(&mut tx, deployment.function_id).await?;
    if let Some(previous) = &previous {
        db::deployments::deactivate(&mut tx, previous.id).await?;
    }
    let activated = match activation {
        Activation::NewVersion => db::deployments::activate(&mut tx, deployment.id).await?,
        Activation::Reinstate => db::deployments::reinstate(&mut tx, deployment.id).await?,
    };
    if !activated {
        return Err(StepError::Permanent(
            "the deployment was changed while it started".into(),
        ));
    }
    let others_in_flight =
        db::deployments::others_in_flight(&mut tx, deployment.function_id, deployment.id).await?;
    db::functions::transition_serving(
        &mut tx,
        deployment.function_id,
        &ServingEvent::UpdateSucceeded { others_in_flight },
    )
    .await
    .map_err(StepError::Transient)?;
    db::functions::record_verification(&mut tx, deployment.function_id, None).await?;
    // A new version settles the function's lifecycle status and may push the oldest retained
    // version out of the window; a rollback changes neither.
    if let Activation::NewVersion = activation {
        settle_function(
            &mut tx,
            deployment.function_id,
            deployment.id,
            &function.status,
        )
        .await
        .map_err(StepError::Transient)?;
        PurgeJob::OldVersions {
            function_id: deployment.function_id,
            activated: deployment.id,
        }
        .enqueue(&mut tx)
        .await
        .context("enqueueing the retention purge")
        .map_err(StepError::Transient)?;
    }
    db::logs::append(
        &mut tx,
        deployment.id,
        phase,
        &[(
            "info".into(),
            format!("version {} is active", deployment.version),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(previous)
}

/// Removes the deployment's container, if it has one and is not serving.
pub(super) async fn discard_container(env: &Environment, deployment_id: uuid::Uuid) {
    let Ok(mut conn) = env.pool.acquire().await else {
        return;
    };
    let Ok(Some(row)) = db::deployments::get(&mut conn, deployment_id).await else {
        return;
    };
    if row.is_active {
        return;
    }
    if let Some(container) = row.container_id {
        if env.runtime.remove(&container).await.is_ok() {
            db::deployments::clear_container(&mut conn, deployment_id, Some(&container))
                .await
                .ok();
        }
    } else if row.runtime_endpoint.is_some() {
        db::deployments::clear_container(&mut conn, deployment_id, None)
            .await
            .ok();
    }
}
