//! Seed 004's runtime view and controls under `/api/v1/functions/{id}`: the runtime state
//! (`idle | active | disabled`), restart, recycle, and `PUT` to enable or disable serving.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use slipway_shared::{
    db,
    domain::{LimitPolicy, RequestedLimits},
    integrity::OnTagOverwrite,
    jobs::RuntimeAction,
    lifecycle::Lifecycle,
};
use uuid::Uuid;

use super::functions::{FunctionResponse, parse_id};
use crate::error::ApiPath;
use crate::{
    AppState,
    auth::{Caller, OwnedFunction},
    error::{ApiError, ApiJson},
    openapi::{Failures, FunctionId, IdempotencyKey},
    runtime::{self, Changes},
};

#[derive(Serialize, utoipa::ToSchema)]
pub struct RuntimeView {
    function_uuid: Uuid,
    /// `idle` (no instance recorded), `active` (an instance runs), `disabled`.
    state: &'static str,
    /// The active version, seed 004's revision number.
    revision_number: Option<i32>,
    container_id: Option<String>,
    endpoint: Option<String>,
    /// The serving state of seed 001, for context.
    serving_state: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/functions/{id}/runtime",
    tag = "runtime",
    params(FunctionId),
    responses((status = 200, body = RuntimeView), Failures)
)]
pub async fn get(OwnedFunction { function, .. }: OwnedFunction) -> Json<RuntimeView> {
    Json(view(function))
}

fn view(function: db::functions::FunctionRow) -> RuntimeView {
    let state = if !function.enabled {
        "disabled"
    } else if function.container_id.is_some() {
        "active"
    } else {
        "idle"
    };
    RuntimeView {
        function_uuid: function.id,
        state,
        revision_number: function.active_version,
        container_id: function.container_id,
        endpoint: function.runtime_endpoint,
        serving_state: function.state,
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    message: &'static str,
    runtime: RuntimeView,
}

async fn accept(
    state: AppState,
    caller: Caller,
    id: &str,
    action: RuntimeAction,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    runtime::replace_instance(&state, caller, id, action).await?;
    let mut conn = state.pool.acquire().await?;
    let function = db::functions::find(&mut conn, caller.user_id, id)
        .await?
        .ok_or_else(ApiError::function_not_found)?;
    let message = match action {
        RuntimeAction::Restart => "Restart accepted; the instance is replaced from image@digest",
        RuntimeAction::Recycle => {
            "Recycle accepted; the image is pulled again and the instance replaced"
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            message,
            runtime: view(function),
        }),
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/functions/{id}/runtime/restart",
    tag = "runtime",
    params(FunctionId, IdempotencyKey),
    responses((status = 202, description = "The instance is replaced from image@digest", body = Accepted), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn restart(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    accept(state, caller, &id, RuntimeAction::Restart).await
}

#[utoipa::path(
    post,
    path = "/api/v1/functions/{id}/runtime/recycle",
    tag = "runtime",
    params(FunctionId, IdempotencyKey),
    responses((status = 202, description = "The image is pulled again and the instance replaced", body = Accepted), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn recycle(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    accept(state, caller, &id, RuntimeAction::Recycle).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    enabled: Option<bool>,
    on_tag_overwrite: Option<String>,
    /// Replaces the hooks; `{}` removes them.
    lifecycle: Option<Lifecycle>,
    /// Replaces the limits; a field left out goes back to the operator's default.
    limits: Option<LimitsRequest>,
    read_only_root_fs: Option<bool>,
    /// Seed 003: the function's label is its name, which never changes; only the same value is
    /// accepted.
    label: Option<String>,
    /// Seed 003: `""` clears it.
    description: Option<String>,
    /// Seed 003: the handler the next build wraps (`POST /api/v1/functions/build/{id}`); what
    /// serves does not change until then.
    handler: Option<String>,
    /// `node` or `python`; with `handler` when the function has none yet.
    template: Option<String>,
    /// Must be the template's runtime.
    runtime: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    memory_mb: Option<u32>,
    cpu: Option<f64>,
    pids: Option<u32>,
}

impl LimitsRequest {
    fn parse(self, policy: &LimitPolicy) -> Result<RequestedLimits, ApiError> {
        let invalid = |message: String| ApiError::bad_request("invalid_limits", message);
        let cpu_millis = match self.cpu {
            None => None,
            Some(cpu) if cpu.is_finite() && cpu > 0.0 && cpu <= 1024.0 => {
                Some((cpu * 1000.0).round() as u32)
            }
            Some(cpu) => return Err(invalid(format!("cpu must be a positive number, not {cpu}"))),
        };
        let requested = RequestedLimits {
            memory_mb: self.memory_mb,
            cpu_millis,
            pids: self.pids,
        };
        policy
            .validate(&requested)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(requested)
    }
}

/// `PUT /api/v1/functions/{id}`: `{"enabled": false}` makes invocations answer 503 and nothing
/// restarts until it is enabled again; `{"on_tag_overwrite": "keep" | "fail"}` sets the policy;
/// `{"lifecycle": {…}}` sets the hooks, used from the next instance start or stop on;
/// `{"limits": {"memory_mb", "cpu", "pids"}}` and `{"read_only_root_fs": false}` change the
/// sandbox of the next instance started (a restart applies them at once); seed 003's
/// `description`, `handler`, `template` and `runtime` change what the next build makes.
#[utoipa::path(
    put,
    path = "/api/v1/functions/{id}",
    tag = "runtime",
    params(FunctionId, IdempotencyKey),
    request_body = UpdateRequest,
    responses((status = 200, description = "The function as changed", body = FunctionResponse), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateRequest>,
) -> Result<Json<FunctionResponse>, ApiError> {
    let id = parse_id(&id)?;
    if let Some(policy) = &request.on_tag_overwrite
        && OnTagOverwrite::parse(policy).is_none()
    {
        return Err(ApiError::bad_request(
            "invalid_on_tag_overwrite",
            format!("on_tag_overwrite must be \"keep\" or \"fail\", got {policy:?}"),
        ));
    }
    if let Some(lifecycle) = &request.lifecycle {
        lifecycle
            .validate()
            .map_err(|message| ApiError::bad_request("invalid_lifecycle", message))?;
    }
    let limits = request
        .limits
        .map(|limits| limits.parse(&state.config.function_limits))
        .transpose()?;
    let template = request
        .template
        .as_deref()
        .map(|name| super::v1_functions::parse_template(name, request.runtime.as_deref()))
        .transpose()?;
    if request.runtime.is_some() && template.is_none() && request.handler.is_none() {
        return Err(ApiError::bad_request(
            "invalid_runtime",
            "runtime follows the template: change the template",
        ));
    }
    if let Some(description) = &request.description {
        super::v1_functions::check_description(description)?;
    }
    if let Some(handler) = &request.handler {
        slipway_shared::templates::check_handler(handler)
            .map_err(|message| ApiError::bad_request("invalid_handler", message))?;
    }
    let changes = Changes {
        enabled: request.enabled,
        on_tag_overwrite: request.on_tag_overwrite,
        lifecycle: request.lifecycle,
        limits,
        read_only_root: request.read_only_root_fs,
        label: request.label,
        description: request.description,
        template,
        handler: request.handler,
    };
    runtime::update(&state, caller, id, changes).await?;
    let mut conn = state.pool.acquire().await?;
    let function = db::functions::find(&mut conn, caller.user_id, id)
        .await?
        .ok_or_else(ApiError::function_not_found)?;
    Ok(Json(FunctionResponse::new(function, &state.config)))
}
