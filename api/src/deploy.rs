//! The deploy use case: validate the archive, then in one transaction hand out the next version,
//! record the deployment, mark the function building, store the archive and enqueue the build.
//! Either all of it commits or none of it exists (an archive stored for a transaction that then
//! failed to commit is deleted again).

use std::collections::BTreeMap;

use anyhow::Context;
use http::StatusCode;
use slipway_shared::{
    archive::{self, ArchiveError},
    build_rules,
    db::{self, deployments::NewDeployment},
    domain::{FunctionEvent, FunctionStatus, ServingEvent},
    jobs::{BuildJob, Job},
    store::archive_key,
};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, Caller},
    error::ApiError,
};

pub struct DeployRequest {
    pub function_id: Uuid,
    pub archive: UploadedArchive,
    pub env: BTreeMap<String, String>,
    /// Names in `env` whose values are never shown again.
    pub secret_env: std::collections::BTreeSet<String>,
    /// Build only: the version waits `built` until a deploy releases it, and what serves is
    /// not being updated meanwhile.
    pub hold: bool,
}

/// An uploaded archive, on disk until it is stored: uploads never sit whole in the API's memory.
/// The file is removed when this is dropped.
pub struct UploadedArchive {
    pub file: tempfile::NamedTempFile,
    pub length: u64,
}

pub struct Accepted {
    pub deployment_id: Uuid,
    pub function_id: Uuid,
    pub version: i32,
}

fn archive_rejection(error: ArchiveError) -> ApiError {
    let status = match error {
        ArchiveError::TooLarge { .. } | ArchiveError::UncompressedTooLarge { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, error.code(), error.to_string())
}

/// Refuses a Dockerfile that reaches for URLs or for images that are not the caller's to use
/// (`build_rules`), naming each line.
async fn check_build_rules(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    owner_id: Uuid,
    dockerfile: &[u8],
) -> Result<(), ApiError> {
    let own = match &state.config.registry {
        Some(registry) => {
            let functions = db::functions::live_of_owner(conn, owner_id).await?;
            build_rules::OwnRepositories::at(registry, &functions)
        }
        None => build_rules::OwnRepositories::default(),
    };
    let violations = build_rules::check(dockerfile, &state.config.build_base_images, &own);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "dockerfile_refused",
            build_rules::describe(&violations),
        ))
    }
}

#[tracing::instrument(skip_all, fields(function_id = %request.function_id))]
pub async fn accept(
    state: &AppState,
    caller: Caller,
    request: DeployRequest,
) -> Result<Accepted, ApiError> {
    // Ownership and the owner's queue first: nothing is inflated for a function the caller may
    // not deploy, nor for an owner whose builds already fill their share.
    let mut tx = state.pool.begin().await?;
    let function = auth::lock_for_change(&mut tx, &caller, request.function_id).await?;
    let limit = state.config.max_queued_builds;
    if db::deployments::in_flight_of_owner(&mut tx, caller.user_id).await? >= limit {
        return Err(crate::uploads::too_many_builds(limit));
    }
    let limits = state.config.archive_limits.clone();
    let file = request
        .archive
        .file
        .reopen()
        .context("reopening the uploaded archive")?;
    let length = request.archive.length;
    let summary =
        tokio::task::spawn_blocking(move || archive::validate_archive_file(&file, length, &limits))
            .await
            .context("archive validation panicked")?
            .map_err(archive_rejection)?;
    check_build_rules(state, &mut tx, caller.user_id, &summary.dockerfile).await?;
    let update = open_update(&mut tx, &function, request.hold)
        .await?
        .map_err(|status| {
            ApiError::conflict(
                "function_not_deployable",
                format!("function is {status}; it cannot take a new deployment"),
            )
        })?;
    let version = update.version;
    let deployment_id = Uuid::new_v4();
    let key = archive_key(function.id, version);
    let function_env = slipway_shared::env::FunctionEnv {
        vars: request.env.clone(),
        secret: request.secret_env.clone(),
    };
    let secrets_key = state.config.secrets_key.as_ref();
    let sealed = |context: String| {
        function_env.seal(secrets_key, &context).map_err(|e| match e {
            slipway_shared::env::EnvError::NoKey => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "secrets_key_missing",
                "this server has no SLIPWAY_SECRETS_KEY to seal environment values with; deploy \
                 without env or ask its operator",
            ),
            other => ApiError::Internal(anyhow::Error::new(other).context("sealing env")),
        })
    };
    let env = sealed(slipway_shared::env::deployment_context(deployment_id))?;
    let function_env = sealed(slipway_shared::env::function_context(function.id))?;
    db::deployments::insert(
        &mut tx,
        &NewDeployment {
            id: deployment_id,
            function_id: function.id,
            version,
            archive_key: &key,
            archive_sha256: &summary.sha256,
            archive_bytes: request.archive.length as i64,
            env: &env,
            hold: request.hold,
        },
    )
    .await?;
    db::functions::change_status(
        &mut tx,
        function.id,
        update.status,
        FunctionEvent::DeployRequested,
    )
    .await?;
    db::functions::set_env(&mut tx, function.id, &function_env).await?;
    BuildJob {
        deployment_id,
        slot_waits: 0,
    }
    .enqueue(&mut tx)
    .await
    .context("enqueueing the build")?;

    // Stored before commit so the build never looks for a missing archive; removed again if the
    // commit fails, so no object outlives its rolled-back deployment.
    state
        .store
        .put_file(&key, request.archive.file.path())
        .await
        .context("storing the archive")?;
    if let Err(e) = tx.commit().await {
        if let Err(cleanup) = state.store.delete(&key).await {
            warn!(%key, error = %cleanup, "could not delete the archive of a deployment that did not commit");
        }
        return Err(ApiError::Internal(
            anyhow::Error::new(e).context("committing the deployment"),
        ));
    }
    info!(%deployment_id, version, entries = summary.entries, "deployment accepted");
    Ok(Accepted {
        deployment_id,
        function_id: function.id,
        version,
    })
}

/// A new version of a function, opened under its lock.
pub(crate) struct OpenedUpdate {
    pub version: i32,
    /// The function's lifecycle status before it; `DeployRequested` moves it on once the
    /// deployment is recorded.
    pub status: FunctionStatus,
}

/// Starts an update of the locked function, for an upload or a push: its lifecycle status must
/// take a new deployment (else `Err(status)`); then the version is handed out and, unless the
/// version is only built (`hold`), the serving state says an update is in progress. The caller
/// records the deployment and enqueues its job in the same transaction.
pub(crate) async fn open_update(
    tx: &mut sqlx::PgConnection,
    function: &db::functions::LockedFunction,
    hold: bool,
) -> anyhow::Result<Result<OpenedUpdate, FunctionStatus>> {
    let status = function.status;
    if status.apply(FunctionEvent::DeployRequested).is_err() {
        return Ok(Err(status));
    }
    let version = db::functions::allocate_version(tx, function.id).await?;
    if !hold {
        db::functions::transition_serving(tx, function.id, &ServingEvent::UpdateStarted)
            .await
            .context("marking the update in progress")?;
    }
    Ok(Ok(OpenedUpdate { version, status }))
}
