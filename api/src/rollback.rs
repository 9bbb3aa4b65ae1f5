//! The rollback use case: check the requested version can serve again, and enqueue the rollback
//! job in the same transaction that read that, so the answer and the job commit together.

use anyhow::Context;
use http::StatusCode;
use slipway_shared::{
    db,
    domain::{DeploymentStatus, FunctionStatus, ServingEvent},
    jobs::{Job, RollbackJob},
};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, Caller},
    error::ApiError,
};

pub struct Accepted {
    pub function_id: Uuid,
    pub name: String,
    pub status: FunctionStatus,
    pub active_version: Option<i32>,
    pub target_deployment: Uuid,
}

#[tracing::instrument(skip(state, caller))]
pub async fn accept(
    state: &AppState,
    caller: Caller,
    function_id: Uuid,
    version: i32,
) -> Result<Accepted, ApiError> {
    let mut tx = state.pool.begin().await?;
    let function = auth::lock_for_change(&mut tx, &caller, function_id).await?;
    let status = function.status;
    if matches!(
        status,
        FunctionStatus::PendingDeletion | FunctionStatus::Deleted
    ) {
        return Err(ApiError::conflict(
            "function_not_deployable",
            format!("function is {status}; it cannot be rolled back"),
        ));
    }
    let target = version_of(&mut tx, function_id, version).await?;
    if target.pruned {
        return Err(ApiError::conflict(
            "version_pruned",
            format!(
                "version {version} is older than the versions Slipway retains; its image is gone"
            ),
        ));
    }
    match target.status {
        DeploymentStatus::Active => {
            return Err(ApiError::conflict(
                "version_already_active",
                format!("version {version} is already the active version"),
            ));
        }
        DeploymentStatus::Inactive if target.image_digest.is_some() => {}
        DeploymentStatus::Inactive | DeploymentStatus::Failed => {
            return Err(ApiError::conflict(
                "version_not_built",
                format!("version {version} never produced an image; deploy a new version instead"),
            ));
        }
        DeploymentStatus::Built => {
            return Err(ApiError::conflict(
                "version_never_deployed",
                format!(
                    "version {version} is built but never served: deploy it with POST /api/v1/functions/deploy/{{id}}"
                ),
            ));
        }
        DeploymentStatus::Superseded => {
            return Err(ApiError::conflict(
                "version_superseded",
                format!("version {version} was overtaken by a newer push and never served"),
            ));
        }
        DeploymentStatus::Fetching
        | DeploymentStatus::Building
        | DeploymentStatus::Pushing
        | DeploymentStatus::Deploying => {
            return Err(ApiError::conflict(
                "version_in_progress",
                format!("version {version} is still being deployed"),
            ));
        }
    }
    let active = db::deployments::active_for_function(&mut tx, function_id).await?;
    db::functions::transition_serving(&mut tx, function_id, &ServingEvent::UpdateStarted)
        .await
        .context("marking the update in progress")?;
    RollbackJob {
        deployment_id: target.id,
        request_id: Uuid::new_v4(),
    }
    .enqueue(&mut tx)
    .await
    .context("enqueueing the rollback")?;
    tx.commit().await?;
    Ok(Accepted {
        function_id,
        name: function.name,
        status: function.status,
        active_version: active.map(|a| a.version),
        target_deployment: target.id,
    })
}

/// The function's version `version`, or 404 `version_not_found`.
pub async fn version_of(
    conn: &mut sqlx::PgConnection,
    function_id: Uuid,
    version: i32,
) -> Result<db::deployments::VersionInfo, ApiError> {
    db::deployments::version_info(conn, function_id, version)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "version_not_found",
                format!("the function has no version {version}"),
            )
        })
}

pub fn invalid_version() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_version",
        "version must be a positive integer",
    )
}
