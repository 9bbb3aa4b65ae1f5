//! Deletion with a grace period, in seed 000's shapes: delete, the pending deletions, one
//! function's deletion status, and cancelling.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::Serialize;
use slipway_shared::{
    db::{self, deletions::PendingDeletionRow},
    domain::{FunctionStatus, days_remaining},
};
use uuid::Uuid;

use super::{functions::parse_id, timestamp};
use crate::error::ApiPath;
use crate::{
    AppState,
    auth::{Caller, OwnedFunction},
    deletion,
    error::ApiError,
    openapi::{Failures, FunctionId, IdempotencyKey},
};

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletionInfo {
    id: Uuid,
    image_tag: Option<String>,
    reason: String,
    deletion_date: String,
    days_remaining: i64,
    scheduled_at: String,
}

impl From<&PendingDeletionRow> for DeletionInfo {
    fn from(row: &PendingDeletionRow) -> Self {
        Self {
            id: row.id,
            image_tag: row.image_tag.clone(),
            reason: row.reason.clone(),
            deletion_date: timestamp(row.deletion_date),
            days_remaining: days_remaining(row.deletion_date, Utc::now()),
            scheduled_at: timestamp(row.scheduled_at),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FunctionBrief {
    uuid: Uuid,
    name: String,
    status: FunctionStatus,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletionScheduled {
    message: &'static str,
    function: FunctionBrief,
    deletion_info: DeletionInfo,
}

/// `DELETE /api/functions/{id}`: 202, the function stops serving and is purged after the grace
/// period unless cancelled.
#[utoipa::path(
    delete,
    path = "/api/functions/{id}",
    tag = "deletions",
    params(FunctionId, IdempotencyKey),
    responses((status = 202, description = "Scheduled for deletion; it stops serving", body = DeletionScheduled), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let scheduled = deletion::schedule(&state, caller, id).await?;
    let body = DeletionScheduled {
        message: "Function scheduled for deletion",
        deletion_info: DeletionInfo::from(&scheduled),
        function: FunctionBrief {
            uuid: scheduled.function_id,
            name: scheduled.function_name,
            status: scheduled.function_status,
        },
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PendingDeletion {
    id: Uuid,
    function_uuid: Uuid,
    function_name: String,
    function_status: FunctionStatus,
    #[serde(flatten)]
    info: DeletionInfo,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PendingDeletions {
    pending_deletions: Vec<PendingDeletion>,
    count: usize,
}

/// `GET /api/functions/pending-deletions`: the caller's scheduled deletions, soonest first.
#[utoipa::path(
    get,
    path = "/api/functions/pending-deletions",
    tag = "deletions",
    responses((status = 200, body = PendingDeletions), Failures)
)]
pub async fn pending(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PendingDeletions>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let rows = db::deletions::open_for_owner(&mut conn, caller.user_id).await?;
    let pending_deletions: Vec<PendingDeletion> = rows
        .iter()
        .map(|row| PendingDeletion {
            id: row.id,
            function_uuid: row.function_id,
            function_name: row.function_name.clone(),
            function_status: row.function_status,
            info: DeletionInfo::from(row),
        })
        .collect();
    Ok(Json(PendingDeletions {
        count: pending_deletions.len(),
        pending_deletions,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletionStatus {
    function_uuid: Uuid,
    function_name: String,
    function_status: FunctionStatus,
    has_pending_deletion: bool,
    deletion_info: Option<DeletionInfo>,
}

/// `GET /api/functions/{id}/deletion-status`.
#[utoipa::path(
    get,
    path = "/api/functions/{id}/deletion-status",
    tag = "deletions",
    params(FunctionId),
    responses((status = 200, body = DeletionStatus), Failures)
)]
pub async fn status(
    State(state): State<AppState>,
    OwnedFunction { function, .. }: OwnedFunction,
) -> Result<Json<DeletionStatus>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let open = db::deletions::open_for_function(&mut conn, function.id).await?;
    Ok(Json(DeletionStatus {
        function_uuid: function.id,
        function_name: function.name,
        function_status: function.status,
        has_pending_deletion: open.is_some(),
        deletion_info: open.as_ref().map(DeletionInfo::from),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletionCancelled {
    success: bool,
    message: &'static str,
    function: FunctionBrief,
}

/// `POST /api/functions/{id}/cancel-deletion`: 200, the function serves again.
#[utoipa::path(
    post,
    path = "/api/functions/{id}/cancel-deletion",
    tag = "deletions",
    params(FunctionId, IdempotencyKey),
    responses((status = 200, description = "The function serves again", body = DeletionCancelled), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeletionCancelled>, ApiError> {
    let id = parse_id(&id)?;
    let restored = deletion::cancel(&state, caller, id).await?;
    Ok(Json(DeletionCancelled {
        success: true,
        message: "Deletion cancelled successfully",
        function: FunctionBrief {
            uuid: restored.function_id,
            name: restored.name,
            status: restored.status,
        },
    }))
}
