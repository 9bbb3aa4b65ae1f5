//! Aliases (a stable name for one version) and version instances (an instance of a version that
//! is not the active one, started for an invocation of an alias or of `@N`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

use crate::domain::{DeploymentStatus, FunctionStatus};

#[derive(Debug, Clone)]
pub struct AliasRow {
    pub name: String,
    pub deployment_id: Uuid,
    pub version: i32,
    /// The other version that gets `additional_weight` of the alias's calls, if it splits them.
    pub additional_version: Option<i32>,
    pub additional_weight: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn list(conn: &mut PgConnection, function_id: Uuid) -> sqlx::Result<Vec<AliasRow>> {
    sqlx::query_as!(
        AliasRow,
        r#"SELECT a.name, a.deployment_id, d.version, ad.version AS "additional_version?",
                  a.additional_weight, a.created_at, a.updated_at
           FROM function_aliases a JOIN deployments d ON d.id = a.deployment_id
           LEFT JOIN deployments ad ON ad.id = a.additional_deployment_id
           WHERE a.function_id = $1 ORDER BY a.name"#,
        function_id
    )
    .fetch_all(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    function_id: Uuid,
    name: &str,
) -> sqlx::Result<Option<AliasRow>> {
    sqlx::query_as!(
        AliasRow,
        r#"SELECT a.name, a.deployment_id, d.version, ad.version AS "additional_version?",
                  a.additional_weight, a.created_at, a.updated_at
           FROM function_aliases a JOIN deployments d ON d.id = a.deployment_id
           LEFT JOIN deployments ad ON ad.id = a.additional_deployment_id
           WHERE a.function_id = $1 AND a.name = $2"#,
        function_id,
        name
    )
    .fetch_optional(conn)
    .await
}

/// Another version's share of an alias's calls.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub deployment_id: Uuid,
    pub weight: f64,
}

/// False when the function already has an alias of that name.
pub async fn create(
    conn: &mut PgConnection,
    function_id: Uuid,
    name: &str,
    deployment_id: Uuid,
    split: Option<Split>,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        r#"INSERT INTO function_aliases
               (function_id, name, deployment_id, additional_deployment_id, additional_weight)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (function_id, name) DO NOTHING"#,
        function_id,
        name,
        deployment_id,
        split.map(|s| s.deployment_id),
        split.map(|s| s.weight)
    )
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// False when the function has no alias of that name.
pub async fn point(
    conn: &mut PgConnection,
    function_id: Uuid,
    name: &str,
    deployment_id: Uuid,
    split: Option<Split>,
) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        r#"UPDATE function_aliases SET deployment_id = $3, additional_deployment_id = $4,
                  additional_weight = $5, updated_at = now()
           WHERE function_id = $1 AND name = $2"#,
        function_id,
        name,
        deployment_id,
        split.map(|s| s.deployment_id),
        split.map(|s| s.weight)
    )
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// False when the function has no alias of that name.
pub async fn delete(conn: &mut PgConnection, function_id: Uuid, name: &str) -> sqlx::Result<bool> {
    let deleted = sqlx::query!(
        "DELETE FROM function_aliases WHERE function_id = $1 AND name = $2",
        function_id,
        name
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Where an invocation of `{id}@{alias}` or `{id}@{version}` goes: the function's own state (as
/// for an unqualified invocation) and the version the qualifier names, with its version instance.
#[derive(Debug, Clone)]
pub struct QualifiedRoute {
    pub function_status: FunctionStatus,
    pub enabled: bool,
    pub state: String,
    pub state_reason: Option<String>,
    /// None: the qualifier names no version of the function.
    pub deployment_id: Option<Uuid>,
    pub version: Option<i32>,
    pub deployment_status: Option<DeploymentStatus>,
    pub is_active: bool,
    /// The active deployment's endpoint, when the version is the active one.
    pub active_endpoint: Option<String>,
    pub has_image: bool,
    pub pruned: bool,
    pub instance_state: Option<String>,
    pub instance_endpoint: Option<String>,
    pub instance_reason: Option<String>,
    /// An alias that splits its calls: the other version and its share.
    pub additional_version: Option<i32>,
    pub additional_weight: Option<f64>,
}

/// `alias` or `version` (exactly one of them) names the version.
pub async fn qualified_route(
    conn: &mut PgConnection,
    owner_id: Uuid,
    function_id: Uuid,
    alias: Option<&str>,
    version: Option<i32>,
) -> sqlx::Result<Option<QualifiedRoute>> {
    sqlx::query_as!(
        QualifiedRoute,
        r#"SELECT f.status AS "function_status: FunctionStatus", f.enabled, f.state,
                  f.state_reason,
                  d.id AS "deployment_id?", d.version AS "version?",
                  d.status AS "deployment_status?: DeploymentStatus",
                  COALESCE(d.is_active, false) AS "is_active!",
                  CASE WHEN d.is_active THEN d.runtime_endpoint END AS "active_endpoint?",
                  d.image_digest IS NOT NULL AS "has_image!",
                  d.prune_started_at IS NOT NULL AS "pruned!",
                  v.state AS "instance_state?", v.endpoint AS "instance_endpoint?",
                  v.reason AS "instance_reason?",
                  ad.version AS "additional_version?", a.additional_weight AS "additional_weight?"
           FROM functions f
           LEFT JOIN function_aliases a ON a.function_id = f.id AND a.name = $3
           LEFT JOIN deployments ad ON ad.id = a.additional_deployment_id
           LEFT JOIN deployments d ON d.function_id = f.id
                AND d.id = CASE WHEN $3::text IS NULL
                                THEN (SELECT id FROM deployments
                                      WHERE function_id = f.id AND version = $4)
                                ELSE a.deployment_id END
           LEFT JOIN version_instances v ON v.deployment_id = d.id
           WHERE f.id = $1 AND f.owner_id = $2"#,
        function_id,
        owner_id,
        alias,
        version
    )
    .fetch_optional(conn)
    .await
}

/// Asks for a version instance of `deployment_id`: true when this call asked (the instance was
/// neither starting nor ready; a failed one is asked for again), with `run_token` for the start.
/// Run under the function's lock.
pub async fn request_instance(
    conn: &mut PgConnection,
    function_id: Uuid,
    deployment_id: Uuid,
    run_token: Uuid,
) -> sqlx::Result<bool> {
    let requested = sqlx::query!(
        r#"INSERT INTO version_instances (deployment_id, function_id, state, run_token)
           VALUES ($1, $2, 'starting', $3)
           ON CONFLICT (deployment_id) DO UPDATE
               SET state = 'starting', run_token = $3, reason = NULL, requested_at = now(),
                   updated_at = now()
               WHERE version_instances.state = 'failed'"#,
        deployment_id,
        function_id,
        run_token
    )
    .execute(conn)
    .await?;
    Ok(requested.rows_affected() == 1)
}

/// The start a request asked for, while it is still the one asked for.
pub async fn starting_instance(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    run_token: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM version_instances
                          WHERE deployment_id = $1 AND run_token = $2 AND state = 'starting')
           AS "starting!""#,
        deployment_id,
        run_token
    )
    .fetch_one(conn)
    .await
}

/// Records the instance as soon as it exists (so the reaper counts it as owned); false when a
/// newer request or a release replaced this run, which then removes what it started.
pub async fn record_instance(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    run_token: Uuid,
    container_id: &str,
    endpoint: &str,
) -> sqlx::Result<bool> {
    let recorded = sqlx::query!(
        r#"UPDATE version_instances SET container_id = $3, endpoint = $4, updated_at = now()
           WHERE deployment_id = $1 AND run_token = $2 AND state = 'starting'"#,
        deployment_id,
        run_token,
        container_id,
        endpoint
    )
    .execute(conn)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// The instance answers: invocations may go to it.
pub async fn mark_ready(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    run_token: Uuid,
) -> sqlx::Result<bool> {
    let ready = sqlx::query!(
        r#"UPDATE version_instances SET state = 'ready', last_invoked_at = now(),
                  release_enqueued_at = NULL, updated_at = now()
           WHERE deployment_id = $1 AND run_token = $2 AND state = 'starting'
             AND endpoint IS NOT NULL"#,
        deployment_id,
        run_token
    )
    .execute(conn)
    .await?;
    Ok(ready.rows_affected() == 1)
}

/// The start failed: invocations waiting for it answer with `reason`; the next one asks again.
pub async fn mark_failed(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    run_token: Uuid,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE version_instances SET state = 'failed', reason = $3, container_id = NULL,
                  endpoint = NULL, updated_at = now()
           WHERE deployment_id = $1 AND run_token = $2"#,
        deployment_id,
        run_token,
        reason
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A ready instance that stopped accepting connections at `endpoint` (its container died, say):
/// failed, so the next invocation starts another, and no longer owned, so the reaper removes
/// what is left of it. False when it was already replaced or released.
pub async fn mark_lost(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    endpoint: &str,
) -> sqlx::Result<bool> {
    let lost = sqlx::query!(
        r#"UPDATE version_instances
           SET state = 'failed', reason = 'the instance stopped accepting connections',
               container_id = NULL, endpoint = NULL, updated_at = now()
           WHERE deployment_id = $1 AND endpoint = $2 AND state = 'ready'"#,
        deployment_id,
        endpoint
    )
    .execute(conn)
    .await?;
    Ok(lost.rows_affected() == 1)
}

/// Invocations of version instances, written throttled like the functions' marks.
pub async fn mark_invoked(conn: &mut PgConnection, deployment_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE version_instances SET last_invoked_at = now() WHERE deployment_id = $1",
        deployment_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A version instance to release.
#[derive(Debug, Clone)]
pub struct VersionInstance {
    pub deployment_id: Uuid,
    pub function_id: Uuid,
    pub state: String,
    pub container_id: Option<String>,
    pub endpoint: Option<String>,
    pub last_invoked_at: Option<DateTime<Utc>>,
    pub release_enqueued_at: Option<DateTime<Utc>>,
}

/// Ready version instances not invoked within `idle_after`, marked as enqueued for release;
/// returns their (function, deployment).
pub async fn due_releases(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    idle_after: Duration,
    batch: i64,
) -> sqlx::Result<Vec<(Uuid, Uuid)>> {
    let rows = sqlx::query!(
        r#"WITH idle AS (
             SELECT deployment_id FROM version_instances
             WHERE state = 'ready'
               AND COALESCE(last_invoked_at, updated_at)
                   <= $1::timestamptz - $2::float8 * interval '1 second'
               AND (release_enqueued_at IS NULL
                    OR release_enqueued_at <= $1::timestamptz - $2::float8 * interval '1 second')
             ORDER BY COALESCE(last_invoked_at, updated_at)
             LIMIT $3
             FOR UPDATE SKIP LOCKED
           )
           UPDATE version_instances v SET release_enqueued_at = $1
           FROM idle WHERE v.deployment_id = idle.deployment_id
           RETURNING v.function_id, v.deployment_id"#,
        now,
        idle_after.as_secs_f64(),
        batch
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.function_id, r.deployment_id))
        .collect())
}

/// Takes a ready instance out of routing for its release, unless it was invoked since the sweep
/// picked it: the row goes, and the caller stops the container it returns.
pub async fn take_for_release(
    conn: &mut PgConnection,
    deployment_id: Uuid,
) -> sqlx::Result<Option<VersionInstance>> {
    sqlx::query_as!(
        VersionInstance,
        r#"DELETE FROM version_instances
           WHERE deployment_id = $1 AND state = 'ready'
             AND COALESCE(last_invoked_at <= release_enqueued_at, true)
           RETURNING deployment_id, function_id, state, container_id, endpoint, last_invoked_at,
                     release_enqueued_at"#,
        deployment_id
    )
    .fetch_optional(conn)
    .await
}

/// Every version instance of a function (a purge or a disable stops them all): their rows go,
/// and the caller stops the containers they name.
pub async fn take_all(
    conn: &mut PgConnection,
    function_id: Uuid,
) -> sqlx::Result<Vec<VersionInstance>> {
    sqlx::query_as!(
        VersionInstance,
        r#"DELETE FROM version_instances WHERE function_id = $1
           RETURNING deployment_id, function_id, state, container_id, endpoint, last_invoked_at,
                     release_enqueued_at"#,
        function_id
    )
    .fetch_all(conn)
    .await
}
