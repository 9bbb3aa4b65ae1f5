//! The operators' queue API (`/api/ops/…`): every queue's counts by state, how long its oldest
//! due job has waited and what it finished lately; jobs filtered by queue, state, function or
//! deployment, newest first; one job with its payload and its deployment; retry of a job that
//! ended and cancel of one still waiting. Operators only: everyone else gets 403.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use slipway_shared::{
    db::{self, queue::JobFilter},
    jobs::{ALL_QUEUES, PIPELINE_QUEUES},
    settle,
};
use uuid::Uuid;

use super::timestamp;
use crate::{AppState, auth::Caller, error::ApiError, signing};

/// What "finished lately" means in the queues overview.
const RECENT: std::time::Duration = std::time::Duration::from_secs(5 * 60);
const STATES: [&str; 6] = ["Pending", "Queued", "Running", "Done", "Failed", "Killed"];

pub fn operators_only(caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.operator {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "operators_only",
            format!("{what} are for operators (slipway create-key <user> --operator)"),
        ))
    }
}

#[derive(Serialize)]
pub struct QueueView {
    name: &'static str,
    /// Jobs by state; every state is listed, zero included.
    counts: BTreeMap<&'static str, i64>,
    /// Seconds the oldest job that is due has waited to be claimed.
    oldest_waiting_seconds: Option<f64>,
    finished_last_5_minutes: i64,
}

#[derive(Serialize)]
pub struct QueueList {
    queues: Vec<QueueView>,
}

/// `GET /api/ops/queues`
pub async fn queues(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<QueueList>, ApiError> {
    operators_only(&caller, "queues")?;
    let mut conn = state.pool.acquire().await?;
    let counts = db::queue::counts_by_state(&mut conn).await?;
    let times = db::queue::queue_times(&mut conn, RECENT).await?;
    let queues = ALL_QUEUES
        .iter()
        .map(|&name| {
            let mut by_state: BTreeMap<&'static str, i64> =
                STATES.iter().map(|&s| (s, 0)).collect();
            for row in counts.iter().filter(|c| c.queue == name) {
                if let Some(state) = STATES.iter().find(|&&s| s == row.state) {
                    by_state.insert(state, row.count);
                }
            }
            let time = times.iter().find(|t| t.queue == name);
            QueueView {
                name,
                counts: by_state,
                oldest_waiting_seconds: time.and_then(|t| t.oldest_waiting_seconds),
                finished_last_5_minutes: time.map_or(0, |t| t.finished_recently),
            }
        })
        .collect();
    Ok(Json(QueueList { queues }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    queue: Option<String>,
    state: Option<String>,
    function_id: Option<Uuid>,
    deployment_id: Option<Uuid>,
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    per_page: Option<i64>,
}

#[derive(Serialize)]
pub struct JobView {
    id: String,
    queue: String,
    state: String,
    attempts: i32,
    max_attempts: i32,
    worker: Option<String>,
    run_at: String,
    locked_at: Option<String>,
    done_at: Option<String>,
    last_result: Option<Value>,
    deployment_id: Option<String>,
    function_id: Option<String>,
}

impl From<db::queue::JobSummary> for JobView {
    fn from(job: db::queue::JobSummary) -> Self {
        let field = |name: &str| {
            job.payload
                .as_ref()
                .and_then(|p| p.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Self {
            deployment_id: field("deployment_id"),
            function_id: field("function_id"),
            id: job.id,
            queue: job.queue,
            state: job.state,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            worker: job.worker,
            run_at: timestamp(job.run_at),
            locked_at: job.lock_at.map(timestamp),
            done_at: job.done_at.map(timestamp),
            last_result: job.last_result,
        }
    }
}

#[derive(Serialize)]
pub struct JobPage {
    jobs: Vec<JobView>,
    page: i64,
    per_page: i64,
}

fn filter(query: &JobQuery) -> Result<JobFilter, ApiError> {
    if let Some(queue) = &query.queue
        && !ALL_QUEUES.contains(&queue.as_str())
    {
        return Err(ApiError::bad_request(
            "unknown_queue",
            format!(
                "no queue {queue:?}; the queues are {}",
                ALL_QUEUES.join(", ")
            ),
        ));
    }
    if let Some(state) = &query.state
        && !STATES.contains(&state.as_str())
    {
        return Err(ApiError::bad_request(
            "unknown_state",
            format!("no state {state:?}; the states are {}", STATES.join(", ")),
        ));
    }
    Ok(JobFilter {
        queue: query.queue.clone(),
        state: query.state.clone(),
        function_id: query.function_id,
        deployment_id: query.deployment_id,
    })
}

/// `GET /api/ops/jobs?queue=&state=&function_id=&deployment_id=&page=&per_page=`
pub async fn jobs(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    operators_only(&caller, "jobs")?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let filter = filter(&query)?;
    let page = query.page.unwrap_or(1);
    let per_page = query.per_page.unwrap_or(50);
    if page < 1 || !(1..=500).contains(&per_page) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "page starts at 1; per_page is 1 to 500",
        ));
    }
    let mut conn = state.pool.acquire().await?;
    let jobs = db::queue::list_jobs(&mut conn, &filter, per_page, (page - 1) * per_page).await?;
    Ok(Json(JobPage {
        jobs: jobs.into_iter().map(JobView::from).collect(),
        page,
        per_page,
    }))
}

#[derive(Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    job: JobView,
    payload: Option<Value>,
    /// The deployment a pipeline job works on, as it stands.
    deployment: Option<Value>,
}

async fn detail(
    conn: &mut sqlx::PgConnection,
    job: db::queue::JobSummary,
) -> Result<JobDetail, ApiError> {
    let payload = job.payload.clone();
    let view = JobView::from(job);
    let deployment = match view.deployment_id.as_deref().map(Uuid::parse_str) {
        Some(Ok(id)) => db::deployments::get(conn, id).await?.map(|d| {
            serde_json::json!({
                "id": d.id,
                "function_id": d.function_id,
                "version": d.version,
                "status": d.status,
                "error": d.error,
            })
        }),
        _ => None,
    };
    Ok(JobDetail {
        job: view,
        payload,
        deployment,
    })
}

/// The job, locked for the rest of the transaction.
async fn locked(tx: &mut sqlx::PgConnection, id: &str) -> Result<db::queue::JobSummary, ApiError> {
    db::queue::lock_job(tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job_not_found", "no such job"))
}

/// The job as the action left it, and the transaction committed.
async fn answer(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    id: &str,
) -> Result<Json<JobDetail>, ApiError> {
    let job = locked(&mut tx, id).await?;
    let detail = detail(&mut tx, job).await?;
    tx.commit().await?;
    Ok(Json(detail))
}

/// `GET /api/ops/jobs/{id}`
pub async fn job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    operators_only(&caller, "jobs")?;
    let tx = state.pool.begin().await?;
    answer(tx, &id).await
}

/// The deployment a pipeline job works on, if the job is one.
fn pipeline_deployment(job: &db::queue::JobSummary) -> Option<Uuid> {
    if !PIPELINE_QUEUES.contains(&job.queue.as_str()) {
        return None;
    }
    job.payload
        .as_ref()?
        .get("deployment_id")?
        .as_str()?
        .parse()
        .ok()
}

/// `POST /api/ops/jobs/{id}/retry`: a job that ended `Failed` or `Killed` runs again. A
/// pipeline job whose deployment has settled is refused: its run would find nothing to do.
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    operators_only(&caller, "jobs")?;
    signing::require_signed(&caller)?;
    let mut tx = state.pool.begin().await?;
    let job = locked(&mut tx, &id).await?;
    if !["Failed", "Killed"].contains(&job.state.as_str()) {
        return Err(ApiError::conflict(
            "job_not_retryable",
            format!(
                "the job is {}; only Failed and Killed jobs are retried",
                job.state
            ),
        ));
    }
    if let Some(deployment_id) = pipeline_deployment(&job) {
        let deployment = db::deployments::get(&mut tx, deployment_id).await?;
        let in_flight = deployment.as_ref().is_some_and(|d| d.status.is_in_flight());
        if !in_flight {
            return Err(ApiError::conflict(
                "deployment_settled",
                "the job's deployment has settled; deploy again instead",
            ));
        }
    }
    db::queue::retry_job(&mut tx, &id).await?;
    answer(tx, &id).await
}

/// `POST /api/ops/jobs/{id}/cancel`: a job still waiting never runs. A pipeline job's
/// deployment fails with `cancelled_by_operator` in the same transaction, and whatever served
/// before keeps serving.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    operators_only(&caller, "jobs")?;
    signing::require_signed(&caller)?;
    let mut tx = state.pool.begin().await?;
    let job = locked(&mut tx, &id).await?;
    let reason = "cancelled_by_operator: the job was cancelled before it ran";
    if !db::queue::cancel_job(&mut tx, &id, reason).await? {
        return Err(ApiError::conflict(
            "job_not_cancellable",
            format!(
                "the job is {}; only Pending jobs are cancelled (a claimed one may be starting)",
                job.state
            ),
        ));
    }
    if let Some(deployment_id) = pipeline_deployment(&job)
        && let Some(deployment) = db::deployments::get(&mut tx, deployment_id).await?
    {
        // The log line goes under the cancelled stage: `slipway::build` → `build`.
        let phase = job.queue.strip_prefix("slipway::").unwrap_or("deploy");
        // An operator's cancel overrides whichever run holds the deployment.
        settle::fail_deployment(
            &mut tx,
            deployment_id,
            None,
            deployment.function_id,
            phase,
            reason,
        )
        .await?;
    }
    answer(tx, &id).await
}
