//! Functions: init (seed 000), read, list, and deployment history.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use slipway_shared::{
    db::{self, deployments::DeploymentRow, functions::FunctionRow},
    domain::{DeploymentStatus, FunctionStatus},
    lifecycle::Lifecycle,
};
use uuid::Uuid;

use super::{precise_timestamp, timestamp};
use crate::error::{ApiPath, ApiQuery};
use crate::{
    AppState,
    auth::{Caller, OwnedFunction},
    error::{ApiError, ApiJson},
    init,
    openapi::{Failures, FunctionId, IdempotencyKey},
};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    /// Lower-case letters, digits, `-` and `_`; starts with a letter, ends with a letter or digit.
    #[schema(pattern = "^[a-z]([a-z0-9_-]{0,61}[a-z0-9])?$", max_length = 63)]
    name: String,
    #[serde(default)]
    skip_signing: bool,
    /// Lifecycle hooks (seed 002); applied when the function is created.
    #[serde(default)]
    lifecycle: Option<Lifecycle>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InitResponse {
    message: &'static str,
    id: Uuid,
    name: String,
    status: FunctionStatus,
    skip_signing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment_version: Option<i32>,
    created_at: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    already_exists: bool,
}

/// `POST /api/functions/init`: 201 with the new function, or 200 with the existing one of that
/// name (`already_exists: true`), as seed 000 shows.
#[utoipa::path(
    post,
    path = "/api/functions/init",
    tag = "functions",
    request_body = InitRequest,
    params(IdempotencyKey),
    responses(
        (status = 201, description = "Created", body = InitResponse),
        (status = 200, description = "A function of that name already exists: it is shown", body = InitResponse),
        Failures
    ),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn init(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<InitRequest>,
) -> Result<Response, ApiError> {
    let init::Initialized {
        function: row,
        already_exists,
    } = init::init(
        &state,
        &caller,
        &request.name,
        request.skip_signing,
        request.lifecycle,
        None,
    )
    .await?;
    let body = InitResponse {
        message: if already_exists {
            "Function already exists"
        } else {
            "Function initialized successfully"
        },
        id: row.id,
        deployment_version: already_exists.then_some(row.last_version),
        name: row.name,
        status: row.status,
        skip_signing: row.skip_signing,
        created_at: timestamp(row.created_at),
        already_exists,
    };
    let status = if already_exists {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(body)).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FunctionResponse {
    id: Uuid,
    name: String,
    /// Seed 003's name for `name`.
    label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// A function made from handler code: `node` or `python`.
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    /// The template's runtime.
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<String>,
    /// The handler's source the next build wraps.
    #[serde(skip_serializing_if = "Option::is_none")]
    handler: Option<String>,
    /// Lifecycle (seed 000): init, building, active, pending_deletion, deleted.
    status: FunctionStatus,
    /// Serving (seed 001): Pending, Active, Failed, Inactive; only Active is invocable.
    state: String,
    state_reason: Option<String>,
    last_update_status: Option<String>,
    last_update_status_reason: Option<String>,
    on_tag_overwrite: String,
    /// The recorded tag now points at another digest; the recorded one still serves.
    image_drift: Option<serde_json::Value>,
    verified_at: Option<String>,
    /// A disabled function answers invocations with 503 and is not restarted.
    enabled: bool,
    /// Lifecycle hooks (seed 002): `{"initializer"?: {"timeout_s"}, "pre_stop"?: {"timeout_s"}}`.
    lifecycle: Lifecycle,
    /// What each instance may use: the function's own settings, the operator's defaults for
    /// the rest, capped by the operator's maximums.
    limits: LimitsView,
    /// A read-only root filesystem with a writable `/tmp` (the default).
    read_only_root_fs: bool,
    skip_signing: bool,
    active_version: Option<i32>,
    latest_version: i32,
    image_tag: Option<String>,
    image_digest: Option<String>,
    /// Values of `secret_env` entries are `null`: never shown again.
    env: serde_json::Value,
    secret_env: Vec<String>,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LimitsView {
    memory_mb: u32,
    cpu: f64,
    pids: u32,
}

impl FunctionResponse {
    pub fn new(row: FunctionRow, config: &slipway_shared::config::ApiConfig) -> Self {
        let limits = config.function_limits.resolve(&row.requested_limits());
        let env = slipway_shared::env::FunctionEnv::open(
            &row.env,
            config.secrets_key.as_ref(),
            &slipway_shared::env::function_context(row.id),
        )
        .unwrap_or_else(|e| {
            // The function still shows; only its env cannot be read by this process.
            tracing::warn!(function_id = %row.id, error = %e, "the function's env cannot be opened");
            slipway_shared::env::FunctionEnv::default()
        });
        let runtime = row
            .template
            .as_deref()
            .and_then(slipway_shared::templates::Template::parse)
            .map(|t| t.runtime().to_owned());
        Self {
            id: row.id,
            label: row.name.clone(),
            name: row.name,
            description: row.description,
            template: row.template,
            runtime,
            handler: row.handler,
            status: row.status,
            state: row.state,
            state_reason: row.state_reason,
            last_update_status: row.last_update_status,
            last_update_status_reason: row.last_update_status_reason,
            on_tag_overwrite: row.on_tag_overwrite,
            image_drift: row.image_drift,
            verified_at: row.verified_at.map(timestamp),
            enabled: row.enabled,
            lifecycle: Lifecycle::from_stored(row.lifecycle.as_ref()),
            limits: LimitsView {
                memory_mb: limits.memory_mb,
                cpu: limits.cpu(),
                pids: limits.pids,
            },
            read_only_root_fs: row.read_only_root,
            skip_signing: row.skip_signing,
            active_version: row.active_version,
            latest_version: row.last_version,
            image_tag: row.image_tag,
            image_digest: row.image_digest,
            env: env.shown(),
            secret_env: env.secret.into_iter().collect(),
            created_at: timestamp(row.created_at),
            updated_at: timestamp(row.updated_at),
            deleted_at: row.deleted_at.map(timestamp),
        }
    }
}

/// One of the caller's functions.
#[utoipa::path(
    get,
    path = "/api/functions/{id}",
    tag = "functions",
    params(FunctionId),
    responses((status = 200, body = FunctionResponse), Failures)
)]
pub async fn get(
    State(state): State<AppState>,
    OwnedFunction { function, .. }: OwnedFunction,
) -> Result<Json<FunctionResponse>, ApiError> {
    Ok(Json(FunctionResponse::new(function, &state.config)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FunctionList {
    functions: Vec<FunctionResponse>,
    count: usize,
}

/// The caller's functions.
#[utoipa::path(
    get,
    path = "/api/functions",
    tag = "functions",
    responses((status = 200, body = FunctionList), Failures)
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<FunctionList>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let rows = db::functions::list(&mut conn, caller.user_id).await?;
    Ok(Json(FunctionList {
        count: rows.len(),
        functions: rows
            .into_iter()
            .map(|row| FunctionResponse::new(row, &state.config))
            .collect(),
    }))
}

/// Raw query values, so malformed numbers get our envelope and code rather than axum's text.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// From 1.
    #[param(value_type = Option<i64>, minimum = 1)]
    page: Option<String>,
    /// From 1 to 100; 20 by default.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    per_page: Option<String>,
}

pub(crate) struct Page {
    pub(crate) page: i64,
    pub(crate) per_page: i64,
}

impl PageQuery {
    const DEFAULT_PER_PAGE: i64 = 20;
    const MAX_PER_PAGE: i64 = 100;

    pub(crate) fn parse(&self) -> Result<Page, ApiError> {
        let number = |raw: &Option<String>, name: &str, default: i64, max: i64| match raw {
            None => Ok(default),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(
                    "invalid_pagination",
                    format!("{name} must be an integer from 1 to {max}, got {raw:?}"),
                )),
            },
        };
        Ok(Page {
            page: number(&self.page, "page", 1, i64::from(i32::MAX))?,
            per_page: number(
                &self.per_page,
                "per_page",
                Self::DEFAULT_PER_PAGE,
                Self::MAX_PER_PAGE,
            )?,
        })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeploymentSummary {
    uuid: Uuid,
    version: i32,
    image_tag: Option<String>,
    image_digest: Option<String>,
    /// None until a pushed commit has been fetched.
    s3_key: Option<String>,
    status: DeploymentStatus,
    is_active: bool,
    error: Option<String>,
    created_at: String,
    /// When each phase ended, so a slow deploy shows where its time went.
    build_started_at: Option<String>,
    built_at: Option<String>,
    pushed_at: Option<String>,
    deployed_at: Option<String>,
    /// Set once the version fell out of the retention window (or its function was purged): its
    /// image and archive are gone and it can no longer be rolled back to.
    pruned_at: Option<String>,
    /// Deployments from a git push: the commit built, and which push overtook it if it ended
    /// `superseded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<GitSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    superseded_by: Option<Uuid>,
    /// The deployment whose image this version reused (the same build inputs): it skipped
    /// BuildKit and the push.
    #[serde(skip_serializing_if = "Option::is_none")]
    build_reused_from: Option<Uuid>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GitSource {
    #[serde(rename = "type")]
    kind: &'static str,
    binding_id: Option<Uuid>,
    commit_sha: String,
    /// Known once the commit was fetched.
    commit_message: Option<String>,
    committed_at: Option<String>,
}

impl From<DeploymentRow> for DeploymentSummary {
    fn from(row: DeploymentRow) -> Self {
        Self {
            uuid: row.id,
            version: row.version,
            image_tag: row.image_tag,
            image_digest: row.image_digest,
            s3_key: row.archive_key,
            status: row.status,
            is_active: row.is_active,
            error: row.error,
            created_at: precise_timestamp(row.created_at),
            build_started_at: row.build_started_at.map(precise_timestamp),
            built_at: row.built_at.map(precise_timestamp),
            pushed_at: row.pushed_at.map(precise_timestamp),
            deployed_at: row.deployed_at.map(precise_timestamp),
            pruned_at: row.pruned_at.map(precise_timestamp),
            source: row.commit_sha.map(|commit_sha| GitSource {
                kind: "git",
                binding_id: row.git_binding_id,
                commit_sha,
                commit_message: row.commit_message,
                committed_at: row.committed_at.map(timestamp),
            }),
            superseded_by: row.superseded_by,
            build_reused_from: row.build_reused_from,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeploymentHistory {
    function_uuid: Uuid,
    function_name: String,
    function_status: FunctionStatus,
    page: i64,
    per_page: i64,
    count: i64,
    total_pages: i64,
    has_next: bool,
    deployments: Vec<DeploymentSummary>,
}

/// `GET /api/functions/{id}/deployments`: newest first, paginated exactly as seed 000.
#[utoipa::path(
    get,
    path = "/api/functions/{id}/deployments",
    tag = "functions",
    params(FunctionId, PageQuery),
    responses((status = 200, body = DeploymentHistory), Failures)
)]
pub async fn deployments(
    State(state): State<AppState>,
    OwnedFunction { function, .. }: OwnedFunction,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<DeploymentHistory>, ApiError> {
    let id = function.id;
    let Page { page, per_page } = query.parse()?;
    let mut conn = state.pool.acquire().await?;
    let count = db::deployments::count(&mut conn, id).await?;
    let rows = db::deployments::page(&mut conn, id, per_page, (page - 1) * per_page).await?;
    let total_pages = (count + per_page - 1) / per_page;
    Ok(Json(DeploymentHistory {
        function_uuid: function.id,
        function_name: function.name,
        function_status: function.status,
        page,
        per_page,
        count,
        total_pages,
        has_next: page < total_pages,
        deployments: rows.into_iter().map(Into::into).collect(),
    }))
}

/// Ids in paths: a malformed one is a 404 like an unknown one, since neither names a function.
pub(crate) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::function_not_found())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// A version of the function's history that still has its image.
    #[schema(minimum = 1, maximum = 2147483647)]
    version: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RollbackFunction {
    uuid: Uuid,
    name: String,
    status: FunctionStatus,
    /// Still the version serving now; it changes when the rollback job has switched traffic.
    active_version: Option<i32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RollbackAccepted {
    message: &'static str,
    function: RollbackFunction,
    target_version: i32,
    deployment_id: Uuid,
    logs_url: String,
}

/// `POST /api/functions/{id}/rollback {"version": N}`: 202, the rollback job is queued. The
/// version keeps its tag and digest; it is started again from `image@digest`.
#[utoipa::path(
    post,
    path = "/api/functions/{id}/rollback",
    tag = "functions",
    params(FunctionId, IdempotencyKey),
    request_body = RollbackRequest,
    responses((status = 202, description = "The rollback job is queued", body = RollbackAccepted), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<RollbackRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let version = i32::try_from(request.version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(crate::rollback::invalid_version)?;
    let accepted = crate::rollback::accept(&state, caller, id, version).await?;
    let body = RollbackAccepted {
        message: "Rollback accepted; the version starts before traffic moves to it",
        function: RollbackFunction {
            uuid: accepted.function_id,
            name: accepted.name,
            status: accepted.status,
            active_version: accepted.active_version,
        },
        target_version: version,
        deployment_id: accepted.target_deployment,
        logs_url: format!("/api/deployments/{}/logs", accepted.target_deployment),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
