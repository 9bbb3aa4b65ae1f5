//! Functions, as their owners see them.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{
        FunctionEvent, FunctionName, FunctionStatus, RequestedLimits, Serving, ServingEvent,
        ServingState, UpdateStatus,
    },
    lifecycle::Lifecycle,
};

/// A function with what it currently serves.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FunctionRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub status: FunctionStatus,
    pub skip_signing: bool,
    pub env: serde_json::Value,
    pub last_version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub state: String,
    pub state_reason: Option<String>,
    pub last_update_status: Option<String>,
    pub last_update_status_reason: Option<String>,
    pub on_tag_overwrite: String,
    pub image_drift: Option<serde_json::Value>,
    pub verified_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub lifecycle: Option<serde_json::Value>,
    pub memory_mb: Option<i32>,
    pub cpu_millis: Option<i32>,
    pub pids: Option<i32>,
    pub read_only_root: bool,
    /// Seed 003's description, for people.
    pub description: Option<String>,
    /// A function made from handler code: its template (`node`, `python`) and the handler's
    /// source, which the next build wraps.
    pub template: Option<String>,
    pub handler: Option<String>,
    /// The active version's instance, if one runs.
    pub container_id: Option<String>,
    pub runtime_endpoint: Option<String>,
    pub active_version: Option<i32>,
    pub image_tag: Option<String>,
    pub image_digest: Option<String>,
}

/// Creates the function, or returns `None` when the owner already has a live one of that name.
pub async fn insert(
    conn: &mut PgConnection,
    owner_id: Uuid,
    name: &FunctionName,
    skip_signing: bool,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"INSERT INTO functions (id, owner_id, name, skip_signing) VALUES ($1, $2, $3, $4)
           ON CONFLICT (owner_id, name) WHERE status <> 'deleted' DO NOTHING
           RETURNING id"#,
        Uuid::new_v4(),
        owner_id,
        name.as_str(),
        skip_signing
    )
    .fetch_optional(conn)
    .await
}

/// The owner's live functions (id, name): whose repositories its builds may use.
pub async fn live_of_owner(
    conn: &mut PgConnection,
    owner_id: Uuid,
) -> sqlx::Result<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        "SELECT id, name FROM functions WHERE owner_id = $1 AND status <> 'deleted'",
        owner_id
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.name)).collect())
}

pub async fn find_by_name(
    conn: &mut PgConnection,
    owner_id: Uuid,
    name: &FunctionName,
) -> sqlx::Result<Option<FunctionRow>> {
    sqlx::query_file_as!(
        FunctionRow,
        "src/db/sql/function_view.sql",
        owner_id,
        None::<Uuid>,
        Some(name.as_str())
    )
    .fetch_optional(conn)
    .await
}

/// The function if `owner_id` owns it; someone else's function is indistinguishable from none.
pub async fn find(
    conn: &mut PgConnection,
    owner_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<FunctionRow>> {
    sqlx::query_file_as!(
        FunctionRow,
        "src/db/sql/function_view.sql",
        owner_id,
        Some(id),
        None::<String>
    )
    .fetch_optional(conn)
    .await
}

pub async fn list(conn: &mut PgConnection, owner_id: Uuid) -> sqlx::Result<Vec<FunctionRow>> {
    sqlx::query_file_as!(
        FunctionRow,
        "src/db/sql/function_view.sql",
        owner_id,
        None::<Uuid>,
        None::<String>
    )
    .fetch_all(conn)
    .await
}

/// What a use case needs to decide a transition, read under the row lock it keeps until commit.
#[derive(Debug, Clone)]
pub struct LockedFunction {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub status: FunctionStatus,
    /// Whether mutating requests on the function may come unsigned.
    pub skip_signing: bool,
}

/// Locks the function row for the rest of the transaction; all status changes of a function and
/// its deployments take this lock first, so they serialise per function.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<LockedFunction>> {
    sqlx::query_as!(
        LockedFunction,
        r#"SELECT id, owner_id, name, status AS "status: FunctionStatus", skip_signing
           FROM functions WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// Hands out the next version number. Runs under the row lock; a rolled-back transaction gives
/// the number back, a committed one never reuses it.
pub async fn allocate_version(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<i32> {
    sqlx::query_scalar!(
        "UPDATE functions SET last_version = last_version + 1 WHERE id = $1 RETURNING last_version",
        id
    )
    .fetch_one(conn)
    .await
}

/// Which of `ids` are functions of this installation, and whether each is purged (a
/// tombstone, of which nothing may run). An id not among them is not this installation's: an
/// engine may be shared, and what it holds for others is theirs.
pub async fn known(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, bool)>> {
    let rows = sqlx::query!(
        r#"SELECT id, status = 'deleted' AS "purged!" FROM functions WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.purged)).collect())
}

/// The one writer of a function's lifecycle status: applies `event` to `from`
/// (`FunctionStatus::apply`) and stores the result if the function is still `from`. Run under the
/// function's lock, like every status change; an illegal transition is an error, never written.
pub async fn change_status(
    conn: &mut PgConnection,
    id: Uuid,
    from: FunctionStatus,
    event: FunctionEvent,
) -> anyhow::Result<FunctionStatus> {
    let next = from.apply(event)?;
    if next == from {
        return Ok(next);
    }
    // `deleted_at` goes with the status in one statement: a check constraint ties them.
    let done = sqlx::query!(
        r#"UPDATE functions
           SET status = $3, updated_at = now(),
               deleted_at = CASE WHEN $3 = 'deleted' THEN now() ELSE deleted_at END
           WHERE id = $1 AND status = $2"#,
        id,
        from.as_str(),
        next.as_str()
    )
    .execute(conn)
    .await?;
    anyhow::ensure!(
        done.rows_affected() == 1,
        "function {id} is no longer {from}: its status changed without its lock"
    );
    Ok(next)
}

pub async fn set_env(
    conn: &mut PgConnection,
    id: Uuid,
    env: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE functions SET env = $2, updated_at = now() WHERE id = $1",
        id,
        env
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the environment of the function and of every deployment of it: a purged function
/// keeps its history, never its values.
pub async fn wipe_env(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE functions SET env = '{}'::jsonb, updated_at = now() WHERE id = $1",
        id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE deployments SET env = '{}'::jsonb WHERE function_id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Reads the function's serving state; the caller holds the function's lock.
pub async fn serving(conn: &mut PgConnection, id: Uuid) -> anyhow::Result<Serving> {
    let row = sqlx::query!(
        r#"SELECT state, state_reason, last_update_status, last_update_status_reason
           FROM functions WHERE id = $1"#,
        id
    )
    .fetch_one(conn)
    .await?;
    Ok(Serving {
        state: ServingState::parse(&row.state)?,
        state_reason: row.state_reason,
        last_update_status: row
            .last_update_status
            .as_deref()
            .map(UpdateStatus::parse)
            .transpose()?,
        last_update_status_reason: row.last_update_status_reason,
    })
}

/// Applies `event` to the function's serving state and stores the result. Run under the
/// function's lock, like every status change; an illegal transition is an error, never written.
pub async fn transition_serving(
    conn: &mut PgConnection,
    id: Uuid,
    event: &ServingEvent,
) -> anyhow::Result<Serving> {
    let next = serving(conn, id).await?.apply(event)?;
    sqlx::query!(
        r#"UPDATE functions
           SET state = $2, state_reason = $3, last_update_status = $4,
               last_update_status_reason = $5, updated_at = now()
           WHERE id = $1"#,
        id,
        next.state.as_str(),
        next.state_reason.as_deref(),
        next.last_update_status.map(UpdateStatus::as_str),
        next.last_update_status_reason.as_deref()
    )
    .execute(conn)
    .await?;
    Ok(next)
}

/// Records what the last digest verification found: `drift` is `None` when the tag still points
/// at the recorded digest.
pub async fn record_verification(
    conn: &mut PgConnection,
    id: Uuid,
    drift: Option<&serde_json::Value>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE functions SET image_drift = $2, verified_at = now() WHERE id = $1",
        id,
        drift
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_on_tag_overwrite(
    conn: &mut PgConnection,
    id: Uuid,
    policy: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE functions SET on_tag_overwrite = $2, updated_at = now() WHERE id = $1",
        id,
        policy
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn on_tag_overwrite(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<String> {
    sqlx::query_scalar!("SELECT on_tag_overwrite FROM functions WHERE id = $1", id)
        .fetch_one(conn)
        .await
}

pub async fn set_enabled(conn: &mut PgConnection, id: Uuid, enabled: bool) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE functions SET enabled = $2, updated_at = now() WHERE id = $1",
        id,
        enabled
    )
    .execute(conn)
    .await?;
    Ok(())
}

impl FunctionRow {
    /// The limits the function asked for; the operator's policy resolves the rest.
    pub fn requested_limits(&self) -> RequestedLimits {
        RequestedLimits {
            memory_mb: self.memory_mb.and_then(|v| u32::try_from(v).ok()),
            cpu_millis: self.cpu_millis.and_then(|v| u32::try_from(v).ok()),
            pids: self.pids.and_then(|v| u32::try_from(v).ok()),
        }
    }
}

/// How a function's instances are confined: its requested limits and whether its root
/// filesystem is read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxSettings {
    pub limits: RequestedLimits,
    pub read_only_root: bool,
}

pub async fn sandbox(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<SandboxSettings> {
    let row = sqlx::query!(
        "SELECT memory_mb, cpu_millis, pids, read_only_root FROM functions WHERE id = $1",
        id
    )
    .fetch_one(conn)
    .await?;
    let unsigned = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
    Ok(SandboxSettings {
        limits: RequestedLimits {
            memory_mb: unsigned(row.memory_mb),
            cpu_millis: unsigned(row.cpu_millis),
            pids: unsigned(row.pids),
        },
        read_only_root: row.read_only_root,
    })
}

/// Replaces the function's limits (unset ones go back to the operator's default); used from
/// the next instance start on.
pub async fn set_limits(
    conn: &mut PgConnection,
    id: Uuid,
    limits: &RequestedLimits,
) -> sqlx::Result<()> {
    let signed = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    sqlx::query!(
        r#"UPDATE functions SET memory_mb = $2, cpu_millis = $3, pids = $4, updated_at = now()
           WHERE id = $1"#,
        id,
        signed(limits.memory_mb),
        signed(limits.cpu_millis),
        signed(limits.pids)
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_read_only_root(
    conn: &mut PgConnection,
    id: Uuid,
    read_only_root: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE functions SET read_only_root = $2, updated_at = now() WHERE id = $1",
        id,
        read_only_root
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The function's lifecycle hooks configuration (seed 002).
pub async fn lifecycle(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Lifecycle> {
    let stored = sqlx::query_scalar!("SELECT lifecycle FROM functions WHERE id = $1", id)
        .fetch_one(conn)
        .await?;
    Ok(Lifecycle::from_stored(stored.as_ref()))
}

pub async fn set_lifecycle(
    conn: &mut PgConnection,
    id: Uuid,
    lifecycle: &Lifecycle,
) -> sqlx::Result<()> {
    let value = (lifecycle != &Lifecycle::default())
        .then(|| serde_json::to_value(lifecycle))
        .transpose()
        .map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query!(
        "UPDATE functions SET lifecycle = $2, updated_at = now() WHERE id = $1",
        id,
        value
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Seed 003's fields: `description` (`Some(None)` clears it) and the template with the handler
/// the next build wraps (both or neither).
pub async fn set_source(
    conn: &mut PgConnection,
    id: Uuid,
    description: Option<Option<&str>>,
    template_and_handler: Option<(&str, &str)>,
) -> sqlx::Result<()> {
    let (template, handler) = template_and_handler.unzip();
    sqlx::query!(
        r#"UPDATE functions SET
             description = CASE WHEN $2 THEN $3 ELSE description END,
             template = coalesce($4, template),
             handler = coalesce($5, handler),
             updated_at = now()
           WHERE id = $1"#,
        id,
        description.is_some(),
        description.flatten(),
        template,
        handler
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The function was just invoked (written at most every few seconds per api process).
pub async fn mark_invoked(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE functions SET last_invoked_at = now() WHERE id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the function was invoked after the idle sweep picked it (then it stays up).
pub async fn invoked_since_release_enqueued(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(last_invoked_at > release_enqueued_at, false) AS "invoked!"
           FROM functions WHERE id = $1"#,
        id
    )
    .fetch_one(conn)
    .await
}
