//! Aliases of a function: `/api/functions/{id}/aliases[/{name}]`. Invoked at
//! `/api/v1/functions/invoke/{id}@{name}` (see `invoke`).

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use slipway_shared::db::{self, aliases::AliasRow};
use uuid::Uuid;

use super::{functions::parse_id, timestamp};
use crate::{
    AppState, aliases,
    auth::{Caller, OwnedFunction},
    error::{ApiError, ApiJson, ApiPath},
    openapi::{Failures, FunctionId, IdempotencyKey},
};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAlias {
    /// Lower-case letters, digits, `-` and `_`, starting with a letter (never a number: `@3`
    /// is version 3).
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,62}$", max_length = 63)]
    name: String,
    /// A version of the function that has an image: built, serving, or served before and not
    /// yet pruned.
    #[schema(minimum = 1, maximum = 2147483647)]
    version: i64,
    /// Traffic splitting, as Lambda's routing config: `{"<another version>": share}` sends that
    /// share of the alias's calls (drawn per call, 0 < share < 1) to that version.
    #[serde(default)]
    weights: Option<BTreeMap<String, f64>>,
}

/// The alias as it is to be: a PUT replaces the split too (none when `weights` is absent).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PointAlias {
    #[schema(minimum = 1, maximum = 2147483647)]
    version: i64,
    #[serde(default)]
    weights: Option<BTreeMap<String, f64>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Alias {
    name: String,
    version: i32,
    deployment_id: Uuid,
    /// Another version's share of the calls, when the alias splits them.
    #[serde(skip_serializing_if = "Option::is_none")]
    weights: Option<BTreeMap<String, f64>>,
    /// Where the alias is invoked.
    invoke_url: String,
    created_at: String,
    updated_at: String,
}

impl Alias {
    fn of(function_id: Uuid, row: AliasRow) -> Self {
        Self {
            invoke_url: format!("/api/v1/functions/invoke/{function_id}@{}", row.name),
            weights: row
                .additional_version
                .zip(row.additional_weight)
                .map(|(version, weight)| BTreeMap::from([(version.to_string(), weight)])),
            name: row.name,
            version: row.version,
            deployment_id: row.deployment_id,
            created_at: timestamp(row.created_at),
            updated_at: timestamp(row.updated_at),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AliasList {
    function_id: Uuid,
    aliases: Vec<Alias>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the parameter; handlers read it raw")]
pub struct AliasName {
    /// The alias's name.
    name: String,
}

fn version(raw: i64) -> Result<i32, ApiError> {
    i32::try_from(raw)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(crate::rollback::invalid_version)
}

/// `POST /api/functions/{id}/aliases {"name", "version"}`: 201 with the alias.
#[utoipa::path(
    post,
    path = "/api/functions/{id}/aliases",
    tag = "functions",
    params(FunctionId, IdempotencyKey),
    request_body = CreateAlias,
    responses((status = 201, description = "The alias", body = Alias), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CreateAlias>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let version = version(request.version)?;
    let weights = aliases::parse_weights(request.weights.as_ref(), version)?;
    let alias = aliases::create(&state, caller, id, &request.name, version, weights).await?;
    Ok((StatusCode::CREATED, Json(Alias::of(id, alias))).into_response())
}

/// `GET /api/functions/{id}/aliases`: every alias of the function, by name.
#[utoipa::path(
    get,
    path = "/api/functions/{id}/aliases",
    tag = "functions",
    params(FunctionId),
    responses((status = 200, body = AliasList), Failures)
)]
pub async fn list(
    State(state): State<AppState>,
    OwnedFunction { function, .. }: OwnedFunction,
) -> Result<Json<AliasList>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let rows = db::aliases::list(&mut conn, function.id).await?;
    Ok(Json(AliasList {
        function_id: function.id,
        aliases: rows
            .into_iter()
            .map(|row| Alias::of(function.id, row))
            .collect(),
    }))
}

/// `GET /api/functions/{id}/aliases/{name}`.
#[utoipa::path(
    get,
    path = "/api/functions/{id}/aliases/{name}",
    tag = "functions",
    params(FunctionId, AliasName),
    responses((status = 200, body = Alias), Failures)
)]
pub async fn get(
    State(state): State<AppState>,
    OwnedFunction { function, .. }: OwnedFunction,
    ApiPath(path): ApiPath<(String, String)>,
) -> Result<Json<Alias>, ApiError> {
    let (_, name) = path;
    let mut conn = state.pool.acquire().await?;
    let row = db::aliases::get(&mut conn, function.id, &name)
        .await?
        .ok_or_else(|| aliases::alias_not_found(&name))?;
    Ok(Json(Alias::of(function.id, row)))
}

/// `PUT /api/functions/{id}/aliases/{name} {"version"}`: points the alias at another version.
#[utoipa::path(
    put,
    path = "/api/functions/{id}/aliases/{name}",
    tag = "functions",
    params(FunctionId, AliasName, IdempotencyKey),
    request_body = PointAlias,
    responses((status = 200, description = "The alias, pointed anew", body = Alias), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn point(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<PointAlias>,
) -> Result<Json<Alias>, ApiError> {
    let (id, name) = path;
    let id = parse_id(&id)?;
    let version = version(request.version)?;
    let weights = aliases::parse_weights(request.weights.as_ref(), version)?;
    let alias = aliases::point(&state, caller, id, &name, version, weights).await?;
    Ok(Json(Alias::of(id, alias)))
}

/// `DELETE /api/functions/{id}/aliases/{name}`: 204. The version itself stays.
#[utoipa::path(
    delete,
    path = "/api/functions/{id}/aliases/{name}",
    tag = "functions",
    params(FunctionId, AliasName, IdempotencyKey),
    responses((status = 204, description = "The alias is gone"), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (id, name) = path;
    let id = parse_id(&id)?;
    aliases::delete(&state, caller, id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
