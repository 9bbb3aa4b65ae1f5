//! What every job does with instances, on top of a driver: start a deployment's pinned image
//! with its function's sandbox and wait until it is ready (the Initializer included), switch
//! traffic to it in one transaction, stop the instance it replaced, discard one that never
//! served. Deploy, rollback, restart, recycle and wake all go through here.

use anyhow::Context;
use slipway_shared::{
    db::{self, deployments::StatusChange},
    domain::{
        Digest, ImageRef, InstanceFailure, PinnedImage, ServingEvent, ServingState, Verification,
    },
    integrity::{self, OnTagOverwrite},
    jobs::{Job, PurgeJob},
    lifecycle::Lifecycle,
    metrics::{self, Outcome, Stage},
};
use tracing::info;

use super::{Instance, InstanceSpec, Runtime, RuntimeError};
use crate::{
    Environment, hooks,
    jobs::{StepError, log_info, recorded_image, settle_function, with_retries},
    registry::RegistryError,
};

/// Watches the engine for serving instances killed at their memory limit, for as long as the
/// worker runs: the function turns `Failed` with `out_of_memory:` (every worker sees the event;
/// the transition is conditional on the container still being the one that serves, so only
/// the first applies it). A restart or recycle brings it back.
pub async fn watch_instances(env: std::sync::Arc<Environment>) {
    use futures::StreamExt;
    let engine = match &env.runtime {
        Runtime::Docker(engine) => engine.clone(),
        Runtime::Swarm(swarm) => return super::placement::follow_tasks(&env, swarm).await,
    };
    loop {
        let mut killed = std::pin::pin!(engine.oom_killed());
        while let Some(next) = killed.next().await {
            match next {
                Ok(container_id) => {
                    if let Err(e) = record_oom_kill(&env, &container_id).await {
                        tracing::warn!(error = %e, container_id, "could not record an OOM kill");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching the engine's events");
                    break;
                }
            }
        }
        // The engine restarted or the stream broke: watch again shortly.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn record_oom_kill(env: &Environment, container_id: &str) -> anyhow::Result<()> {
    let mut tx = env.pool.begin().await?;
    let Some((deployment_id, function_id)) =
        db::deployments::active_with_container(&mut tx, container_id).await?
    else {
        return Ok(());
    };
    db::functions::lock(&mut tx, function_id).await?;
    let limits = {
        let sandbox = db::functions::sandbox(&mut tx, function_id).await?;
        env.config.function_limits.resolve(&sandbox.limits)
    };
    let serving = db::functions::serving(&mut tx, function_id).await?;
    if serving.state != ServingState::Active {
        return Ok(());
    }
    let detail = format!(
        "the instance was killed at its memory limit ({} MiB)",
        limits.memory_mb
    );
    db::functions::transition_serving(
        &mut tx,
        function_id,
        &ServingEvent::InstanceFailed {
            failure: InstanceFailure::OutOfMemory,
            detail: detail.clone(),
        },
    )
    .await?;
    db::logs::append(
        &mut tx,
        deployment_id,
        "runtime",
        &[("error".into(), format!("out_of_memory: {detail}"))],
    )
    .await?;
    tx.commit().await?;
    info!(%function_id, container_id, "instance killed at its memory limit; function Failed");
    Ok(())
}

pub fn runtime_step(e: RuntimeError) -> StepError {
    match e {
        RuntimeError::Unavailable(m) => StepError::Transient(anyhow::anyhow!(m)),
        RuntimeError::Function(m) => StepError::Permanent(m),
        RuntimeError::OutOfMemory(m) => StepError::Permanent(format!("out_of_memory: {m}")),
    }
}

pub fn registry_step(e: RegistryError) -> StepError {
    match e {
        RegistryError::Unavailable(m) => StepError::Transient(anyhow::anyhow!(m)),
        RegistryError::Refused(m) => StepError::Permanent(m),
    }
}

/// Builds finish in any order: a version older than one that has already served never takes
/// the traffic back from it.
pub async fn overtaken(
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

    // A previous run of this job may have died after starting an instance.
    discard_instance(env, deployment).await;

    let pinned = image.pinned(&digest);
    let spec = instance_spec(env, deployment, &pinned, "").await?;
    if let Activation::NewVersion = activation
        && let Some(from_version) =
            take_over_serving_instance(env, deployment, &spec, phase).await?
    {
        info!(
            version = deployment.version,
            from_version, "active on the instance already serving the same spec"
        );
        let total = metrics::elapsed_since(deployment.created_at);
        metrics::deploy_stage(Stage::Total, Outcome::Ok, total);
        return Ok(());
    }
    let (instance, lifecycle) = start_from_spec(
        env,
        deployment,
        &spec,
        None,
        phase,
        InstanceOwner::Deployment,
    )
    .await?;

    let previous = match switch_traffic(env, deployment, phase, activation).await {
        Ok(previous) => previous,
        Err(e) => {
            // This run's instance never served: it goes, whatever stopped the switch.
            remove_own_instance(env, deployment.id, &instance.container_id).await;
            return Err(e);
        }
    };
    info!(version = deployment.version, endpoint = %instance.endpoint, "active");
    if let Activation::NewVersion = activation {
        let total = metrics::elapsed_since(deployment.created_at);
        metrics::deploy_stage(Stage::Total, Outcome::Ok, total);
    }

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
pub async fn verify_before_start(
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

/// Starts the pinned image for the deployment with its function's sandbox and records the
/// instance at once (a crash then leaves it findable), waits until it answers and runs the
/// Initializer the function asked for. Returns the instance (its endpoint may have changed if
/// the Initializer restarted it) and the function's hooks. If the instance never gets there it
/// is removed again. `kept` is what a release left of the deployment's instance (a wake).
pub async fn start_instance(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    image: &PinnedImage,
    suffix: &str,
    kept: Option<&str>,
    phase: &str,
) -> Result<(Instance, Lifecycle), StepError> {
    let spec = instance_spec(env, deployment, image, suffix).await?;
    start_from_spec(
        env,
        deployment,
        &spec,
        kept,
        phase,
        InstanceOwner::Deployment,
    )
    .await
}

/// Starts an instance of a version that is not the active one, for invocations of an alias or
/// of `@N`, recorded as that version's instance (`db::aliases`) under the start's `run_token`.
pub async fn start_version_instance(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    image: &PinnedImage,
    run_token: uuid::Uuid,
    phase: &str,
) -> Result<Instance, StepError> {
    let suffix = format!("-a{}", &run_token.simple().to_string()[..6]);
    let spec = instance_spec(env, deployment, image, &suffix).await?;
    let owner = InstanceOwner::Version { run_token };
    let (instance, _) = start_from_spec(env, deployment, &spec, None, phase, owner).await?;
    Ok(instance)
}

/// Where a started instance is recorded, which is also who may forget it.
#[derive(Clone, Copy)]
enum InstanceOwner {
    /// The deployment's own instance: the one deploys, rollbacks and wakes start and switch to.
    Deployment,
    /// A version instance, fenced by the run token of the request that asked for it.
    Version { run_token: uuid::Uuid },
}

/// What the deployment's instance runs now: its pinned image and env, with its function's
/// current sandbox and limits. `suffix` keeps the names of a restarted instance and the one it
/// replaces apart.
async fn instance_spec<'a>(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    image: &'a PinnedImage,
    suffix: &str,
) -> Result<InstanceSpec<'a>, StepError> {
    let sandbox = {
        let mut conn = env.pool.acquire().await?;
        db::functions::sandbox(&mut conn, deployment.function_id).await?
    };
    let vars = slipway_shared::env::FunctionEnv::open(
        &deployment.env,
        env.config.secrets_key.as_ref(),
        &slipway_shared::env::deployment_context(deployment.id),
    )
    .map_err(|e| StepError::Permanent(format!("the deployment's env: {e}")))?
    .vars;
    let repository = image.name().rsplit('/').next().unwrap_or_default();
    Ok(InstanceSpec {
        function_id: deployment.function_id,
        deployment_id: deployment.id,
        name: format!(
            "slipway-{repository}-v{}-{}{suffix}",
            deployment.version,
            &deployment.id.simple().to_string()[..8]
        ),
        image,
        env: vars
            .into_iter()
            .filter(|(k, _)| k != "PORT")
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        limits: env.config.function_limits.resolve(&sandbox.limits),
        read_only_root: sandbox.read_only_root,
        registry_auth: env
            .registry
            .push_credentials()
            .await
            .map_err(registry_step)?,
    })
}

async fn start_from_spec(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    spec: &InstanceSpec<'_>,
    kept: Option<&str>,
    phase: &str,
    owner: InstanceOwner,
) -> Result<(Instance, Lifecycle), StepError> {
    log_info(
        env,
        deployment.id,
        phase,
        format!(
            "starting {} ({}{})",
            spec.image,
            spec.limits,
            if spec.read_only_root {
                ", read-only root"
            } else {
                ""
            }
        ),
    )
    .await;
    let starting = std::time::Instant::now();
    let mut instance = with_retries(env, "starting the instance", || async {
        env.runtime.start(spec, kept).await.map_err(runtime_step)
    })
    .await
    .inspect_err(|_| {
        metrics::deploy_stage(Stage::Start, Outcome::Failed, starting.elapsed());
    })?;
    let recorded = async {
        let mut conn = env.pool.acquire().await?;
        match owner {
            InstanceOwner::Deployment => {
                db::deployments::record_instance(
                    &mut conn,
                    deployment.id,
                    deployment.run_token,
                    &instance.container_id,
                    &instance.endpoint,
                    Some(&spec.fingerprint()),
                )
                .await
            }
            InstanceOwner::Version { run_token } => {
                db::aliases::record_instance(
                    &mut conn,
                    deployment.id,
                    run_token,
                    &instance.container_id,
                    &instance.endpoint,
                )
                .await
            }
        }
    }
    .await;
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            // Another run took the deployment over: this instance is ours alone to remove.
            env.runtime.remove(&instance.container_id).await.ok();
            return Err(StepError::LostClaim);
        }
        Err(e) => {
            env.runtime.remove(&instance.container_id).await.ok();
            return Err(e.into());
        }
    }
    let ready = async {
        let answering = env
            .runtime
            .wait_until_answering(&instance, env.config.start_timeout)
            .await;
        metrics::deploy_stage(Stage::Start, Outcome::of(&answering), starting.elapsed());
        let waited = answering.map_err(runtime_step)?;
        log_info(
            env,
            deployment.id,
            phase,
            format!(
                "answering on {} after {} ms",
                instance.endpoint,
                waited.as_millis()
            ),
        )
        .await;
        let lifecycle = {
            let mut conn = env.pool.acquire().await?;
            db::functions::lifecycle(&mut conn, deployment.function_id).await?
        };
        if let Some(hook) = lifecycle.initializer {
            let initialized = hooks::initialize(env, deployment, &mut instance, hook);
            metrics::timed(Stage::Initializer, initialized).await?;
        }
        Ok(lifecycle)
    }
    .await;
    match ready {
        Ok(lifecycle) => Ok((instance, lifecycle)),
        Err(e) => {
            match owner {
                InstanceOwner::Deployment => {
                    remove_own_instance(env, deployment.id, &instance.container_id).await;
                }
                // The start's failure is recorded by its caller, with the container forgotten.
                InstanceOwner::Version { .. } => {
                    env.runtime.remove(&instance.container_id).await.ok();
                }
            }
            Err(e)
        }
    }
}

/// Removes an instance this run started and that never served, and forgets it if the deployment
/// still records it (a run that took over may already have replaced it).
async fn remove_own_instance(env: &Environment, deployment_id: uuid::Uuid, container_id: &str) {
    env.runtime.remove(container_id).await.ok();
    if let Ok(mut conn) = env.pool.acquire().await {
        db::deployments::forget_active_container(&mut conn, deployment_id, container_id)
            .await
            .ok();
    }
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
    activate(
        &mut tx,
        deployment,
        function.status,
        previous.as_ref(),
        activation,
        phase,
    )
    .await?;
    tx.commit().await?;
    Ok(previous)
}

/// A new version whose instance spec is exactly that of the instance serving (an identical
/// redeploy: same digest, env, limits and sandbox) takes that instance over in the switch's
/// transaction: starting another would run the same process again, and takes most of a
/// redeploy's time. Returns the version it took the instance from; `None` (nothing changed)
/// when there is no such instance, and the caller starts one.
async fn take_over_serving_instance(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    spec: &InstanceSpec<'_>,
    phase: &str,
) -> Result<Option<i32>, StepError> {
    let fingerprint = spec.fingerprint();
    let mut tx = env.pool.begin().await?;
    let function = db::functions::lock(&mut tx, deployment.function_id)
        .await?
        .ok_or_else(|| StepError::Permanent("the function is gone".into()))?;
    overtaken(&mut tx, deployment).await?;
    let Some(serving) = db::deployments::active_for_function(&mut tx, deployment.function_id)
        .await?
        .filter(|active| active.instance_spec_sha256.as_deref() == Some(fingerprint.as_str()))
    else {
        return Ok(None);
    };
    let (Some(container), Some(_)) = (&serving.container_id, &serving.runtime_endpoint) else {
        return Ok(None);
    };
    // Only an instance that answers now: not one released for idleness, failed or rescheduling.
    if db::functions::serving(&mut tx, deployment.function_id)
        .await
        .map_err(StepError::Transient)?
        .state
        != ServingState::Active
    {
        return Ok(None);
    }
    if !db::deployments::share_instance(
        &mut tx,
        serving.id,
        deployment.id,
        deployment.run_token,
        container,
    )
    .await?
    {
        return Err(StepError::LostClaim);
    }
    activate(
        &mut tx,
        deployment,
        function.status,
        Some(&serving),
        Activation::NewVersion,
        phase,
    )
    .await?;
    db::deployments::clear_container(&mut tx, serving.id, Some(container)).await?;
    db::logs::append(
        &mut tx,
        deployment.id,
        phase,
        &[(
            "info".into(),
            format!(
                "version {}'s instance runs this version's image with this version's configuration: it serves on, not restarted",
                serving.version
            ),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(serving.version))
}

/// Puts `deployment` in front of traffic in the caller's transaction, under the function's row
/// lock: `previous` steps down, the function settles.
async fn activate(
    tx: &mut sqlx::PgConnection,
    deployment: &db::deployments::DeploymentRow,
    function_status: slipway_shared::domain::FunctionStatus,
    previous: Option<&db::deployments::ActiveDeployment>,
    activation: Activation,
    phase: &str,
) -> Result<(), StepError> {
    if let Some(previous) = previous {
        db::deployments::change(tx, previous.id, None, StatusChange::Superseded).await?;
    }
    let to_active = match activation {
        Activation::NewVersion => StatusChange::Activated,
        Activation::Reinstate => StatusChange::Reinstated,
    };
    if !db::deployments::change(tx, deployment.id, deployment.run_token, to_active).await? {
        // Another run took the deployment over, or it settled meanwhile: either way the outcome
        // is not this run's to record.
        return Err(StepError::LostClaim);
    }
    let others_in_flight =
        db::deployments::others_in_flight(tx, deployment.function_id, deployment.id).await?;
    db::functions::transition_serving(
        tx,
        deployment.function_id,
        &ServingEvent::UpdateSucceeded { others_in_flight },
    )
    .await
    .map_err(StepError::Transient)?;
    db::functions::record_verification(tx, deployment.function_id, None).await?;
    // A new version settles the function's lifecycle status and may push the oldest retained
    // version out of the window; a rollback changes neither.
    if let Activation::NewVersion = activation {
        settle_function(tx, deployment.function_id, deployment.id, function_status)
            .await
            .map_err(StepError::Transient)?;
        PurgeJob::OldVersions {
            function_id: deployment.function_id,
            activated: deployment.id,
        }
        .enqueue(tx)
        .await
        .context("enqueueing the retention purge")
        .map_err(StepError::Transient)?;
    }
    db::logs::append(
        tx,
        deployment.id,
        phase,
        &[(
            "info".into(),
            format!("version {} is active", deployment.version),
        )],
    )
    .await?;
    Ok(())
}

/// Removes the instance `deployment` records, if it has one that is not serving and this run
/// still holds the claim: an instance recorded after another run took over is that run's.
pub async fn discard_instance(env: &Environment, deployment: &db::deployments::DeploymentRow) {
    let deployment_id = deployment.id;
    let Ok(mut conn) = env.pool.acquire().await else {
        return;
    };
    let Ok(Some(row)) = db::deployments::get(&mut conn, deployment_id).await else {
        return;
    };
    if row.is_active || row.run_token != deployment.run_token {
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
