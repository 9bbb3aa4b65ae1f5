//! Invocation events (seed 003): `GET /api/v3/events?function_id=&status=&page=&per_page=`,
//! newest first with the same pagination as a function's deployment history, and
//! `GET /api/v3/events/{id}`. A caller sees only events of their own functions.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use slipway_shared::db::{self, events::EventRow};
use uuid::Uuid;

use super::{functions::PageQuery, precise_timestamp};
use crate::error::{ApiPath, ApiQuery};
use crate::{AppState, auth::Caller, error::ApiError, openapi::Failures};

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventView {
    id: Uuid,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    function_id: Uuid,
    deployment_id: Option<Uuid>,
    version: Option<i32>,
    request_id: String,
    method: String,
    path: String,
    status_code: Option<i32>,
    failure_reason: Option<String>,
    request_bytes: i64,
    response_bytes: Option<i64>,
    processing_time_ms: Option<f64>,
    created_at: String,
    completed_at: Option<String>,
}

impl From<EventRow> for EventView {
    fn from(row: EventRow) -> Self {
        Self {
            id: row.id,
            kind: row.r#type,
            status: row.status,
            function_id: row.function_id,
            deployment_id: row.deployment_id,
            version: row.version,
            request_id: row.request_id,
            method: row.method,
            path: row.path,
            status_code: row.status_code,
            failure_reason: row.failure_reason,
            request_bytes: row.request_bytes,
            response_bytes: row.response_bytes,
            processing_time_ms: row.processing_time_ms,
            created_at: precise_timestamp(row.created_at),
            completed_at: row.completed_at.map(precise_timestamp),
        }
    }
}

#[derive(Deserialize)]
pub struct EventQuery {
    function_id: Option<String>,
    status: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventPage {
    page: i64,
    per_page: i64,
    count: i64,
    total_pages: i64,
    has_next: bool,
    events: Vec<EventView>,
}

const STATUSES: [&str; 3] = ["PENDING", "SUCCESS", "FAILURE"];

#[utoipa::path(
    get,
    path = "/api/v3/events",
    tag = "events",
    params(("function_id" = Option<uuid::Uuid>, Query, description = "Only this function's events"), ("status" = Option<String>, Query, description = "PENDING, SUCCESS or FAILURE"), PageQuery),
    responses((status = 200, body = EventPage), Failures)
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let function_id = query
        .function_id
        .as_deref()
        .map(|raw| {
            Uuid::parse_str(raw).map_err(|_| {
                ApiError::bad_request(
                    "invalid_filter",
                    format!("function_id must be a function's UUID, got {raw:?}"),
                )
            })
        })
        .transpose()?;
    if let Some(status) = &query.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_filter",
            format!("status must be one of {STATUSES:?}, got {status:?}"),
        ));
    }
    let page = query.page.parse()?;
    let mut conn = state.pool.acquire().await?;
    let status = query.status.as_deref();
    let count = db::events::count(&mut conn, caller.user_id, function_id, status).await?;
    let rows = db::events::page(
        &mut conn,
        caller.user_id,
        function_id,
        status,
        page.per_page,
        (page.page - 1) * page.per_page,
    )
    .await?;
    let total_pages = (count + page.per_page - 1) / page.per_page;
    Ok(Json(EventPage {
        page: page.page,
        per_page: page.per_page,
        count,
        total_pages,
        has_next: page.page < total_pages,
        events: rows.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/v3/events/{id}",
    tag = "events",
    params(("id" = uuid::Uuid, Path, description = "The event's id")),
    responses((status = 200, body = EventView), Failures)
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventView>, ApiError> {
    let not_found = || ApiError::not_found("event_not_found", "no such event");
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let mut conn = state.pool.acquire().await?;
    let row = db::events::get(&mut conn, caller.user_id, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(row.into()))
}
