//! The scheduler's sweeps, each one set-based statement that picks a bounded batch, marks it so
//! that running the sweep again picks nothing new, and returns what the caller must enqueue.
//! Times come from the caller's clock (`$now`), never from `now()`, so tests can move time.
//!
//! A sweep that changes a function's lifecycle status picks it here and changes it through
//! `db::functions::change_status`, in the caller's transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    db,
    domain::{DeploymentStatus, FunctionEvent, FunctionStatus, PipelineStep},
};

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Deletions whose grace period is over and that have no purge pending (or one enqueued more
/// than `retry_after` ago that did not finish): returns their function ids, marked as enqueued.
pub async fn due_purges(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    retry_after: Duration,
    batch: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"WITH due AS (
             SELECT id FROM pending_deletions
             WHERE status IN ('pending', 'purging') AND deletion_date <= $1
               AND (purge_enqueued_at IS NULL
                    OR purge_enqueued_at <= $1::timestamptz - $2::float8 * interval '1 second')
             ORDER BY deletion_date
             LIMIT $3
             FOR UPDATE SKIP LOCKED
           )
           UPDATE pending_deletions p SET purge_enqueued_at = $1
           FROM due WHERE p.id = due.id
           RETURNING p.function_id"#,
        now,
        secs(retry_after),
        batch
    )
    .fetch_all(conn)
    .await
}

/// Moves each function a sweep scheduled for deletion to `pending_deletion`, through the one
/// writer of its status; `status` is what the sweep read under the row lock it still holds.
async fn request_deletions(
    conn: &mut PgConnection,
    scheduled: impl Iterator<Item = (Uuid, String)>,
) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for (id, status) in scheduled {
        let from = FunctionStatus::parse(&status)?;
        db::functions::change_status(conn, id, from, FunctionEvent::DeletionRequested).await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Functions never invoked, or not invoked since `stale_after`, that are idle (Inactive, or
/// never served): scheduled for deletion with reason `stale_function`.
pub async fn schedule_stale(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    stale_after: Duration,
    grace: Duration,
    batch: i64,
) -> anyhow::Result<Vec<Uuid>> {
    let scheduled = sqlx::query!(
        r#"WITH stale AS (
             SELECT f.id FROM functions f
             WHERE f.status IN ('init', 'active')
               AND (f.state = 'Inactive' OR f.last_invoked_at IS NULL)
               AND COALESCE(f.last_invoked_at, f.created_at)
                   <= $1::timestamptz - $2::float8 * interval '1 second'
               AND NOT EXISTS (
                   SELECT 1 FROM pending_deletions p
                   WHERE p.function_id = f.id AND p.status IN ('pending', 'purging'))
             ORDER BY COALESCE(f.last_invoked_at, f.created_at)
             LIMIT $4
             FOR UPDATE SKIP LOCKED
           ), scheduled AS (
             INSERT INTO pending_deletions
                 (id, function_id, reason, image_tag, deletion_date, scheduled_at)
             SELECT gen_random_uuid(), s.id, 'stale_function', d.image_tag,
                    $1::timestamptz + $3::float8 * interval '1 second', $1
             FROM stale s LEFT JOIN deployments d ON d.function_id = s.id AND d.is_active
             RETURNING function_id
           )
           SELECT f.id AS "id!", f.status AS "status!"
           FROM functions f JOIN scheduled ON f.id = scheduled.function_id"#,
        now,
        secs(stale_after),
        secs(grace),
        batch
    )
    .fetch_all(&mut *conn)
    .await?;
    request_deletions(conn, scheduled.into_iter().map(|f| (f.id, f.status))).await
}

/// For each user over their function quota (their own, or `default_quota`), the least recently
/// invoked Inactive functions beyond it: scheduled for deletion with reason `quota_exceeded`.
/// At most `batch` per tick; the next tick continues.
pub async fn schedule_over_quota(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    default_quota: i32,
    grace: Duration,
    batch: i64,
) -> anyhow::Result<Vec<Uuid>> {
    let scheduled = sqlx::query!(
        r#"WITH over AS (
             SELECT f.owner_id, count(*) - COALESCE(u.function_quota, $2) AS excess
             FROM functions f JOIN users u ON u.id = f.owner_id
             WHERE f.status NOT IN ('pending_deletion', 'deleted')
             GROUP BY f.owner_id, u.function_quota
             HAVING count(*) > COALESCE(u.function_quota, $2)
           ), ranked AS (
             SELECT f.id, o.excess,
                    row_number() OVER (
                        PARTITION BY f.owner_id
                        ORDER BY f.last_invoked_at NULLS FIRST, f.created_at, f.id
                    ) AS rank
             FROM functions f JOIN over o ON o.owner_id = f.owner_id
             WHERE f.status IN ('init', 'active') AND f.state = 'Inactive'
           ), chosen AS (
             SELECT f.id FROM functions f JOIN ranked r ON r.id = f.id
             WHERE r.rank <= r.excess
             LIMIT $4
             FOR UPDATE OF f SKIP LOCKED
           ), scheduled AS (
             INSERT INTO pending_deletions
                 (id, function_id, reason, image_tag, deletion_date, scheduled_at)
             SELECT gen_random_uuid(), c.id, 'quota_exceeded', d.image_tag,
                    $1::timestamptz + $3::float8 * interval '1 second', $1
             FROM chosen c LEFT JOIN deployments d ON d.function_id = c.id AND d.is_active
             RETURNING function_id
           )
           SELECT f.id AS "id!", f.status AS "status!"
           FROM functions f JOIN scheduled ON f.id = scheduled.function_id"#,
        now,
        default_quota,
        secs(grace),
        batch
    )
    .fetch_all(&mut *conn)
    .await?;
    request_deletions(conn, scheduled.into_iter().map(|f| (f.id, f.status))).await
}

/// Serving functions whose digest was not checked (or not enqueued for a check) within `every`.
pub async fn due_verifications(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    every: Duration,
    batch: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"WITH due AS (
             SELECT id FROM functions
             WHERE state = 'Active' AND status = 'active'
               AND (verify_enqueued_at IS NULL
                    OR verify_enqueued_at <= $1::timestamptz - $2::float8 * interval '1 second')
             ORDER BY verify_enqueued_at NULLS FIRST
             LIMIT $3
             FOR UPDATE SKIP LOCKED
           )
           UPDATE functions f SET verify_enqueued_at = $1
           FROM due WHERE f.id = due.id
           RETURNING f.id"#,
        now,
        secs(every),
        batch
    )
    .fetch_all(conn)
    .await
}

/// Serving functions with a running instance and no invocation within `idle_after`: their
/// instance is released (the function becomes Inactive until its next invocation).
pub async fn due_releases(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    idle_after: Duration,
    batch: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"WITH idle AS (
             SELECT f.id FROM functions f
             WHERE f.state = 'Active' AND f.status = 'active' AND f.enabled
               AND COALESCE(f.last_invoked_at, f.updated_at)
                   <= $1::timestamptz - $2::float8 * interval '1 second'
               AND (f.release_enqueued_at IS NULL
                    OR f.release_enqueued_at <= $1::timestamptz - $2::float8 * interval '1 second')
               AND EXISTS (
                   SELECT 1 FROM deployments d
                   WHERE d.function_id = f.id AND d.is_active AND d.container_id IS NOT NULL)
             ORDER BY COALESCE(f.last_invoked_at, f.updated_at)
             LIMIT $3
             FOR UPDATE OF f SKIP LOCKED
           )
           UPDATE functions f SET release_enqueued_at = $1
           FROM idle WHERE f.id = idle.id
           RETURNING f.id"#,
        now,
        secs(idle_after),
        batch
    )
    .fetch_all(conn)
    .await
}

/// Claims the tick: true for exactly one caller per (sweep, fire_at), the others wait for its
/// transaction and get false.
pub async fn claim_tick(
    conn: &mut PgConnection,
    sweep: &str,
    fire_at: DateTime<Utc>,
    fired_by: &str,
    manual: bool,
) -> sqlx::Result<bool> {
    let claimed = sqlx::query!(
        r#"INSERT INTO scheduler_ticks (sweep, fire_at, fired_by, manual, result)
           VALUES ($1, $2, $3, $4, '{}'::jsonb)
           ON CONFLICT (sweep, fire_at) DO NOTHING"#,
        sweep,
        fire_at,
        fired_by,
        manual
    )
    .execute(conn)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

pub async fn record_tick(
    conn: &mut PgConnection,
    sweep: &str,
    fire_at: DateTime<Utc>,
    result: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE scheduler_ticks SET result = $3 WHERE sweep = $1 AND fire_at = $2",
        sweep,
        fire_at,
        result
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The newest scheduled (not manual) tick of a sweep.
pub async fn last_scheduled_tick(
    conn: &mut PgConnection,
    sweep: &str,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!(
        r#"SELECT max(fire_at) AS "fire_at?" FROM scheduler_ticks WHERE sweep = $1 AND NOT manual"#,
        sweep
    )
    .fetch_one(conn)
    .await
}

#[derive(Debug, Clone)]
pub struct TickRow {
    pub fire_at: DateTime<Utc>,
    pub fired_by: String,
    pub fired_at: DateTime<Utc>,
    pub manual: bool,
    pub result: serde_json::Value,
}

/// The newest tick of a sweep, scheduled or manual.
pub async fn last_tick(conn: &mut PgConnection, sweep: &str) -> sqlx::Result<Option<TickRow>> {
    sqlx::query_as!(
        TickRow,
        r#"SELECT fire_at, fired_by, fired_at, manual, result FROM scheduler_ticks
           WHERE sweep = $1 ORDER BY fired_at DESC, fire_at DESC LIMIT 1"#,
        sweep
    )
    .fetch_optional(conn)
    .await
}

/// How long each kind of record is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub events: Duration,
    pub deliveries: Duration,
    pub logs: Duration,
    /// Jobs that ended `Done` or `Killed`; failed ones stay (the dead letters are operators').
    pub jobs: Duration,
}

/// What one retention tick deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub deliveries: u64,
    pub logs: u64,
    pub jobs: u64,
}

/// Deletes, oldest first and at most `batch` of each, the invocation events, webhook deliveries
/// and deployment log lines older than their retention. The active version's log stays, however
/// old: it is what an operator reads about what serves.
pub async fn prune_by_age(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    retention: Retention,
    batch: i64,
) -> sqlx::Result<Pruned> {
    let events = sqlx::query!(
        r#"DELETE FROM invocation_events WHERE id IN (
             SELECT id FROM invocation_events
             WHERE created_at < $1::timestamptz - $2::float8 * interval '1 second'
             ORDER BY created_at LIMIT $3)"#,
        now,
        secs(retention.events),
        batch
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let deliveries = sqlx::query!(
        r#"DELETE FROM webhook_deliveries WHERE (provider, scope, delivery_id) IN (
             SELECT provider, scope, delivery_id FROM webhook_deliveries
             WHERE received_at < $1::timestamptz - $2::float8 * interval '1 second'
             ORDER BY received_at LIMIT $3)"#,
        now,
        secs(retention.deliveries),
        batch
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let logs = sqlx::query!(
        r#"DELETE FROM deployment_logs WHERE id IN (
             SELECT l.id FROM deployment_logs l
             WHERE l.created_at < $1::timestamptz - $2::float8 * interval '1 second'
               AND NOT EXISTS (
                   SELECT 1 FROM deployments d WHERE d.id = l.deployment_id AND d.is_active)
             ORDER BY l.created_at LIMIT $3)"#,
        now,
        secs(retention.logs),
        batch
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    // The queue counts follow through their triggers.
    let jobs = sqlx::query!(
        r#"DELETE FROM apalis.jobs WHERE id IN (
             SELECT id FROM apalis.jobs
             WHERE status IN ('Done', 'Killed')
               AND done_at < $1::timestamptz - $2::float8 * interval '1 second'
             ORDER BY done_at LIMIT $3)"#,
        now,
        secs(retention.jobs),
        batch
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(Pruned {
        events,
        deliveries,
        logs,
        jobs,
    })
}

/// A deployment in flight that nothing will move on, and what its newest pipeline job says.
#[derive(Debug)]
pub struct StuckDeployment {
    pub deployment_id: Uuid,
    pub function_id: Uuid,
    pub status: DeploymentStatus,
    pub job_queue: Option<String>,
    pub job_status: Option<String>,
    pub job_result: Option<String>,
}

impl StuckDeployment {
    /// The reason users read: `timed_out` when the job ran out of time, else `worker_lost`.
    pub fn reason(&self, after: Duration) -> String {
        let queue = self.job_queue.as_deref().unwrap_or("pipeline");
        let result = self
            .job_result
            .as_deref()
            .unwrap_or_default()
            .to_lowercase();
        match self.job_status.as_deref() {
            None => "worker_lost: no job carries the deployment any more".into(),
            Some(_) if result.contains("timed out") || result.contains("timeout") => format!(
                "timed_out: the {queue} job ran past the worker's job timeout (SLIPWAY_JOB_TIMEOUT)"
            ),
            Some(status @ ("Done" | "Failed" | "Killed")) => format!(
                "worker_lost: the {queue} job ended ({status}) without settling the deployment"
            ),
            Some(_) => format!(
                "worker_lost: the worker holding the {queue} job has not been seen for {}s",
                after.as_secs()
            ),
        }
    }

    /// The phase its log line goes under.
    pub fn phase(&self) -> String {
        let step = match self.status {
            DeploymentStatus::Fetching => PipelineStep::Source,
            DeploymentStatus::Building => PipelineStep::Build,
            DeploymentStatus::Pushing => PipelineStep::Push,
            _ => PipelineStep::Deploy,
        };
        step.phase().into()
    }
}

/// Deployments in flight, unchanged for `after`, whose newest pipeline job is gone, ended
/// without settling them, or is held by a worker silent for `after`; locked, oldest first. A job
/// still waiting (even for a delayed run) keeps its deployment alive.
pub async fn stuck_deployments(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    after: Duration,
    queues: &[&str],
    batch: i64,
) -> sqlx::Result<Vec<StuckDeployment>> {
    let queues: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
    sqlx::query_as!(
        StuckDeployment,
        r#"SELECT d.id AS "deployment_id!", d.function_id AS "function_id!", d.status AS "status!: DeploymentStatus",
                  j.job_type AS "job_queue?", j.status AS "job_status?",
                  j.last_result::text AS "job_result?"
           FROM deployments d
           LEFT JOIN LATERAL (
               SELECT jobs.job_type, jobs.status, jobs.last_result, workers.last_seen
               FROM apalis.jobs jobs
               LEFT JOIN apalis.workers workers ON workers.id = jobs.lock_by
               WHERE jobs.job_type = ANY($3)
                 AND convert_from(jobs.job, 'UTF8')::jsonb ->> 'deployment_id' = d.id::text
               -- A job not yet ended speaks for the deployment: run_at has whole seconds, and a
               -- build waiting for a slot re-enqueues itself within the second it ends.
               ORDER BY jobs.status IN ('Done', 'Failed', 'Killed'), jobs.run_at DESC
               LIMIT 1
           ) j ON true
           WHERE d.status IN ('fetching', 'building', 'pushing', 'deploying')
             AND d.updated_at < $1::timestamptz - $2::float8 * interval '1 second'
             AND (j.status IS NULL
                  OR j.status IN ('Done', 'Failed', 'Killed')
                  OR (j.status IN ('Queued', 'Running')
                      AND (j.last_seen IS NULL
                           OR j.last_seen < $1::timestamptz - $2::float8 * interval '1 second')))
           ORDER BY d.updated_at
           LIMIT $4
           FOR UPDATE OF d SKIP LOCKED"#,
        now,
        secs(after),
        &queues,
        batch
    )
    .fetch_all(conn)
    .await
}
