//! Scheduled deletions (seed 000's "pending deletions") and the tombstones purges leave.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    db,
    domain::{DeletionReason, FunctionEvent, FunctionStatus},
};

/// A scheduled deletion with the function it concerns.
#[derive(Debug, Clone)]
pub struct PendingDeletionRow {
    pub id: Uuid,
    pub function_id: Uuid,
    pub function_name: String,
    pub function_status: FunctionStatus,
    pub image_tag: Option<String>,
    pub reason: String,
    pub status: String,
    pub deletion_date: DateTime<Utc>,
    pub scheduled_at: DateTime<Utc>,
}

/// Records a deletion due after `grace`. Fails on the unique index if one is already open, which
/// callers rule out first under the function's lock.
pub async fn schedule(
    conn: &mut PgConnection,
    function_id: Uuid,
    reason: DeletionReason,
    image_tag: Option<&str>,
    grace: Duration,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"INSERT INTO pending_deletions (id, function_id, reason, image_tag, deletion_date)
           VALUES ($1, $2, $3, $4, now() + $5::float8 * interval '1 second')
           RETURNING id"#,
        Uuid::new_v4(),
        function_id,
        reason.as_str(),
        image_tag,
        grace.as_secs_f64()
    )
    .fetch_one(conn)
    .await
}

/// The function's open deletion (pending, or being purged), if any.
pub async fn open_for_function(
    conn: &mut PgConnection,
    function_id: Uuid,
) -> sqlx::Result<Option<PendingDeletionRow>> {
    sqlx::query_as!(
        PendingDeletionRow,
        r#"SELECT p.id, p.function_id, f.name AS function_name, f.status AS "function_status: FunctionStatus",
                  p.image_tag, p.reason, p.status, p.deletion_date, p.scheduled_at
           FROM pending_deletions p JOIN functions f ON f.id = p.function_id
           WHERE p.function_id = $1 AND p.status IN ('pending', 'purging')"#,
        function_id
    )
    .fetch_optional(conn)
    .await
}

/// Every open deletion of an owner's functions, soonest first.
pub async fn open_for_owner(
    conn: &mut PgConnection,
    owner_id: Uuid,
) -> sqlx::Result<Vec<PendingDeletionRow>> {
    sqlx::query_as!(
        PendingDeletionRow,
        r#"SELECT p.id, p.function_id, f.name AS function_name, f.status AS "function_status: FunctionStatus",
                  p.image_tag, p.reason, p.status, p.deletion_date, p.scheduled_at
           FROM pending_deletions p JOIN functions f ON f.id = p.function_id
           WHERE f.owner_id = $1 AND p.status IN ('pending', 'purging')
           ORDER BY p.deletion_date, p.id"#,
        owner_id
    )
    .fetch_all(conn)
    .await
}

/// Marks the function's pending deletions cancelled; returns how many there were.
pub async fn cancel(conn: &mut PgConnection, function_id: Uuid) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"UPDATE pending_deletions SET status = 'cancelled', cancelled_at = now()
           WHERE function_id = $1 AND status = 'pending'"#,
        function_id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// pending → purging: from here on the deletion cannot be cancelled, as the function's
/// containers start to go. A deletion already purging stays so (a re-run resumes it).
pub async fn begin_purge(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE pending_deletions SET status = 'purging'
           WHERE id = $1 AND status IN ('pending', 'purging')"#,
        id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn complete(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        r#"UPDATE pending_deletions SET status = 'completed', completed_at = now()
           WHERE id = $1 AND status = 'purging'"#,
        id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The function is gone but for its row: its name stays reserved for `reservation`.
pub async fn tombstone_function(
    conn: &mut PgConnection,
    function_id: Uuid,
    reservation: Duration,
) -> anyhow::Result<bool> {
    let status = sqlx::query_scalar!(
        "SELECT status FROM functions WHERE id = $1 FOR UPDATE",
        function_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(from) = status.as_deref().map(FunctionStatus::parse).transpose()? else {
        return Ok(false);
    };
    // A purge run again after it tombstoned the function finds nothing left to do.
    if from != FunctionStatus::PendingDeletion {
        return Ok(false);
    }
    db::functions::change_status(conn, function_id, from, FunctionEvent::Purged).await?;
    sqlx::query!(
        r#"UPDATE functions SET name_reserved_until = now() + $2::float8 * interval '1 second'
           WHERE id = $1"#,
        function_id,
        reservation.as_secs_f64()
    )
    .execute(conn)
    .await?;
    Ok(true)
}

/// Until when a purged function of this owner still holds `name`, if one does.
pub async fn name_reserved_until(
    conn: &mut PgConnection,
    owner_id: Uuid,
    name: &str,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!(
        r#"SELECT max(name_reserved_until) AS "until?" FROM functions
           WHERE owner_id = $1 AND name = $2 AND status = 'deleted'
             AND name_reserved_until > now()"#,
        owner_id,
        name
    )
    .fetch_one(conn)
    .await
}
