//! Read-only views of apalis-postgres's job table, for operators and tests.

use sqlx::PgConnection;

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub queue: String,
    pub status: String,
    pub attempts: i32,
    pub payload: Option<serde_json::Value>,
}

/// Jobs of the given queues, oldest first.
pub async fn jobs(conn: &mut PgConnection, queues: &[&str]) -> sqlx::Result<Vec<JobRow>> {
    let queues: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
    sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id!", job_type AS "queue!", status AS "status!", attempts AS "attempts!",
                  convert_from(job, 'UTF8')::jsonb AS payload
           FROM apalis.jobs WHERE job_type = ANY($1) ORDER BY run_at, id"#,
        &queues
    )
    .fetch_all(conn)
    .await
}
