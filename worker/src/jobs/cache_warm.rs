//! `cache-warm`: pull the recorded `image@digest` onto the runtime host, then hand over to
//! `deploy`. The function is Pending (first version) or keeps serving its previous version
//! meanwhile; a pull that fails fails the deployment with the registry's reason.

use std::sync::Arc;

use anyhow::Context;
use slipway_shared::{
    db,
    domain::{DeploymentStatus, Digest, ImageRef},
    jobs::{CacheWarmJob, DeployJob, Job},
};
use tokio::time::Instant;

use super::{RunJob, StepError, deploy::runtime_step, run_step, with_retries};
use crate::Environment;

const PHASE: &str = "cache-warm";

impl RunJob for CacheWarmJob {
    #[tracing::instrument(name = "cache-warm", skip_all, fields(deployment_id = %self.deployment_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        run_step(
            env,
            self.deployment_id,
            DeploymentStatus::Deploying,
            PHASE,
            |env, deployment| async move { warm(&env, &deployment).await },
        )
        .await
    }
}

async fn warm(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
) -> Result<(), StepError> {
    let recorded =
        |what: &str| StepError::Permanent(format!("the deployment has no recorded {what}"));
    let image = deployment
        .image_tag
        .as_deref()
        .and_then(ImageRef::parse_tagged)
        .ok_or_else(|| recorded("image tag"))?;
    let digest = deployment
        .image_digest
        .as_deref()
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| recorded("digest"))?;
    let started = Instant::now();
    with_retries(env, "pulling the image", || async {
        env.runtime
            .pull(&image.name(), digest.as_str())
            .await
            .map_err(runtime_step)
    })
    .await?;

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
            format!(
                "{} is on the runtime host ({} ms)",
                image.pinned(&digest),
                started.elapsed().as_millis()
            ),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
