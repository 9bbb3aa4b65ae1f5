//! The operators' console: its sessions, and the two views only it shows (deployments in
//! flight, functions by serving state).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::users::KeyOwner;

/// Opens a session for `key_id` until `expires_at`; the caller keeps the token, this keeps its
/// hash. Expired sessions go on the way.
pub async fn open_session(
    conn: &mut PgConnection,
    token_sha256: &[u8; 32],
    key_id: Uuid,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM console_sessions WHERE expires_at < now()")
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        "INSERT INTO console_sessions (token_sha256, key_id, expires_at) VALUES ($1, $2, $3)",
        &token_sha256[..],
        key_id,
        expires_at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The live operator key behind an unexpired session; a revoked key or a user no longer an
/// operator ends it.
pub async fn session_owner(
    conn: &mut PgConnection,
    token_sha256: &[u8; 32],
) -> sqlx::Result<Option<KeyOwner>> {
    sqlx::query_as!(
        KeyOwner,
        r#"SELECT k.id AS key_id, k.user_id, u.operator, k.prefix, k.signing_secret
           FROM console_sessions s
           JOIN api_keys k ON k.id = s.key_id
           JOIN users u ON u.id = k.user_id
           WHERE s.token_sha256 = $1 AND s.expires_at > now()
             AND k.revoked_at IS NULL AND u.operator"#,
        &token_sha256[..]
    )
    .fetch_optional(conn)
    .await
}

pub async fn close_session(conn: &mut PgConnection, token_sha256: &[u8; 32]) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM console_sessions WHERE token_sha256 = $1",
        &token_sha256[..]
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A deployment on its way, with the times its stages ended so far.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub id: Uuid,
    pub function_name: String,
    pub version: i32,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub build_started_at: Option<DateTime<Utc>>,
    pub built_at: Option<DateTime<Utc>>,
    pub pushed_at: Option<DateTime<Utc>>,
}

/// Every tenant's deployments not yet settled, oldest first.
pub async fn in_flight(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<InFlight>> {
    sqlx::query_as!(
        InFlight,
        r#"SELECT d.id, f.name AS function_name, d.version, d.status, d.created_at,
                  d.build_started_at, d.built_at, d.pushed_at
           FROM deployments d JOIN functions f ON f.id = d.function_id
           WHERE d.status IN ('fetching', 'building', 'pushing', 'deploying')
           ORDER BY d.created_at LIMIT $1"#,
        limit
    )
    .fetch_all(conn)
    .await
}

/// A live function as the console lists it.
#[derive(Debug, Clone)]
pub struct ServingFunction {
    pub id: Uuid,
    pub name: String,
    pub state: String,
    pub state_reason: Option<String>,
    pub active_version: Option<i32>,
    pub last_invoked_at: Option<DateTime<Utc>>,
}

/// Live functions in one serving state, most recently invoked first.
pub async fn functions_in_state(
    conn: &mut PgConnection,
    state: &str,
    limit: i64,
) -> sqlx::Result<Vec<ServingFunction>> {
    sqlx::query_as!(
        ServingFunction,
        r#"SELECT f.id, f.name, f.state, f.state_reason,
                  (SELECT d.version FROM deployments d
                   WHERE d.function_id = f.id AND d.is_active) AS active_version,
                  f.last_invoked_at
           FROM functions f
           WHERE f.status <> 'deleted' AND f.state = $1
           ORDER BY f.last_invoked_at DESC NULLS LAST, f.name LIMIT $2"#,
        state,
        limit
    )
    .fetch_all(conn)
    .await
}

/// How many live functions are in each serving state.
pub async fn functions_by_state(conn: &mut PgConnection) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT state, count(*) AS "count!" FROM functions WHERE status <> 'deleted'
           GROUP BY state ORDER BY state"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.count)).collect())
}
