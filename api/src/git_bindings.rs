//! Git bindings, the use cases: bind a function to a repository's branch (its secret and
//! credentials checked, then sealed before they are stored) and unbind it, each in the
//! transaction that locks the function.

use http::StatusCode;
use slipway_shared::{
    db::{self, git::BindingRow},
    domain::FunctionStatus,
    git::{self, GitCredentials, GitProvider, InvalidBinding},
    secrets::SecretsKey,
};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, Caller},
    error::ApiError,
};

/// What a binding is asked for, as the caller sent it; `bind` checks every part.
pub struct BindingRequest {
    pub provider: String,
    pub repository: String,
    pub clone_url: String,
    pub branch: String,
    pub subdirectory: String,
    pub secret: String,
    pub credentials: Option<GitCredentials>,
}

#[tracing::instrument(skip(state, caller, request))]
pub async fn bind(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    request: BindingRequest,
) -> Result<BindingRow, ApiError> {
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
    let key = secrets_key(state)?;
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
    let function = auth::lock_for_change(&mut tx, caller, id).await?;
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
    Ok(row)
}

/// Pushes already accepted still run; their fetch fails if it has not started.
#[tracing::instrument(skip(state, caller))]
pub async fn unbind(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    binding_id: &str,
) -> Result<(), ApiError> {
    let binding_id = Uuid::parse_str(binding_id).map_err(|_| binding_not_found())?;
    let mut tx = state.pool.begin().await?;
    auth::lock_for_change(&mut tx, caller, id).await?;
    if !db::git::delete_binding(&mut tx, id, binding_id).await? {
        return Err(binding_not_found());
    }
    tx.commit().await?;
    Ok(())
}

/// Bindings hold secrets, which are stored only sealed.
pub(crate) fn secrets_key(state: &AppState) -> Result<&SecretsKey, ApiError> {
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

fn binding_not_found() -> ApiError {
    ApiError::not_found("binding_not_found", "no such git binding on this function")
}
