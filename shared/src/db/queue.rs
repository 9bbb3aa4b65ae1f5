//! apalis-postgres's job table as operators see it: views, and the few changes they make (retry,
//! cancel, pause and resume a queue), one job or every job a filter matches.

use sqlx::PgConnection;

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub queue: String,
    pub status: String,
    pub attempts: i32,
    /// What apalis recorded of the last run: `{"Ok": …}` or `{"Err": "…"}`.
    pub last_result: Option<serde_json::Value>,
    pub payload: Option<serde_json::Value>,
}

/// Jobs of the given queues, oldest first.
pub async fn jobs(conn: &mut PgConnection, queues: &[&str]) -> sqlx::Result<Vec<JobRow>> {
    let queues: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
    sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id!", job_type AS "queue!", status AS "status!", attempts AS "attempts!",
                  last_result, convert_from(job, 'UTF8')::jsonb AS payload
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

/// Jobs per queue and state, from the counts the triggers keep (migration
/// `queue_job_counts`): cheap however many jobs the table holds.
pub async fn counts_by_state(conn: &mut PgConnection) -> sqlx::Result<Vec<StateCount>> {
    sqlx::query_as!(
        StateCount,
        r#"SELECT queue AS "queue!", state AS "state!", sum(jobs)::int8 AS "count!"
           FROM (SELECT queue, state, jobs FROM queue_job_counts
                 UNION ALL
                 SELECT queue, state, delta FROM queue_job_count_deltas) AS counted
           GROUP BY queue, state ORDER BY queue, state"#
    )
    .fetch_all(conn)
    .await
}

/// Folds the changes counted since the last fold into the counts, so reading them stays a
/// few rows (a concurrent fold makes this one a no-op).
pub async fn fold_counts(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query!("SELECT fold_queue_job_counts()")
        .execute(conn)
        .await?;
    Ok(())
}

/// Per queue: seconds the oldest due job has waited, and jobs finished in the last `window`.
#[derive(Debug, Clone)]
pub struct QueueTimes {
    pub queue: String,
    pub oldest_waiting_seconds: Option<f64>,
    pub finished_recently: i64,
}

/// For each of `queues`: the oldest due job is read through apalis' index of waiting jobs, and
/// the recent finishes through `done_at`'s, so neither reads the finished millions.
pub async fn queue_times(
    conn: &mut PgConnection,
    queues: &[&str],
    window: std::time::Duration,
) -> sqlx::Result<Vec<QueueTimes>> {
    let queues: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
    sqlx::query_as!(
        QueueTimes,
        r#"SELECT q.queue AS "queue!",
                  EXTRACT(EPOCH FROM now() - (
                      SELECT min(run_at) FROM apalis.jobs
                      WHERE job_type = q.queue AND status = 'Pending' AND run_at <= now()))::float8
                      AS oldest_waiting_seconds,
                  coalesce(recent.finished, 0) AS "finished_recently!"
           FROM unnest($1::text[]) AS q(queue)
           LEFT JOIN (SELECT job_type, count(*) AS finished FROM apalis.jobs
                      WHERE done_at > now() - $2::float8 * interval '1 second'
                      GROUP BY job_type) AS recent ON recent.job_type = q.queue"#,
        &queues,
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

/// What a list or a bulk action selects. `function_id` matches a job that names the function, or
/// the deployment of one (pipeline jobs carry only their deployment).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<String>,
    pub function_id: Option<uuid::Uuid>,
    pub deployment_id: Option<uuid::Uuid>,
    /// Only the dead letters: jobs that failed and have no attempt left.
    pub dead_letters: bool,
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
             AND ($3::text IS NULL OR $3 = COALESCE(
                   convert_from(job, 'UTF8')::jsonb ->> 'function_id',
                   (SELECT d.function_id::text FROM deployments d
                    WHERE d.id::text = convert_from(job, 'UTF8')::jsonb ->> 'deployment_id')))
             AND ($4::text IS NULL OR convert_from(job, 'UTF8')::jsonb ->> 'deployment_id' = $4)
             AND (NOT $7 OR (status = 'Failed' AND attempts >= max_attempts))
           ORDER BY run_at DESC, id DESC
           LIMIT $5 OFFSET $6"#,
        filter.queue,
        filter.state,
        filter.function_id.map(|id| id.to_string()),
        filter.deployment_id.map(|id| id.to_string()),
        limit,
        offset,
        filter.dead_letters
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

/// A job still waiting (or parked in a paused queue) never runs: `Killed`, with the reason as its
/// result.
pub async fn cancel_job(conn: &mut PgConnection, id: &str, reason: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE apalis.jobs
           SET status = 'Killed', done_at = now(), last_result = jsonb_build_object('Err', $2::text)
           WHERE id = $1 AND status IN ('Pending', 'Paused')"#,
        id,
        reason
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every job `filter` matches that ended (`Failed`, `Killed`) runs again, now, except pipeline
/// jobs whose deployment has settled (their run would find nothing to do). Returns (retried,
/// skipped).
pub async fn retry_matching(
    conn: &mut PgConnection,
    filter: &JobFilter,
    pipeline_queues: &[&str],
) -> sqlx::Result<(u64, u64)> {
    let pipeline_queues: Vec<String> = pipeline_queues.iter().map(|q| q.to_string()).collect();
    let row = sqlx::query!(
        r#"WITH matching AS (
             SELECT j.id,
                    j.job_type = ANY($5) AND NOT EXISTS (
                        SELECT 1 FROM deployments d
                        WHERE d.id::text = convert_from(j.job, 'UTF8')::jsonb ->> 'deployment_id'
                          AND d.status IN ('fetching', 'building', 'pushing', 'deploying')
                    ) AS settled
             FROM apalis.jobs j
             WHERE j.status IN ('Failed', 'Killed')
               AND ($1::text IS NULL OR j.job_type = $1)
               AND ($2::text IS NULL OR j.status = $2)
               AND ($3::text IS NULL OR $3 = COALESCE(
                   convert_from(j.job, 'UTF8')::jsonb ->> 'function_id',
                   (SELECT d.function_id::text FROM deployments d
                    WHERE d.id::text = convert_from(j.job, 'UTF8')::jsonb ->> 'deployment_id')))
               AND ($4::text IS NULL OR convert_from(j.job, 'UTF8')::jsonb ->> 'deployment_id' = $4)
               AND (NOT $6 OR (j.status = 'Failed' AND j.attempts >= j.max_attempts))
             FOR UPDATE OF j
           ), retried AS (
             UPDATE apalis.jobs j
             SET status = 'Pending', attempts = 0, run_at = now(), lock_by = NULL, lock_at = NULL,
                 done_at = NULL
             FROM matching m WHERE j.id = m.id AND NOT m.settled
             RETURNING j.id
           )
           SELECT (SELECT count(*) FROM retried) AS "retried!",
                  (SELECT count(*) FROM matching WHERE settled) AS "skipped!""#,
        filter.queue,
        filter.state,
        filter.function_id.map(|id| id.to_string()),
        filter.deployment_id.map(|id| id.to_string()),
        &pipeline_queues,
        filter.dead_letters
    )
    .fetch_one(conn)
    .await?;
    Ok((row.retried as u64, row.skipped as u64))
}

/// A job an operator cancelled: its queue, and the deployment it worked on if it carries one.
#[derive(Debug, Clone)]
pub struct CancelledJob {
    pub id: String,
    pub queue: String,
    pub deployment_id: Option<String>,
}

/// Every job `filter` matches that still waits (or is parked) never runs: `Killed`, with the
/// reason as its result.
pub async fn cancel_matching(
    conn: &mut PgConnection,
    filter: &JobFilter,
    reason: &str,
) -> sqlx::Result<Vec<CancelledJob>> {
    sqlx::query_as!(
        CancelledJob,
        r#"UPDATE apalis.jobs
           SET status = 'Killed', done_at = now(), last_result = jsonb_build_object('Err', $5::text)
           WHERE status IN ('Pending', 'Paused')
             AND ($1::text IS NULL OR job_type = $1)
             AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR $3 = COALESCE(
                   convert_from(job, 'UTF8')::jsonb ->> 'function_id',
                   (SELECT d.function_id::text FROM deployments d
                    WHERE d.id::text = convert_from(job, 'UTF8')::jsonb ->> 'deployment_id')))
             AND ($4::text IS NULL OR convert_from(job, 'UTF8')::jsonb ->> 'deployment_id' = $4)
           RETURNING id AS "id!", job_type AS "queue!",
                     convert_from(job, 'UTF8')::jsonb ->> 'deployment_id' AS deployment_id"#,
        filter.queue,
        filter.state,
        filter.function_id.map(|id| id.to_string()),
        filter.deployment_id.map(|id| id.to_string()),
        reason
    )
    .fetch_all(conn)
    .await
}

/// Pauses `queue`: its waiting jobs are parked (`Paused`), and so is every job of it that comes
/// due until it resumes (the `park_jobs_of_paused_queues` trigger, which waits for this
/// transaction). Returns how many it parked.
pub async fn pause_queue(
    conn: &mut PgConnection,
    queue: &str,
    operator: uuid::Uuid,
) -> sqlx::Result<u64> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('slipway.queue_pauses'))")
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        "INSERT INTO queue_pauses (queue, paused_by) VALUES ($1, $2) ON CONFLICT (queue) DO NOTHING",
        queue,
        operator
    )
    .execute(&mut *conn)
    .await?;
    let parked = sqlx::query!(
        "UPDATE apalis.jobs SET status = 'Paused' WHERE job_type = $1 AND status = 'Pending'",
        queue
    )
    .execute(conn)
    .await?;
    Ok(parked.rows_affected())
}

/// Resumes `queue`: its parked jobs wait again, to be claimed as before. Returns how many.
pub async fn resume_queue(conn: &mut PgConnection, queue: &str) -> sqlx::Result<u64> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('slipway.queue_pauses'))")
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM queue_pauses WHERE queue = $1", queue)
        .execute(&mut *conn)
        .await?;
    let released = sqlx::query!(
        "UPDATE apalis.jobs SET status = 'Pending' WHERE job_type = $1 AND status = 'Paused'",
        queue
    )
    .execute(conn)
    .await?;
    Ok(released.rows_affected())
}

/// The queues paused now.
pub async fn paused_queues(conn: &mut PgConnection) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!("SELECT queue FROM queue_pauses ORDER BY queue")
        .fetch_all(conn)
        .await
}
