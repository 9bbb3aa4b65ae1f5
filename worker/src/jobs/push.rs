//! `push`: put the built image in the registry, read its manifest digest back from the registry
//! (`Docker-Content-Digest`), record tag + digest, and hand over to `deploy`.

use std::sync::Arc;

use anyhow::Context;
use slipway_shared::{
    db,
    domain::{DeploymentStatus, FunctionName, ImageRef},
    jobs::{DeployJob, Job, PushJob},
};
use tracing::info;

use super::{RunJob, StepError, conclude, fenced, log_lines, with_retries};
use crate::{
    Environment,
    registry::{RegistryError, push_through_engine},
};

const PHASE: &str = "push";

impl RunJob for PushJob {
    #[tracing::instrument(name = "push", skip_all, fields(deployment_id = %self.deployment_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        let Some(deployment) = fenced(
            &env,
            self.deployment_id,
            DeploymentStatus::Pushing,
            Self::NAME,
        )
        .await?
        else {
            return Ok(());
        };
        let outcome = push(&env, &deployment).await;
        conclude(&env, &deployment, PHASE, outcome).await
    }
}

fn registry_step(e: RegistryError) -> StepError {
    match e {
        RegistryError::Unavailable(m) => StepError::Transient(anyhow::anyhow!(m)),
        RegistryError::Refused(m) => {
            StepError::Permanent(format!("the registry refused the image: {m}"))
        }
    }
}

async fn push(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
) -> Result<(), StepError> {
    let name = FunctionName::parse(&deployment.function_name)
        .map_err(|e| StepError::Permanent(format!("stored function name is invalid: {e}")))?;
    let image = ImageRef::for_version(
        env.registry.host(),
        &name,
        deployment.function_id,
        deployment.version,
    );

    // A standalone buildkitd pushed while exporting; Docker's embedded one left the image in the
    // engine, which pushes it now.
    if env.buildkit_exports_to_engine() {
        let progress = with_retries(env, "pushing", || async {
            push_through_engine(&env.docker, &image)
                .await
                .map_err(registry_step)
        })
        .await?;
        let lines = progress
            .into_iter()
            .map(|l| ("info".to_owned(), l))
            .collect();
        log_lines(env, deployment.id, PHASE, lines).await;
    }

    let digest = with_retries(env, "reading the manifest digest", || async {
        env.registry
            .manifest_digest(&image)
            .await
            .map_err(registry_step)
    })
    .await?
    .ok_or_else(|| {
        StepError::Permanent(format!(
            "{} is not in the registry after the push",
            image.tagged()
        ))
    })?;
    info!(image = %image.tagged(), %digest, "pushed");

    let mut tx = env.pool.begin().await?;
    db::functions::lock(&mut tx, deployment.function_id).await?;
    if db::deployments::record_push(&mut tx, deployment.id, &image.tagged(), digest.as_str())
        .await?
    {
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
                format!("pushed {} as {digest}", image.tagged()),
            )],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
