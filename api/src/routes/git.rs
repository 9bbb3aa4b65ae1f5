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
    domain::FunctionStatus,
    git::{self, GitCredentials, GitProvider, InvalidBinding},
    metrics,
    secrets::SecretsKey,
};
use tracing::warn;
use uuid::Uuid;

use super::{functions::parse_id, timestamp};
use crate::error::ApiPath;
use crate::{
    AppState,
    auth::{self, Caller, OwnedFunction},
    error::{ApiError, ApiJson},
    git_push::DeliveryOutcome,
    git_push::{self, Delivery},
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

/// Bindings hold secrets, which are stored only sealed.
fn secrets_key(state: &AppState) -> Result<&SecretsKey, ApiError> {
    state.config.secrets_key.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "secrets_key_missing",
            "this server has no SLIPWAY_SECRETS_KEY to seal git secrets with; ask its operator",
        )
    })
}

fn invalid(e: InvalidBinding) -> ApiError {
    ApiError::bad_request("invalid_binding", e.to_string())
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
    let provider = GitProvider::parse(&request.provider).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_binding",
            "provider: must be one of github, gitlab, gitea",
        )
    })?;
    git::check_repository(&request.repository).map_err(invalid)?;
    let transport = git::clone_url_transport(&request.clone_url).map_err(invalid)?;
    git::check_transport_allowed(transport, state.config.git_allow_file).map_err(invalid)?;
    git::check_clone_url_host(&request.clone_url, &state.config.git_allow_networks)
        .map_err(invalid)?;
    git::check_credentials(transport, request.credentials.as_ref()).map_err(invalid)?;
    git::check_branch(&request.branch).map_err(invalid)?;
    let subdirectory = git::normalize_subdirectory(&request.subdirectory).map_err(invalid)?;
    git::check_secret(&request.secret).map_err(invalid)?;
    let key = secrets_key(&state)?;
    let binding_id = Uuid::new_v4();
    let seal = |context: String, plaintext: &str| {
        key.seal(&context, plaintext)
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("sealing a secret")))
    };
    let secret_sealed = seal(git::secret_context(binding_id), &request.secret)?;
    let credentials_sealed = match &request.credentials {
        Some(credentials) => Some(seal(
            git::credentials_context(binding_id),
            &serde_json::to_string(credentials).map_err(anyhow::Error::from)?,
        )?),
        None => None,
    };

    let mut tx = state.pool.begin().await?;
    let function = auth::lock_for_change(&mut tx, &caller, id).await?;
    if matches!(
        function.status,
        FunctionStatus::PendingDeletion | FunctionStatus::Deleted
    ) {
        return Err(ApiError::conflict(
            "function_not_deployable",
            format!("function is {}; it takes no new source", function.status),
        ));
    }
    let inserted = db::git::insert_binding(
        &mut tx,
        &db::git::NewBinding {
            id: binding_id,
            function_id: id,
            provider: provider.as_str(),
            repository: &request.repository,
            clone_url: &request.clone_url,
            branch: &request.branch,
            subdirectory: &subdirectory,
            secret_sealed: &secret_sealed,
            credentials_sealed: credentials_sealed.as_deref(),
        },
    )
    .await?;
    if !inserted {
        return Err(ApiError::conflict(
            "binding_exists",
            "the function already has a binding for this repository, branch and subdirectory",
        ));
    }
    let row = db::git::get_binding(&mut tx, binding_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the binding just written is missing"))?;
    tx.commit().await?;
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
    let binding_id = Uuid::parse_str(&binding_id).map_err(|_| binding_not_found())?;
    let mut tx = state.pool.begin().await?;
    auth::lock_for_change(&mut tx, &caller, id).await?;
    if !db::git::delete_binding(&mut tx, id, binding_id).await? {
        return Err(binding_not_found());
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

fn binding_not_found() -> ApiError {
    ApiError::not_found("binding_not_found", "no such git binding on this function")
}

/// The answer to a delivery that no binding accepts: the same whether the binding does not
/// exist, belongs to another provider, or was signed with another secret, so nothing tells an
/// outsider which bindings exist.
fn not_signed_by_the_binding() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "signature_invalid",
        "the delivery's signature does not match the secret of a binding served at this URL",
    )
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

fn parse_payload(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_payload",
            format!("not JSON ({e}); set the webhook's content type to application/json"),
        )
    })
}

/// Whether `binding`'s secret signed `body`. Off the async executor: a body may be megabytes.
async fn signed_by(
    key: &SecretsKey,
    binding: &BindingRow,
    presented: &webhooks::Presented,
    body: &Bytes,
) -> bool {
    let secret = match key.open(&git::secret_context(binding.id), &binding.secret_sealed) {
        Ok(secret) => secret,
        Err(e) => {
            warn!(binding_id = %binding.id, error = %e, "a binding's secret does not open with SLIPWAY_SECRETS_KEY");
            return false;
        }
    };
    let (presented, body) = (presented.clone(), body.clone());
    tokio::task::spawn_blocking(move || webhooks::signed_with(&presented, &body, &secret))
        .await
        .unwrap_or(false)
}

/// Accepts a verified delivery for `bindings` and answers as the providers expect.
async fn accept(
    state: &AppState,
    provider: GitProvider,
    event: &str,
    headers: &HeaderMap,
    payload: &serde_json::Value,
    bindings: Vec<BindingRow>,
) -> Result<Response, ApiError> {
    let delivery_id = webhooks::delivery_id(provider, headers).ok_or_else(|| {
        ApiError::bad_request(
            "delivery_id_missing",
            format!("the {provider} delivery id header is missing"),
        )
    })?;
    let push = if webhooks::is_push(provider, event) {
        Some(
            webhooks::parse_push(provider, payload)
                .map_err(|e| ApiError::bad_request("invalid_payload", e))?,
        )
    } else {
        None
    };
    let outcome = git_push::accept(
        state,
        Delivery {
            provider,
            delivery_id,
            event,
            push,
            bindings,
        },
    )
    .await?;
    let status = if outcome.deployments.is_empty() || outcome.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(outcome)).into_response())
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
    let key = secrets_key(&state)?;
    let binding = match Uuid::parse_str(&binding_id) {
        Ok(id) => {
            let mut conn = state.pool.acquire().await?;
            db::git::get_binding(&mut conn, id).await?
        }
        Err(_) => None,
    };
    let Some(binding) = binding.filter(|b| b.provider == provider.as_str()) else {
        return Err(not_signed_by_the_binding());
    };
    if !signed_by(key, &binding, &presented, &body).await {
        return Err(not_signed_by_the_binding());
    }
    let payload = parse_payload(&body)?;
    // A hook set on another repository (an organisation's, say) with the same secret: nothing
    // of this binding's to build.
    let named = webhooks::repository(provider, &payload).unwrap_or_default();
    if !named.eq_ignore_ascii_case(&binding.repository) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "repository_not_bound",
            format!(
                "the delivery is for {named:?}; this URL serves the binding of {}",
                binding.repository
            ),
        ));
    }
    accept(&state, provider, event, &headers, &payload, vec![binding]).await
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
    let key = secrets_key(&state)?;
    let payload = parse_payload(&body)?;
    let repository = webhooks::repository(provider, &payload).ok_or_else(|| {
        ApiError::bad_request("invalid_payload", "the payload names no repository")
    })?;
    let candidates = {
        let mut conn = state.pool.acquire().await?;
        db::git::bindings_for_repository(&mut conn, provider.as_str(), repository).await?
    };
    // Every candidate is checked, so the time taken does not say which secret came close.
    let mut bindings = Vec::new();
    for binding in candidates {
        if signed_by(key, &binding, &presented, &body).await {
            bindings.push(binding);
        }
    }
    if bindings.is_empty() {
        return Err(not_signed_by_the_binding());
    }
    accept(&state, provider, event, &headers, &payload, bindings).await
}
