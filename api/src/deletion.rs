//! Deleting a function (seed 000): schedule it for deletion after a grace period, during which it
//! stops serving but nothing is destroyed, or cancel that and have it serve again. The purge that
//! ends the grace period is the worker's `purge` job.

use anyhow::Context;
use slipway_shared::{
    db::{self, deletions::PendingDeletionRow, functions::LockedFunction},
    domain::{DeletionReason, FunctionEvent, FunctionStatus},
};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, Caller},
    error::ApiError,
};

/// Locks the caller's function for the rest of the transaction; a deletion or its cancel must be
/// signed unless the function skips signing.
async fn lock_owned(
    tx: &mut sqlx::PgConnection,
    caller: Caller,
    function_id: Uuid,
) -> Result<(LockedFunction, FunctionStatus), ApiError> {
    let function = auth::lock_for_change(tx, &caller, function_id).await?;
    let status = function.status;
    Ok((function, status))
}

pub fn function_deleted() -> ApiError {
    ApiError::new(
        http::StatusCode::GONE,
        "function_deleted",
        "the function was deleted; its name stays reserved for a while and its history readable",
    )
}

/// `DELETE /api/functions/{id}`: the function stops serving now and is purged once the grace
/// period is over, unless the deletion is cancelled first.
#[tracing::instrument(skip(state, caller))]
pub async fn schedule(
    state: &AppState,
    caller: Caller,
    function_id: Uuid,
) -> Result<PendingDeletionRow, ApiError> {
    let mut tx = state.pool.begin().await?;
    let (function, status) = lock_owned(&mut tx, caller, function_id).await?;
    status
        .apply(FunctionEvent::DeletionRequested)
        .map_err(|_| match status {
            FunctionStatus::Deleted => function_deleted(),
            _ => ApiError::conflict(
                "deletion_already_scheduled",
                "the function is already scheduled for deletion; see its deletion-status",
            ),
        })?;
    let image_tag = db::deployments::active_for_function(&mut tx, function.id)
        .await?
        .and_then(|active| active.image_tag);
    db::deletions::schedule(
        &mut tx,
        function.id,
        DeletionReason::UserRequested,
        image_tag.as_deref(),
        state.config.deletion_grace,
    )
    .await?;
    db::functions::change_status(
        &mut tx,
        function.id,
        status,
        FunctionEvent::DeletionRequested,
    )
    .await?;
    let scheduled = db::deletions::open_for_function(&mut tx, function.id)
        .await?
        .context("the deletion just scheduled is not there")?;
    tx.commit().await?;
    state.hot.forget_function(function.id);
    Ok(scheduled)
}

pub struct Restored {
    pub function_id: Uuid,
    pub name: String,
    pub status: FunctionStatus,
}

/// `POST /api/functions/{id}/cancel-deletion`: back to what its deployments say (active when one
/// serves), serving again at once, since nothing was stopped.
#[tracing::instrument(skip(state, caller))]
pub async fn cancel(
    state: &AppState,
    caller: Caller,
    function_id: Uuid,
) -> Result<Restored, ApiError> {
    let mut tx = state.pool.begin().await?;
    let (function, status) = lock_owned(&mut tx, caller, function_id).await?;
    match status {
        FunctionStatus::PendingDeletion => {}
        FunctionStatus::Deleted => return Err(function_deleted()),
        _ => {
            return Err(ApiError::conflict(
                "no_pending_deletion",
                format!("the function is {status}; it is not scheduled for deletion"),
            ));
        }
    }
    let open = db::deletions::open_for_function(&mut tx, function.id).await?;
    if open.is_some_and(|d| d.status == "purging") {
        return Err(ApiError::conflict(
            "purge_in_progress",
            "the grace period is over and the function is being purged; it cannot be restored",
        ));
    }
    db::deletions::cancel(&mut tx, function.id).await?;
    let in_flight = db::deployments::others_in_flight(&mut tx, function.id, Uuid::nil()).await?;
    let has_active = db::deployments::active_for_function(&mut tx, function.id)
        .await?
        .is_some();
    let cancelled = FunctionEvent::DeletionCancelled {
        in_flight,
        has_active,
    };
    let restored = db::functions::change_status(&mut tx, function.id, status, cancelled)
        .await
        .context("restoring the function's status")?;
    tx.commit().await?;
    state.hot.forget_function(function.id);
    Ok(Restored {
        function_id: function.id,
        name: function.name,
        status: restored,
    })
}
