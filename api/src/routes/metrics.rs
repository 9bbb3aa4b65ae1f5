//! `GET /metrics`: this process's metrics in Prometheus' text format, for operators (scrape with
//! `authorization: { credentials: <operator key> }`). The queue's depth, its oldest waiting job
//! and the build slots in use are read from Postgres at each scrape, so they are true whichever
//! process did the work; job, stage, invocation, webhook and sweep figures are the ones this
//! process recorded (all of them under `slipway dev`; a worker or scheduler run alone serves its
//! own on `SLIPWAY_METRICS_ADDR`).

use axum::{extract::State, http::header, response::IntoResponse};
use slipway_shared::{db, metrics};

use super::ops::{operators_only, overview};
use crate::{AppState, auth::Caller, error::ApiError, openapi::Failures};

/// This process's metrics, Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
            content_type = "text/plain"),
        Failures
    )
)]
pub async fn scrape(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    operators_only(&caller, "metrics")?;
    let mut conn = state.pool.acquire().await?;
    for queue in overview(&mut conn).await? {
        for (state, jobs) in &queue.counts {
            metrics::queue_depth(queue.name, state, *jobs);
        }
        let oldest = queue.oldest_waiting_seconds.unwrap_or_default();
        metrics::queue_oldest_waiting(queue.name, std::time::Duration::from_secs_f64(oldest));
    }
    metrics::build_slots_in_use(db::deployments::builds_holding_slots(&mut conn).await?);
    Ok((
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&state.metrics),
    ))
}
