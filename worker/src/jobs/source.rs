//! `source`: fetch exactly the pushed commit of a deployment from its git binding, pack the
//! bound subdirectory as the deploy archive (validated like an upload), record the commit's
//! message, then hand over to `build`. A newer push may supersede the deployment at any moment
//! until then; the hand-over is conditional, and an archive stored for a deployment that was
//! superseded meanwhile is deleted again.

use std::sync::Arc;

use anyhow::Context;
use slipway_shared::{
    archive, build_rules,
    db::{self, deployments::StatusChange},
    domain::PipelineStep,
    git::{self, GitCredentials},
    jobs::{BuildJob, Job, SourceJob},
    metrics,
    store::{StoreError, archive_key},
};
use tracing::{info, warn};

use super::{RunJob, StepError, log_info, run_step, with_retries};
use crate::{
    Environment,
    git::{self as fetch, GitError},
};

const STEP: PipelineStep = PipelineStep::Source;
const PHASE: &str = STEP.phase();

impl RunJob for SourceJob {
    #[tracing::instrument(name = "source", skip_all, fields(deployment_id = %self.deployment_id))]
    async fn run(self, env: Arc<Environment>) -> anyhow::Result<()> {
        run_step(
            env,
            self.deployment_id,
            STEP,
            |env, deployment| async move {
                let waited = metrics::elapsed_since(deployment.created_at);
                metrics::deploy_stage(metrics::Stage::QueueWait, metrics::Outcome::Ok, waited);
                fetch(&env, &deployment).await
            },
        )
        .await
    }
}

fn git_step(e: GitError) -> StepError {
    match e {
        GitError::Unavailable(m) => StepError::Transient(anyhow::anyhow!(m)),
        refused => StepError::Permanent(refused.to_string()),
    }
}

async fn fetch(
    env: &Arc<Environment>,
    deployment: &db::deployments::DeploymentRow,
) -> Result<(), StepError> {
    let gone =
        || StepError::Permanent("the git binding was deleted before the push was fetched".into());
    let binding = {
        let mut conn = env.pool.acquire().await?;
        let id = deployment.git_binding_id.ok_or_else(gone)?;
        db::git::get_binding(&mut conn, id)
            .await?
            .ok_or_else(gone)?
    };
    let sha = deployment
        .commit_sha
        .as_deref()
        .ok_or_else(|| StepError::Permanent("the deployment names no commit".into()))?;
    let credentials = open_credentials(env, &binding)?;
    log_info(
        env,
        deployment.id,
        PHASE,
        format!("fetching {sha} from {}", binding.clone_url),
    )
    .await;

    let workdir = tempfile::tempdir().map_err(|e| StepError::Transient(e.into()))?;
    let commit = with_retries(env, "fetching the commit", || async {
        fetch::fetch_commit(
            workdir.path(),
            &binding.clone_url,
            credentials.as_ref(),
            sha,
            &fetch::FetchPolicy {
                allow_file: env.config.git_allow_file,
                allowed_networks: &env.config.git_allow_networks,
                max_bytes: env.config.git_max_fetch_bytes,
            },
        )
        .await
        .map_err(git_step)
    })
    .await?;
    let message = commit.message().await.map_err(git_step)?;
    let max_bytes = env.config.archive_limits.max_compressed_bytes;
    let packed = bytes::Bytes::from(
        commit
            .archive(&binding.subdirectory, max_bytes)
            .await
            .map_err(git_step)?,
    );
    drop(workdir);

    let limits = env.config.archive_limits.clone();
    let summary = {
        let packed = packed.clone();
        tokio::task::spawn_blocking(move || archive::validate_archive(&packed, &limits))
            .await
            .map_err(|e| StepError::Transient(e.into()))?
            .map_err(|e| {
                StepError::Permanent(format!("the commit cannot be deployed ({}): {e}", e.code()))
            })?
    };
    {
        let mut conn = env.pool.acquire().await?;
        let functions = db::functions::live_of_owner(&mut conn, deployment.owner_id).await?;
        let own = build_rules::OwnRepositories::at(env.registry.host(), &functions);
        let violations =
            build_rules::check(&summary.dockerfile, &env.config.build_base_images, &own);
        if !violations.is_empty() {
            return Err(StepError::Permanent(format!(
                "the commit cannot be deployed: {}",
                build_rules::describe(&violations)
            )));
        }
    }
    let first_line = message.lines().next().unwrap_or_default();
    log_info(
        env,
        deployment.id,
        PHASE,
        format!(
            "packed {} of {sha} ({} bytes, {} entries): {first_line}",
            if binding.subdirectory.is_empty() {
                "/"
            } else {
                &binding.subdirectory
            },
            packed.len(),
            summary.entries
        ),
    )
    .await;

    let key = archive_key(deployment.function_id, deployment.version);
    let bytes = packed.len() as i64;
    with_retries(env, "storing the archive", || async {
        env.store
            .put(&key, packed.clone())
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(e) => StepError::Transient(e),
                other => StepError::Permanent(other.to_string()),
            })
    })
    .await?;

    let handed_over = async {
        let mut tx = env.pool.begin().await?;
        db::functions::lock(&mut tx, deployment.function_id).await?;
        if !db::deployments::change(
            &mut tx,
            deployment.id,
            deployment.run_token,
            StatusChange::Fetched {
                archive_key: &key,
                archive_sha256: &summary.sha256,
                archive_bytes: bytes,
                commit_message: &message,
            },
        )
        .await?
        {
            return Ok::<bool, anyhow::Error>(false);
        }
        BuildJob {
            deployment_id: deployment.id,
            slot_waits: 0,
        }
        .enqueue(&mut tx)
        .await
        .context("enqueueing the build")?;
        db::logs::append(
            &mut tx,
            deployment.id,
            PHASE,
            &[("info".to_owned(), format!("commit {sha} fetched; building"))],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
    .await;
    if let Ok(true) = handed_over {
        info!(commit = sha, "fetched");
        return Ok(());
    }
    // Superseded (or failed) meanwhile, or the hand-over did not commit: the archive belongs to
    // no deployment, unless a duplicate run of this job handed over the same key first.
    if !archive_recorded(env, deployment.id, &key).await
        && let Err(e) = env.store.delete(&key).await
    {
        warn!(%key, error = %e, "could not delete the archive of a push that was not handed over");
    }
    match handed_over {
        Err(e) => Err(StepError::Transient(e)),
        _ => {
            info!(commit = sha, "superseded while it was fetched");
            Ok(())
        }
    }
}

async fn archive_recorded(env: &Environment, deployment_id: uuid::Uuid, key: &str) -> bool {
    let recorded = async {
        let mut conn = env.pool.acquire().await?;
        db::deployments::get(&mut conn, deployment_id).await
    }
    .await;
    match recorded {
        Ok(Some(row)) => row.archive_key.as_deref() == Some(key),
        Ok(None) => false,
        // Unknown: keeping an orphan (the purge lists the function's prefix) beats deleting a
        // live archive.
        Err(_) => true,
    }
}

/// The binding's clone credentials, opened with this worker's `SLIPWAY_SECRETS_KEY`.
fn open_credentials(
    env: &Environment,
    binding: &db::git::BindingRow,
) -> Result<Option<GitCredentials>, StepError> {
    let Some(sealed) = &binding.credentials_sealed else {
        return Ok(None);
    };
    let unreadable = |why: String| {
        StepError::Permanent(format!("the binding's credentials cannot be read: {why}"))
    };
    let key = env
        .config
        .secrets_key
        .as_ref()
        .ok_or_else(|| unreadable("this worker has no SLIPWAY_SECRETS_KEY".into()))?;
    let json = key
        .open(&git::credentials_context(binding.id), sealed)
        .map_err(|e| unreadable(e.to_string()))?;
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| unreadable(e.to_string()))
}
