//! Operators' view of the scheduler: `GET /api/schedules` lists each sweep with its cron
//! expression, last and next fire time and last result; `POST /api/schedules/{name}/run` fires
//! one now (as a manual tick, which leaves the cron ticks alone).

use axum::{Json, extract::State};
use chrono::Utc;
use serde::Serialize;
use slipway_shared::{
    db,
    schedule::{self, Schedules, Sweep},
};

use super::timestamp;
use crate::error::ApiPath;
use crate::{AppState, auth::Caller, error::ApiError, openapi::Failures, signing};

fn operators_only(caller: &Caller) -> Result<(), ApiError> {
    super::ops::operators_only(caller, "schedules")
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    name: &'static str,
    cron: String,
    last_fire_at: Option<String>,
    last_fired_by: Option<String>,
    last_manual: Option<bool>,
    last_result: Option<serde_json::Value>,
    next_fire_at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    schedules: Vec<ScheduleView>,
}

#[utoipa::path(
    get,
    path = "/api/schedules",
    tag = "ops",
    responses((status = 200, description = "The scheduler's sweeps: their cron, last and next run", body = ScheduleList), Failures)
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ScheduleList>, ApiError> {
    operators_only(&caller)?;
    let config = &state.config.scheduler;
    let schedules = Schedules::parse(config)?;
    let now = Utc::now();
    let mut conn = state.pool.acquire().await?;
    let mut views = Vec::new();
    for (sweep, cron) in schedules.iter() {
        let last = db::sweeps::last_tick(&mut conn, sweep.as_str()).await?;
        views.push(ScheduleView {
            name: sweep.as_str(),
            cron: sweep.cron(config).to_owned(),
            last_fire_at: last.as_ref().map(|t| timestamp(t.fire_at)),
            last_fired_by: last.as_ref().map(|t| t.fired_by.clone()),
            last_manual: last.as_ref().map(|t| t.manual),
            last_result: last.map(|t| t.result),
            next_fire_at: schedule::next_tick(cron, now).map(timestamp),
        });
    }
    Ok(Json(ScheduleList { schedules: views }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunResult {
    name: &'static str,
    fire_at: String,
    result: serde_json::Value,
}

#[utoipa::path(
    post,
    path = "/api/schedules/{name}/run",
    tag = "ops",
    params(("name" = String, Path, description = "The sweep: stale, idle, purge, reap, retention, …")),
    responses((status = 200, description = "The sweep ran now; what it picked", body = RunResult), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<RunResult>, ApiError> {
    operators_only(&caller)?;
    signing::require_signed(&caller)?;
    let sweep = Sweep::parse(&name).ok_or_else(|| {
        ApiError::not_found(
            "schedule_not_found",
            format!("no schedule {name:?}; see GET /api/schedules"),
        )
    })?;
    let fire_at = Utc::now();
    let fired_by = format!("api:{}", caller.key_id);
    let result = schedule::fire(
        &state.pool,
        &state.config.scheduler,
        sweep,
        fire_at,
        &fired_by,
        true,
    )
    .await?
    .ok_or_else(|| ApiError::conflict("tick_taken", "that tick was just fired; try again"))?;
    Ok(Json(RunResult {
        name: sweep.as_str(),
        fire_at: timestamp(fire_at),
        result,
    }))
}
