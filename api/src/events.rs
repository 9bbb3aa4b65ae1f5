//! Recording invocation events without slowing invocations down: the proxy hands each event to
//! a bounded channel (never awaiting the database), and one writer task per api process batches
//! them into a single upsert every few milliseconds. When the channel is full the event is
//! dropped and counted, rather than making a caller wait; a crash loses at most what the writer
//! holds (one batch interval).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use slipway_shared::db::{self, events::EventRow};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;
use uuid::Uuid;

const CAPACITY: usize = 10_000;
const BATCH: usize = 500;
const INTERVAL: Duration = Duration::from_millis(20);

enum Message {
    Event(Box<EventRow>),
    Flush(oneshot::Sender<()>),
}

pub struct EventRecorder {
    sender: Option<mpsc::Sender<Message>>,
    dropped: AtomicU64,
}

impl EventRecorder {
    /// Starts the writer on the current runtime; `enabled: false` records nothing.
    pub fn start(pool: PgPool, enabled: bool) -> Arc<Self> {
        let sender = enabled.then(|| {
            let (sender, receiver) = mpsc::channel(CAPACITY);
            tokio::spawn(write_batches(pool, receiver));
            sender
        });
        Arc::new(Self {
            sender,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Queues the event's current state; never waits.
    pub fn record(&self, event: EventRow) {
        let Some(sender) = &self.sender else {
            return;
        };
        if sender.try_send(Message::Event(Box::new(event))).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(dropped, "event channel full: invocation events dropped");
            }
        }
    }

    /// Waits until everything queued so far is written (graceful shutdown, tests).
    pub async fn flush(&self) {
        let Some(sender) = &self.sender else {
            return;
        };
        let (done, written) = oneshot::channel();
        if sender.send(Message::Flush(done)).await.is_ok() {
            written.await.ok();
        }
    }
}

async fn write_batches(pool: PgPool, mut receiver: mpsc::Receiver<Message>) {
    let mut pending: HashMap<Uuid, EventRow> = HashMap::new();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            message = receiver.recv() => match message {
                Some(Message::Event(event)) => {
                    merge(&mut pending, *event);
                    if pending.len() >= BATCH {
                        write(&pool, &mut pending).await;
                    }
                }
                Some(Message::Flush(done)) => {
                    write(&pool, &mut pending).await;
                    done.send(()).ok();
                }
                None => {
                    write(&pool, &mut pending).await;
                    return;
                }
            },
            _ = tick.tick() => write(&pool, &mut pending).await,
        }
    }
}

/// Keeps the latest state of each event; a final state is never replaced by PENDING.
fn merge(pending: &mut HashMap<Uuid, EventRow>, event: EventRow) {
    match pending.get(&event.id) {
        Some(known) if known.status != "PENDING" => {}
        _ => {
            pending.insert(event.id, event);
        }
    }
}

async fn write(pool: &PgPool, pending: &mut HashMap<Uuid, EventRow>) {
    if pending.is_empty() {
        return;
    }
    let rows: Vec<EventRow> = pending.drain().map(|(_, row)| row).collect();
    let result = async {
        let mut conn = pool.acquire().await?;
        db::events::upsert(&mut conn, &rows).await
    }
    .await;
    if let Err(e) = result {
        warn!(events = rows.len(), error = %e, "could not write invocation events; dropped");
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn event(id: Uuid, status: &str) -> EventRow {
        EventRow {
            id,
            function_id: Uuid::nil(),
            owner_id: Uuid::nil(),
            deployment_id: None,
            version: None,
            r#type: "FUNCTION_INVOCATION".into(),
            status: status.into(),
            request_id: "r".into(),
            method: "GET".into(),
            path: "/".into(),
            status_code: None,
            failure_reason: None,
            request_bytes: 0,
            response_bytes: None,
            processing_time_ms: None,
            created_at: Utc::now(),
            completed_at: None,
        }
    }

    #[test]
    fn a_batch_keeps_the_final_state_of_each_event() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut pending = HashMap::new();
        merge(&mut pending, event(a, "PENDING"));
        merge(&mut pending, event(b, "PENDING"));
        merge(&mut pending, event(a, "SUCCESS"));
        merge(&mut pending, event(a, "PENDING"));
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[&a].status, "SUCCESS");
        assert_eq!(pending[&b].status, "PENDING");
    }
}
