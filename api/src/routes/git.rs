//! Git sources: a function's bindings (`/api/functions/{id}/git-bindings`) and the providers'
//! push webhooks (`/api/webhooks/{github,gitlab,gitea}`).

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use slipway_shared::{
    db::{self, git::BindingRow},
    git::{GitCredentials, GitProvider},
    metrics,
};
use uuid::Uuid;

use super::{functions::parse_id, timestamp};
use crate::error::ApiPath;
use crate::{
    AppState,
    auth::{Caller, OwnedFunction},
    error::{ApiError, ApiJson},
    git_bindings, git_delivery,
    git_push::DeliveryOutcome,
    openapi::{Failures, FunctionId, IdempotencyKey},
    webhooks::{self, SignatureProblem},
};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBinding {
    provider: String,
    repository: String,
    clone_url: String,
    branch: String,
    #[serde(default)]
    subdirectory: String,
    secret: String,
    #[serde(default)]
    credentials: Option<GitCredentials>,
}

/// A binding as its owner sees it: the secret and credentials are write-only.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BindingView {
    id: Uuid,
    function_id: Uuid,
    provider: String,
    repository: String,
    clone_url: String,
    branch: String,
    subdirectory: String,
    /// Where the provider's webhook must point, relative to the api's base URL.
    webhook_path: String,
    has_credentials: bool,
    created_at: String,
}

impl From<BindingRow> for BindingView {
    fn from(row: BindingRow) -> Self {
        Self {
            id: row.id,
            function_id: row.function_id,
            webhook_path: format!("/api/webhooks/{}/{}", row.provider, row.id),
            provider: row.provider,
            repository: row.repository,
            clone_url: row.clone_url,
            branch: row.branch,
            subdirectory: row.subdirectory,
            has_credentials: row.credentials_sealed.is_some(),
            created_at: timestamp(row.created_at),
        }
    }
}

/// `POST /api/functions/{id}/git-bindings`: 201 with the binding.
#[utoipa::path(
    post,
    path = "/api/functions/{id}/git-bindings",
    tag = "git",
    params(FunctionId, IdempotencyKey),
    request_body = CreateBinding,
    responses((status = 201, description = "Bound: pushes to the branch deploy the function", body = BindingView), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CreateBinding>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let request = git_bindings::BindingRequest {
        provider: request.provider,
        repository: request.repository,
        clone_url: request.clone_url,
        branch: request.branch,
        subdirectory: request.subdirectory,
        secret: request.secret,
        credentials: request.credentials,
    };
    let row = git_bindings::bind(&state, &caller, id, request).await?;
    Ok((StatusCode::CREATED, Json(BindingView::from(row))).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BindingList {
    bindings: Vec<BindingView>,
}

/// `GET /api/functions/{id}/git-bindings`.
#[utoipa::path(
    get,
    path = "/api/functions/{id}/git-bindings",
    tag = "git",
    params(FunctionId),
    responses((status = 200, body = BindingList), Failures)
)]
pub async fn list(
    State(state): State<AppState>,
    OwnedFunction { function, .. }: OwnedFunction,
) -> Result<Json<BindingList>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let bindings = db::git::bindings_of_function(&mut conn, function.id).await?;
    Ok(Json(BindingList {
        bindings: bindings.into_iter().map(BindingView::from).collect(),
    }))
}

/// `DELETE /api/functions/{id}/git-bindings/{binding_id}`: 204. Pushes already accepted still
/// run; their fetch fails if it has not started.
#[utoipa::path(
    delete,
    path = "/api/functions/{id}/git-bindings/{binding_id}",
    tag = "git",
    params(FunctionId, ("binding_id" = uuid::Uuid, Path, description = "The binding's id"), IdempotencyKey),
    responses((status = 204, description = "Unbound"), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, binding_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    git_bindings::unbind(&state, &caller, id, &binding_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What every delivery is checked for before any secret is opened: a readable body, a known
/// provider, the event header and a signature in the provider's format.
fn delivery_headers<'h>(
    provider: &str,
    headers: &'h HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(GitProvider, &'h str, webhooks::Presented, Bytes), ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            "invalid_payload",
            format!("the delivery could not be read: {rejection}"),
        )
    })?;
    let provider = GitProvider::parse(provider).ok_or_else(|| {
        ApiError::not_found(
            "unknown_provider",
            "webhooks are served for github, gitlab and gitea",
        )
    })?;
    let event = webhooks::event(provider, headers).ok_or_else(|| {
        ApiError::bad_request(
            "event_missing",
            format!("the {provider} event header is missing"),
        )
    })?;
    let presented = webhooks::presented_signature(provider, headers).map_err(|problem| {
        let (code, message) = match problem {
            SignatureProblem::Missing => ("signature_required", "the delivery is not signed"),
            SignatureProblem::Malformed => (
                "signature_malformed",
                "the delivery's signature is not in the provider's format",
            ),
        };
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    })?;
    Ok((provider, event, presented, body))
}

/// `POST /api/webhooks/{provider}/{binding_id}`: the binding's own URL. A delivery costs one
/// lookup, one secret and one HMAC, all before its JSON is read; its id is remembered for this
/// binding alone.
#[utoipa::path(
    post,
    path = "/api/webhooks/{provider}/{binding_id}",
    tag = "git",
    params(("provider" = String, Path, description = "github, gitlab or gitea"), ("binding_id" = uuid::Uuid, Path, description = "The binding's id, from its `webhook_path`")),
    request_body(content = Object, description = "The provider's push (or ping) payload"),
    responses((status = 202, description = "Deployments queued for the push", body = DeliveryOutcome), (status = 200, description = "Nothing to deploy (a ping, another branch) or a delivery already seen", body = DeliveryOutcome), Failures),
    security(("provider_signature" = []))
)]
pub async fn binding_webhook(
    State(state): State<AppState>,
    ApiPath((provider, binding_id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (provider, event, presented, body) = delivery_headers(&provider, &headers, body)?;
    let outcome = git_delivery::to_binding(
        &state,
        git_delivery::SignedDelivery {
            provider,
            event,
            headers: &headers,
            presented,
            body,
        },
        &binding_id,
    )
    .await?;
    Ok(answer(outcome))
}

/// Counts every delivery to `/api/webhooks/{provider}[/…]` with its answer, refusals included;
/// a path naming no provider Slipway serves is counted as `unknown`, so the label stays bounded.
pub async fn count_delivery(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let provider = request
        .uri()
        .path()
        .strip_prefix("/api/webhooks/")
        .and_then(|rest| rest.split('/').next())
        .and_then(GitProvider::parse)
        .map_or("unknown", GitProvider::as_str);
    let response = next.run(request).await;
    metrics::webhook_delivery(provider, response.status().as_u16());
    response
}

#[utoipa::path(
    post,
    path = "/api/webhooks/{provider}",
    tag = "git",
    params(("provider" = String, Path, description = "github, gitlab or gitea")),
    request_body(content = Object, description = "The provider's push (or ping) payload"),
    responses((status = 202, description = "Deployments queued for the push", body = DeliveryOutcome), (status = 200, description = "Nothing to deploy (a ping, another branch) or a delivery already seen", body = DeliveryOutcome), Failures),
    security(("provider_signature" = []))
)]
/// `POST /api/webhooks/{provider}`: the shared URL of bindings made before each had its own.
/// The delivery is checked against those bindings of the repository it names (a fixed set:
/// new bindings are not served here); unknown repositories and wrong secrets get the same
/// answer. Nothing is stored for a delivery that is refused.
pub async fn webhook(
    State(state): State<AppState>,
    ApiPath(provider): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (provider, event, presented, body) = delivery_headers(&provider, &headers, body)?;
    let outcome = git_delivery::to_repository(
        &state,
        git_delivery::SignedDelivery {
            provider,
            event,
            headers: &headers,
            presented,
            body,
        },
    )
    .await?;
    Ok(answer(outcome))
}

/// As the providers expect: 202 when deployments were queued, 200 for a delivery that queued
/// nothing (a ping, another branch) or one already seen.
fn answer(outcome: DeliveryOutcome) -> Response {
    let status = if outcome.deployments.is_empty() || outcome.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(outcome)).into_response()
}
