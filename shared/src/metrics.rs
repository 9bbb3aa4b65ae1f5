//! Prometheus metrics: every name Slipway records, in one place, and the recorder a process
//! installs once. The api renders its process's registry at `GET /metrics` (with the queue's
//! figures read from Postgres at scrape time); a worker or scheduler run as its own process
//! serves its registry on `SLIPWAY_METRICS_ADDR`.
//!
//! Labels never carry a function, deployment or user id: a series per tenant would grow without
//! bound, and the figures are the platform's, not a tenant's.

use std::{
    net::SocketAddr,
    sync::OnceLock,
    time::{Duration, Instant},
};

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

const JOBS: &str = "slipway_jobs_total";
const JOB_DURATION: &str = "slipway_job_duration_seconds";
const QUEUE_JOBS: &str = "slipway_queue_jobs";
const QUEUE_OLDEST_WAITING: &str = "slipway_queue_oldest_waiting_seconds";
const DEPLOY_STAGE_DURATION: &str = "slipway_deploy_stage_duration_seconds";
const INVOCATIONS: &str = "slipway_invocations_total";
const ROUTE_LOOKUPS: &str = "slipway_invocation_route_lookups_total";
const INVOCATION_DURATION: &str = "slipway_invocation_duration_seconds";
const WEBHOOK_DELIVERIES: &str = "slipway_webhook_deliveries_total";
const SWEEP_RUNS: &str = "slipway_sweep_runs_total";
const SWEEP_PICKED: &str = "slipway_sweep_picked_total";
const BUILD_SLOTS_IN_USE: &str = "slipway_build_slots_in_use";
const BUILD_SLOT_WAITS: &str = "slipway_build_slot_waits_total";
const EVENTS_STREAMED: &str = "slipway_events_streamed_total";

/// From a 5 ms answer to a 10 minute build: one bucket set serves every duration here.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn builder() -> anyhow::Result<PrometheusBuilder> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?)
}

/// Installs this process's recorder (once; later calls return the same handle, so a test
/// process that starts many stacks shares one registry).
pub fn install() -> anyhow::Result<PrometheusHandle> {
    register(builder()?.build_recorder())
}

fn register(recorder: PrometheusRecorder) -> anyhow::Result<PrometheusHandle> {
    // Two stacks starting at once (tests) must not race between installing the recorder and
    // recording its handle: the loser would see neither hers nor the winner's.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder not Slipway's is already installed"))?;
    describe();
    HANDLE.set(handle.clone()).ok();
    Ok(handle)
}

/// `SLIPWAY_METRICS_ADDR` (e.g. `0.0.0.0:9464`), for a worker or scheduler run as its own
/// process; unset, its figures are recorded but not served.
pub fn serve_if_configured() -> anyhow::Result<()> {
    let Ok(raw) = std::env::var("SLIPWAY_METRICS_ADDR") else {
        return Ok(());
    };
    let addr = raw
        .parse()
        .map_err(|e| anyhow::anyhow!("SLIPWAY_METRICS_ADDR={raw:?} is not ADDRESS:PORT: {e}"))?;
    serve(addr)
}

/// For a worker or scheduler running as its own process: installs the recorder and serves it at
/// `http://ADDR/metrics` (the api serves its own registry at `/metrics`).
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let (recorder, exporter) = builder()?.with_http_listener(addr).build()?;
    register(recorder)?;
    tokio::spawn(async move {
        if let Err(error) = exporter.await {
            tracing::error!(%addr, ?error, "the metrics listener stopped");
        }
    });
    tracing::info!(%addr, "serving metrics");
    Ok(())
}

/// The text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry as Prometheus text.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

fn describe() {
    describe_counter!(JOBS, "Jobs run to an end, by queue, job type and outcome.");
    describe_histogram!(JOB_DURATION, Unit::Seconds, "How long a job's run took.");
    describe_gauge!(
        QUEUE_JOBS,
        "Jobs in each queue, by state, read at scrape time."
    );
    describe_gauge!(
        QUEUE_OLDEST_WAITING,
        Unit::Seconds,
        "Age of the oldest job waiting to run in each queue (0 when none waits)."
    );
    describe_histogram!(
        DEPLOY_STAGE_DURATION,
        Unit::Seconds,
        "Each stage of a deployment: queue_wait, fetch, build, push, cache_warm, start, \
         initializer, and total (accepted to active)."
    );
    describe_counter!(INVOCATIONS, "Invocations answered, by HTTP status.");
    describe_counter!(
        ROUTE_LOOKUPS,
        "Where an invocation found its function's route: `cache` (no database round trip) or `database`."
    );
    describe_histogram!(
        INVOCATION_DURATION,
        Unit::Seconds,
        "Time to an invocation's answer head, proxy included."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Git webhook deliveries, by provider and outcome (the answer's status class)."
    );
    describe_counter!(SWEEP_RUNS, "Sweeps fired, by sweep.");
    describe_counter!(
        SWEEP_PICKED,
        "What the sweeps picked (functions, deployments, rows)."
    );
    describe_gauge!(
        BUILD_SLOTS_IN_USE,
        "Builds holding an owner's build slot, read at scrape time."
    );
    describe_counter!(
        BUILD_SLOT_WAITS,
        "Builds put back in the queue to wait for a slot."
    );
    describe_counter!(
        EVENTS_STREAMED,
        "Events the broker confirmed (SLIPWAY_EVENTS_AMQP_URL)."
    );
}

/// How a job, a stage or a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
}

impl Outcome {
    pub const fn of<T, E>(result: &Result<T, E>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(_) => Self::Failed,
        }
    }

    const fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

/// A job's run ended.
pub fn job_finished(queue: &'static str, job: &'static str, outcome: Outcome, took: Duration) {
    let labels = [("queue", queue), ("job", job), ("outcome", outcome.label())];
    counter!(JOBS, &labels).increment(1);
    histogram!(JOB_DURATION, &labels).record(took.as_secs_f64());
}

/// The stages of a deployment, each a histogram series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Accepted until its first step started (the source fetch, or the build once it has a slot).
    QueueWait,
    Fetch,
    Build,
    Push,
    CacheWarm,
    /// The instance started until it answered on its port.
    Start,
    Initializer,
    /// Accepted until active.
    Total,
}

impl Stage {
    const fn label(self) -> &'static str {
        match self {
            Self::QueueWait => "queue_wait",
            Self::Fetch => "fetch",
            Self::Build => "build",
            Self::Push => "push",
            Self::CacheWarm => "cache_warm",
            Self::Start => "start",
            Self::Initializer => "initializer",
            Self::Total => "total",
        }
    }
}

pub fn deploy_stage(stage: Stage, outcome: Outcome, took: Duration) {
    histogram!(
        DEPLOY_STAGE_DURATION,
        "stage" => stage.label(),
        "outcome" => outcome.label()
    )
    .record(took.as_secs_f64());
}

/// Times `work` as `stage`, recording whether it succeeded.
pub async fn timed<T, E>(stage: Stage, work: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let started = Instant::now();
    let result = work.await;
    deploy_stage(stage, Outcome::of(&result), started.elapsed());
    result
}

/// `since` (a row's timestamp) until now; zero if the clocks disagree.
pub fn elapsed_since(since: chrono::DateTime<chrono::Utc>) -> Duration {
    (chrono::Utc::now() - since).to_std().unwrap_or_default()
}

/// The invocation path's handles, made once the recorder is installed: looking a metric up by
/// name and labels (and formatting the status) on every call would be the proxy's work too.
struct InvocationHandles {
    /// Index: status − 100.
    by_status: Box<[OnceLock<Counter>]>,
    duration: Histogram,
    from_cache: Counter,
    from_database: Counter,
}

static INVOCATION_HANDLES: OnceLock<InvocationHandles> = OnceLock::new();

fn invocation_handles() -> Option<&'static InvocationHandles> {
    // Handles made before the recorder exists would record nowhere, for good.
    HANDLE.get()?;
    Some(INVOCATION_HANDLES.get_or_init(|| InvocationHandles {
        by_status: (100..600).map(|_| OnceLock::new()).collect(),
        duration: histogram!(INVOCATION_DURATION),
        from_cache: counter!(ROUTE_LOOKUPS, "source" => "cache"),
        from_database: counter!(ROUTE_LOOKUPS, "source" => "database"),
    }))
}

pub fn invocation_answered(status: u16, took: Duration) {
    let Some(handles) = invocation_handles() else {
        counter!(INVOCATIONS, "status" => status.to_string()).increment(1);
        histogram!(INVOCATION_DURATION).record(took.as_secs_f64());
        return;
    };
    match handles.by_status.get(usize::from(status).wrapping_sub(100)) {
        Some(counter) => counter
            .get_or_init(|| counter!(INVOCATIONS, "status" => status.to_string()))
            .increment(1),
        None => counter!(INVOCATIONS, "status" => status.to_string()).increment(1),
    }
    handles.duration.record(took.as_secs_f64());
}

pub fn events_streamed(count: usize) {
    counter!(EVENTS_STREAMED).increment(count as u64);
}

pub fn route_looked_up(cached: bool) {
    match invocation_handles() {
        Some(handles) if cached => handles.from_cache.increment(1),
        Some(handles) => handles.from_database.increment(1),
        None => {
            let source = if cached { "cache" } else { "database" };
            counter!(ROUTE_LOOKUPS, "source" => source).increment(1);
        }
    }
}

pub fn webhook_delivery(provider: &'static str, status: u16) {
    let outcome = match status {
        200..=299 => "accepted",
        400..=499 => "refused",
        _ => "error",
    };
    counter!(WEBHOOK_DELIVERIES, "provider" => provider, "outcome" => outcome).increment(1);
}

/// `picked`: what the sweep's result counted (functions, deployments, pruned rows).
pub fn sweep_ran(sweep: &'static str, picked: u64) {
    counter!(SWEEP_RUNS, "sweep" => sweep).increment(1);
    counter!(SWEEP_PICKED, "sweep" => sweep).increment(picked);
}

pub fn build_slot_wait() {
    counter!(BUILD_SLOT_WAITS).increment(1);
}

pub fn build_slots_in_use(count: i64) {
    gauge!(BUILD_SLOTS_IN_USE).set(count as f64);
}

/// The queue's figures, read from Postgres just before a scrape renders.
pub fn queue_depth(queue: &str, state: &str, jobs: i64) {
    gauge!(QUEUE_JOBS, "queue" => queue.to_owned(), "state" => state.to_owned()).set(jobs as f64);
}

pub fn queue_oldest_waiting(queue: &str, age: Duration) {
    gauge!(QUEUE_OLDEST_WAITING, "queue" => queue.to_owned()).set(age.as_secs_f64());
}
