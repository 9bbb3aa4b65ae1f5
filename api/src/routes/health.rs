//! `GET /healthz`: the API process is up and can reach Postgres.

use axum::{Json, extract::State};
use serde::Serialize;

use crate::{AppState, error::ApiError, openapi::Failures};

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// The API process is up and reaches Postgres.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, body = Health), Failures)
)]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    sqlx::query("SELECT 1").execute(&state.pool).await?;
    Ok(Json(Health { status: "ok" }))
}
