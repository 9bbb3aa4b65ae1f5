//! Seed 003's function routes under `/api/v1/functions`: create a function from handler code and
//! a template, list, read and delete it, build a version without deploying it, and deploy a
//! built version. `PUT /api/v1/functions/{id}` is `runtime::update`, which takes seed 003's
//! fields too. A function made here is a Slipway function like any other: a name (its label), an
//! owner, and every lifecycle feature.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use slipway_shared::templates::{self, Template};
use uuid::Uuid;

use super::{
    deletions,
    functions::{self, FunctionList, FunctionResponse, parse_id},
};
use crate::{
    AppState,
    auth::{Caller, OwnedFunction},
    error::{ApiError, ApiJson, ApiPath},
    init,
    openapi::{Failures, FunctionId, IdempotencyKey},
    versions,
};

/// Seed 003's description limit, as the database holds it.
const MAX_DESCRIPTION_CHARS: usize = 1024;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The function's name: lower-case letters, digits, `-` and `_`.
    #[schema(pattern = "^[a-z]([a-z0-9_-]{0,61}[a-z0-9])?$", max_length = 63)]
    label: String,
    description: Option<String>,
    /// `node` (`export default function(data) { … }`) or `python` (`def handler(data): …`).
    template: String,
    /// The template's runtime: `node` or `python`.
    runtime: String,
    /// The handler's source, at most 256 KiB.
    handler: String,
    #[serde(default)]
    skip_signing: bool,
}

/// The template named, checked against the runtime the caller expects of it.
pub(crate) fn parse_template(name: &str, runtime: Option<&str>) -> Result<Template, ApiError> {
    let names: Vec<&str> = Template::ALL.iter().map(|t| t.name()).collect();
    let template = Template::parse(name).ok_or_else(|| {
        ApiError::bad_request(
            "unsupported_template",
            format!("template must be one of {names:?}, got {name:?}"),
        )
    })?;
    if let Some(runtime) = runtime
        && runtime != template.runtime()
    {
        return Err(ApiError::bad_request(
            "invalid_runtime",
            format!(
                "template {name} runs on runtime {:?}, not {runtime:?}",
                template.runtime()
            ),
        ));
    }
    Ok(template)
}

pub(crate) fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::bad_request(
            "invalid_description",
            format!("description is longer than {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(())
}

/// `POST /api/v1/functions`: a function from handler code. It is stored, not built: `POST
/// /api/v1/functions/build/{id}` builds it. 409 when the caller already has a function of that
/// label.
#[utoipa::path(
    post,
    path = "/api/v1/functions",
    tag = "functions",
    request_body = CreateRequest,
    params(IdempotencyKey),
    responses((status = 201, description = "Created", body = FunctionResponse), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<Response, ApiError> {
    let template = parse_template(&request.template, Some(&request.runtime))?;
    templates::check_handler(&request.handler)
        .map_err(|message| ApiError::bad_request("invalid_handler", message))?;
    if let Some(description) = &request.description {
        check_description(description)?;
    }
    let created = init::init(
        &state,
        &caller,
        &request.label,
        request.skip_signing,
        None,
        Some(&init::Source {
            description: request.description.as_deref(),
            template,
            handler: &request.handler,
        }),
    )
    .await?;
    if created.already_exists {
        return Err(ApiError::conflict(
            "function_exists",
            format!(
                "you already have a function labelled {:?} ({})",
                request.label, created.function.id
            ),
        ));
    }
    let body = FunctionResponse::new(created.function, &state.config);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The caller's functions (seed 003's listing; the same as `GET /api/functions`).
#[utoipa::path(
    get,
    path = "/api/v1/functions",
    tag = "functions",
    responses((status = 200, body = FunctionList), Failures)
)]
pub async fn list(state: State<AppState>, caller: Caller) -> Result<Json<FunctionList>, ApiError> {
    functions::list(state, caller).await
}

/// One of the caller's functions, with its template and handler if it has them.
#[utoipa::path(
    get,
    path = "/api/v1/functions/{id}",
    tag = "functions",
    params(FunctionId),
    responses((status = 200, body = FunctionResponse), Failures)
)]
pub async fn get(
    state: State<AppState>,
    function: OwnedFunction,
) -> Result<Json<FunctionResponse>, ApiError> {
    functions::get(state, function).await
}

/// Seed 003's delete: the soft delete of `DELETE /api/functions/{id}`, with its grace period.
#[utoipa::path(
    delete,
    path = "/api/v1/functions/{id}",
    tag = "functions",
    params(FunctionId, IdempotencyKey),
    responses((status = 202, description = "Scheduled for deletion; it stops serving", body = deletions::DeletionScheduled), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn delete(
    state: State<AppState>,
    caller: Caller,
    id: ApiPath<String>,
) -> Result<Response, ApiError> {
    deletions::delete(state, caller, id).await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VersionAccepted {
    function_id: Uuid,
    deployment_id: Uuid,
    version: i32,
    /// `building` after a build request (the version ends `built`), `deploying` after a deploy.
    status: &'static str,
}

/// Builds the function's handler into a new version and pushes it; the version ends `built`
/// and does not serve until deployed. What serves meanwhile is untouched.
#[utoipa::path(
    post,
    path = "/api/v1/functions/build/{id}",
    tag = "functions",
    params(FunctionId, IdempotencyKey),
    responses((status = 202, description = "The build is queued", body = VersionAccepted), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn build(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let accepted = versions::build(&state, caller, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(VersionAccepted {
            function_id: accepted.function_id,
            deployment_id: accepted.deployment_id,
            version: accepted.version,
            status: "building",
        }),
    )
        .into_response())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployBuiltRequest {
    /// A built version; the newest built one when left out.
    version: Option<i32>,
}

/// Deploys a built version (the newest by default): it starts, then takes the traffic.
#[utoipa::path(
    post,
    path = "/api/v1/functions/deploy/{id}",
    tag = "functions",
    params(FunctionId, IdempotencyKey),
    request_body(content = Option<DeployBuiltRequest>, description = "Optional: `{\"version\": n}`"),
    responses((status = 202, description = "The version is on its way to serving", body = VersionAccepted), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // An empty body means "the newest built version"; anything else must be the JSON object.
    let request: DeployBuiltRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DeployBuiltRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    if request.version.is_some_and(|v| v < 1) {
        return Err(crate::rollback::invalid_version());
    }
    let released = versions::deploy(&state, caller, id, request.version).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(VersionAccepted {
            function_id: id,
            deployment_id: released.deployment_id,
            version: released.version,
            status: "deploying",
        }),
    )
        .into_response())
}
