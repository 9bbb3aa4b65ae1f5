//! Idempotency-Key records: a claim while the first request runs, then its answer for retries.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

/// The answer a completed request gave, replayed to its retries.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: i16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What a live record holds when the key was not ours to claim.
#[derive(Debug, Clone)]
pub struct ExistingRecord {
    pub request_hash: Vec<u8>,
    /// `None` while the first request is still running.
    pub response: Option<StoredResponse>,
}

#[derive(Debug, Clone)]
pub enum Claim {
    /// The key was free (or its record had expired): run the request and complete the claim.
    Claimed {
        claim_id: Uuid,
    },
    Existing(ExistingRecord),
}

/// How long records live.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// A completed record's answer is replayed for this long.
    pub completed: Duration,
    /// An unfinished record blocks retries for this long; after it, a retry may run the request
    /// again (its first run is presumed dead).
    pub in_progress: Duration,
}

/// Claims `key` for `user_id`, or returns the live record that holds it. Expired records (of
/// either kind) are replaced in the same statement, so they never block a new request.
pub async fn claim(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &str,
    request_hash: &[u8; 32],
    lifetimes: Lifetimes,
) -> sqlx::Result<Claim> {
    let completed = lifetimes.completed.as_secs_f64();
    let in_progress = lifetimes.in_progress.as_secs_f64();
    // Expired records of this user go first; the primary key's user_id prefix keeps it cheap.
    sqlx::query!(
        r#"DELETE FROM idempotency_keys
           WHERE user_id = $1 AND created_at < now() - make_interval(secs => $2)"#,
        user_id,
        completed
    )
    .execute(&mut *conn)
    .await?;
    // A record deleted by a concurrent release between the two statements below is simply
    // claimed on the next round.
    for _ in 0..3 {
        let claim_id = Uuid::new_v4();
        let claimed = sqlx::query_scalar!(
            r#"INSERT INTO idempotency_keys (user_id, key, request_hash, claim_id)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (user_id, key) DO UPDATE SET
                   request_hash = EXCLUDED.request_hash,
                   claim_id = EXCLUDED.claim_id,
                   response_status = NULL,
                   response_type = NULL,
                   response_body = NULL,
                   created_at = now(),
                   completed_at = NULL
               WHERE idempotency_keys.created_at < now() - make_interval(secs => $5)
                  OR (idempotency_keys.completed_at IS NULL
                      AND idempotency_keys.created_at < now() - make_interval(secs => $6))
               RETURNING claim_id"#,
            user_id,
            key,
            &request_hash[..],
            claim_id,
            completed,
            in_progress
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(claim_id) = claimed {
            return Ok(Claim::Claimed { claim_id });
        }
        let existing = sqlx::query!(
            r#"SELECT request_hash, response_status, response_type, response_body
               FROM idempotency_keys WHERE user_id = $1 AND key = $2"#,
            user_id,
            key
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = existing {
            return Ok(Claim::Existing(ExistingRecord {
                request_hash: row.request_hash,
                response: row.response_status.map(|status| StoredResponse {
                    status,
                    content_type: row.response_type,
                    body: row.response_body.unwrap_or_default(),
                }),
            }));
        }
    }
    Err(sqlx::Error::Protocol(format!(
        "idempotency key {key:?} kept changing hands while being claimed"
    )))
}

/// Stores the answer of a claimed request. `false` if the claim was lost meanwhile (it ran past
/// the in-progress lifetime and a retry took the key over).
pub async fn complete(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &str,
    claim_id: Uuid,
    response: &StoredResponse,
) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        r#"UPDATE idempotency_keys
           SET response_status = $4, response_type = $5, response_body = $6, completed_at = now()
           WHERE user_id = $1 AND key = $2 AND claim_id = $3 AND completed_at IS NULL"#,
        user_id,
        key,
        claim_id,
        response.status,
        response.content_type,
        &response.body
    )
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Gives the key back, so a retry runs the request again (after a 5xx, for instance).
pub async fn release(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &str,
    claim_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND claim_id = $3",
        user_id,
        key,
        claim_id
    )
    .execute(conn)
    .await?;
    Ok(())
}
