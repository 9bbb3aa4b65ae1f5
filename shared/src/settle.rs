//! How a deployment that ended badly settles its function, in the caller's transaction: the
//! one way a deployment fails, shared by the worker's jobs and the scheduler's reaper.

use anyhow::Context;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    db::{self, deployments::StatusChange},
    domain::{FunctionEvent, FunctionStatus, ServingEvent},
};

/// Marks the deployment failed with `reason` (if it is still in flight) and settles its
/// function: lifecycle status, the failed update, a log line. The previously active version,
/// if any, is untouched and keeps serving. Returns whether this call failed it. `run_token`: the
/// claim of the job run that failed it (`None` for the reaper, which holds none).
pub async fn fail_deployment(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    run_token: Option<Uuid>,
    function_id: Uuid,
    phase: &str,
    reason: &str,
) -> anyhow::Result<bool> {
    let function = db::functions::lock(conn, function_id)
        .await?
        .context("the deployment's function is gone")?;
    let failed = StatusChange::Failed { reason };
    if !db::deployments::change(conn, deployment_id, run_token, failed).await? {
        return Ok(false);
    }
    settle_function(conn, function_id, deployment_id, function.status).await?;
    // A build that was only a build never started an update of what serves.
    if !db::deployments::is_held(conn, deployment_id).await? {
        update_failed(conn, function_id, deployment_id, reason).await?;
    }
    db::logs::append(
        conn,
        deployment_id,
        phase,
        &[("error".to_owned(), reason.to_owned())],
    )
    .await?;
    Ok(true)
}

/// Records a failed update (a deployment or a rollback) in the function's serving state; what
/// served before keeps serving.
pub async fn update_failed(
    conn: &mut PgConnection,
    function_id: Uuid,
    deployment_id: Uuid,
    reason: &str,
) -> anyhow::Result<()> {
    let others_in_flight =
        db::deployments::others_in_flight(conn, function_id, deployment_id).await?;
    db::functions::transition_serving(
        conn,
        function_id,
        &ServingEvent::UpdateFailed {
            reason: reason.to_owned(),
            others_in_flight,
        },
    )
    .await?;
    Ok(())
}

/// Recomputes the function's lifecycle status after one of its deployments settled.
pub async fn settle_function(
    conn: &mut PgConnection,
    function_id: Uuid,
    deployment_id: Uuid,
    current: FunctionStatus,
) -> anyhow::Result<()> {
    let others_in_flight =
        db::deployments::others_in_flight(conn, function_id, deployment_id).await?;
    let has_active = db::deployments::active_for_function(conn, function_id)
        .await?
        .is_some();
    let settled = FunctionEvent::DeploymentSettled {
        others_in_flight,
        has_active,
    };
    db::functions::change_status(conn, function_id, current, settled).await?;
    Ok(())
}
