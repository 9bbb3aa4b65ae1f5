//! Read-only views of apalis-postgres's job table, for operators and tests.

use sqlx::PgConnection;

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub queue: String,
    pub status: String,
    pub attempts: i32,
    pub payload: Option<serde_json::Value>,
}

/// Jobs of the given queues, oldest first.
pub async fn jobs(conn: &mut PgConnection, queues: &[&str]) -> sqlx::Result<Vec<JobRow>> {
    let queues: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
    sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id!", job_type AS "queue!", status AS "status!", attempts AS "attempts!",
                  convert_from(job, 'UTF8')::jsonb AS payload
           FROM apalis.jobs WHERE job_type = ANY($1) ORDER BY run_at, id"#,
        &queues
    )
    .fetch_all(conn)
    .await
}

/// How many jobs of a queue are in one state.
#[derive(Debug, Clone)]
pub struct StateCount {
    pub queue: String,
    pub state: String,
    pub count: i64,
}

/// Jobs per queue and state.
pub async fn counts_by_state(conn: &mut PgConnection) -> sqlx::Result<Vec<StateCount>> {
    sqlx::query_as!(
        StateCount,
        r#"SELECT job_type AS "queue!", status AS "state!", count(*) AS "count!"
           FROM apalis.jobs GROUP BY job_type, status ORDER BY job_type, status"#
    )
    .fetch_all(conn)
    .await
}

/// Per queue: seconds the oldest due job has waited, and jobs finished in the last `window`.
#[derive(Debug, Clone)]
pub struct QueueTimes {
    pub queue: String,
    pub oldest_waiting_seconds: Option<f64>,
    pub finished_recently: i64,
}

pub async fn queue_times(
    conn: &mut PgConnection,
    window: std::time::Duration,
) -> sqlx::Result<Vec<QueueTimes>> {
    sqlx::query_as!(
        QueueTimes,
        r#"SELECT job_type AS "queue!",
                  EXTRACT(EPOCH FROM now() - min(run_at) FILTER (
                      WHERE status = 'Pending' AND run_at <= now()))::float8
                      AS oldest_waiting_seconds,
                  count(*) FILTER (WHERE done_at > now() - $1::float8 * interval '1 second')
                      AS "finished_recently!"
           FROM apalis.jobs
           WHERE status IN ('Pending', 'Queued', 'Running')
              OR done_at > now() - $1::float8 * interval '1 second'
           GROUP BY job_type"#,
        window.as_secs_f64()
    )
    .fetch_all(conn)
    .await
}

/// One job as operators see it in a list.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub id: String,
    pub queue: String,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub worker: Option<String>,
    pub run_at: chrono::DateTime<chrono::Utc>,
    pub lock_at: Option<chrono::DateTime<chrono::Utc>>,
    pub done_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_result: Option<serde_json::Value>,
    pub payload: Option<serde_json::Value>,
}

/// What a list or a bulk action selects.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<String>,
    pub function_id: Option<uuid::Uuid>,
    pub deployment_id: Option<uuid::Uuid>,
}

/// Jobs matching `filter`, newest first, one page.
pub async fn list_jobs(
    conn: &mut PgConnection,
    filter: &JobFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<JobSummary>> {
    sqlx::query_as!(
        JobSummary,
        r#"SELECT id AS "id!", job_type AS "queue!", status AS "state!", attempts AS "attempts!",
                  max_attempts AS "max_attempts!", lock_by AS worker, run_at AS "run_at!",
                  lock_at, done_at, last_result,
                  convert_from(job, 'UTF8')::jsonb AS payload
           FROM apalis.jobs
           WHERE ($1::text IS NULL OR job_type = $1)
             AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR convert_from(job, 'UTF8')::jsonb ->> 'function_id' = $3)
             AND ($4::text IS NULL OR convert_from(job, 'UTF8')::jsonb ->> 'deployment_id' = $4)
           ORDER BY run_at DESC, id DESC
           LIMIT $5 OFFSET $6"#,
        filter.queue,
        filter.state,
        filter.function_id.map(|id| id.to_string()),
        filter.deployment_id.map(|id| id.to_string()),
        limit,
        offset
    )
    .fetch_all(conn)
    .await
}

/// One job, locked for an operator's action on it.
pub async fn lock_job(conn: &mut PgConnection, id: &str) -> sqlx::Result<Option<JobSummary>> {
    sqlx::query_as!(
        JobSummary,
        r#"SELECT id AS "id!", job_type AS "queue!", status AS "state!", attempts AS "attempts!",
                  max_attempts AS "max_attempts!", lock_by AS worker, run_at AS "run_at!",
                  lock_at, done_at, last_result,
                  convert_from(job, 'UTF8')::jsonb AS payload
           FROM apalis.jobs WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// A job that ended (`Failed`, `Killed`) runs again from scratch, now.
pub async fn retry_job(conn: &mut PgConnection, id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE apalis.jobs
           SET status = 'Pending', attempts = 0, run_at = now(), lock_by = NULL, lock_at = NULL,
               done_at = NULL
           WHERE id = $1 AND status IN ('Failed', 'Killed')"#,
        id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A job still waiting never runs: `Killed`, with the reason as its result.
pub async fn cancel_job(conn: &mut PgConnection, id: &str, reason: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE apalis.jobs
           SET status = 'Killed', done_at = now(), last_result = jsonb_build_object('Err', $2::text)
           WHERE id = $1 AND status = 'Pending'"#,
        id,
        reason
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
