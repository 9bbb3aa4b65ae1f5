//! API keys: create (the key and its signing secret are shown once), list (prefixes only),
//! revoke; creating and revoking take signed requests only. A caller manages only their own
//! keys; the first key of a user comes from `slipway create-key`.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use slipway_shared::{
    db::{self, users::ApiKeyRow},
    domain::{ApiKey, SigningSecret},
};
use uuid::Uuid;

use super::timestamp;
use crate::error::ApiPath;
use crate::{AppState, auth::Caller, error::ApiError, openapi::Failures, signing};

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeySummary {
    id: Uuid,
    prefix: String,
    name: Option<String>,
    created_at: String,
    revoked_at: Option<String>,
}

impl From<ApiKeyRow> for KeySummary {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            id: row.id,
            prefix: row.prefix,
            name: row.name,
            created_at: timestamp(row.created_at),
            revoked_at: row.revoked_at.map(timestamp),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The whole key: this answer is the only time it exists outside its owner's hands.
    key: String,
    /// What signs the key's requests (v2); shown here once, never sent on a request.
    signing_secret: String,
    #[serde(flatten)]
    summary: KeySummary,
}

/// The body is optional: no body (or `{}`) makes an unnamed key.
fn parse_create(body: &Bytes) -> Result<CreateKeyRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CreateKeyRequest::default());
    }
    let request: CreateKeyRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("expected {{\"name\"?}}: {e}"))
    })?;
    if let Some(name) = &request.name {
        let chars = name.chars().count();
        if !(1..=64).contains(&chars) || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_key_name",
                "name must be 1 to 64 characters without control characters",
            ));
        }
    }
    Ok(request)
}

/// `POST /api/keys {"name"?}`: 201 with the new key, once.
#[utoipa::path(
    post,
    path = "/api/keys",
    tag = "keys",
    request_body(content = CreateKeyRequest, description = "Optional: no body, or `{}`, makes an unnamed key"),
    responses((status = 201, description = "The new key and its signing secret, shown this once", body = CreatedKey), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A key mints keys that outlive its own revocation: only with proof of its signing secret.
    signing::require_signed(&caller)?;
    let request = parse_create(&body)?;
    let key = ApiKey::generate();
    let secret = SigningSecret::generate();
    let sealed = seal_signing_secret(&state, &secret, &key)?;
    let mut conn = state.pool.acquire().await?;
    let row = db::users::create_api_key(
        &mut conn,
        caller.user_id,
        &key,
        Some(&sealed),
        request.name.as_deref(),
    )
    .await?;
    let body = CreatedKey {
        key: key.expose().to_owned(),
        signing_secret: secret.expose().to_owned(),
        summary: row.into(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn seal_signing_secret(
    state: &AppState,
    secret: &SigningSecret,
    key: &ApiKey,
) -> Result<String, ApiError> {
    let secrets_key = state
        .config
        .secrets_key
        .as_ref()
        .ok_or_else(crate::signing::secrets_key_missing)?;
    secret
        .seal(secrets_key, key.prefix())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("sealing a signing secret: {e}")))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    keys: Vec<KeySummary>,
    count: usize,
}

/// `GET /api/keys`: the caller's keys, revoked ones included, oldest first.
#[utoipa::path(
    get,
    path = "/api/keys",
    tag = "keys",
    responses((status = 200, body = KeyList), Failures)
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<KeyList>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let rows = db::users::list_api_keys(&mut conn, caller.user_id).await?;
    Ok(Json(KeyList {
        count: rows.len(),
        keys: rows.into_iter().map(Into::into).collect(),
    }))
}

/// `DELETE /api/keys/{id}`: the key stops authenticating at once. Someone else's key is a 404
/// like a missing one; revoking twice answers the first revocation again.
#[utoipa::path(
    delete,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses((status = 200, description = "Revoked (or already revoked): the key as it stands", body = KeySummary), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<KeySummary>, ApiError> {
    signing::require_signed(&caller)?;
    let not_found = || ApiError::not_found("key_not_found", "no such API key");
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let mut conn = state.pool.acquire().await?;
    let row = db::users::revoke_api_key(&mut conn, caller.user_id, id)
        .await?
        .ok_or_else(not_found)?;
    // The key stops working here at once; other api processes hear of it from Postgres.
    state.hot.forget_keys();
    Ok(Json(row.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_optional_and_the_name_bounded() {
        assert!(parse_create(&Bytes::new()).unwrap().name.is_none());
        assert!(
            parse_create(&Bytes::from_static(b"{}"))
                .unwrap()
                .name
                .is_none()
        );
        assert_eq!(
            parse_create(&Bytes::from_static(br#"{"name":"ci"}"#))
                .unwrap()
                .name
                .as_deref(),
            Some("ci")
        );
        for bad in [
            r#"{"name":""}"#,
            r#"{"name":"a\nb"}"#,
            r#"{"label":"x"}"#,
            "not json",
        ] {
            assert!(
                parse_create(&Bytes::copy_from_slice(bad.as_bytes())).is_err(),
                "{bad}"
            );
        }
        let long = format!(r#"{{"name":"{}"}}"#, "é".repeat(65));
        assert!(parse_create(&Bytes::from(long)).is_err());
    }
}
