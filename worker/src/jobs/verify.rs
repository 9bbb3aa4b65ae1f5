//! `verify`: the scheduler's digest sweep, one function at a time. The serving version's
//! recorded tag and digest are checked at the registry and the result applied under the
//! function's lock (drift reported, or the function Failed), as before every restart.

use std::sync::Arc;

use slipway_shared::{
    db,
    domain::{Digest, ImageRef, Serving},
    integrity::{self, OnTagOverwrite},
    jobs::VerifyJob,
};
use tracing::{info, warn};

use super::{RunJob, StepError, with_retries};
use crate::Environment;
use crate::runtime::lifecycle::registry_step;

impl RunJob for VerifyJob {
    #[tracing::instrument(name = "verify", skip_all, fields(function_id = %self.function_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        let deployment = {
            let mut conn = env.pool.acquire().await?;
            let Some(active) =
                db::deployments::active_for_function(&mut conn, self.function_id).await?
            else {
                return Ok(());
            };
            db::deployments::get(&mut conn, active.id).await?
        };
        let Some(deployment) = deployment else {
            return Ok(());
        };
        let (Some(image), Some(digest)) = (
            deployment
                .image_tag
                .as_deref()
                .and_then(ImageRef::parse_tagged),
            deployment
                .image_digest
                .as_deref()
                .and_then(|d| Digest::parse(d).ok()),
        ) else {
            warn!("the active version has no recorded image; nothing to verify");
            return Ok(());
        };
        match verify_and_record(&env, &deployment, &image, &digest).await {
            Ok(serving) => {
                info!(state = %serving.state, "verified");
                Ok(())
            }
            // Another version took the traffic meanwhile: its own start verified it.
            Err(StepError::Permanent(reason)) => {
                info!(%reason, "verification not applied");
                Ok(())
            }
            Err(StepError::Transient(e)) => Err(e),
            Err(other @ (StepError::Overtaken { .. } | StepError::LostClaim)) => Err(other.into()),
        }
    }
}

/// Asks the registry about the serving version's image and applies the answer, unless another
/// version took the traffic while the registry was asked.
pub(super) async fn verify_and_record(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Serving, StepError> {
    let verification = with_retries(env, "verifying the image at the registry", || async {
        env.registry
            .verify(image, digest)
            .await
            .map_err(registry_step)
    })
    .await?;
    let mut tx = env.pool.begin().await?;
    let function = db::functions::lock(&mut tx, deployment.function_id)
        .await?
        .ok_or_else(|| StepError::Permanent("the function is gone".into()))?;
    let still_active = db::deployments::active_for_function(&mut tx, function.id)
        .await?
        .is_some_and(|a| a.id == deployment.id);
    if !still_active {
        return Err(StepError::Permanent(
            "another version took the traffic meanwhile".into(),
        ));
    }
    let policy = db::functions::on_tag_overwrite(&mut tx, function.id).await?;
    let policy = OnTagOverwrite::parse(&policy)
        .ok_or_else(|| StepError::Permanent(format!("unknown on_tag_overwrite {policy:?}")))?;
    let serving = integrity::record(&mut tx, function.id, image, digest, &verification, policy)
        .await
        .map_err(StepError::Transient)?;
    tx.commit().await?;
    Ok(serving)
}
