//! Deployment logs: BuildKit's steps and output, push and start progress, kept for later reading.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRow {
    pub id: i64,
    pub phase: String,
    pub stream: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

/// Appends lines in one statement; build output arrives in bursts.
pub async fn append(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    phase: &str,
    lines: &[(String, String)],
) -> sqlx::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let (streams, messages): (Vec<String>, Vec<String>) = lines.iter().cloned().unzip();
    sqlx::query!(
        r#"INSERT INTO deployment_logs (deployment_id, phase, stream, message)
           SELECT $1, $2, s, m FROM UNNEST($3::text[], $4::text[]) WITH ORDINALITY AS t(s, m, n)
           ORDER BY n"#,
        deployment_id,
        phase,
        &streams,
        &messages
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Lines after `after_id`, oldest first, so a reader can resume where it stopped.
pub async fn list(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    after_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<LogRow>> {
    sqlx::query_as!(
        LogRow,
        r#"SELECT id, phase, stream, message, created_at FROM deployment_logs
           WHERE deployment_id = $1 AND id > $2 ORDER BY id LIMIT $3"#,
        deployment_id,
        after_id,
        limit
    )
    .fetch_all(conn)
    .await
}
