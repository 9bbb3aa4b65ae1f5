//! A provider's webhook delivery, the use case: checked against the secrets of the bindings it
//! may be for (each opened only here, the HMAC off the executor), then handed to the push use
//! case (`git_push`) for the bindings whose secret signed it. Nothing is stored for a delivery
//! that is refused.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use slipway_shared::{
    db::{self, git::BindingRow},
    git::{self, GitProvider},
    secrets::SecretsKey,
};
use tracing::warn;
use uuid::Uuid;

use crate::{
    AppState,
    error::ApiError,
    git_bindings::secrets_key,
    git_push::{self, Delivery, DeliveryOutcome},
    webhooks,
};

/// A delivery whose headers are in order (provider, event, a signature in the provider's
/// format); its signature is not checked yet.
pub struct SignedDelivery<'h> {
    pub provider: GitProvider,
    pub event: &'h str,
    pub headers: &'h HeaderMap,
    pub presented: webhooks::Presented,
    pub body: Bytes,
}

/// `POST /api/webhooks/{provider}/{binding_id}`: the binding's own URL. A delivery costs one
/// lookup, one secret and one HMAC, all before its JSON is read; its id is remembered for this
/// binding alone.
pub async fn to_binding(
    state: &AppState,
    delivery: SignedDelivery<'_>,
    binding_id: &str,
) -> Result<DeliveryOutcome, ApiError> {
    let SignedDelivery {
        provider,
        event,
        headers,
        presented,
        body,
    } = delivery;
    let key = secrets_key(state)?;
    let binding = match Uuid::parse_str(binding_id) {
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
    accept(state, provider, event, headers, &payload, vec![binding]).await
}

/// `POST /api/webhooks/{provider}`: the shared URL of bindings made before each had its own.
/// The delivery is checked against those bindings of the repository it names (a fixed set:
/// new bindings are not served here); unknown repositories and wrong secrets get the same
/// answer.
pub async fn to_repository(
    state: &AppState,
    delivery: SignedDelivery<'_>,
) -> Result<DeliveryOutcome, ApiError> {
    let SignedDelivery {
        provider,
        event,
        headers,
        presented,
        body,
    } = delivery;
    let key = secrets_key(state)?;
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
    accept(state, provider, event, headers, &payload, bindings).await
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

/// Hands a verified delivery for `bindings` to the push use case.
async fn accept(
    state: &AppState,
    provider: GitProvider,
    event: &str,
    headers: &HeaderMap,
    payload: &serde_json::Value,
    bindings: Vec<BindingRow>,
) -> Result<DeliveryOutcome, ApiError> {
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
    git_push::accept(
        state,
        Delivery {
            provider,
            delivery_id,
            event,
            push,
            bindings,
        },
    )
    .await
}
