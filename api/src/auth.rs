//! `Authorization: Bearer <api key>`. A key is looked up by its hash; revoked keys stop working on
//! the next request.

use axum::{extract::FromRequestParts, http::request::Parts};
use http::{HeaderMap, StatusCode};
use slipway_shared::{db, domain::ApiKeyHash};
use uuid::Uuid;

use crate::{
    AppState,
    error::ApiError,
    signing::{self, VerifiedSignature},
};

/// The authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
    /// The key the request presented (nonces and audit are per key, ownership per user).
    pub key_id: Uuid,
    /// May see and fire the scheduler's sweeps.
    pub operator: bool,
    /// Set when the signing middleware verified this request's signature with that key.
    pub signature: Option<VerifiedSignature>,
    /// The operators' console acting in a signed-in session (`console`): the key was proved at
    /// sign-in, and the session's cookie is never sent cross-site.
    pub console_session: bool,
}

impl Caller {
    /// For `signing::require_signature`.
    pub fn signature(&self) -> Option<&VerifiedSignature> {
        self.signature.as_ref()
    }
}

pub(crate) fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned())
}

/// The key presented in `Authorization: Bearer <key>`.
pub(crate) fn bearer_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <api key>"))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| unauthorized("Authorization must be 'Bearer <api key>'"))
}

/// The live key presented, with its owner; unknown and revoked keys are the same 401.
pub(crate) async fn key_owner(
    state: &AppState,
    key: &str,
) -> Result<db::users::KeyOwner, ApiError> {
    let hash = ApiKeyHash::of(key);
    if let Some(owner) = state.hot.key(&hash.0) {
        return Ok(owner);
    }
    // Boxed: a query's future is kilobytes, which would otherwise be part of (and copied with)
    // every invocation's, cache hits included.
    Box::pin(key_owner_from_database(state, hash)).await
}

async fn key_owner_from_database(
    state: &AppState,
    hash: ApiKeyHash,
) -> Result<db::users::KeyOwner, ApiError> {
    let ticket = state.hot.ticket();
    let mut conn = state.pool.acquire().await?;
    let owner = db::users::authenticate(&mut conn, &hash)
        .await?
        .ok_or_else(|| unauthorized("unknown or revoked API key"))?;
    state.hot.store_key(ticket, hash.0, owner.clone());
    Ok(owner)
}

/// Looks the presented key up; unknown and revoked keys are the same 401.
pub(crate) async fn authenticate(state: &AppState, key: &str) -> Result<Caller, ApiError> {
    Ok(Caller::from(key_owner(state, key).await?))
}

impl From<db::users::KeyOwner> for Caller {
    fn from(owner: db::users::KeyOwner) -> Self {
        Self {
            user_id: owner.user_id,
            key_id: owner.key_id,
            operator: owner.operator,
            signature: None,
            console_session: false,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// A middleware that already authenticated the request (signing, idempotency) leaves the
    /// caller in the extensions; the key is looked up once per request.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(*caller);
        }
        let caller = authenticate(state, bearer_key(&parts.headers)?).await?;
        parts.extensions.insert(caller);
        Ok(caller)
    }
}

/// The caller's function that the route's `{id}` names, read once for a handler that shows it
/// (or starts from it): an id that is no uuid, someone else's function and one that never
/// existed are the same 404, after the key is checked.
pub struct OwnedFunction {
    pub caller: Caller,
    pub function: db::functions::FunctionRow,
}

impl FromRequestParts<AppState> for OwnedFunction {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let axum::extract::Path(params) = axum::extract::Path::<
            std::collections::HashMap<String, String>,
        >::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::function_not_found())?;
        let id = params
            .get("id")
            .and_then(|raw| Uuid::parse_str(raw).ok())
            .ok_or_else(ApiError::function_not_found)?;
        let mut conn = state.pool.acquire().await?;
        let function = db::functions::find(&mut conn, caller.user_id, id)
            .await?
            .ok_or_else(ApiError::function_not_found)?;
        Ok(Self { caller, function })
    }
}

/// Locks the caller's function for the rest of the transaction, for a use case that changes it:
/// someone else's function is a 404 (before any signature question), and the request must be
/// signed unless the function skips signing.
pub(crate) async fn lock_for_change(
    tx: &mut sqlx::PgConnection,
    caller: &Caller,
    function_id: Uuid,
) -> Result<db::functions::LockedFunction, ApiError> {
    let function = db::functions::lock(tx, function_id)
        .await?
        .filter(|f| f.owner_id == caller.user_id)
        .ok_or_else(ApiError::function_not_found)?;
    signing::require_signature(caller.signature(), function.skip_signing)?;
    Ok(function)
}
