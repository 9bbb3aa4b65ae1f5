//! `build`: fetch the archive, prepare the context, build it through BuildKit's Control API with
//! the log streamed into the deployment's log, then hand over to `push`.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use slipway_shared::{
    archive,
    db::{self, deployments::StatusChange},
    domain::{Digest, ImageRef, PipelineStep},
    jobs::{BuildJob, Job, PushJob},
    metrics,
    store::StoreError,
};
use tokio::sync::mpsc;
use tracing::info;

use super::{
    RunJob, StepError, image_of, log_info, log_lines, record_image, run_step, with_retries,
};
use crate::{
    Environment,
    buildkit::{BuildError, BuildLogLine, BuildRequest},
};

const STEP: PipelineStep = PipelineStep::Build;
const PHASE: &str = STEP.phase();

impl RunJob for BuildJob {
    #[tracing::instrument(name = "build", skip_all, fields(deployment_id = %self.deployment_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        let slot_waits = self.slot_waits;
        run_step(
            env,
            self.deployment_id,
            STEP,
            |env, deployment| async move {
                if !claim_slot(&env, &deployment, slot_waits).await? {
                    metrics::build_slot_wait();
                    return Ok(());
                }
                // A pushed commit's wait ended when its fetch started.
                if deployment.git_binding_id.is_none() && deployment.build_started_at.is_none() {
                    let waited = metrics::elapsed_since(deployment.created_at);
                    metrics::deploy_stage(metrics::Stage::QueueWait, metrics::Outcome::Ok, waited);
                }
                metrics::timed(metrics::Stage::Build, build(&env, &deployment)).await
            },
        )
        .await
    }
}

/// Takes one of the owner's build slots, or puts the build back in the queue for a moment and
/// says so (once) in its log. Waiting in the queue rather than in the handler leaves this
/// worker's slot to another owner's build.
async fn claim_slot(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    slot_waits: u32,
) -> Result<bool, StepError> {
    let slots = env.config.build_slots_per_owner;
    let mut tx = env.pool.begin().await?;
    if db::deployments::claim_build_slot(&mut tx, deployment.id, slots, env.config.job_timeout)
        .await?
    {
        tx.commit().await?;
        return Ok(true);
    }
    let delay = Duration::from_millis(500 + rand::random_range(0..500));
    BuildJob {
        deployment_id: deployment.id,
        slot_waits: slot_waits + 1,
    }
    .enqueue_after(&mut tx, delay)
    .await
    .context("putting the build back in the queue")
    .map_err(StepError::Transient)?;
    if slot_waits == 0 {
        db::logs::append(
            &mut tx,
            deployment.id,
            PHASE,
            &[(
                "info".into(),
                format!("waiting for a build slot: this owner's other builds hold all {slots}"),
            )],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(false)
}

async fn build(
    env: &Arc<Environment>,
    deployment: &db::deployments::DeploymentRow,
) -> Result<(), StepError> {
    log_info(
        env,
        deployment.id,
        PHASE,
        format!("building version {}", deployment.version),
    )
    .await;
    let image = image_of(env, deployment)?;
    // ECR refuses pushes to a repository that does not exist, whoever pushes: a standalone
    // buildkitd while it exports, or the engine in the push phase.
    with_retries(env, "preparing the image repository", || async {
        env.registry
            .ensure_repository(&image)
            .await
            .map_err(super::push::registry_step)
    })
    .await?;

    let key = deployment.archive_key.as_deref().ok_or_else(|| {
        StepError::Permanent(format!("version {} has no archive", deployment.version))
    })?;
    let archive = with_retries(env, "fetching the archive", || async {
        env.store.get(key).await.map_err(|e| match e {
            StoreError::NotFound(key) => {
                StepError::Permanent(format!("the archive {key} is missing"))
            }
            other => StepError::Transient(other.into()),
        })
    })
    .await?;

    let workdir = tempfile::tempdir().map_err(|e| StepError::Transient(e.into()))?;
    let context_path = workdir.path().join("context.tar");
    let prepared = {
        let path = context_path.clone();
        let namespace = deployment.owner_id.simple().to_string();
        tokio::task::spawn_blocking(move || {
            archive::prepare_build_context(&archive[..], &path, &namespace)
        })
        .await
        .map_err(|e| StepError::Transient(e.into()))?
        .map_err(|e| StepError::Permanent(format!("the archive cannot be built: {e}")))?
    };
    for directive in &prepared.stripped_directives {
        log_info(env, deployment.id, PHASE, format!("ignored parser directive `{directive}`: Slipway builds with its own Dockerfile frontend")).await;
    }
    if prepared.left_out > 0 {
        log_info(
            env,
            deployment.id,
            PHASE,
            format!(
                "left {} entries out of the context, as .dockerignore says",
                prepared.left_out
            ),
        )
        .await;
    }

    let inputs = {
        let path = context_path.clone();
        let network_none = env.config.build_network_none;
        tokio::task::spawn_blocking(move || build_inputs_sha256(&path, network_none))
            .await
            .map_err(|e| StepError::Transient(e.into()))?
            .map_err(|e| StepError::Transient(e.into()))?
    };
    if reuse_identical_build(env, deployment, &inputs).await? {
        return Ok(());
    }

    let request = BuildRequest {
        context_tar: context_path,
        image_ref: image.tagged(),
        network_none: env.config.build_network_none,
        cache_namespace: deployment.owner_id.simple().to_string(),
        stall_timeout: env.config.build_stall_timeout,
    };
    let output = with_retries(env, "building", || async {
        let (sender, receiver) = mpsc::channel(256);
        let sink = tokio::spawn(store_build_log(Arc::clone(env), deployment.id, receiver));
        let result = env.buildkit.build(request.clone(), sender).await;
        sink.await.ok();
        result.map_err(|e| match e {
            BuildError::Failed { message } => {
                StepError::Permanent(format!("build failed: {message}"))
            }
            other => StepError::Transient(other.into()),
        })
    })
    .await?;
    info!(image = %image.tagged(), image_id = ?output.image_id, "built");

    let mut tx = env.pool.begin().await?;
    db::functions::lock(&mut tx, deployment.function_id).await?;
    if db::deployments::change(
        &mut tx,
        deployment.id,
        deployment.run_token,
        StatusChange::Built,
    )
    .await?
    {
        PushJob {
            deployment_id: deployment.id,
        }
        .enqueue(&mut tx)
        .await
        .context("enqueueing the push")
        .map_err(StepError::Transient)?;
        db::deployments::record_build_inputs(&mut tx, deployment.id, &inputs, None).await?;
        db::logs::append(
            &mut tx,
            deployment.id,
            PHASE,
            &[("info".into(), format!("built {}", image.tagged()))],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What goes into a build: the prepared context (the archive after `.dockerignore` and
/// `# syntax=` handling, which fixes every file's content, mode and mtime) and the settings
/// that change what a `RUN` can do. Two builds with the same inputs make the same image.
fn build_inputs_sha256(context: &std::path::Path, network_none: bool) -> std::io::Result<String> {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "slipway build inputs v1\nnetwork_none={network_none}\n"
    ));
    std::io::copy(&mut std::fs::File::open(context)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A redeploy of inputs an earlier build of the function already built: that build's image is
/// this deployment's too, once the registry confirms it still holds the recorded digest, and
/// the pipeline goes on at cache-warm, with no BuildKit call and no push.
async fn reuse_identical_build(
    env: &Arc<Environment>,
    deployment: &db::deployments::DeploymentRow,
    inputs: &str,
) -> Result<bool, StepError> {
    let candidate = {
        let mut conn = env.pool.acquire().await?;
        db::deployments::reusable_build(&mut conn, deployment.function_id, inputs, deployment.id)
            .await?
    };
    let Some(candidate) = candidate else {
        return Ok(false);
    };
    let (Some(image), Ok(digest)) = (
        ImageRef::parse_tagged(&candidate.image_tag),
        Digest::parse(&candidate.image_digest),
    ) else {
        return Ok(false);
    };
    let present = with_retries(env, "checking the reusable image", || async {
        env.registry
            .manifest_exists(&image, &digest)
            .await
            .map_err(super::push::registry_step)
    })
    .await?;
    if !present {
        log_info(
            env,
            deployment.id,
            PHASE,
            format!(
                "version {} had the same inputs, but its image is gone from the registry: building",
                candidate.version
            ),
        )
        .await;
        return Ok(false);
    }
    let mut tx = env.pool.begin().await?;
    let function = db::functions::lock(&mut tx, deployment.function_id)
        .await?
        .ok_or_else(|| StepError::Permanent("the function is gone".into()))?;
    let built = db::deployments::change(
        &mut tx,
        deployment.id,
        deployment.run_token,
        StatusChange::Built,
    )
    .await?;
    if built
        && record_image(
            &mut tx,
            deployment,
            &function,
            &candidate.image_tag,
            &candidate.image_digest,
            PHASE,
            format!(
                "reused the image of version {} ({}): the same build inputs, and {digest} is \
                 still in the registry; no build, no push",
                candidate.version, candidate.id
            ),
        )
        .await?
    {
        db::deployments::record_build_inputs(&mut tx, deployment.id, inputs, Some(candidate.id))
            .await?;
    }
    tx.commit().await?;
    info!(reused_from = %candidate.id, %digest, "build reused");
    Ok(true)
}

/// Drains BuildKit's log into the database in batches, so a chatty build costs few inserts.
async fn store_build_log(
    env: Arc<Environment>,
    deployment_id: uuid::Uuid,
    mut lines: mpsc::Receiver<BuildLogLine>,
) {
    let mut batch = Vec::new();
    while let Some(line) = lines.recv().await {
        batch.push(line.into_row());
        while let Ok(more) = lines.try_recv() {
            batch.push(more.into_row());
            if batch.len() >= 200 {
                break;
            }
        }
        log_lines(&env, deployment_id, PHASE, std::mem::take(&mut batch)).await;
    }
}
