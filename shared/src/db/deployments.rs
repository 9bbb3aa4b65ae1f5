//! Deployments: one version of one function, from archive to serving container.
//!
//! Status changes are conditional on the status the caller read (`WHERE status = $from`), so a
//! duplicate or late job finds nothing to change instead of overwriting a newer outcome.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{DeploymentEvent, DeploymentStatus, FunctionStatus, PipelineStep};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeploymentRow {
    pub id: Uuid,
    pub function_id: Uuid,
    pub function_name: String,
    /// The function's owner: builds and their caches are scoped to it.
    pub owner_id: Uuid,
    pub version: i32,
    /// None while a pushed commit is still being fetched (and forever if it never was).
    pub archive_key: Option<String>,
    pub archive_sha256: Option<String>,
    pub archive_bytes: Option<i64>,
    pub env: serde_json::Value,
    pub status: DeploymentStatus,
    pub is_active: bool,
    pub image_tag: Option<String>,
    pub image_digest: Option<String>,
    pub runtime_endpoint: Option<String>,
    pub container_id: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub build_started_at: Option<DateTime<Utc>>,
    pub built_at: Option<DateTime<Utc>>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub deployed_at: Option<DateTime<Utc>>,
    /// When retention or a purge removed the version's image and archive.
    pub pruned_at: Option<DateTime<Utc>>,
    /// Set when the deployment came from a git push.
    pub git_binding_id: Option<Uuid>,
    pub commit_sha: Option<String>,
    pub commit_message: Option<String>,
    pub committed_at: Option<DateTime<Utc>>,
    /// The newer deployment that overtook this one (status `superseded`).
    pub superseded_by: Option<Uuid>,
    /// The claim of the job run that last took charge of the deployment ([`claim_run`]); a
    /// handler's writes pass it on and apply only while it is still the stored one.
    pub run_token: Option<Uuid>,
    /// The deployment whose image this one reused: the same build inputs, so no build and no
    /// push.
    pub build_reused_from: Option<Uuid>,
    /// Build only: the pipeline stops at `built` until a deploy releases it.
    pub hold: bool,
}

pub struct NewDeployment<'a> {
    pub id: Uuid,
    pub function_id: Uuid,
    pub version: i32,
    pub archive_key: &'a str,
    pub archive_sha256: &'a str,
    pub archive_bytes: i64,
    pub env: &'a serde_json::Value,
    /// Build only (`POST /api/v1/functions/build/{id}`).
    pub hold: bool,
}

pub async fn insert(conn: &mut PgConnection, new: &NewDeployment<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO deployments
             (id, function_id, version, archive_key, archive_sha256, archive_bytes, env, status,
              hold)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'building', $8)"#,
        new.id,
        new.function_id,
        new.version,
        new.archive_key,
        new.archive_sha256,
        new.archive_bytes,
        new.env,
        new.hold
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<DeploymentRow>> {
    sqlx::query_file_as!(
        DeploymentRow,
        "src/db/sql/deployment_view.sql",
        Some(id),
        None::<Uuid>,
        None::<Uuid>,
        1_i64,
        0_i64
    )
    .fetch_optional(conn)
    .await
}

/// A deployment, only if `owner_id` owns its function.
pub async fn get_for_owner(
    conn: &mut PgConnection,
    owner_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<DeploymentRow>> {
    sqlx::query_file_as!(
        DeploymentRow,
        "src/db/sql/deployment_view.sql",
        Some(id),
        None::<Uuid>,
        Some(owner_id),
        1_i64,
        0_i64
    )
    .fetch_optional(conn)
    .await
}

/// Whether the deployment is build only (`hold`).
pub async fn is_held(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    Ok(
        sqlx::query_scalar!(r#"SELECT hold FROM deployments WHERE id = $1"#, id)
            .fetch_optional(conn)
            .await?
            .unwrap_or(false),
    )
}

/// Newest first.
pub async fn page(
    conn: &mut PgConnection,
    function_id: Uuid,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<DeploymentRow>> {
    sqlx::query_file_as!(
        DeploymentRow,
        "src/db/sql/deployment_view.sql",
        None::<Uuid>,
        Some(function_id),
        None::<Uuid>,
        limit,
        offset
    )
    .fetch_all(conn)
    .await
}

/// An earlier build of the function with the same inputs whose image is still recorded (not
/// pruned), newest first: what a redeploy can reuse.
pub struct ReusableBuild {
    pub id: Uuid,
    pub version: i32,
    pub image_tag: String,
    pub image_digest: String,
}

pub async fn reusable_build(
    conn: &mut PgConnection,
    function_id: Uuid,
    build_inputs_sha256: &str,
    except: Uuid,
) -> sqlx::Result<Option<ReusableBuild>> {
    sqlx::query_as!(
        ReusableBuild,
        r#"SELECT id, version, image_tag AS "image_tag!", image_digest AS "image_digest!"
           FROM deployments
           WHERE function_id = $1 AND build_inputs_sha256 = $2 AND id <> $3
             AND image_digest IS NOT NULL AND image_tag IS NOT NULL AND pruned_at IS NULL
           ORDER BY version DESC
           LIMIT 1"#,
        function_id,
        build_inputs_sha256,
        except
    )
    .fetch_optional(conn)
    .await
}

/// What went into the deployment's image, and whose image it reused (if it did).
pub async fn record_build_inputs(
    conn: &mut PgConnection,
    id: Uuid,
    build_inputs_sha256: &str,
    reused_from: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE deployments SET build_inputs_sha256 = $2, build_reused_from = $3 WHERE id = $1",
        id,
        build_inputs_sha256,
        reused_from
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn count(conn: &mut PgConnection, function_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM deployments WHERE function_id = $1"#,
        function_id
    )
    .fetch_one(conn)
    .await
}

/// A run of one of the deployment's jobs takes charge of it for `step`, if it is in the status
/// the step runs in and no later step has claimed it: a fresh token, which every later write of
/// the run passes as `run_token`. Any earlier run still going on (the same job re-delivered
/// beside it) finds its token gone at its next write.
///
/// Writes below that take `run_token: Option<Uuid>` apply with `Some` only while it is the
/// stored token; `None` is for writers that hold no run's claim (the reaper, a function lock).
pub async fn claim_run(
    conn: &mut PgConnection,
    id: Uuid,
    step: PipelineStep,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"UPDATE deployments SET run_token = gen_random_uuid(), run_step = $3
           WHERE id = $1 AND status = $2 AND (run_step IS NULL OR run_step <= $3)
           RETURNING run_token AS "run_token!""#,
        id,
        step.runs_in().as_str(),
        step.rank()
    )
    .fetch_optional(conn)
    .await
}

/// A change of one deployment's status, with what the new status records.
#[derive(Debug, Clone, Copy)]
pub enum StatusChange<'a> {
    /// fetching → building, with the archive packed from the pushed commit.
    Fetched {
        archive_key: &'a str,
        archive_sha256: &'a str,
        archive_bytes: i64,
        commit_message: &'a str,
    },
    /// building → pushing.
    Built,
    /// pushing → deploying, with the pushed tag and the registry's manifest digest.
    Pushed {
        image_tag: &'a str,
        image_digest: &'a str,
    },
    /// pushing → built, for a held deployment: the same record, and it waits there.
    Held {
        image_tag: &'a str,
        image_digest: &'a str,
    },
    /// built → deploying: a deploy released the held version.
    Released,
    /// deploying → active. The partial unique index refuses a second active deployment, so the
    /// caller deactivates the previous one first, in the same transaction.
    Activated,
    /// active → inactive: another version took the traffic. Its instance goes after the drain,
    /// so the endpoint is kept until then.
    Superseded,
    /// inactive → active, for a rollback; the same index rule as `Activated` applies.
    Reinstated,
    /// Any in-flight status → failed, with the reason users read.
    Failed { reason: &'a str },
    /// Any in-flight status → superseded by the newer deployment `by`: it must never serve.
    Overtaken { by: Uuid },
}

impl StatusChange<'_> {
    pub fn event(&self) -> DeploymentEvent {
        match self {
            Self::Fetched { .. } => DeploymentEvent::Fetched,
            Self::Built => DeploymentEvent::Built,
            Self::Pushed { .. } => DeploymentEvent::Pushed,
            Self::Held { .. } => DeploymentEvent::Held,
            Self::Released => DeploymentEvent::Released,
            Self::Activated => DeploymentEvent::Activated,
            Self::Superseded => DeploymentEvent::Superseded,
            Self::Reinstated => DeploymentEvent::Reinstated,
            Self::Failed { .. } => DeploymentEvent::Failed,
            Self::Overtaken { .. } => DeploymentEvent::Overtaken,
        }
    }
}

/// The one writer of a deployment's status. The change applies only from a status that
/// `DeploymentStatus::apply` lets take its event, while `run_token` (if given) is still the
/// stored claim, and never brings back a version whose image retention has begun to remove.
/// Returns false when it did not apply: another run moved the deployment on or took it over,
/// and the caller drops its result.
pub async fn change(
    conn: &mut PgConnection,
    id: Uuid,
    run_token: Option<Uuid>,
    change: StatusChange<'_>,
) -> sqlx::Result<bool> {
    let Some((sources, target)) = change.event().moves() else {
        return Ok(false);
    };
    let sources: Vec<&str> = sources.into_iter().map(DeploymentStatus::as_str).collect();
    let (mut archive_key, mut archive_sha256, mut archive_bytes, mut commit_message) =
        (None, None, None, None);
    let (mut image_tag, mut image_digest, mut error, mut superseded_by) = (None, None, None, None);
    match change {
        StatusChange::Fetched {
            archive_key: key,
            archive_sha256: sha256,
            archive_bytes: bytes,
            commit_message: message,
        } => {
            (archive_key, archive_sha256) = (Some(key), Some(sha256));
            (archive_bytes, commit_message) = (Some(bytes), Some(message));
        }
        StatusChange::Pushed {
            image_tag: tag,
            image_digest: digest,
        }
        | StatusChange::Held {
            image_tag: tag,
            image_digest: digest,
        } => (image_tag, image_digest) = (Some(tag), Some(digest)),
        StatusChange::Failed { reason } => error = Some(reason),
        StatusChange::Overtaken { by } => superseded_by = Some(by),
        StatusChange::Built
        | StatusChange::Released
        | StatusChange::Activated
        | StatusChange::Superseded
        | StatusChange::Reinstated => {}
    }
    let done = sqlx::query!(
        r#"UPDATE deployments SET
             status = $3,
             is_active = ($3 = 'active'),
             archive_key = COALESCE($5, archive_key),
             archive_sha256 = COALESCE($6, archive_sha256),
             archive_bytes = COALESCE($7, archive_bytes),
             commit_message = COALESCE($8, commit_message),
             image_tag = COALESCE($9, image_tag),
             image_digest = COALESCE($10, image_digest),
             error = COALESCE($11, error),
             superseded_by = COALESCE($12, superseded_by),
             built_at = CASE WHEN $3 = 'pushing' THEN now() ELSE built_at END,
             pushed_at = CASE WHEN $3 = 'deploying' OR $3 = 'built' THEN coalesce(pushed_at, now())
                              ELSE pushed_at END,
             deployed_at = CASE WHEN $3 = 'active' THEN now() ELSE deployed_at END,
             updated_at = now()
           WHERE id = $1 AND status = ANY($2)
             AND ($4::uuid IS NULL OR run_token = $4)
             AND ($3 <> 'active' OR prune_started_at IS NULL)"#,
        id,
        &sources as &[&str],
        target.as_str(),
        run_token,
        archive_key,
        archive_sha256,
        archive_bytes,
        commit_message,
        image_tag,
        image_digest,
        error,
        superseded_by
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Builds holding a slot right now (every owner's), for the metrics scrape.
pub async fn builds_holding_slots(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM deployments
           WHERE status = 'building' AND build_started_at IS NOT NULL"#
    )
    .fetch_one(conn)
    .await
}

/// Takes one of the owner's build slots for the deployment (its build starts now) unless the
/// owner's other builds already hold `slots`: one owner's builds cannot take every builder
/// while other owners' wait. A build that started more than `stale_after` ago no longer
/// counts: its job is gone or past its timeout. Serialised per owner until the transaction
/// ends, so two workers cannot both take the last slot.
pub async fn claim_build_slot(
    conn: &mut PgConnection,
    id: Uuid,
    slots: u32,
    stale_after: std::time::Duration,
) -> sqlx::Result<bool> {
    sqlx::query!(
        r#"SELECT pg_advisory_xact_lock(hashtext('slipway.build-slots'), hashtext(f.owner_id::text))
           FROM deployments d JOIN functions f ON f.id = d.function_id WHERE d.id = $1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let claimed = sqlx::query!(
        r#"UPDATE deployments SET build_started_at = coalesce(build_started_at, now())
           WHERE id = $1
             AND (SELECT count(*)
                  FROM deployments d JOIN functions f ON f.id = d.function_id
                  WHERE f.owner_id = (SELECT f2.owner_id FROM deployments d2
                                      JOIN functions f2 ON f2.id = d2.function_id
                                      WHERE d2.id = $1)
                    AND d.id <> $1
                    AND d.status = 'building'
                    AND d.build_started_at > now() - make_interval(secs => $3)) < $2"#,
        id,
        i64::from(slots),
        stale_after.as_secs_f64()
    )
    .execute(conn)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// Remembers the instance as soon as it exists, so a crash leaves no untracked one: its
/// container and the address the platform reaches it at (its own, on its function's network).
/// False when another run took the deployment over: the instance is then the caller's to remove.
/// `spec_sha256` is the fingerprint of the spec a new instance was started with; `None` keeps the
/// recorded one (the same instance restarted or moved by the engine).
pub async fn record_instance(
    conn: &mut PgConnection,
    id: Uuid,
    run_token: Option<Uuid>,
    container_id: &str,
    endpoint: &str,
    spec_sha256: Option<&str>,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE deployments SET container_id = $2, runtime_endpoint = $3,
                  instance_spec_sha256 = coalesce($5, instance_spec_sha256), updated_at = now()
           WHERE id = $1 AND ($4::uuid IS NULL OR run_token = $4)"#,
        id,
        container_id,
        endpoint,
        run_token,
        spec_sha256
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Which of `instance_ids` a deployment owns: one that serves or is on its way to serving, or
/// one that changed since `settled_before` (a version stepping down drains for a moment; a
/// rollback starts its instance on an inactive deployment), or a version instance (an alias's,
/// `db::aliases`). Any other is a leftover: a crash during the drain, or a run that never
/// recorded its instance.
pub async fn owned_instances(
    conn: &mut PgConnection,
    instance_ids: &[String],
    settled_before: DateTime<Utc>,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT container_id AS "container_id!" FROM deployments
           WHERE container_id = ANY($1)
             AND (status IN ('fetching', 'building', 'pushing', 'deploying', 'active')
                  OR updated_at >= $2)
           UNION
           SELECT container_id AS "container_id!" FROM version_instances
           WHERE container_id = ANY($1)"#,
        instance_ids,
        settled_before
    )
    .fetch_all(conn)
    .await
}

/// A leftover instance is gone: the deployments that still name it (none of them serving or in
/// flight) forget it.
pub async fn forget_leftover_instance(
    conn: &mut PgConnection,
    instance_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE deployments SET container_id = NULL, runtime_endpoint = NULL, updated_at = now()
           WHERE container_id = $1
             AND status NOT IN ('fetching', 'building', 'pushing', 'deploying', 'active')"#,
        instance_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The active deployment (id, function) whose instance is `container_id`, if that container is
/// what serves.
pub async fn active_with_container(
    conn: &mut PgConnection,
    container_id: &str,
) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    let row = sqlx::query!(
        "SELECT id, function_id FROM deployments WHERE is_active AND container_id = $1",
        container_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.id, r.function_id)))
}

/// What a rollback needs to know about one version of a function.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub id: Uuid,
    pub status: DeploymentStatus,
    pub image_digest: Option<String>,
    /// Retention has started (or finished) removing its image.
    pub pruned: bool,
}

pub async fn version_info(
    conn: &mut PgConnection,
    function_id: Uuid,
    version: i32,
) -> sqlx::Result<Option<VersionInfo>> {
    sqlx::query_as!(
        VersionInfo,
        r#"SELECT id, status AS "status: DeploymentStatus", image_digest,
                  prune_started_at IS NOT NULL AS "pruned!"
           FROM deployments WHERE function_id = $1 AND version = $2"#,
        function_id,
        version
    )
    .fetch_optional(conn)
    .await
}

/// The newest version of the function that is built and held, waiting for a deploy.
pub async fn newest_built(conn: &mut PgConnection, function_id: Uuid) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar!(
        r#"SELECT max(version) FROM deployments
           WHERE function_id = $1 AND status = 'built' AND prune_started_at IS NULL"#,
        function_id
    )
    .fetch_one(conn)
    .await
}

/// The container `container_id` is gone: nothing answers at the endpoint any more. Conditional
/// on the container, so a late clean-up cannot erase a newer container of the same deployment
/// (a version rolled back to while the previous switch was still draining). `None` clears an
/// endpoint reserved for a container that never started.
pub async fn clear_container(
    conn: &mut PgConnection,
    id: Uuid,
    container_id: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE deployments SET container_id = NULL, runtime_endpoint = NULL, updated_at = now()
           WHERE id = $1 AND status <> 'active' AND container_id IS NOT DISTINCT FROM $2"#,
        id,
        container_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the instance `from` serves as `to`'s too (a new version with the same instance
/// spec, about to take it over; `from` forgets it once it stepped down, in the same
/// transaction). False when `from` no longer has that instance or another run took `to` over.
pub async fn share_instance(
    conn: &mut PgConnection,
    from: Uuid,
    to: Uuid,
    to_run_token: Option<Uuid>,
    container_id: &str,
) -> sqlx::Result<bool> {
    let shared = sqlx::query!(
        r#"UPDATE deployments d SET container_id = s.container_id,
                  runtime_endpoint = s.runtime_endpoint,
                  instance_spec_sha256 = s.instance_spec_sha256, updated_at = now()
           FROM deployments s
           WHERE s.id = $1 AND s.container_id = $3
             AND d.id = $2 AND ($4::uuid IS NULL OR d.run_token = $4)"#,
        from,
        to,
        container_id,
        to_run_token
    )
    .execute(conn)
    .await?;
    Ok(shared.rows_affected() == 1)
}

#[derive(Debug, Clone)]
pub struct ActiveDeployment {
    pub id: Uuid,
    pub version: i32,
    pub container_id: Option<String>,
    pub runtime_endpoint: Option<String>,
    pub image_tag: Option<String>,
    pub image_digest: Option<String>,
    /// The fingerprint of the spec its instance was started with.
    pub instance_spec_sha256: Option<String>,
}

pub async fn active_for_function(
    conn: &mut PgConnection,
    function_id: Uuid,
) -> sqlx::Result<Option<ActiveDeployment>> {
    sqlx::query_as!(
        ActiveDeployment,
        r#"SELECT id, version, container_id, runtime_endpoint, image_tag, image_digest,
                  instance_spec_sha256
           FROM deployments WHERE function_id = $1 AND is_active"#,
        function_id
    )
    .fetch_optional(conn)
    .await
}

/// Whether another deployment of the function is still fetching, building, pushing or deploying.
pub async fn others_in_flight(
    conn: &mut PgConnection,
    function_id: Uuid,
    except: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (
             SELECT 1 FROM deployments
             WHERE function_id = $1 AND id <> $2
               AND status IN ('fetching', 'building', 'pushing', 'deploying')
           ) AS "exists!""#,
        function_id,
        except
    )
    .fetch_one(conn)
    .await
}

/// Where an owner's function is served from, for the invocation proxy.
#[derive(Debug, Clone)]
pub struct Route {
    pub function_status: FunctionStatus,
    pub enabled: bool,
    pub state: String,
    pub state_reason: Option<String>,
    pub endpoint: Option<String>,
    pub deployment_id: Option<Uuid>,
    pub version: Option<i32>,
}

pub async fn route(
    conn: &mut PgConnection,
    owner_id: Uuid,
    function_id: Uuid,
) -> sqlx::Result<Option<Route>> {
    sqlx::query_as!(
        Route,
        r#"SELECT f.status AS "function_status: FunctionStatus", f.enabled, f.state, f.state_reason,
                  d.runtime_endpoint AS "endpoint?", d.id AS "deployment_id?",
                  d.version AS "version?"
           FROM functions f
           LEFT JOIN deployments d ON d.function_id = f.id AND d.is_active
           WHERE f.id = $1 AND f.owner_id = $2"#,
        function_id,
        owner_id
    )
    .fetch_optional(conn)
    .await
}

/// What a purge or a prune removes for one deployment.
#[derive(Debug, Clone)]
pub struct PruneTarget {
    pub id: Uuid,
    pub version: i32,
    pub image_tag: Option<String>,
    pub image_digest: Option<String>,
    pub archive_key: Option<String>,
    /// Another deployment of the function that must keep serving or stay restorable uses the
    /// same digest (an unchanged rebuild), so the manifest stays in the registry.
    pub digest_in_use: bool,
}

/// Versions past the retention window that still have their image or archive, oldest first.
/// The window is the `keep` newest versions that produced an image, plus the active one and any
/// still in flight; failed versions go once they are older than everything the window keeps.
/// A version an alias points at is never a candidate, and its digest counts as in use.
/// Run under the function's lock, so no version becomes active or a rollback target meanwhile.
pub async fn retention_candidates(
    conn: &mut PgConnection,
    function_id: Uuid,
    keep: i64,
) -> sqlx::Result<Vec<PruneTarget>> {
    sqlx::query_as!(
        PruneTarget,
        r#"WITH built AS (
             SELECT id, row_number() OVER (ORDER BY version DESC) AS rank
             FROM deployments WHERE function_id = $1 AND image_digest IS NOT NULL
           ), retained AS (
             SELECT d.id, d.version, d.image_digest
             FROM deployments d LEFT JOIN built b ON b.id = d.id
             WHERE d.function_id = $1
               AND (b.rank <= $2 OR d.is_active
                    OR d.status IN ('fetching', 'building', 'pushing', 'deploying'))
           ), aliased AS (
             SELECT d.id, d.image_digest
             FROM function_aliases a
             JOIN deployments d ON d.id IN (a.deployment_id, a.additional_deployment_id)
             WHERE a.function_id = $1
           )
           SELECT d.id, d.version, d.image_tag, d.image_digest, d.archive_key,
                  COALESCE(d.image_digest IN (
                      SELECT image_digest FROM retained WHERE image_digest IS NOT NULL
                      UNION ALL
                      SELECT image_digest FROM aliased WHERE image_digest IS NOT NULL
                  ), false) AS "digest_in_use!"
           FROM deployments d
           WHERE d.function_id = $1
             AND d.pruned_at IS NULL
             AND d.status IN ('inactive', 'failed', 'superseded')
             AND d.id NOT IN (SELECT id FROM retained)
             AND d.id NOT IN (SELECT id FROM aliased)
             AND d.version < (SELECT min(version) FROM retained)
           ORDER BY d.version"#,
        function_id,
        keep
    )
    .fetch_all(conn)
    .await
}

/// Every deployment of the function whose image or archive may still exist, for a purge. Digests
/// are never shared with another function (each has its own repository), so none is in use.
pub async fn purge_targets(
    conn: &mut PgConnection,
    function_id: Uuid,
) -> sqlx::Result<Vec<PruneTarget>> {
    sqlx::query_as!(
        PruneTarget,
        r#"SELECT id, version, image_tag, image_digest, archive_key, false AS "digest_in_use!"
           FROM deployments WHERE function_id = $1 AND pruned_at IS NULL
           ORDER BY version"#,
        function_id
    )
    .fetch_all(conn)
    .await
}

/// Fences the versions before their image goes: a rollback can no longer pick them.
pub async fn begin_prune(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE deployments SET prune_started_at = COALESCE(prune_started_at, now()), updated_at = now()
           WHERE id = ANY($1) AND NOT is_active"#,
        ids
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_pruned(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE deployments SET pruned_at = now(), updated_at = now()
           WHERE id = $1 AND prune_started_at IS NOT NULL AND pruned_at IS NULL"#,
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The first step of a purge: nothing of the function serves or is on its way to serving any
/// more. In-flight deployments fail with `reason` (their jobs find them settled and stop), the
/// active one steps down, and every version is fenced against rollback.
pub async fn retire_all(
    conn: &mut PgConnection,
    function_id: Uuid,
    reason: &str,
) -> sqlx::Result<()> {
    let serving_or_in_flight = sqlx::query!(
        r#"SELECT id, status AS "status: DeploymentStatus" FROM deployments
           WHERE function_id = $1
             AND status IN ('fetching', 'building', 'pushing', 'deploying', 'active')
           FOR UPDATE"#,
        function_id
    )
    .fetch_all(&mut *conn)
    .await?;
    for deployment in serving_or_in_flight {
        let step_down = if deployment.status == DeploymentStatus::Active {
            StatusChange::Superseded
        } else {
            StatusChange::Failed { reason }
        };
        change(conn, deployment.id, None, step_down).await?;
    }
    sqlx::query!(
        r#"UPDATE deployments SET prune_started_at = COALESCE(prune_started_at, now()), updated_at = now()
           WHERE function_id = $1"#,
        function_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets every container and endpoint of the function once its containers are removed.
pub async fn clear_all_containers(conn: &mut PgConnection, function_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE deployments SET container_id = NULL, runtime_endpoint = NULL, updated_at = now()
           WHERE function_id = $1 AND NOT is_active
             AND (container_id IS NOT NULL OR runtime_endpoint IS NOT NULL)"#,
        function_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The function's instances that may still run: (deployment, endpoint).
pub async fn endpoints_of_function(
    conn: &mut PgConnection,
    function_id: Uuid,
) -> sqlx::Result<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        r#"SELECT id, runtime_endpoint AS "endpoint!" FROM deployments
           WHERE function_id = $1 AND container_id IS NOT NULL AND runtime_endpoint IS NOT NULL"#,
        function_id
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.endpoint)).collect())
}

/// The active deployment's instance was released: forget its container, keep its endpoint
/// reserved for the instance that wakes it (an active deployment always has an endpoint).
pub async fn forget_active_container(
    conn: &mut PgConnection,
    id: Uuid,
    container_id: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE deployments SET container_id = NULL, updated_at = now()
           WHERE id = $1 AND container_id = $2"#,
        id,
        container_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A deployment accepted from a git push, before its archive exists.
pub struct NewPushDeployment<'a> {
    pub id: Uuid,
    pub function_id: Uuid,
    pub version: i32,
    pub git_binding_id: Uuid,
    pub commit_sha: &'a str,
    pub parent_sha: Option<&'a str>,
    pub committed_at: Option<DateTime<Utc>>,
    pub env: &'a serde_json::Value,
}

pub async fn insert_from_push(
    conn: &mut PgConnection,
    new: &NewPushDeployment<'_>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO deployments
             (id, function_id, version, git_binding_id, commit_sha, parent_sha, committed_at, env,
              status)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'fetching')"#,
        new.id,
        new.function_id,
        new.version,
        new.git_binding_id,
        new.commit_sha,
        new.parent_sha,
        new.committed_at,
        new.env
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The newest push a function accepted, against which a later delivery is ordered.
#[derive(Debug, Clone)]
pub struct AcceptedPush {
    pub id: Uuid,
    pub version: i32,
    pub commit_sha: String,
    pub parent_sha: Option<String>,
    pub committed_at: Option<DateTime<Utc>>,
}

pub async fn latest_push(
    conn: &mut PgConnection,
    function_id: Uuid,
) -> sqlx::Result<Option<AcceptedPush>> {
    sqlx::query_as!(
        AcceptedPush,
        r#"SELECT id, version, commit_sha AS "commit_sha!", parent_sha, committed_at
           FROM deployments WHERE function_id = $1 AND commit_sha IS NOT NULL
           ORDER BY version DESC LIMIT 1"#,
        function_id
    )
    .fetch_optional(conn)
    .await
}

/// Whether an accepted push of the function moved its branch away from `commit_sha`: that commit
/// is older than something already accepted.
pub async fn commit_was_pushed_over(
    conn: &mut PgConnection,
    function_id: Uuid,
    commit_sha: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (
             SELECT 1 FROM deployments WHERE function_id = $1 AND parent_sha = $2
           ) AS "exists!""#,
        function_id,
        commit_sha
    )
    .fetch_one(conn)
    .await
}

/// Pushed deployments of the function older than `newer` that have not started building yet
/// (their source or build job still waits): they end `superseded` and their jobs find nothing to
/// do. Returns how many.
pub async fn supersede_waiting_pushes(
    conn: &mut PgConnection,
    function_id: Uuid,
    newer: Uuid,
    newer_version: i32,
) -> sqlx::Result<u64> {
    let waiting = sqlx::query_scalar!(
        r#"SELECT id FROM deployments
           WHERE function_id = $1 AND version < $2 AND commit_sha IS NOT NULL
             AND (status = 'fetching' OR (status = 'building' AND build_started_at IS NULL))
           FOR UPDATE"#,
        function_id,
        newer_version
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut superseded = 0;
    for id in waiting {
        if change(conn, id, None, StatusChange::Overtaken { by: newer }).await? {
            superseded += 1;
        }
    }
    Ok(superseded)
}

/// The newest version above `version` that has already served (id, version): an older one must
/// never replace it.
pub async fn newer_served(
    conn: &mut PgConnection,
    function_id: Uuid,
    version: i32,
) -> sqlx::Result<Option<(Uuid, i32)>> {
    let row = sqlx::query!(
        r#"SELECT id, version FROM deployments
           WHERE function_id = $1 AND version > $2 AND deployed_at IS NOT NULL
           ORDER BY version DESC LIMIT 1"#,
        function_id,
        version
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.id, r.version)))
}

/// Deployments of the owner's functions still in flight.
pub async fn in_flight_of_owner(conn: &mut PgConnection, owner_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM deployments d JOIN functions f ON f.id = d.function_id
           WHERE f.owner_id = $1
             AND d.status IN ('fetching', 'building', 'pushing', 'deploying')"#,
        owner_id
    )
    .fetch_one(conn)
    .await
}

/// The instance that serves a function (or would, once the engine places it again).
pub struct ServingInstance {
    pub deployment_id: Uuid,
    pub function_id: Uuid,
    pub instance_id: String,
    pub endpoint: Option<String>,
}

/// Every active deployment with an instance whose function is not Inactive: what an engine
/// that moves instances by itself (a swarm) must be followed for.
pub async fn serving_instances(conn: &mut PgConnection) -> sqlx::Result<Vec<ServingInstance>> {
    sqlx::query_as!(
        ServingInstance,
        r#"SELECT d.id AS deployment_id, d.function_id, d.container_id AS "instance_id!",
                  d.runtime_endpoint AS endpoint
           FROM deployments d JOIN functions f ON f.id = d.function_id
           WHERE d.is_active AND d.container_id IS NOT NULL
             AND f.state IN ('Active', 'Pending', 'Failed')
           ORDER BY d.function_id"#
    )
    .fetch_all(conn)
    .await
}
