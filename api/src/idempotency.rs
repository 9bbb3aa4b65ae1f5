//! `Idempotency-Key` for the mutating function routes, so CI can retry a deploy whose answer it
//! never saw without deploying twice.
//!
//! The first request with a key (per user) claims it and runs; its answer (status, content type,
//! body) is stored and replayed, with `Idempotent-Replayed: true`, to every later request with
//! the same key and the same method, path and body for 24 hours. The same key on a different
//! request is a 422 `idempotency_key_reused`; a retry arriving while the first is still running
//! is a 409 `idempotency_in_progress`. 5xx and 401 answers are not stored: the key is released,
//! so the retry runs the request again.
//!
//! Known gap: the record is completed after the handler's transaction commits, in a separate
//! statement. If the process dies between the two, the key stays "in progress"; after
//! `IN_PROGRESS_LIFETIME` a retry takes it over and runs the request again, so that one crash
//! can still produce a duplicate. Closing it would mean completing the record inside each use
//! case's transaction.

use std::time::Duration;

use anyhow::anyhow;
use axum::{
    body::Body,
    extract::{FromRequestParts, OriginalUri, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderName, HeaderValue, Method, StatusCode, header::CONTENT_TYPE};
use sha2::{Digest, Sha256};
use slipway_shared::db::{
    self,
    idempotency::{Claim, ExistingRecord, Lifetimes, StoredResponse},
};
use tracing::{Instrument, Span, warn};
use uuid::Uuid;

use crate::{
    AppState,
    auth::Caller,
    body::{self, BodyDigests},
    error::ApiError,
};

pub const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Long enough for any CI retry loop; the answers are small.
const COMPLETED_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Far longer than a use case takes (the body is already read when the claim is made), short
/// enough that a crash does not block a key for long.
const IN_PROGRESS_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Answers of these routes are a few hundred bytes; anything bigger is not worth keeping.
const MAX_STORED_BODY: usize = 1024 * 1024;

/// Middleware for the routes listed in `lib.rs`; requests without the header pass untouched.
pub async fn idempotent(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match run(state, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let key = value.to_str().unwrap_or_default();
    if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(key.to_owned())
    } else {
        Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ))
    }
}

async fn run(state: AppState, request: Request, next: Next) -> Result<Response, Response> {
    let mutating = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let mut keys = request.headers().get_all(&IDEMPOTENCY_KEY_HEADER).iter();
    let key = match (keys.next(), keys.next()) {
        _ if !mutating => return Ok(next.run(request).await),
        (None, _) => return Ok(next.run(request).await),
        (Some(value), None) => parse_key(value),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "send Idempotency-Key once",
        )),
    }
    .map_err(IntoResponse::into_response)?;

    // Authenticate before reading what may be a large upload.
    let (mut parts, body) = request.into_parts();
    let caller = Caller::from_request_parts(&mut parts, &state)
        .await
        .map_err(IntoResponse::into_response)?;
    let (request, digests) = body::digests(Request::from_parts(parts, body))
        .await
        .map_err(IntoResponse::into_response)?;
    let request_hash = fingerprint(&request, &digests);

    let claim = async {
        let mut conn = state.pool.acquire().await?;
        let lifetimes = Lifetimes {
            completed: COMPLETED_LIFETIME,
            in_progress: IN_PROGRESS_LIFETIME,
        };
        Ok::<_, ApiError>(
            db::idempotency::claim(&mut conn, caller.user_id, &key, &request_hash, lifetimes)
                .await?,
        )
    }
    .await
    .map_err(IntoResponse::into_response)?;

    match claim {
        Claim::Existing(ExistingRecord {
            request_hash: stored,
            ..
        }) if stored[..] != request_hash[..] => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request (method, path or body); \
             use a new key for a new request",
        )
        .into_response()),
        Claim::Existing(ExistingRecord { response: None, .. }) => Err(ApiError::conflict(
            "idempotency_in_progress",
            "a request with this Idempotency-Key is still running; retry in a moment",
        )
        .into_response()),
        Claim::Existing(ExistingRecord {
            response: Some(stored),
            ..
        }) => Ok(replay(stored)),
        Claim::Claimed { claim_id } => {
            let outcome = Outcome {
                state,
                user_id: caller.user_id,
                key,
                claim_id,
            };
            // Spawned, so a client hanging up cannot cancel the request between the use case's
            // commit and the record's completion (a dropped future would leave the key claimed).
            tokio::spawn(
                async move {
                    let response = next.run(request).await;
                    outcome.record(response).await
                }
                .instrument(Span::current()),
            )
            .await
            .map_err(|e| {
                ApiError::Internal(anyhow!(e).context("idempotent request task")).into_response()
            })
        }
    }
}

struct Outcome {
    state: AppState,
    user_id: Uuid,
    key: String,
    claim_id: Uuid,
}

impl Outcome {
    async fn record(self, response: Response) -> Response {
        let status = response.status();
        if status.is_server_error() || status == StatusCode::UNAUTHORIZED {
            self.release().await;
            return response;
        }
        let (parts, body) = response.into_parts();
        let body = match axum::body::to_bytes(body, MAX_STORED_BODY).await {
            Ok(body) => body,
            Err(error) => {
                self.release().await;
                return ApiError::Internal(anyhow!("reading an answer to store it: {error}"))
                    .into_response();
            }
        };
        let stored = StoredResponse {
            status: status.as_u16() as i16,
            content_type: parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: body.to_vec(),
        };
        // The answer goes out whatever happens here: the use case has committed.
        match self.complete(&stored).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(key = %self.key, "idempotency claim was taken over before it completed")
            }
            Err(error) => warn!(key = %self.key, %error, "could not store an idempotent answer"),
        }
        Response::from_parts(parts, Body::from(body))
    }

    async fn complete(&self, stored: &StoredResponse) -> Result<bool, sqlx::Error> {
        let mut conn = self.state.pool.acquire().await?;
        db::idempotency::complete(&mut conn, self.user_id, &self.key, self.claim_id, stored).await
    }

    async fn release(&self) {
        let released = async {
            let mut conn = self.state.pool.acquire().await?;
            db::idempotency::release(&mut conn, self.user_id, &self.key, self.claim_id).await
        }
        .await;
        if let Err(error) = released {
            warn!(key = %self.key, %error, "could not release an idempotency key; it frees itself later");
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = u16::try_from(stored.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, Body::from(stored.body)).into_response();
    let headers = response.headers_mut();
    if let Some(content_type) = stored
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        headers.insert(CONTENT_TYPE, content_type);
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

/// What makes two requests "the same": method, path with query, and body, whatever multipart
/// boundary the client picked this time.
fn fingerprint(request: &Request, digests: &BodyDigests) -> [u8; 32] {
    let path_and_query = request
        .extensions()
        .get::<OriginalUri>()
        .map_or(request.uri(), |original| &original.0)
        .path_and_query()
        .map_or("/", |p| p.as_str());
    let body_hash = hex::encode(digests.boundary_free);
    Sha256::digest(format!(
        "{}\n{path_and_query}\n{body_hash}",
        request.method()
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_visible_ascii() {
        for good in ["a", "deploy-2026-11-23T12:00:00Z#1", &"k".repeat(255)] {
            assert!(
                parse_key(&HeaderValue::from_str(good).unwrap()).is_ok(),
                "{good}"
            );
        }
        for bad in ["", "with space", &"k".repeat(256)] {
            assert!(
                parse_key(&HeaderValue::from_str(bad).unwrap()).is_err(),
                "{bad:?}"
            );
        }
    }
}
