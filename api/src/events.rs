//! Recording invocation events without slowing invocations down: the proxy hands each event to
//! a bounded channel (never awaiting the database), and one writer task per api process batches
//! them into one transaction of small statements (`WRITE_PIECE`) every few milliseconds, on a
//! connection of its own, while the next batch gathers: plain inserts for the events it has not
//! stored before, upserts for the rest. An invocation's PENDING state is held
//! back for a second, so a call that settles sooner (most do) costs one row written, not an
//! insert and an update. When the channel is full the event is
//! dropped and counted, rather than making a caller wait; a crash loses at most what the writer
//! holds (the last batch interval, and PENDING states under a second old). A batch the database
//! refuses (it restarts, say) is kept and written again with backoff, up to `CAPACITY` events,
//! so a row never stays `PENDING` because its final state met an error.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use slipway_shared::db::{self, events::EventRow};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tracing::warn;
use uuid::Uuid;

const CAPACITY: usize = 10_000;
const INTERVAL: Duration = Duration::from_millis(20);
/// A batch goes to the database in statements of this many rows, one transaction. Postgres
/// spends ~10 µs of CPU on each row (four indexes), and a backend with a whole batch to store
/// holds a core for milliseconds, long enough to stall an invocation's function or proxy
/// sharing that core (`bench/invoke-latency.sh`: p99 at 8 connections 3.3× nginx's with one
/// statement per batch, ~1.6× in pieces). Between pieces the backend waits for the next one,
/// and the scheduler runs whatever it held up. Smaller pieces cost more than they save: each
/// statement has a fixed cost (planning, the outbox triggers, a round trip), and at 16 rows
/// one connection's throughput fell from ~0.78 to ~0.70 of nginx's.
const WRITE_PIECE: usize = 48;

/// Events travel unboxed: the channel stores its messages in blocks it reuses, where a box
/// would be an allocation and a free per event, two per invocation.
#[allow(clippy::large_enum_variant)]
enum Message {
    Event(EventRow),
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
        if sender.try_send(Message::Event(event)).is_err() {
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
    let mut backoff = Backoff::default();
    // The connection is with the write in flight, if any, and back here between writes.
    let mut connection = Some(WriterConnection::new(pool.clone()));
    let mut writing: Option<JoinHandle<(WriterConnection, Batch)>> = None;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The channel is drained on the tick, never awaited: a writer parked in `recv` would be
    // woken (a task scheduled, often on the other core) by each of the two events of every
    // invocation. A batch is written while the next one gathers, so the channel keeps draining
    // however long the database takes.
    loop {
        tick.tick().await;
        let mut flushes = Vec::new();
        let mut disconnected = false;
        // Past `CAPACITY` held, events wait in the channel, and beyond it they are dropped.
        while pending.len() < CAPACITY {
            match receiver.try_recv() {
                Ok(Message::Event(event)) => merge(&mut pending, event),
                Ok(Message::Flush(done)) => flushes.push(done),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if writing.as_ref().is_some_and(JoinHandle::is_finished) {
            let written = take_back(
                &mut connection,
                writing.take().expect("checked").await,
                &pool,
            );
            settle(written, &mut pending, &mut backoff);
        }
        if !flushes.is_empty() || disconnected {
            // Everything, young PENDING rows included, before the caller goes on.
            if let Some(in_flight) = writing.take() {
                let written = take_back(&mut connection, in_flight.await, &pool);
                settle(written, &mut pending, &mut backoff);
            }
            let rows = pending.drain().map(|(_, row)| row).collect();
            let (returned, batch) = connection
                .take()
                .expect("no write in flight")
                .write(rows)
                .await;
            connection = Some(returned);
            settle(Ok(batch), &mut pending, &mut backoff);
            for done in flushes {
                done.send(()).ok();
            }
            if disconnected {
                return;
            }
            continue;
        }
        if writing.is_none() && backoff.due() {
            let rows = due_rows(&mut pending, Utc::now());
            if !rows.is_empty() {
                let writer = connection.take().expect("no write in flight");
                writing = Some(tokio::spawn(writer.write(rows)));
            }
        }
    }
}

/// How long an invocation's PENDING state is held back: most calls settle well within it, and
/// their single final row is written instead of a PENDING row and its update.
const PENDING_HOLD: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Takes the rows to write now: every settled one, and the PENDING ones older than the hold.
fn due_rows(pending: &mut HashMap<Uuid, EventRow>, now: DateTime<Utc>) -> Vec<EventRow> {
    let young = |row: &EventRow| row.status == "PENDING" && now - row.created_at < PENDING_HOLD;
    pending
        .extract_if(|_, row| !young(row))
        .map(|(_, row)| row)
        .collect()
}

/// A batch and the database's answer to it.
type Batch = (Vec<EventRow>, sqlx::Result<()>);
/// A batch written by a task of its own.
type Written = Result<Batch, tokio::task::JoinError>;

/// When the next write may be tried after failures: 50 ms doubling to 5 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
    next: Option<tokio::time::Instant>,
}

impl Backoff {
    fn due(&self) -> bool {
        self.next
            .is_none_or(|next| tokio::time::Instant::now() >= next)
    }

    fn failed(&mut self) {
        self.failures += 1;
        let delay = Duration::from_millis(50 << self.failures.min(7)).min(Duration::from_secs(5));
        self.next = Some(tokio::time::Instant::now() + delay);
    }

    fn succeeded(&mut self) {
        *self = Self::default();
    }
}

/// Puts a batch the database refused back with what arrived since (newer states win), keeping
/// at most `CAPACITY` events; returns how many had to be dropped.
fn requeue(pending: &mut HashMap<Uuid, EventRow>, refused: Vec<EventRow>) -> usize {
    let mut dropped = 0;
    for row in refused {
        if pending.contains_key(&row.id) {
            // A state that arrived after the refused one is the newer.
            merge_older(pending, row);
        } else if pending.len() < CAPACITY {
            pending.insert(row.id, row);
        } else {
            dropped += 1;
        }
    }
    dropped
}

/// Like `merge`, for a state older than the one held: it only wins over nothing.
fn merge_older(pending: &mut HashMap<Uuid, EventRow>, older: EventRow) {
    if let Some(newer) = pending.get(&older.id)
        && newer.status == "PENDING"
        && older.status != "PENDING"
    {
        // The final state cannot be older than PENDING; keep it.
        pending.insert(older.id, older);
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

/// The writer's own connection, kept from one batch to the next. Taken from the pool for each
/// batch, a connection was pinged first (a round trip), and the batches went round every idle
/// connection of the pool, each backend storing one in a dozen with cold caches.
struct WriterConnection {
    pool: PgPool,
    open: Option<PgConnection>,
}

impl WriterConnection {
    fn new(pool: PgPool) -> Self {
        Self { pool, open: None }
    }

    async fn write(mut self, rows: Vec<EventRow>) -> (Self, Batch) {
        if rows.is_empty() {
            return (self, (rows, Ok(())));
        }
        // The rows no write has stored yet first: they go by plain inserts.
        let (mut rows, known): (Vec<EventRow>, Vec<EventRow>) =
            rows.into_iter().partition(never_stored);
        let new = rows.len();
        rows.extend(known);
        let result = self.store(&rows, new).await;
        if result.is_err() {
            // Gone, or left in a transaction that failed: the next batch opens a new one.
            self.open = None;
        }
        (self, (rows, result))
    }

    /// Stores `rows`, whose first `new` are thought never stored.
    async fn store(&mut self, rows: &[EventRow], new: usize) -> sqlx::Result<()> {
        let connection = match &mut self.open {
            Some(open) => open,
            None => self
                .open
                .insert(self.pool.connect_options().connect().await?),
        };
        match store_in_pieces(connection, rows, new).await {
            // One was stored after all (by a flush, or by a batch whose commit was reported
            // lost); the transaction is gone, so the whole batch goes again as upserts.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                store_in_pieces(connection, rows, 0).await
            }
            stored => stored,
        }
    }
}

/// One transaction, `WRITE_PIECE` rows a statement: the first `new` rows by plain inserts, the
/// rest by upserts.
async fn store_in_pieces(
    connection: &mut PgConnection,
    rows: &[EventRow],
    new: usize,
) -> sqlx::Result<()> {
    let (new, known) = rows.split_at(new);
    let mut transaction = connection.begin().await?;
    for piece in new.chunks(WRITE_PIECE) {
        db::events::insert_new(&mut transaction, piece).await?;
    }
    for piece in known.chunks(WRITE_PIECE) {
        db::events::upsert(&mut transaction, piece).await?;
    }
    transaction.commit().await
}

/// A final state that came within the hold of its start: its PENDING state was never due, so
/// the writer has not stored this event (unless a flush or a retried batch did; see
/// `WriterConnection::store`).
fn never_stored(row: &EventRow) -> bool {
    row.completed_at
        .is_some_and(|completed_at| completed_at - row.created_at < PENDING_HOLD)
}

/// Puts the connection back from a finished write task and says how the write went. A task
/// that panicked took its connection with it: a new one takes its place.
fn take_back(
    connection: &mut Option<WriterConnection>,
    joined: Result<(WriterConnection, Batch), tokio::task::JoinError>,
    pool: &PgPool,
) -> Written {
    let (returned, written) = match joined {
        Ok((returned, batch)) => (returned, Ok(batch)),
        Err(e) => (WriterConnection::new(pool.clone()), Err(e)),
    };
    *connection = Some(returned);
    written
}

/// Records how a batch went: a refused one is kept to be written again, with backoff.
fn settle(written: Written, pending: &mut HashMap<Uuid, EventRow>, backoff: &mut Backoff) {
    match written {
        Ok((_, Ok(()))) => backoff.succeeded(),
        Ok((rows, Err(e))) => {
            let held = rows.len();
            let dropped = requeue(pending, rows);
            backoff.failed();
            warn!(events = held, dropped, error = %e, "could not write invocation events; will retry");
        }
        // The write panicked: its rows are gone, as a crash would lose them.
        Err(e) => {
            backoff.failed();
            warn!(error = %e, "writing invocation events failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn event(id: Uuid, status: &'static str) -> EventRow {
        EventRow {
            id,
            function_id: Uuid::nil(),
            owner_id: Uuid::nil(),
            deployment_id: None,
            version: None,
            status,
            request_id: Uuid::nil(),
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

    #[test]
    fn a_pending_row_waits_for_its_final_state_until_it_is_a_second_old() {
        let (young, old, settled) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let mut pending = HashMap::new();
        merge(&mut pending, event(young, "PENDING"));
        let mut aged = event(old, "PENDING");
        aged.created_at = now - chrono::TimeDelta::milliseconds(1500);
        merge(&mut pending, aged);
        merge(&mut pending, event(settled, "SUCCESS"));
        let mut due: Vec<Uuid> = due_rows(&mut pending, now).iter().map(|r| r.id).collect();
        due.sort();
        let mut expected = vec![old, settled];
        expected.sort();
        assert_eq!(due, expected);
        assert_eq!(pending.keys().collect::<Vec<_>>(), vec![&young]);
    }

    #[test]
    fn only_a_final_state_within_the_hold_of_its_start_is_thought_never_stored() {
        let settled_after = |millis| {
            let mut row = event(Uuid::new_v4(), "SUCCESS");
            row.completed_at = Some(row.created_at + chrono::TimeDelta::milliseconds(millis));
            row
        };
        assert!(never_stored(&settled_after(3)));
        assert!(
            !never_stored(&settled_after(1000)),
            "its PENDING state was due"
        );
        assert!(!never_stored(&event(Uuid::new_v4(), "PENDING")));
    }

    #[test]
    fn a_refused_batch_is_kept_behind_newer_states_and_bounded() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut pending = HashMap::new();
        // Since the refused batch left, `a` finished.
        merge(&mut pending, event(a, "SUCCESS"));
        let dropped = requeue(&mut pending, vec![event(a, "PENDING"), event(b, "FAILURE")]);
        assert_eq!(dropped, 0);
        assert_eq!(pending[&a].status, "SUCCESS");
        assert_eq!(pending[&b].status, "FAILURE");
        // A refused final state is not hidden behind a PENDING that came after it.
        let c = Uuid::new_v4();
        merge(&mut pending, event(c, "PENDING"));
        requeue(&mut pending, vec![event(c, "SUCCESS")]);
        assert_eq!(pending[&c].status, "SUCCESS");

        let mut full: HashMap<Uuid, EventRow> = (0..CAPACITY)
            .map(|_| {
                let id = Uuid::new_v4();
                (id, event(id, "PENDING"))
            })
            .collect();
        assert_eq!(
            requeue(&mut full, vec![event(Uuid::new_v4(), "SUCCESS")]),
            1
        );
    }
}
