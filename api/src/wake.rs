//! Waking an Inactive function on its first invocation: Inactive → Pending, and a `wake` job
//! that cache-warms, starts and initializes it. Requests for it wait meanwhile (see `invoke`).

use anyhow::Context;
use slipway_shared::{
    db,
    domain::{ServingEvent, ServingState},
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
    }
    .enqueue(&mut tx)
    .await
    .context("enqueueing the wake")?;
    tx.commit().await?;
    Ok(())
}
