//! Slipway's worker: runs the durable jobs (source, build, push, cache-warm, deploy, rollback,
//! purge, runtime, verify, release, wake) from the Postgres queue. Only the worker fetches from
//! git, talks to BuildKit, writes to the registry, and drives the container runtime, each through
//! an adapter module (`git`, `buildkit`, `registry`, `runtime`).
//!
//! apalis-postgres is configured around its traps (see ARCHITECTURE.md): an explicit queue name
//! per job type, LISTEN/NOTIFY plus a 1 s poll, short heartbeats with an explicit orphan timeout,
//! a unique worker name per process, handlers spawned off the polling task, a timeout per job,
//! and at most one queue attempt per job (retries with backoff happen in the handler).

pub mod buildkit;
pub mod git;
pub mod hooks;
pub mod jobs;
pub mod registry;
pub mod runtime;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage, Pubsub};
use slipway_shared::{
    config::{RegistryConfig, RuntimeTarget, WorkerConfig},
    db,
    jobs::{
        BuildJob, CacheWarmJob, DeployJob, Job, PurgeJob, PushJob, ReleaseJob, RollbackJob,
        RuntimeJob, SourceJob, VerifyJob, WakeJob,
    },
    metrics,
    store::ArchiveStore,
};
use sqlx::PgPool;
use tracing::{info, warn};

use crate::{
    buildkit::{BuildkitAddr, BuildkitClient},
    jobs::RunJob,
    registry::Registry,
    runtime::{DockerRuntime, Runtime, SwarmRuntime},
};

/// Everything a job handler may use.
pub struct Environment {
    pub pool: PgPool,
    pub store: Arc<ArchiveStore>,
    pub docker: bollard::Docker,
    pub buildkit: BuildkitClient,
    pub registry: Registry,
    pub runtime: Runtime,
    pub config: WorkerConfig,
    buildkit_addr: BuildkitAddr,
}

impl Environment {
    pub fn new(
        pool: PgPool,
        store: Arc<ArchiveStore>,
        config: WorkerConfig,
    ) -> anyhow::Result<Self> {
        let docker = runtime::connect(&config.docker_host).context("SLIPWAY_DOCKER_HOST")?;
        let buildkit_addr = if config.buildkit == "docker" {
            BuildkitAddr::DockerEngine(config.docker_host.trim_start_matches("unix://").into())
        } else {
            config.buildkit.parse().context("SLIPWAY_BUILDKIT")?
        };
        Ok(Self {
            pool,
            store,
            buildkit: BuildkitClient::new(buildkit_addr.clone()),
            registry: Registry::from_config(&RegistryConfig {
                kind: config.registry_kind,
                host: config.registry.clone(),
                ecr_endpoint: config.ecr_endpoint.clone(),
                login: config.registry_login.clone(),
                insecure: config.insecure_registries.clone(),
            })?,
            runtime: match &config.runtime {
                RuntimeTarget::Docker => Runtime::Docker(DockerRuntime::new(docker.clone())?),
                RuntimeTarget::Swarm { manager } => Runtime::Swarm(SwarmRuntime::new(
                    runtime::connect(manager).context("SLIPWAY_SWARM_MANAGER")?,
                    DockerRuntime::new(docker.clone())?,
                    config.start_timeout,
                )),
            },
            docker,
            config,
            buildkit_addr,
        })
    }

    /// Docker's embedded BuildKit exports into the engine's image store and cannot push.
    pub fn buildkit_exports_to_engine(&self) -> bool {
        matches!(self.buildkit_addr, BuildkitAddr::DockerEngine(_))
    }
}

async fn handle<J: RunJob>(job: J, env: Data<Arc<Environment>>) -> Result<(), BoxDynError> {
    let env: Arc<Environment> = (*env).clone();
    let started = std::time::Instant::now();
    let outcome = job.run(env).await;
    let job_type = std::any::type_name::<J>()
        .rsplit("::")
        .next()
        .unwrap_or(J::NAME);
    metrics::job_finished(
        J::NAME,
        job_type,
        metrics::Outcome::of(&outcome),
        started.elapsed(),
    );
    outcome.map_err(|e| {
        // The queue records it as the job's result; the log is where an operator sees it first.
        let error = format!("{e:#}");
        tracing::error!(queue = J::NAME, %error, "job failed");
        error.into()
    })
}

/// The queue of job type `J` as the worker polls it, claiming `batch_size` jobs per fetch. The
/// worker claims one at a time (`register`); the queue benchmark compares larger batches on the
/// very same configuration.
pub fn queue_backend<J: Job>(
    pool: &PgPool,
    heartbeat: Duration,
    missed_heartbeats: usize,
    batch_size: usize,
) -> PollWith<PostgresStorage<J>, Strategy> {
    let config = Config::default()
        .queue(J::NAME)
        .batch_size(batch_size)
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(missed_heartbeats);
    let storage = PostgresStorage::<J>::new(pool).with_config(config);
    // NOTIFY wakes the worker at once; the interval catches jobs whose run_at was in the future
    // when they were inserted (no NOTIFY for those) and a dropped listener.
    let strategy = Strategy::new()
        .stream(Pubsub::new(pool.clone(), J::NAME.to_owned()))
        .interval(Duration::from_secs(1));
    PollWith::new(storage, strategy)
}

fn storage<J: RunJob>(
    env: &Environment,
    batch_size: usize,
) -> PollWith<PostgresStorage<J>, Strategy> {
    queue_backend::<J>(
        &env.pool,
        env.config.heartbeat,
        env.config.missed_heartbeats,
        batch_size,
    )
}

fn register<J: RunJob>(monitor: Monitor, env: &Arc<Environment>) -> Monitor {
    register_batched::<J>(monitor, env, 1)
}

fn register_batched<J: RunJob>(
    monitor: Monitor,
    env: &Arc<Environment>,
    batch_size: usize,
) -> Monitor {
    let env = Arc::clone(env);
    monitor.register(move |_restarts| {
        WorkerBuilder::new(format!("{}/{}", env.config.name, J::NAME))
            .backend(storage::<J>(&env, batch_size))
            .data(Arc::clone(&env))
            .concurrency(env.config.concurrency)
            .timeout(env.config.job_timeout)
            .parallelize(tokio::spawn)
            .build(handle::<J>)
    })
}

/// Runs the one queue of `J` until `shutdown` resolves, its worker built as `run` builds each
/// of its own but claiming `batch_size` jobs per fetch: what the queue benchmark measures. No
/// restarts: a benchmark should see a failure, not ride over it.
pub async fn run_queue<J: RunJob>(
    env: Arc<Environment>,
    batch_size: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    register_batched::<J>(Monitor::new(), &env, batch_size)
        .run_with_signal(async move {
            shutdown.await;
            Ok(())
        })
        .await
        .with_context(|| format!("running the {} queue", J::NAME))
}

/// Runs every job queue until `shutdown` resolves.
/// Stops the engine watcher with the worker, however `run` ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn run(
    env: Arc<Environment>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    info!(name = %env.config.name, "worker starting");
    // A queue's worker ends when its backend cannot poll (Postgres restarting, a connection
    // reset). Without a restart it would stay dead while the process looks alive, and its jobs
    // would wait for ever. Restarted, it polls again once Postgres answers: for as long as
    // Postgres is unavailable (each failed poll waits out the pool's acquire timeout, so this
    // does not spin), and a few times for anything else.
    let mut monitor = Monitor::new().should_restart(|worker, error| {
        let unavailable = match error {
            WorkerError::BackendError(cause) => db::unavailable_in(cause.as_ref()),
            _ => false,
        };
        let restart = unavailable || worker.restarts() < 3;
        warn!(
            worker = worker.name(),
            restarts = worker.restarts(),
            %error,
            restart,
            "a queue worker stopped on an error"
        );
        restart
    });
    monitor = register::<SourceJob>(monitor, &env);
    monitor = register::<BuildJob>(monitor, &env);
    monitor = register::<PushJob>(monitor, &env);
    monitor = register::<CacheWarmJob>(monitor, &env);
    monitor = register::<DeployJob>(monitor, &env);
    monitor = register::<RollbackJob>(monitor, &env);
    monitor = register::<PurgeJob>(monitor, &env);
    monitor = register::<RuntimeJob>(monitor, &env);
    monitor = register::<VerifyJob>(monitor, &env);
    monitor = register::<ReleaseJob>(monitor, &env);
    monitor = register::<WakeJob>(monitor, &env);
    let watcher = tokio::spawn(runtime::lifecycle::watch_instances(Arc::clone(&env)));
    let _stop_watching = AbortOnDrop(watcher);
    let grace = env.config.shutdown_grace;
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let monitor = monitor.shutdown_timeout(grace).run_with_signal(async move {
        shutdown.await;
        stopping.send(()).ok();
        Ok(())
    });
    // apalis can wait forever for a job that is still running when its worker stops; past the
    // grace period the job is left to a peer, as if this worker had died.
    let overdue = async move {
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = monitor => result.context("running the worker"),
        () = overdue => {
            warn!(?grace, "in-flight jobs did not finish within the shutdown grace; a peer will re-run them");
            Ok(())
        }
    }
}
