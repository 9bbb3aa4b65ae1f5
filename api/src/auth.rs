//! `Authorization: Bearer <api key>`. A key is looked up by its hash; revoked keys stop working on
//! the next request.

use axum::{extract::FromRequestParts, http::request::Parts};
use http::StatusCode;
use slipway_shared::{db, domain::ApiKeyHash};
use uuid::Uuid;

use crate::{AppState, error::ApiError};

/// The authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned())
        };
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <api key>"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| unauthorized("Authorization must be 'Bearer <api key>'"))?;
        let mut conn = state.pool.acquire().await?;
        let user_id = db::users::user_for_key(&mut conn, &ApiKeyHash::of(key))
            .await?
            .ok_or_else(|| unauthorized("unknown or revoked API key"))?;
        Ok(Self { user_id })
    }
}
