//! Users and their API keys.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{ApiKey, ApiKeyHash};

/// Returns the user's id, creating the user on first use.
pub async fn ensure(conn: &mut PgConnection, name: &str) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"INSERT INTO users (id, name) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
           RETURNING id"#,
        Uuid::new_v4(),
        name
    )
    .fetch_one(conn)
    .await
}

pub async fn insert_api_key(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &ApiKey,
) -> sqlx::Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query!(
        "INSERT INTO api_keys (id, user_id, prefix, key_hash) VALUES ($1, $2, $3, $4)",
        id,
        user_id,
        key.prefix(),
        &key.hash().0[..]
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// The owner of a presented key, if the key exists and is not revoked.
pub async fn user_for_key(
    conn: &mut PgConnection,
    hash: &ApiKeyHash,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "SELECT user_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        &hash.0[..]
    )
    .fetch_optional(conn)
    .await
}

pub async fn key_is_live(conn: &mut PgConnection, hash: &ApiKeyHash) -> sqlx::Result<bool> {
    Ok(user_for_key(conn, hash).await?.is_some())
}
