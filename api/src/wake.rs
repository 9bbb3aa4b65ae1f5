//! Waking an Inactive function on its first invocation: Inactive → Pending, and a `wake` job
//! that cache-warms, starts and initializes it. Requests for it wait meanwhile (see `invoke`).
//! The same for a version that is not the active one, invoked through an alias or `@N`: its own
//! instance is started on demand and idles out like any other.

use anyhow::Context;
use slipway_shared::{
    db,
    domain::{FunctionStatus, ServingEvent, ServingState},
    jobs::{Job, WakeJob},
};
use uuid::Uuid;

use crate::{AppState, error::ApiError};

/// Requests the wake unless another request already did (the function is then Pending).
pub async fn request(state: &AppState, function_id: Uuid) -> Result<(), ApiError> {
    let mut tx = state.pool.begin().await?;
    db::functions::lock(&mut tx, function_id).await?;
    if db::functions::serving(&mut tx, function_id).await?.state != ServingState::Inactive {
        return Ok(());
    }
    db::functions::transition_serving(&mut tx, function_id, &ServingEvent::WakeRequested).await?;
    WakeJob {
        function_id,
        request_id: Uuid::new_v4(),
        version_instance: None,
    }
    .enqueue(&mut tx)
    .await
    .context("enqueueing the wake")?;
    tx.commit().await?;
    Ok(())
}

/// Asks for an instance of `deployment_id`, a version that is not the active one, for
/// invocations of an alias or of `@N`; unless one is starting or ready already (a failed start is
/// asked for again). Under the function's lock, which a purge takes to stop every instance.
pub async fn request_version(
    state: &AppState,
    function_id: Uuid,
    deployment_id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = state.pool.begin().await?;
    let function = db::functions::lock(&mut tx, function_id)
        .await?
        .ok_or_else(ApiError::function_not_found)?;
    if matches!(
        function.status,
        FunctionStatus::PendingDeletion | FunctionStatus::Deleted
    ) {
        return Err(crate::deletion::function_deleted());
    }
    let run_token = Uuid::new_v4();
    if db::aliases::request_instance(&mut tx, function_id, deployment_id, run_token).await? {
        WakeJob {
            function_id,
            request_id: run_token,
            version_instance: Some(deployment_id),
        }
        .enqueue(&mut tx)
        .await
        .context("enqueueing the version's start")?;
    }
    tx.commit().await?;
    Ok(())
}
