//! Building and deploying as two steps (seed 003): `build` wraps a function's handler in its
//! template and accepts the result like an upload, held, so its pipeline stops at `built`
//! (pushed, digest recorded, not serving) and what serves is not touched; `deploy` releases a
//! built version to the rest of the pipeline (cache-warm, start, switch), in one transaction
//! with its job.

use std::io::Write as _;

use anyhow::Context;
use slipway_shared::{
    db::{self, deployments::StatusChange},
    domain::{FunctionEvent, ServingEvent},
    jobs::{CacheWarmJob, Job},
    templates::Template,
};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, Caller},
    deploy::{self, DeployRequest, UploadedArchive},
    error::ApiError,
};

/// Builds the function's handler as a new version, held at `built`.
#[tracing::instrument(skip(state, caller))]
pub async fn build(
    state: &AppState,
    caller: Caller,
    function_id: Uuid,
) -> Result<deploy::Accepted, ApiError> {
    let function = {
        let mut conn = state.pool.acquire().await?;
        db::functions::find(&mut conn, caller.user_id, function_id)
            .await?
            .ok_or_else(ApiError::function_not_found)?
    };
    let (Some(template), Some(handler)) = (&function.template, &function.handler) else {
        return Err(ApiError::conflict(
            "not_a_template_function",
            "the function has no handler to build: it takes archives (POST /api/functions/deploy)",
        ));
    };
    let template = Template::parse(template)
        .with_context(|| format!("function {function_id} has an unknown template {template:?}"))?;
    let Some(repository) = &state.config.runtime_images else {
        return Err(ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "templates_unavailable",
            "this server has no runtime images (SLIPWAY_RUNTIME_IMAGES or SLIPWAY_REGISTRY); ask its operator",
        ));
    };
    let context = template
        .build_context(repository, handler)
        .context("packing the template")?;
    let archive = tokio::task::spawn_blocking(move || -> std::io::Result<UploadedArchive> {
        let mut file = tempfile::NamedTempFile::new()?;
        file.write_all(&context)?;
        file.flush()?;
        Ok(UploadedArchive {
            file,
            length: context.len() as u64,
        })
    })
    .await
    .context("spooling the build context")?
    .context("spooling the build context")?;
    // The version keeps the function's env as it is now; a build changes none of it.
    let env = slipway_shared::env::FunctionEnv::open(
        &function.env,
        state.config.secrets_key.as_ref(),
        &slipway_shared::env::function_context(function.id),
    )
    .context("opening the function's env")?;
    deploy::accept(
        state,
        caller,
        DeployRequest {
            function_id,
            archive,
            env: env.vars,
            secret_env: env.secret,
            hold: true,
        },
    )
    .await
}

pub struct Released {
    pub deployment_id: Uuid,
    pub version: i32,
}

/// Sends a built version on to serving: the given one, or the newest built.
#[tracing::instrument(skip(state, caller))]
pub async fn deploy(
    state: &AppState,
    caller: Caller,
    function_id: Uuid,
    version: Option<i32>,
) -> Result<Released, ApiError> {
    let mut tx = state.pool.begin().await?;
    let function = auth::lock_for_change(&mut tx, &caller, function_id).await?;
    if function
        .status
        .apply(FunctionEvent::DeployRequested)
        .is_err()
    {
        return Err(ApiError::conflict(
            "function_not_deployable",
            format!(
                "function is {}; it cannot take a deployment",
                function.status
            ),
        ));
    }
    let version = match version {
        Some(version) => version,
        None => db::deployments::newest_built(&mut tx, function_id)
            .await?
            .ok_or_else(|| {
                ApiError::conflict(
                    "nothing_built",
                    "the function has no built version waiting: POST /api/v1/functions/build/{id} first",
                )
            })?,
    };
    let target = crate::rollback::version_of(&mut tx, function_id, version).await?;
    if target.status != slipway_shared::domain::DeploymentStatus::Built || target.pruned {
        return Err(ApiError::conflict(
            "version_not_built",
            format!(
                "version {version} is {}, not a built version waiting for a deploy (a version that served comes back with a rollback)",
                target.status.as_str()
            ),
        ));
    }
    if let Some((_, newer)) = db::deployments::newer_served(&mut tx, function_id, version).await? {
        return Err(ApiError::conflict(
            "version_overtaken",
            format!(
                "version {newer} is newer and has already served; version {version} cannot take the traffic back"
            ),
        ));
    }
    if !db::deployments::change(&mut tx, target.id, None, StatusChange::Released).await? {
        return Err(ApiError::conflict(
            "version_not_built",
            format!("version {version} changed meanwhile; ask again"),
        ));
    }
    db::functions::change_status(
        &mut tx,
        function_id,
        function.status,
        FunctionEvent::DeployRequested,
    )
    .await?;
    db::functions::transition_serving(&mut tx, function_id, &ServingEvent::UpdateStarted)
        .await
        .context("marking the update in progress")?;
    CacheWarmJob {
        deployment_id: target.id,
    }
    .enqueue(&mut tx)
    .await
    .context("enqueueing the cache-warm")?;
    db::logs::append(
        &mut tx,
        target.id,
        "deploy",
        &[(
            "info".into(),
            format!("version {version} released for deployment"),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(Released {
        deployment_id: target.id,
        version,
    })
}
