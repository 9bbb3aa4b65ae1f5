//! Nonces of signed requests: each may be used once per API key while its timestamp is accepted.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Records a nonce; `false` when the key already used it (a replay). The primary key decides,
/// so two concurrent requests with one nonce cannot both pass.
pub async fn record(
    conn: &mut PgConnection,
    api_key_id: Uuid,
    nonce: &str,
    signed_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        r#"INSERT INTO request_nonces (api_key_id, nonce, signed_at) VALUES ($1, $2, $3)
           ON CONFLICT (api_key_id, nonce) DO NOTHING"#,
        api_key_id,
        nonce,
        signed_at
    )
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Deletes nonces whose requests were signed before `cutoff`: a replay of one of them is refused
/// by its timestamp, so the row no longer protects anything.
pub async fn forget_signed_before(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
) -> sqlx::Result<u64> {
    let deleted = sqlx::query!("DELETE FROM request_nonces WHERE signed_at < $1", cutoff)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected())
}
