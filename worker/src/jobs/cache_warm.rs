//! `cache-warm`: pull the recorded `image@digest` onto the runtime host, then hand over to
//! `deploy`. The function is Pending (first version) or keeps serving its previous version
//! meanwhile; a pull that fails fails the deployment with the registry's reason.

use std::sync::Arc;

use anyhow::Context;
use slipway_shared::{
    db,
    domain::{Digest, ImageRef, PipelineStep},
    jobs::{CacheWarmJob, DeployJob, Job},
};
use tokio::time::Instant;

use super::{RunJob, StepError, recorded_image, run_step, with_retries};
use crate::Environment;
use crate::runtime::lifecycle::{registry_step, runtime_step};

const STEP: PipelineStep = PipelineStep::CacheWarm;
const PHASE: &str = STEP.phase();

impl RunJob for CacheWarmJob {
    #[tracing::instrument(name = "cache-warm", skip_all, fields(deployment_id = %self.deployment_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        run_step(
            env,
            self.deployment_id,
            STEP,
            |env, deployment| async move { warm(&env, &deployment).await },
        )
        .await
    }
}

async fn warm(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
) -> Result<(), StepError> {
    let (image, digest) = recorded_image(deployment)?;
    let started = Instant::now();
    pull(env, &image, &digest).await?;

    let mut tx = env.pool.begin().await?;
    db::functions::lock(&mut tx, deployment.function_id).await?;
    DeployJob {
        deployment_id: deployment.id,
    }
    .enqueue(&mut tx)
    .await
    .context("enqueueing the deploy")
    .map_err(StepError::Transient)?;
    db::logs::append(
        &mut tx,
        deployment.id,
        PHASE,
        &[(
            "info".into(),
            match env.runtime {
                crate::runtime::Runtime::Docker(_) => format!(
                    "{} is on the runtime host ({} ms)",
                    image.pinned(&digest),
                    started.elapsed().as_millis()
                ),
                crate::runtime::Runtime::Swarm(_) => format!(
                    "{}: the node the swarm places the task on pulls it",
                    image.pinned(&digest)
                ),
            },
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Pulls `image@digest` onto the runtime host, retrying what is transient.
pub(super) async fn pull(
    env: &Environment,
    image: &ImageRef,
    digest: &Digest,
) -> Result<(), StepError> {
    with_retries(env, "pulling the image", || async {
        let credentials = env
            .registry
            .push_credentials()
            .await
            .map_err(registry_step)?;
        env.runtime
            .pull(&image.name(), digest.as_str(), credentials)
            .await
            .map_err(runtime_step)
    })
    .await
}
