//! `GET /api/deployments/{id}/logs?follow=true`: the build log as server-sent events, as
//! BuildKit's progress reaches the database. Each line is an event `line` whose id is the line's
//! id, so a reconnecting client (`Last-Event-ID`) resumes after the last line it saw; the stream
//! ends with an event `end` carrying the deployment's final status and error.

use std::{convert::Infallible, time::Duration};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt, stream};
use serde_json::json;
use slipway_shared::db;
use sqlx::PgPool;
use tracing::warn;
use uuid::Uuid;

use super::deployments::LogLine;

const POLL: Duration = Duration::from_millis(200);
const PAGE: i64 = 1000;

/// Where a follower stands.
struct Cursor {
    pool: PgPool,
    deployment_id: Uuid,
    after: i64,
    finished: bool,
}

pub fn follow(
    pool: PgPool,
    deployment_id: Uuid,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let cursor = Cursor {
        pool,
        deployment_id,
        after,
        finished: false,
    };
    let events = stream::unfold(cursor, |mut cursor| async move {
        if cursor.finished {
            return None;
        }
        let events = loop {
            match next_events(&mut cursor).await {
                Ok(events) if !events.is_empty() => break events,
                Ok(_) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    warn!(deployment_id = %cursor.deployment_id, error = %e, "log stream failed");
                    cursor.finished = true;
                    break vec![Event::default().event("error").data(e.to_string())];
                }
            }
        };
        Some((stream::iter(events.into_iter().map(Ok)), cursor))
    })
    .flatten();
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The lines after the cursor; once the deployment has settled and every line is out, `end`.
async fn next_events(cursor: &mut Cursor) -> anyhow::Result<Vec<Event>> {
    let mut conn = cursor.pool.acquire().await?;
    // The status first: lines written before it settled are then all visible below.
    let deployment = db::deployments::get(&mut conn, cursor.deployment_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the deployment is gone"))?;
    let lines = db::logs::list(&mut conn, cursor.deployment_id, cursor.after, PAGE).await?;
    let mut events = Vec::with_capacity(lines.len() + 1);
    let full_page = lines.len() as i64 == PAGE;
    for line in lines {
        cursor.after = line.id;
        let id = line.id.to_string();
        events.push(
            Event::default()
                .event("line")
                .id(id)
                .json_data(LogLine::from(line))?,
        );
    }
    // Settled: active, inactive, failed, or superseded by a newer push.
    let settled = !deployment.status.is_in_flight();
    if settled && !full_page {
        cursor.finished = true;
        events.push(Event::default().event("end").json_data(json!({
            "deployment_id": deployment.id,
            "version": deployment.version,
            "status": deployment.status,
            "error": deployment.error,
        }))?);
    }
    Ok(events)
}
