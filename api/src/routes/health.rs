//! `GET /healthz`: the API process is up and can reach Postgres.

use axum::{Json, extract::State};
use serde::Serialize;

use crate::{AppState, error::ApiError};

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
}

pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    sqlx::query("SELECT 1").execute(&state.pool).await?;
    Ok(Json(Health { status: "ok" }))
}
