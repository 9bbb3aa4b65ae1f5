//! Invocation events (seed 003): `GET /api/v3/events?function_id=&status=&page=&per_page=`,
//! newest first with the same pagination as a function's deployment history, and
//! `GET /api/v3/events/{id}`, and `POST /api/v3/events`, a custom event the caller records for
//! one of its functions, listed with the others. A caller sees only events of their own
//! functions.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use slipway_shared::db::{
    self,
    events::{CustomEvent, StoredEvent},
};
use uuid::Uuid;

use super::{functions::PageQuery, precise_timestamp};
use crate::error::{ApiPath, ApiQuery};
use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiJson},
    openapi::{Failures, IdempotencyKey},
};

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventView {
    id: Uuid,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    /// `invocation` (recorded by the platform for a call) or `custom` (posted by the caller).
    source: String,
    /// A custom event's data; absent for an invocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    function_id: Uuid,
    deployment_id: Option<Uuid>,
    version: Option<i32>,
    request_id: String,
    /// The invocation's method; absent for a custom event.
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    status_code: Option<i32>,
    failure_reason: Option<String>,
    request_bytes: i64,
    response_bytes: Option<i64>,
    processing_time_ms: Option<f64>,
    created_at: String,
    completed_at: Option<String>,
}

impl From<StoredEvent> for EventView {
    fn from(row: StoredEvent) -> Self {
        Self {
            id: row.id,
            kind: row.r#type,
            status: row.status,
            source: row.source,
            data: row.data,
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

/// The event types a caller may post: seed 003's, but `FUNCTION_INVOCATION`, which only the
/// platform records.
const CUSTOM_TYPES: [&str; 5] = [
    "USER_CREATED",
    "ORDER_PLACED",
    "PAYMENT_PROCESSED",
    "ITEM_SHIPPED",
    "OTHER",
];

/// The most a custom event's data may take, as JSON: an event describes, it does not carry.
const MAX_DATA_BYTES: usize = 64 * 1024;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// One of the caller's functions.
    function_id: Uuid,
    /// `USER_CREATED`, `ORDER_PLACED`, `PAYMENT_PROCESSED`, `ITEM_SHIPPED` or `OTHER`.
    #[serde(rename = "type")]
    kind: String,
    /// Any JSON, at most 64 KiB.
    #[serde(default)]
    data: serde_json::Value,
    /// `SUCCESS` (the default) or `FAILURE`.
    status: Option<String>,
}

/// Records a custom event, settled at once, for one of the caller's functions.
#[utoipa::path(
    post,
    path = "/api/v3/events",
    tag = "events",
    params(IdempotencyKey),
    request_body = NewEvent,
    responses((status = 201, description = "The event as recorded", body = EventView), Failures)
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(event): ApiJson<NewEvent>,
) -> Result<(http::StatusCode, Json<EventView>), ApiError> {
    if !CUSTOM_TYPES.contains(&event.kind.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_event_type",
            format!(
                "type must be one of {CUSTOM_TYPES:?} (FUNCTION_INVOCATION is recorded by the platform), got {:?}",
                event.kind
            ),
        ));
    }
    let status = event.status.as_deref().unwrap_or("SUCCESS");
    if !matches!(status, "SUCCESS" | "FAILURE") {
        return Err(ApiError::bad_request(
            "invalid_event_status",
            format!("status must be SUCCESS or FAILURE, got {status:?}"),
        ));
    }
    let size = serde_json::to_vec(&event.data).map_or(usize::MAX, |json| json.len());
    if size > MAX_DATA_BYTES {
        return Err(ApiError::bad_request(
            "event_data_too_large",
            format!("data takes {size} bytes as JSON; at most {MAX_DATA_BYTES}"),
        ));
    }
    let mut conn = state.pool.acquire().await?;
    db::functions::find(&mut conn, caller.user_id, event.function_id)
        .await?
        .ok_or_else(ApiError::function_not_found)?;
    let stored = db::events::record_custom(
        &mut conn,
        &CustomEvent {
            function_id: event.function_id,
            owner_id: caller.user_id,
            r#type: &event.kind,
            status,
            request_id: &Uuid::new_v4().to_string(),
            data: &event.data,
        },
    )
    .await?;
    Ok((http::StatusCode::CREATED, Json(stored.into())))
}
