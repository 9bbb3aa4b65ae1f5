//! Per-key bounds on uploads: at most `SLIPWAY_MAX_CONCURRENT_UPLOADS` deploy uploads of one API
//! key are read at once by this process, and each owner has at most
//! `SLIPWAY_MAX_QUEUED_BUILDS` deployments in flight (checked in the deploy transaction). Past
//! either, the request answers 429 with `Retry-After` before its body is read or anything is
//! stored, so one key cannot hold every upload slot or fill the build queue for the others.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{AppState, auth, error::ApiError};

/// Uploads in progress per key, in this process.
#[derive(Default)]
pub struct UploadSlots {
    held: Mutex<HashMap<String, usize>>,
}

/// Gives its slot back when the upload's request is done, however it ends.
struct Slot {
    slots: Arc<UploadSlots>,
    key: String,
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
    fn take(self: &Arc<Self>, key: String, limit: usize) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(key.clone()).or_insert(0);
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

/// The key's public part (`sk_xxxxxxxx`): enough to tell keys apart, nothing to authenticate.
fn key_prefix(key: &str) -> String {
    key.splitn(3, '_').take(2).collect::<Vec<_>>().join("_")
}

/// Middleware on the upload route, outside the body buffering: a key past its concurrent
/// uploads gets 429 before its body is read. A request without a key (or key id) passes on, to
/// be refused by authentication.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // A v2-signed upload may name its key only by id (README, "Signed requests").
    let key = match auth::bearer_key(request.headers()) {
        Ok(key) => key_prefix(key),
        Err(_) => match request.headers().get(crate::signing::KEY_ID_HEADER) {
            Some(id) => format!("id:{}", String::from_utf8_lossy(id.as_bytes())),
            None => return next.run(request).await,
        },
    };
    let limit = state.config.max_concurrent_uploads;
    match state.uploads.take(key, limit) {
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
        let first = slots.take("sk_a".into(), 2).unwrap();
        let _second = slots.take("sk_a".into(), 2).unwrap();
        assert!(slots.take("sk_a".into(), 2).is_none());
        // Another key is not affected.
        assert!(slots.take("sk_b".into(), 2).is_some());
        drop(first);
        assert!(slots.take("sk_a".into(), 2).is_some());
        assert_eq!(key_prefix("sk_abcdefgh_secretpart"), "sk_abcdefgh");
    }
}
