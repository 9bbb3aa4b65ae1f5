//! `push`: put the built image in the registry, read its manifest digest back from the registry
//! (`Docker-Content-Digest`), record tag + digest, and hand over to `cache-warm`.

use std::sync::Arc;

use slipway_shared::{db, domain::PipelineStep, jobs::PushJob};
use tracing::info;

use super::{RunJob, StepError, image_of, log_lines, record_image, run_step, with_retries};
use crate::{
    Environment,
    registry::{RegistryError, push_through_engine},
};

const STEP: PipelineStep = PipelineStep::Push;
const PHASE: &str = STEP.phase();

impl RunJob for PushJob {
    #[tracing::instrument(name = "push", skip_all, fields(deployment_id = %self.deployment_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        run_step(
            env,
            self.deployment_id,
            STEP,
            |env, deployment| async move { push(&env, &deployment).await },
        )
        .await
    }
}

pub(super) fn registry_step(e: RegistryError) -> StepError {
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
    let image = image_of(env, deployment)?;

    // A standalone buildkitd pushed while exporting; Docker's embedded one left the image in the
    // engine, which pushes it now.
    if env.buildkit_exports_to_engine() {
        let progress = with_retries(env, "pushing", || async {
            let credentials = env
                .registry
                .push_credentials()
                .await
                .map_err(registry_step)?;
            push_through_engine(&env.docker, &image, credentials)
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
    let function = db::functions::lock(&mut tx, deployment.function_id)
        .await?
        .ok_or_else(|| StepError::Permanent("the function is gone".into()))?;
    record_image(
        &mut tx,
        deployment,
        &function,
        &image.tagged(),
        digest.as_str(),
        PHASE,
        format!("pushed {} as {digest}", image.tagged()),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
