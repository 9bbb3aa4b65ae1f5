//! Users and their API keys.

use chrono::{DateTime, Utc};
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

/// Stores a key for the user with its signing secret, sealed (`SigningSecret::seal`); `None`
/// only for a key of the deprecated v1 signing scheme (what keys made before signing secrets are).
pub async fn insert_api_key(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &ApiKey,
    signing_secret: Option<&str>,
) -> sqlx::Result<Uuid> {
    Ok(create_api_key(conn, user_id, key, signing_secret, None)
        .await?
        .id)
}

/// An API key as its owner may see it: never the key or its hash.
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub prefix: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn create_api_key(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &ApiKey,
    signing_secret: Option<&str>,
    name: Option<&str>,
) -> sqlx::Result<ApiKeyRow> {
    sqlx::query_as!(
        ApiKeyRow,
        r#"INSERT INTO api_keys (id, user_id, prefix, key_hash, signing_secret, name)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING id, prefix, name, created_at, revoked_at"#,
        Uuid::new_v4(),
        user_id,
        key.prefix(),
        &key.hash().0[..],
        signing_secret,
        name
    )
    .fetch_one(conn)
    .await
}

/// The user's keys, revoked ones included, oldest first.
pub async fn list_api_keys(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Vec<ApiKeyRow>> {
    sqlx::query_as!(
        ApiKeyRow,
        r#"SELECT id, prefix, name, created_at, revoked_at FROM api_keys
           WHERE user_id = $1 ORDER BY created_at, id"#,
        user_id
    )
    .fetch_all(conn)
    .await
}

/// Revokes one of the user's keys (a no-op on an already revoked one, which keeps its first
/// `revoked_at`). `None` when the user has no such key, whoever else may own it.
pub async fn revoke_api_key(
    conn: &mut PgConnection,
    user_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<ApiKeyRow>> {
    sqlx::query_as!(
        ApiKeyRow,
        r#"UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
           WHERE id = $1 AND user_id = $2
           RETURNING id, prefix, name, created_at, revoked_at"#,
        id,
        user_id
    )
    .fetch_optional(conn)
    .await
}

/// A live key and its owner.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub key_id: Uuid,
    pub user_id: Uuid,
    /// May list and fire the scheduler's sweeps.
    pub operator: bool,
    /// `sk_xxxxxxxx`, what its signing secret is sealed for.
    pub prefix: String,
    /// What signs the key's requests, sealed; `None` for a key of the deprecated v1 scheme.
    pub signing_secret: Option<String>,
}

/// The live key matching a presented key's hash, if any.
pub async fn authenticate(
    conn: &mut PgConnection,
    hash: &ApiKeyHash,
) -> sqlx::Result<Option<KeyOwner>> {
    sqlx::query_as!(
        KeyOwner,
        r#"SELECT k.id AS key_id, k.user_id, u.operator, k.prefix, k.signing_secret FROM api_keys k
           JOIN users u ON u.id = k.user_id
           WHERE k.key_hash = $1 AND k.revoked_at IS NULL"#,
        &hash.0[..]
    )
    .fetch_optional(conn)
    .await
}

/// The live key with this id, for a request signed with its signing secret and sent without the
/// key itself.
pub async fn live_key(conn: &mut PgConnection, key_id: Uuid) -> sqlx::Result<Option<KeyOwner>> {
    sqlx::query_as!(
        KeyOwner,
        r#"SELECT k.id AS key_id, k.user_id, u.operator, k.prefix, k.signing_secret FROM api_keys k
           JOIN users u ON u.id = k.user_id
           WHERE k.id = $1 AND k.revoked_at IS NULL"#,
        key_id
    )
    .fetch_optional(conn)
    .await
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

/// Makes the user an operator (`slipway create-key <user> --operator`).
pub async fn make_operator(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!("UPDATE users SET operator = true WHERE id = $1", user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets the user's own function quota; `None` falls back to the default.
pub async fn set_function_quota(
    conn: &mut PgConnection,
    user_id: Uuid,
    quota: Option<i32>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET function_quota = $2 WHERE id = $1",
        user_id,
        quota
    )
    .execute(conn)
    .await?;
    Ok(())
}
