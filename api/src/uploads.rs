//! Per-key bounds on uploads: at most `SLIPWAY_MAX_CONCURRENT_UPLOADS` deploy uploads of one API
//! key are read at once by this process, and each owner has at most
//! `SLIPWAY_MAX_QUEUED_BUILDS` deployments in flight (checked in the deploy transaction). Past
//! either, the request answers 429 with `Retry-After` before its body is read or anything is
//! stored, so one key cannot hold every upload slot or fill the build queue for the others. An
//! upload naming no live key is refused before its body is read, too.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use slipway_shared::db;
use uuid::Uuid;

use crate::{AppState, auth, error::ApiError};

/// Uploads in progress per key, in this process.
#[derive(Default)]
pub struct UploadSlots {
    held: Mutex<HashMap<Uuid, usize>>,
}

/// Gives its slot back when the upload's request is done, however it ends.
struct Slot {
    slots: Arc<UploadSlots>,
    key: Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl UploadSlots {
    fn take(self: &Arc<Self>, key: Uuid, limit: usize) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(key).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: Arc::clone(self),
            key,
        })
    }
}

/// The live key an upload names, looked up before its body is read: by its bearer value, or by
/// `X-Slipway-Key-Id` for a v2-signed upload that carries no bearer (its signature, which covers
/// the body, is checked once the body is spooled). Unknown and revoked keys are the same 401.
async fn uploader(state: &AppState, headers: &http::HeaderMap) -> Result<Uuid, ApiError> {
    if headers.contains_key(http::header::AUTHORIZATION) {
        return Ok(auth::key_owner(state, auth::bearer_key(headers)?)
            .await?
            .key_id);
    }
    let key_id = headers
        .get(crate::signing::KEY_ID_HEADER)
        .and_then(|id| id.to_str().ok())
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            auth::unauthorized("missing Authorization: Bearer <api key> or X-Slipway-Key-Id")
        })?;
    let mut conn = state.pool.acquire().await?;
    db::users::live_key(&mut conn, key_id)
        .await?
        .map(|owner| owner.key_id)
        .ok_or_else(|| auth::unauthorized("unknown or revoked API key"))
}

/// Middleware on the upload route, outside the body spooling: an upload that names no live key,
/// or whose key is past its concurrent uploads, is refused (401, 429) before its body is read.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let key_id = match uploader(&state, request.headers()).await {
        Ok(key_id) => key_id,
        Err(error) => return error.into_response(),
    };
    let limit = state.config.max_concurrent_uploads;
    match state.uploads.take(key_id, limit) {
        Some(_slot) => next.run(request).await,
        None => ApiError::Throttled {
            code: "too_many_uploads",
            message: format!(
                "this key already has {limit} uploads in progress; wait for one to finish"
            ),
            retry_after_secs: 5,
        }
        .into_response(),
    }
}

/// 429 for an owner whose deployments in flight reached the bound.
pub fn too_many_builds(limit: i64) -> ApiError {
    ApiError::Throttled {
        code: "too_many_builds",
        message: format!(
            "{limit} deployments of yours are already waiting or building; deploy again once some finish"
        ),
        retry_after_secs: 30,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_slots_and_gets_them_back() {
        let slots = Arc::new(UploadSlots::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = slots.take(a, 2).unwrap();
        let _second = slots.take(a, 2).unwrap();
        assert!(slots.take(a, 2).is_none());
        // Another key is not affected.
        assert!(slots.take(b, 2).is_some());
        drop(first);
        assert!(slots.take(a, 2).is_some());
    }
}
