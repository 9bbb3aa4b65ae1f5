//! Invocation events (seed 003), written in batches by the api's event recorder and read by the
//! events endpoints.

use std::{borrow::Cow, sync::Arc};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// An invocation's event as the api records it: the whole row at the start (PENDING) and again
/// at the end (SUCCESS or FAILURE), so a batch holding both writes it once. Every invocation
/// makes two of these on the proxy's path, so they hold no text of their own to copy: the
/// path is shared, the method and reasons are mostly constants, and the request id is written
/// as the text Postgres makes of the uuid.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: Uuid,
    pub function_id: Uuid,
    pub owner_id: Uuid,
    pub deployment_id: Option<Uuid>,
    pub version: Option<i32>,
    /// `PENDING`, `SUCCESS` or `FAILURE`.
    pub status: &'static str,
    pub request_id: Uuid,
    pub method: Cow<'static, str>,
    pub path: Arc<str>,
    pub status_code: Option<i32>,
    pub failure_reason: Option<Cow<'static, str>>,
    pub request_bytes: i64,
    pub response_bytes: Option<i64>,
    pub processing_time_ms: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The batch's rows as one `INSERT … SELECT FROM UNNEST` statement, followed by `$tail` (the
/// conflict clause of an upsert, or nothing).
macro_rules! insert_rows {
    ($conn:expr, $rows:expr, $($tail:literal)?) => {{
        let rows: &[EventRow] = $rows;
        macro_rules! column {
            ($row:ident => $value:expr) => {
                rows.iter().map(|$row| $value).collect::<Vec<_>>()
            };
        }
        sqlx::query!(
            r#"INSERT INTO invocation_events
                 (id, function_id, owner_id, deployment_id, version, type, status, request_id,
                  method, path, status_code, failure_reason, request_bytes, response_bytes,
                  processing_time_ms, created_at, completed_at)
               SELECT id, function_id, owner_id, deployment_id, version, 'FUNCTION_INVOCATION',
                      status, request_id::text, method, path, status_code, failure_reason,
                      request_bytes, response_bytes, processing_time_ms, created_at, completed_at
               FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int4[],
                           $6::text[], $7::uuid[], $8::text[], $9::text[], $10::int4[],
                           $11::text[], $12::int8[], $13::int8[], $14::float8[],
                           $15::timestamptz[], $16::timestamptz[])
                    AS batch (id, function_id, owner_id, deployment_id, version, status,
                              request_id, method, path, status_code, failure_reason,
                              request_bytes, response_bytes, processing_time_ms, created_at,
                              completed_at)"# $(+ $tail)?,
            &column!(r => r.id),
            &column!(r => r.function_id),
            &column!(r => r.owner_id),
            &column!(r => r.deployment_id) as &[Option<Uuid>],
            &column!(r => r.version) as &[Option<i32>],
            &column!(r => r.status) as &[&str],
            &column!(r => r.request_id),
            &column!(r => &*r.method) as &[&str],
            &column!(r => &*r.path) as &[&str],
            &column!(r => r.status_code) as &[Option<i32>],
            &column!(r => r.failure_reason.as_deref()) as &[Option<&str>],
            &column!(r => r.request_bytes),
            &column!(r => r.response_bytes) as &[Option<i64>],
            &column!(r => r.processing_time_ms) as &[Option<f64>],
            &column!(r => r.created_at),
            &column!(r => r.completed_at) as &[Option<DateTime<Utc>>],
        )
        .execute($conn)
        .await
    }};
}

/// Writes a batch of invocation events in one statement. A completion never goes back to
/// PENDING: a late PENDING row (from an earlier batch flushed after a later one) changes
/// nothing.
pub async fn upsert(conn: &mut PgConnection, rows: &[EventRow]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    insert_rows!(
        conn,
        rows,
        r#"
           ON CONFLICT (id) DO UPDATE SET
             status = EXCLUDED.status, status_code = EXCLUDED.status_code,
             failure_reason = EXCLUDED.failure_reason, response_bytes = EXCLUDED.response_bytes,
             processing_time_ms = EXCLUDED.processing_time_ms,
             completed_at = EXCLUDED.completed_at
           WHERE invocation_events.status = 'PENDING' AND EXCLUDED.status <> 'PENDING'"#
    )?;
    Ok(())
}

/// Writes a batch of events none of which is stored yet, in one plain insert: Postgres spends
/// about a quarter less on each row than for an upsert, whose speculative insertion probes the
/// key and confirms every row. A row that is stored after all fails the statement with a
/// unique violation (23505), and the caller writes the batch again with [`upsert`].
pub async fn insert_new(conn: &mut PgConnection, rows: &[EventRow]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    insert_rows!(conn, rows,)?;
    Ok(())
}

/// An owner's events, newest first, optionally of one function and/or one status.
pub async fn page(
    conn: &mut PgConnection,
    owner_id: Uuid,
    function_id: Option<Uuid>,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as!(
        StoredEvent,
        r#"SELECT id, function_id, owner_id, deployment_id, version, type AS "type", status,
                  source, data, request_id, method, path, status_code, failure_reason,
                  request_bytes, response_bytes, processing_time_ms, created_at, completed_at
           FROM invocation_events
           WHERE owner_id = $1
             AND ($2::uuid IS NULL OR function_id = $2)
             AND ($3::text IS NULL OR status = $3)
           ORDER BY created_at DESC, id DESC
           LIMIT $4 OFFSET $5"#,
        owner_id,
        function_id,
        status,
        limit,
        offset
    )
    .fetch_all(conn)
    .await
}

pub async fn count(
    conn: &mut PgConnection,
    owner_id: Uuid,
    function_id: Option<Uuid>,
    status: Option<&str>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM invocation_events
           WHERE owner_id = $1
             AND ($2::uuid IS NULL OR function_id = $2)
             AND ($3::text IS NULL OR status = $3)"#,
        owner_id,
        function_id,
        status
    )
    .fetch_one(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    owner_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<StoredEvent>> {
    sqlx::query_as!(
        StoredEvent,
        r#"SELECT id, function_id, owner_id, deployment_id, version, type AS "type", status,
                  source, data, request_id, method, path, status_code, failure_reason,
                  request_bytes, response_bytes, processing_time_ms, created_at, completed_at
           FROM invocation_events WHERE owner_id = $1 AND id = $2"#,
        owner_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// An event as listed: an invocation's (a request line, no data) or a custom one (data, no
/// request line).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: Uuid,
    pub function_id: Uuid,
    pub owner_id: Uuid,
    pub deployment_id: Option<Uuid>,
    pub version: Option<i32>,
    pub r#type: String,
    pub status: String,
    /// `invocation` or `custom`.
    pub source: String,
    pub data: Option<serde_json::Value>,
    pub request_id: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status_code: Option<i32>,
    pub failure_reason: Option<String>,
    pub request_bytes: i64,
    pub response_bytes: Option<i64>,
    pub processing_time_ms: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A custom event: settled when it is recorded.
pub struct CustomEvent<'a> {
    pub function_id: Uuid,
    pub owner_id: Uuid,
    pub r#type: &'a str,
    pub status: &'a str,
    pub request_id: &'a str,
    pub data: &'a serde_json::Value,
}

pub async fn record_custom(
    conn: &mut PgConnection,
    event: &CustomEvent<'_>,
) -> sqlx::Result<StoredEvent> {
    sqlx::query_as!(
        StoredEvent,
        r#"INSERT INTO invocation_events
             (id, function_id, owner_id, type, status, source, data, request_id, created_at,
              completed_at)
           VALUES (gen_random_uuid(), $1, $2, $3, $4, 'custom', $5, $6, now(), now())
           RETURNING id, function_id, owner_id, deployment_id, version, type AS "type", status,
                     source, data, request_id, method, path, status_code, failure_reason,
                     request_bytes, response_bytes, processing_time_ms, created_at,
                     completed_at"#,
        event.function_id,
        event.owner_id,
        event.r#type,
        event.status,
        event.data,
        event.request_id
    )
    .fetch_one(conn)
    .await
}

/// Settled events go to the outbox from now on (an api that streams them says so at start).
pub async fn enable_outbox(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query!("UPDATE event_stream SET enabled = true")
        .execute(conn)
        .await?;
    Ok(())
}

/// An event waiting to be published.
pub struct OutboxEntry {
    pub id: i64,
    pub event_id: Uuid,
    pub routing_key: String,
    pub payload: serde_json::Value,
}

/// The oldest waiting events, locked for this publisher: another api's publisher skips them.
pub async fn outbox_batch(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<OutboxEntry>> {
    sqlx::query_as!(
        OutboxEntry,
        r#"SELECT id, event_id, routing_key, payload FROM event_outbox
           ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"#,
        limit
    )
    .fetch_all(conn)
    .await
}

/// The broker confirmed these.
pub async fn outbox_published(conn: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM event_outbox WHERE id = ANY($1)", ids)
        .execute(conn)
        .await?;
    Ok(())
}
