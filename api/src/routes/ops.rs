//! The operators' queue API (`/api/ops/…`): every queue's counts by state, how long its oldest
//! due job has waited and what it finished lately; jobs filtered by queue, state, function or
//! deployment, newest first; one job with its payload and its deployment; retry of a job that
//! ended and cancel of one still waiting, one at a time or every job a filter matches; pause and
//! resume of a queue. Operators only: everyone else gets 403.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Query, State},
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
use crate::error::ApiPath;
use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ErrorEnvelope},
    openapi::Failures,
    signing,
};

/// What "finished lately" means in the queues overview.
const RECENT: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// apalis' states, and `Paused`: a waiting job of a paused queue, which no worker claims.
const STATES: [&str; 7] = [
    "Pending", "Paused", "Queued", "Running", "Done", "Failed", "Killed",
];
/// What a cancelled job's result and its deployment's error say.
const CANCELLED: &str = "cancelled_by_operator: the job was cancelled before it ran";

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

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueView {
    pub(crate) name: &'static str,
    /// Jobs by state; every state is listed, zero included.
    pub(crate) counts: BTreeMap<&'static str, i64>,
    /// Seconds the oldest job that is due has waited to be claimed.
    pub(crate) oldest_waiting_seconds: Option<f64>,
    finished_last_5_minutes: i64,
    /// Paused: its waiting jobs stay `Paused` until it resumes; what runs goes on.
    paused: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueList {
    queues: Vec<QueueView>,
}

/// `GET /api/ops/queues`
#[utoipa::path(
    get,
    path = "/api/ops/queues",
    tag = "ops",
    responses((status = 200, body = QueueList), Failures)
)]
pub async fn queues(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<QueueList>, ApiError> {
    operators_only(&caller, "queues")?;
    let mut conn = state.pool.acquire().await?;
    Ok(Json(QueueList {
        queues: overview(&mut conn).await?,
    }))
}

/// Every queue, listed even when it has no job; shared with the metrics scrape.
pub(crate) async fn overview(conn: &mut sqlx::PgConnection) -> Result<Vec<QueueView>, ApiError> {
    db::queue::fold_counts(&mut *conn).await?;
    let counts = db::queue::counts_by_state(&mut *conn).await?;
    let times = db::queue::queue_times(&mut *conn, &ALL_QUEUES, RECENT).await?;
    let paused = db::queue::paused_queues(&mut *conn).await?;
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
                paused: paused.iter().any(|p| p == name),
            }
        })
        .collect();
    Ok(queues)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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

#[derive(Serialize, utoipa::ToSchema)]
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

#[derive(Serialize, utoipa::ToSchema)]
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
        dead_letters: false,
    })
}

/// `GET /api/ops/jobs?queue=&state=&function_id=&deployment_id=&page=&per_page=`
#[utoipa::path(
    get,
    path = "/api/ops/jobs",
    tag = "ops",
    params(JobQuery),
    responses((status = 200, description = "Newest first", body = JobPage), Failures)
)]
pub async fn jobs(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    operators_only(&caller, "jobs")?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let filter = filter(&query)?;
    page_of(&state, &query, &filter).await
}

/// `GET /api/ops/dead-letters?queue=&function_id=&deployment_id=&page=&per_page=`: the jobs that
/// failed with no attempt left, newest first, each with its last error.
#[utoipa::path(
    get,
    path = "/api/ops/dead-letters",
    tag = "ops",
    params(JobQuery),
    responses((status = 200, description = "Failed jobs with no attempt left, newest first", body = JobPage), Failures)
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    operators_only(&caller, "jobs")?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let filter = dead_letter_filter(&query)?;
    page_of(&state, &query, &filter).await
}

/// The list's filter narrowed to dead letters; a state other than `Failed` makes no sense there.
fn dead_letter_filter(query: &JobQuery) -> Result<JobFilter, ApiError> {
    if query.state.as_deref().is_some_and(|s| s != "Failed") {
        return Err(ApiError::bad_request(
            "invalid_query",
            "dead letters are Failed jobs; they take no other state",
        ));
    }
    Ok(JobFilter {
        dead_letters: true,
        ..filter(query)?
    })
}

async fn page_of(
    state: &AppState,
    query: &JobQuery,
    filter: &JobFilter,
) -> Result<Json<JobPage>, ApiError> {
    let page = query.page.unwrap_or(1);
    let per_page = query.per_page.unwrap_or(50);
    if page < 1 || !(1..=500).contains(&per_page) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "page starts at 1; per_page is 1 to 500",
        ));
    }
    let mut conn = state.pool.acquire().await?;
    let jobs = db::queue::list_jobs(&mut conn, filter, per_page, (page - 1) * per_page).await?;
    Ok(Json(JobPage {
        jobs: jobs.into_iter().map(JobView::from).collect(),
        page,
        per_page,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
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
#[utoipa::path(
    get,
    path = "/api/ops/jobs/{id}",
    tag = "ops",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = JobDetail), Failures)
)]
pub async fn job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
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
#[utoipa::path(
    post,
    path = "/api/ops/jobs/{id}/retry",
    tag = "ops",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job runs again", body = JobDetail), (status = 409, description = "Its state does not allow it", body = ErrorEnvelope<'static>), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
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
#[utoipa::path(
    post,
    path = "/api/ops/jobs/{id}/cancel",
    tag = "ops",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job never runs; a pipeline job's deployment fails with `cancelled_by_operator`", body = JobDetail), (status = 409, description = "Its state does not allow it", body = ErrorEnvelope<'static>), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobDetail>, ApiError> {
    operators_only(&caller, "jobs")?;
    signing::require_signed(&caller)?;
    let mut tx = state.pool.begin().await?;
    let job = locked(&mut tx, &id).await?;
    if !db::queue::cancel_job(&mut tx, &id, CANCELLED).await? {
        return Err(ApiError::conflict(
            "job_not_cancellable",
            format!(
                "the job is {}; only Pending and Paused jobs are cancelled (a claimed one may be \
                 starting)",
                job.state
            ),
        ));
    }
    if let Some(deployment_id) = pipeline_deployment(&job) {
        fail_cancelled(&mut tx, &job.queue, deployment_id).await?;
    }
    answer(tx, &id).await
}

/// The deployment of a cancelled pipeline job fails with `cancelled_by_operator`; whatever served
/// before keeps serving. An operator's cancel overrides whichever run holds the deployment.
async fn fail_cancelled(
    tx: &mut sqlx::PgConnection,
    queue: &str,
    deployment_id: Uuid,
) -> Result<(), ApiError> {
    let Some(deployment) = db::deployments::get(tx, deployment_id).await? else {
        return Ok(());
    };
    // The log line goes under the cancelled stage: `slipway::build` → `build`.
    let phase = queue.strip_prefix("slipway::").unwrap_or("deploy");
    settle::fail_deployment(
        tx,
        deployment_id,
        None,
        deployment.function_id,
        phase,
        CANCELLED,
    )
    .await?;
    Ok(())
}

/// What a bulk action did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkOutcome {
    /// Jobs that will run again (retry) or never run (cancel).
    changed: u64,
    /// Jobs that matched but were left as they are: pipeline jobs whose deployment has settled
    /// (retry). A cancel changes every waiting job it matches.
    skipped: u64,
}

/// `POST /api/ops/jobs/retry?queue=&state=&function_id=&deployment_id=`: every matching job that
/// ended runs again, not just one page; pipeline jobs whose deployment settled are skipped.
#[utoipa::path(
    post,
    path = "/api/ops/jobs/retry",
    tag = "ops",
    params(JobQuery),
    responses((status = 200, description = "Every matching job that ended runs again", body = BulkOutcome), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn retry_matching(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BulkOutcome>, ApiError> {
    bulk_retry(&state, &caller, query, false).await
}

/// `POST /api/ops/dead-letters/redrive?queue=&function_id=&deployment_id=`: every matching dead
/// letter runs again, as a bulk retry does (pipeline jobs whose deployment settled are skipped).
#[utoipa::path(
    post,
    path = "/api/ops/dead-letters/redrive",
    tag = "ops",
    params(JobQuery),
    responses((status = 200, description = "Every matching dead letter runs again", body = BulkOutcome), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BulkOutcome>, ApiError> {
    bulk_retry(&state, &caller, query, true).await
}

async fn bulk_retry(
    state: &AppState,
    caller: &Caller,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
    dead_letters: bool,
) -> Result<Json<BulkOutcome>, ApiError> {
    operators_only(caller, "jobs")?;
    signing::require_signed(caller)?;
    let filter = bulk_filter(query, dead_letters)?;
    let mut tx = state.pool.begin().await?;
    let (changed, skipped) = db::queue::retry_matching(&mut tx, &filter, &PIPELINE_QUEUES).await?;
    tx.commit().await?;
    Ok(Json(BulkOutcome { changed, skipped }))
}

/// `POST /api/ops/jobs/cancel?queue=&state=&function_id=&deployment_id=`: every matching job
/// still waiting never runs, and each pipeline job's deployment fails with
/// `cancelled_by_operator`, in one transaction.
#[utoipa::path(
    post,
    path = "/api/ops/jobs/cancel",
    tag = "ops",
    params(JobQuery),
    responses((status = 200, description = "Every matching waiting job never runs", body = BulkOutcome), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn cancel_matching(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BulkOutcome>, ApiError> {
    operators_only(&caller, "jobs")?;
    signing::require_signed(&caller)?;
    let filter = bulk_filter(query, false)?;
    let mut tx = state.pool.begin().await?;
    let cancelled = db::queue::cancel_matching(&mut tx, &filter, CANCELLED).await?;
    for job in &cancelled {
        let deployment_id = job.deployment_id.as_deref().map(Uuid::parse_str);
        if PIPELINE_QUEUES.contains(&job.queue.as_str())
            && let Some(Ok(deployment_id)) = deployment_id
        {
            fail_cancelled(&mut tx, &job.queue, deployment_id).await?;
        }
    }
    tx.commit().await?;
    Ok(Json(BulkOutcome {
        changed: cancelled.len() as u64,
        skipped: 0,
    }))
}

/// A bulk action's filter: the list's (or the dead letters'), without its page.
fn bulk_filter(
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
    dead_letters: bool,
) -> Result<JobFilter, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if query.page.is_some() || query.per_page.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "a bulk action covers every matching job: it takes no page",
        ));
    }
    if dead_letters {
        dead_letter_filter(&query)
    } else {
        filter(&query)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueuePause {
    name: String,
    paused: bool,
    /// Jobs parked (pause) or released to run again (resume) by this call.
    jobs: u64,
}

fn known_queue(name: &str) -> Result<(), ApiError> {
    if ALL_QUEUES.contains(&name) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "queue_not_found",
            format!(
                "no queue {name:?}; the queues are {}",
                ALL_QUEUES.join(", ")
            ),
        ))
    }
}

/// `POST /api/ops/queues/{name}/pause`: the queue's waiting jobs, and every one that comes due,
/// wait until it resumes; jobs already claimed or running go on. Pausing twice changes nothing.
#[utoipa::path(
    post,
    path = "/api/ops/queues/{name}/pause",
    tag = "ops",
    params(("name" = String, Path, description = "The queue")),
    responses((status = 200, body = QueuePause), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<QueuePause>, ApiError> {
    set_paused(&state, &caller, name, true).await
}

/// `POST /api/ops/queues/{name}/resume`: the queue's parked jobs wait to be claimed again.
#[utoipa::path(
    post,
    path = "/api/ops/queues/{name}/resume",
    tag = "ops",
    params(("name" = String, Path, description = "The queue")),
    responses((status = 200, body = QueuePause), Failures),
    security(("api_key" = []), ("signature" = []))
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<QueuePause>, ApiError> {
    set_paused(&state, &caller, name, false).await
}

async fn set_paused(
    state: &AppState,
    caller: &Caller,
    name: String,
    paused: bool,
) -> Result<Json<QueuePause>, ApiError> {
    operators_only(caller, "queues")?;
    signing::require_signed(caller)?;
    known_queue(&name)?;
    let mut tx = state.pool.begin().await?;
    let jobs = if paused {
        db::queue::pause_queue(&mut tx, &name, caller.user_id).await?
    } else {
        db::queue::resume_queue(&mut tx, &name).await?
    };
    tx.commit().await?;
    Ok(Json(QueuePause { name, paused, jobs }))
}
