//! Benchmark (not a test): the job queue itself, with no-op jobs, on the worker's own queue
//! configuration (`slipway_worker::run_queue`: LISTEN/NOTIFY plus the 1 s poll, heartbeats,
//! concurrency 4, handlers spawned, metrics) and the real `apalis.jobs` with its triggers.
//! - Throughput at fetch batch sizes 1, 10 and 100: `SLIPWAY_BENCH_JOBS` (20,000) jobs enqueued
//!   by one client in transactions of that many (`Job::enqueue_all`), jobs/s from the first
//!   enqueue until the last job row is `Done`. In the same run on the same database, pgbench
//!   does the same with plain SQL: one client inserts the batches, four claim with
//!   `FOR UPDATE SKIP LOCKED` and mark them done, on a copy of `apalis.jobs` (its columns and
//!   indexes, not its triggers); Slipway's rate is printed as a fraction of it.
//! - Latency at a paced `SLIPWAY_BENCH_RATE` (1,000) jobs/s for 10 s, one job per transaction
//!   (`Job::enqueue`, as the api enqueues) and batch 1 (as the worker fetches): enqueue →
//!   commit, → handler start and → ack.
//!
//! ```sh
//! bench/queue.sh                            # release build, SLIPWAY_BENCH_JOBS=20000
//! SLIPWAY_BENCH_JOBS=5000 SLIPWAY_BENCH_RATE=50 bench/queue.sh
//! ```

use std::{
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slipway_shared::{config::unique_worker_name, jobs::Job};
use slipway_tests::{
    StackOptions, StoreKind, TestStack,
    bench::{Figures, print_table},
};
use slipway_worker::{Environment, jobs::RunJob};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::{
    process::{Child, Command},
    sync::{Semaphore, oneshot},
    task::{JoinHandle, JoinSet},
};

const BATCHES: [usize; 3] = [1, 10, 100];
/// `SLIPWAY_WORKER_CONCURRENCY`'s default: jobs one worker process runs at once per queue.
const CONCURRENCY: usize = 4;
const PACED_FOR: Duration = Duration::from_secs(10);
/// Enqueues at once in the paced run, within the stack pool's 60 connections.
const ENQUEUERS: usize = 40;
const POLL: Duration = Duration::from_millis(20);
const PGBENCH: &str = "/usr/bin/pgbench";

const SLIPWAY_ACKED: &str =
    "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'";
const BASELINE_ACKED: &str =
    "SELECT count(*) FROM bench_queue.jobs WHERE job_type = $1 AND status = 'Done'";

/// One transaction of `:n` jobs, as `enqueue_all` writes them (apalis leaves `metadata` empty).
const ENQUEUE_SQL: &str = r#"BEGIN;
INSERT INTO bench_queue.jobs (job, id, job_type, status, attempts, max_attempts, run_at,
                              priority, idempotency_key)
SELECT convert_to(json_build_object('seq', g, 'enqueued_us',
                                    (extract(epoch FROM clock_timestamp()) * 1e6)::bigint)::text,
                  'UTF8'),
       gen_random_uuid()::text, 'slipway::bench_noop', 'Pending', 0, 1, now(), 0,
       gen_random_uuid()::text
FROM generate_series(1, :n) AS g;
COMMIT;
"#;

/// apalis' claim (`apalis.get_jobs`), then the ack of what it claimed, by id and lock holder as
/// apalis' `handle_result` does, but in one statement per batch. An empty queue is polled again
/// after 1 ms rather than waiting for a NOTIFY.
const CLAIM_SQL: &str = r#"WITH claimed AS (
    UPDATE bench_queue.jobs AS j
    SET status = 'Running', lock_by = 'pgbench-' || :client_id, lock_at = now()
    FROM (
        SELECT id FROM bench_queue.jobs
        WHERE (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))
          AND run_at < now()
          AND job_type = 'slipway::bench_noop'
        ORDER BY priority DESC, run_at ASC
        LIMIT :n
        FOR UPDATE SKIP LOCKED
    ) AS next
    WHERE j.id = next.id
    RETURNING j.id, j.job
)
SELECT count(*) AS claimed, coalesce(string_agg(quote_literal(id), ','), 'NULL') AS ids
FROM claimed
\gset
\if :claimed > 0
UPDATE bench_queue.jobs
SET status = 'Done', attempts = attempts + 1, last_result = '{"Ok": null}', done_at = now()
WHERE id IN (:ids) AND lock_by = 'pgbench-' || :client_id;
\else
\sleep 1 ms
\endif
"#;

/// Enqueue → handler start of every job run since the last `take_started`.
static STARTED: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

fn take_started() -> Vec<Duration> {
    std::mem::take(&mut *STARTED.lock().unwrap())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_micros() as i64
}

fn since_us(from_us: i64, to_us: i64) -> Duration {
    Duration::from_micros((to_us - from_us).max(0) as u64)
}

#[derive(Clone, Serialize, Deserialize)]
struct NoopJob {
    seq: u64,
    /// Wall clock (µs) as the enqueue began: the ack's `done_at` is Postgres' clock, on the same
    /// host.
    enqueued_us: i64,
}

impl NoopJob {
    fn new() -> Self {
        Self {
            seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
            enqueued_us: now_us(),
        }
    }
}

impl Job for NoopJob {
    const NAME: &'static str = "slipway::bench_noop";
    fn dedup_key(&self) -> String {
        format!("bench-noop:{}", self.seq)
    }
}

impl RunJob for NoopJob {
    async fn run(self, _env: Arc<Environment>) -> anyhow::Result<()> {
        let waited = since_us(self.enqueued_us, now_us());
        STARTED.lock().unwrap().push(waited);
        Ok(())
    }
}

fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    std::env::var(name).map_or(Ok(default), |raw| {
        raw.parse().with_context(|| format!("{name}={raw:?}"))
    })
}

/// One worker process's queue, as `slipway_worker::run` runs it.
struct Worker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Worker {
    async fn start(stack: &TestStack, pool: &PgPool, batch: usize) -> anyhow::Result<Self> {
        let mut config = stack.worker_config.clone();
        config.name = unique_worker_name();
        // WorkerConfig's defaults (shared/src/config.rs), not the test stack's quicker ones.
        config.concurrency = CONCURRENCY;
        config.heartbeat = Duration::from_secs(2);
        config.missed_heartbeats = 5;
        config.job_timeout = Duration::from_secs(30 * 60);
        let env = Arc::new(Environment::new(
            pool.clone(),
            Arc::clone(&stack.store),
            config,
        )?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(slipway_worker::run_queue::<NoopJob>(
            env,
            batch,
            async move {
                stopped.await.ok();
            },
        ));
        let worker = Self { stop, task };
        // Connections opened, LISTEN in place, code warm: none of that is the queue's rate.
        let warm_up = 100_usize.max(2 * batch).div_ceil(batch) * batch;
        tokio::try_join!(
            enqueue(&stack.pool, warm_up, batch),
            wait_acked(&stack.pool, SLIPWAY_ACKED, warm_up, || worker.alive()),
        )?;
        clean_slipway(&stack.pool).await?;
        Ok(worker)
    }

    fn alive(&self) -> anyhow::Result<()> {
        ensure!(!self.task.is_finished(), "the worker stopped");
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.send(()).ok();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("the worker did not stop")?
            .context("the worker panicked")?
    }
}

/// `jobs` jobs, one transaction of `batch` after another on one client; when the last committed.
async fn enqueue(pool: &PgPool, jobs: usize, batch: usize) -> anyhow::Result<Instant> {
    for _ in 0..jobs / batch {
        let batch: Vec<NoopJob> = (0..batch).map(|_| NoopJob::new()).collect();
        let mut tx = pool.begin().await?;
        NoopJob::enqueue_all(&batch, &mut tx).await?;
        tx.commit().await?;
    }
    Ok(Instant::now())
}

/// When `count_sql` first counted `expected` acknowledged jobs (the instant its query was sent).
/// Both sides are timed by this same poll, so its period costs both the same.
async fn wait_acked(
    pool: &PgPool,
    count_sql: &'static str,
    expected: usize,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let polled = Instant::now();
        let acked: i64 = sqlx::query_scalar(count_sql)
            .bind(NoopJob::NAME)
            .fetch_one(pool)
            .await?;
        if acked as usize >= expected {
            return Ok(polled);
        }
        alive()?;
        ensure!(
            polled < deadline,
            "only {acked} of {expected} jobs acknowledged after 10 minutes"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Each run starts from a table holding no bench rows and no dead tuples of earlier runs.
async fn clean_slipway(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM apalis.jobs WHERE job_type = $1")
        .bind(NoopJob::NAME)
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE apalis.jobs")
        .execute(pool)
        .await?;
    take_started();
    Ok(())
}

/// Jobs per second acknowledged (first enqueue → last ack), and enqueued (→ last commit), which
/// tells whether the enqueuing client was what held the first back.
struct Rate {
    acked: f64,
    enqueued: f64,
}

async fn slipway_rate(
    stack: &TestStack,
    pool: &PgPool,
    jobs: usize,
    batch: usize,
) -> anyhow::Result<Rate> {
    let worker = Worker::start(stack, pool, batch).await?;
    let started = Instant::now();
    let (enqueued, acked) = tokio::try_join!(
        enqueue(&stack.pool, jobs, batch),
        wait_acked(&stack.pool, SLIPWAY_ACKED, jobs, || worker.alive()),
    )?;
    worker.stop().await?;
    clean_slipway(&stack.pool).await?;
    Ok(Rate {
        acked: jobs as f64 / (acked - started).as_secs_f64(),
        enqueued: jobs as f64 / (enqueued - started).as_secs_f64(),
    })
}

/// The plain-SQL queue pgbench drives, in a schema of its own.
struct Baseline {
    scripts: tempfile::TempDir,
    url: String,
}

impl Baseline {
    async fn create(stack: &TestStack) -> anyhow::Result<Self> {
        sqlx::query("CREATE SCHEMA bench_queue")
            .execute(&stack.pool)
            .await?;
        sqlx::query("CREATE TABLE bench_queue.jobs (LIKE apalis.jobs INCLUDING ALL)")
            .execute(&stack.pool)
            .await?;
        let scripts = tempfile::tempdir()?;
        std::fs::write(scripts.path().join("enqueue.sql"), ENQUEUE_SQL)?;
        std::fs::write(scripts.path().join("claim.sql"), CLAIM_SQL)?;
        Ok(Self {
            scripts,
            url: stack.db.url.clone(),
        })
    }

    fn pgbench(&self, script: &str, clients: usize, batch: usize, run: [&str; 2]) -> Command {
        let mut command = Command::new(PGBENCH);
        command
            .args(["-n", "-j", "1", "-c", &clients.to_string()])
            .args(["-D", &format!("n={batch}"), "-f"])
            .arg(self.scripts.path().join(script))
            .args(run)
            .arg(&self.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn rate(&self, pool: &PgPool, jobs: usize, batch: usize) -> anyhow::Result<Rate> {
        let mut claimers = self
            .pgbench("claim.sql", CONCURRENCY, batch, ["-T", "3600"])
            .stdout(Stdio::null())
            .spawn()
            .context(PGBENCH)?;
        // Connected and polling before the first insert, as the worker is.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let transactions = (jobs / batch).to_string();
        let mut inserter = self
            .pgbench("enqueue.sql", 1, batch, ["-t", &transactions])
            .spawn()
            .context(PGBENCH)?;
        let acked = wait_acked(pool, BASELINE_ACKED, jobs, || {
            if let Some(status) = claimers.try_wait()? {
                bail!("the claiming pgbench exited early ({status})");
            }
            match inserter.try_wait()? {
                Some(status) if !status.success() => {
                    bail!("the inserting pgbench failed ({status})")
                }
                _ => Ok(()),
            }
        })
        .await;
        claimers.start_kill().ok();
        let acked = match acked {
            Ok(acked) => acked,
            Err(e) => {
                inserter.start_kill().ok();
                let stderr = stderr_of(claimers).await + &stderr_of(inserter).await;
                return Err(e.context(format!("pgbench said: {stderr}")));
            }
        };
        claimers.wait().await?;
        let inserted = inserter.wait_with_output().await?;
        ensure!(
            inserted.status.success(),
            "the inserting pgbench failed: {}",
            String::from_utf8_lossy(&inserted.stderr)
        );
        let report = String::from_utf8_lossy(&inserted.stdout);
        // Its transactions per second, not counting the connection's set-up.
        let tps: f64 = report
            .lines()
            .find_map(|line| line.strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .with_context(|| format!("no \"tps = \" in pgbench's report:\n{report}"))?
            .parse()?;
        sqlx::query("DELETE FROM bench_queue.jobs")
            .execute(pool)
            .await?;
        sqlx::query("VACUUM ANALYZE bench_queue.jobs")
            .execute(pool)
            .await?;
        Ok(Rate {
            acked: jobs as f64 / (acked - started).as_secs_f64(),
            enqueued: tps * batch as f64,
        })
    }

    async fn drop_schema(self, pool: &PgPool) -> anyhow::Result<()> {
        sqlx::query("DROP SCHEMA bench_queue CASCADE")
            .execute(pool)
            .await?;
        Ok(())
    }
}

async fn stderr_of(child: Child) -> String {
    match child.wait_with_output().await {
        Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
        Err(e) => e.to_string(),
    }
}

struct Paced {
    jobs: usize,
    /// How long issuing the enqueues took (`PACED_FOR` unless the bench itself fell behind).
    paced_over: Duration,
    rate: u32,
    /// Jobs per second from the first enqueue to the last ack: below `rate`, the worker
    /// fell behind and the latencies are mostly the backlog.
    acked_rate: f64,
    committed: Figures,
    started: Figures,
    acked: Figures,
}

/// Enqueue → commit, → handler start and → ack of jobs enqueued one per transaction at
/// `rate` jobs/s, each on schedule whether or not the previous enqueue has returned.
async fn paced_latency(stack: &TestStack, pool: &PgPool, rate: u32) -> anyhow::Result<Paced> {
    let worker = Worker::start(stack, pool, 1).await?;
    let count = (PACED_FOR.as_secs_f64() * f64::from(rate)) as usize;
    let interval = Duration::from_secs(1) / rate;
    // Past this many enqueues in flight the pacing falls behind (seen in `paced_over`) rather
    // than every later enqueue timing out on the pool.
    let clients = Arc::new(Semaphore::new(ENQUEUERS));
    let first = tokio::time::Instant::now();
    let mut enqueues = JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until(first + interval * i as u32).await;
        let client = Arc::clone(&clients).acquire_owned().await?;
        let pool = stack.pool.clone();
        enqueues.spawn(async move {
            let _client = client;
            let job = NoopJob::new();
            let mut tx = pool.begin().await?;
            job.enqueue(&mut tx).await?;
            tx.commit().await?;
            anyhow::Ok(since_us(job.enqueued_us, now_us()))
        });
    }
    let paced_over = first.elapsed();
    let mut committed = Vec::with_capacity(count);
    while let Some(enqueued) = enqueues.join_next().await {
        committed.push(enqueued??);
    }
    let last_ack = wait_acked(&stack.pool, SLIPWAY_ACKED, count, || worker.alive()).await?;
    worker.stop().await?;

    let started = take_started();
    ensure!(
        started.len() == count,
        "{} handler starts for {count} jobs",
        started.len()
    );
    let rows: Vec<(Vec<u8>, DateTime<Utc>)> =
        sqlx::query_as("SELECT job, done_at FROM apalis.jobs WHERE job_type = $1")
            .bind(NoopJob::NAME)
            .fetch_all(&stack.pool)
            .await?;
    let acked = rows
        .iter()
        .map(|(job, done_at)| {
            let job: NoopJob = serde_json::from_slice(job)?;
            Ok(since_us(job.enqueued_us, done_at.timestamp_micros()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    clean_slipway(&stack.pool).await?;
    Ok(Paced {
        jobs: count,
        paced_over,
        rate,
        acked_rate: count as f64 / (last_ack - first.into_std()).as_secs_f64(),
        committed: Figures::of(committed),
        started: Figures::of(started),
        acked: Figures::of(acked),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs = env_number("SLIPWAY_BENCH_JOBS", 20_000)?;
    let rate: u32 = env_number("SLIPWAY_BENCH_RATE", 1_000)?.try_into()?;
    ensure!(rate > 0, "SLIPWAY_BENCH_RATE must be at least 1");
    ensure!(
        jobs >= 100 && jobs % 100 == 0,
        "SLIPWAY_BENCH_JOBS must be a multiple of 100"
    );
    // No stack worker: the queue's worker is the bench's own, one at a time.
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    // The worker's own pool, as db::connect opens it by default (SLIPWAY_DB_MAX_CONNECTIONS);
    // the stack's pool stands for the api's, which enqueues.
    let worker_pool = PgPoolOptions::new()
        .max_connections(50)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&stack.db.url)
        .await?;
    let baseline = Baseline::create(&stack).await?;
    let bench_started = Instant::now();

    let mut rows = Vec::new();
    for batch in BATCHES {
        let slipway = slipway_rate(&stack, &worker_pool, jobs, batch).await?;
        let pgbench = baseline.rate(&stack.pool, jobs, batch).await?;
        rows.push((batch, slipway, pgbench));
    }
    let paced = paced_latency(&stack, &worker_pool, rate).await?;

    baseline.drop_schema(&stack.pool).await?;
    worker_pool.close().await;
    stack.shutdown().await?;

    if cfg!(debug_assertions) {
        println!("DEBUG BUILD: the published figures come from SLIPWAY_BENCH_PROFILE=release");
    }
    println!(
        "{jobs} no-op jobs per run, jobs/s from the first enqueue to the last ack; one worker \
         (concurrency {CONCURRENCY}) against pgbench (1 inserting + {CONCURRENCY} claiming \
         clients); enqueued/s: the enqueuing client alone"
    );
    println!(
        "{:<6} {:>15} {:>15} {:>16} {:>19} {:>19}",
        "batch",
        "Slipway jobs/s",
        "pgbench jobs/s",
        "Slipway÷pgbench",
        "Slipway enqueued/s",
        "pgbench enqueued/s"
    );
    for (batch, slipway, pgbench) in rows {
        println!(
            "{batch:<6} {:>15.0} {:>15.0} {:>16.2} {:>19.0} {:>19.0}",
            slipway.acked,
            pgbench.acked,
            slipway.acked / pgbench.acked,
            slipway.enqueued,
            pgbench.enqueued
        );
    }
    println!();
    println!(
        "{} jobs enqueued one per transaction at {} jobs/s (over {:.1?}), fetch batch 1; \
         acknowledged at {:.0} jobs/s{}",
        paced.jobs,
        paced.rate,
        paced.paced_over,
        paced.acked_rate,
        if paced.acked_rate < 0.95 * f64::from(paced.rate) {
            ": NOT SUSTAINED, the latencies below are mostly the backlog"
        } else {
            ""
        }
    );
    print_table(
        "from enqueue to",
        "p50÷commit",
        &[
            ("commit", paced.committed),
            ("handler start", paced.started),
            ("ack", paced.acked),
        ],
    );
    println!("benchmark took {:.0?}", bench_started.elapsed());
    Ok(())
}
