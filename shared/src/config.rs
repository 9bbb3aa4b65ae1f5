//! Typed configuration from the environment, one struct per concern, validated at start-up.
//! Secrets are `SecretString` so they cannot be logged by accident.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use anyhow::{Context, bail};
use secrecy::SecretString;

use crate::{
    archive::ArchiveLimits,
    dockerfile::BaseImageAllowList,
    domain::{FunctionLimits, LimitPolicy},
    registry::RegistryLogin,
    secrets::SecretsKey,
};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn required(name: &str) -> anyhow::Result<String> {
    var(name).with_context(|| format!("{name} must be set"))
}

/// A secret setting: `NAME`, or what the file named by `NAME_FILE` holds. Swarm and Docker
/// secrets arrive as files under /run/secrets, and a secret kept in a service's environment
/// shows in `docker inspect` to whoever can reach the engine.
fn secret(name: &str) -> anyhow::Result<Option<String>> {
    secret_from(name, var(name), var(&format!("{name}_FILE")))
}

fn secret_from(
    name: &str,
    value: Option<String>,
    file: Option<String>,
) -> anyhow::Result<Option<String>> {
    let file_setting = format!("{name}_FILE");
    match (value, file) {
        (Some(_), Some(_)) => bail!("set {name} or {file_setting}, not both"),
        (Some(value), None) => Ok(Some(value)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(&path)
                .with_context(|| format!("{file_setting}={path} cannot be read"))?;
            // Files written by `echo` or an editor end in a newline that is not the secret's.
            let value = raw.trim_end_matches(['\r', '\n']);
            if value.trim().is_empty() {
                bail!("{file_setting}={path} is empty");
            }
            Ok(Some(value.to_owned()))
        }
    }
}

fn required_secret(name: &str) -> anyhow::Result<String> {
    secret(name)?.with_context(|| format!("{name} (or {name}_FILE) must be set"))
}

fn parsed<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={raw:?} is invalid: {e}")),
    }
}

fn duration(name: &str, default: Duration) -> anyhow::Result<Duration> {
    match var(name) {
        None => Ok(default),
        Some(raw) => humantime::parse_duration(&raw)
            .with_context(|| format!("{name}={raw:?} is not a duration such as 30s, 15m, 7d")),
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            url: SecretString::from(required_secret("DATABASE_URL")?),
            // A worker holds one LISTEN connection per job queue (ten) while it runs, on top of
            // what its jobs, the api and the scheduler use when they share a process.
            max_connections: parsed("SLIPWAY_DB_MAX_CONNECTIONS", 50)?,
        })
    }
}

/// Where function archives live: `file:///abs/dir` (embedded default) or `s3://bucket`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    /// For S3-compatible servers other than AWS.
    pub s3_endpoint: Option<String>,
}

impl StoreConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            url: required("SLIPWAY_ARCHIVE_STORE")?,
            s3_endpoint: var("SLIPWAY_S3_ENDPOINT"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub bind: SocketAddr,
    pub archive_limits: ArchiveLimits,
    /// How long an invocation may take end to end before the proxy answers 504.
    pub invoke_timeout: Duration,
    /// How long a deleted function waits before its purge, during which it can be restored.
    pub deletion_grace: Duration,
    /// Record every invocation as an event (seed 003); off only to measure what it costs.
    pub record_events: bool,
    /// Set when images live in ECR: verification then asks ECR's API instead of the
    /// distribution API at the image's host.
    pub ecr: Option<RegistryConfig>,
    /// Credentials for OCI registries that ask for them, when verifying.
    pub registry_login: Option<RegistryLogin>,
    /// `SLIPWAY_INSECURE_REGISTRIES`: registries verified over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// How long an invocation of an Inactive function waits for it to wake before a 503 with
    /// `Retry-After`.
    pub wake_timeout: Duration,
    /// `SLIPWAY_INVOKE_DOMAIN` (e.g. `fn.example.com`): functions are also served on origins of
    /// their own, `<function id>.<domain>`, where their cookies are theirs alone. Unset: only
    /// the shared path-based route.
    pub invoke_domain: Option<String>,
    /// `SLIPWAY_UNREACHABLE_WAIT`: how long an invocation whose instance refuses connections
    /// waits for the engine to put it somewhere else (then 503 with `Retry-After`). Zero
    /// answers 502 at once: one engine never moves an instance, so its address is not stale
    /// but broken. Defaults to the wake timeout when `SLIPWAY_RUNTIME=swarm`.
    pub unreachable_wait: Duration,
    /// `SLIPWAY_MAX_CONCURRENT_UPLOADS`: deploy uploads one key may have in progress at once,
    /// per api process.
    pub max_concurrent_uploads: usize,
    /// `SLIPWAY_MAX_QUEUED_BUILDS`: deployments one owner may have in flight (waiting, fetching,
    /// building, pushing, deploying) before new uploads are refused with 429.
    pub max_queued_builds: i64,
    /// The scheduler's sweeps, which operators list and fire through the api.
    pub scheduler: SchedulerConfig,
    /// How far a signed request's timestamp may be from the server's clock, either way.
    pub signature_max_skew: Duration,
    /// `SLIPWAY_GIT_ALLOW_FILE`: git bindings may use file:// URLs (single-tenant set-ups).
    pub git_allow_file: bool,
    /// `SLIPWAY_GIT_ALLOW_NETWORKS`: internal addresses clone URLs may name after all.
    pub git_allow_networks: Vec<crate::git::Network>,
    /// `SLIPWAY_SECRETS_KEY`: seals git bindings' secrets and credentials; without it no binding
    /// can be made.
    pub secrets_key: Option<SecretsKey>,
    /// What a function's instances may use, and what a function may ask for.
    pub function_limits: LimitPolicy,
    /// `SLIPWAY_BUILD_BASE_IMAGES`: the images a Dockerfile may build `FROM` besides `scratch`
    /// and the caller's own functions' repositories.
    pub build_base_images: BaseImageAllowList,
    /// `SLIPWAY_REGISTRY`, where the caller's own repositories are (unset: a Dockerfile may use
    /// allowed base images only).
    pub registry: Option<String>,
    /// `SLIPWAY_RUNTIME_IMAGES`: the repository prefix of the templates' runtime images
    /// (`<prefix>/node:1`, `<prefix>/python:1`); `<SLIPWAY_REGISTRY>/slipway` by default. Unset
    /// with no registry: no function can be made from a template. Its images are always allowed
    /// base images.
    pub runtime_images: Option<String>,
    /// `SLIPWAY_EVENTS_AMQP_URL`: stream every settled event to this broker (off when unset).
    pub event_stream: Option<EventStreamConfig>,
}

/// Where events are published: a topic exchange on an AMQP 0-9-1 broker (RabbitMQ).
#[derive(Debug, Clone)]
pub struct EventStreamConfig {
    /// `amqp://user:password@host:port/vhost` (or `amqps://`).
    pub url: String,
    /// `SLIPWAY_EVENTS_AMQP_EXCHANGE`: the topic exchange, declared durable (`slipway.events`).
    pub exchange: String,
}

impl EventStreamConfig {
    fn from_env() -> Option<Self> {
        Some(Self {
            url: var("SLIPWAY_EVENTS_AMQP_URL")?,
            exchange: var("SLIPWAY_EVENTS_AMQP_EXCHANGE")
                .unwrap_or_else(|| "slipway.events".into()),
        })
    }
}

impl ApiConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            bind: parsed("SLIPWAY_BIND", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            archive_limits: archive_limits()?,
            invoke_timeout: duration("SLIPWAY_INVOKE_TIMEOUT", Duration::from_secs(60))?,
            deletion_grace: duration("SLIPWAY_DELETION_GRACE", Duration::from_secs(7 * 86_400))?,
            record_events: parsed("SLIPWAY_RECORD_EVENTS", true)?,
            ecr: match var("SLIPWAY_REGISTRY_KIND").as_deref() {
                Some("ecr") => Some(RegistryConfig::from_env()?),
                _ => None,
            },
            registry_login: registry_login()?,
            insecure_registries: insecure_registries(),
            wake_timeout: duration("SLIPWAY_WAKE_TIMEOUT", Duration::from_secs(30))?,
            invoke_domain: invoke_domain()?,
            max_concurrent_uploads: parsed("SLIPWAY_MAX_CONCURRENT_UPLOADS", 4)?,
            max_queued_builds: parsed("SLIPWAY_MAX_QUEUED_BUILDS", 20)?,
            unreachable_wait: duration(
                "SLIPWAY_UNREACHABLE_WAIT",
                if var("SLIPWAY_RUNTIME").as_deref() == Some("swarm") {
                    duration("SLIPWAY_WAKE_TIMEOUT", Duration::from_secs(30))?
                } else {
                    Duration::ZERO
                },
            )?,
            scheduler: SchedulerConfig::from_env()?,
            signature_max_skew: duration("SLIPWAY_SIGNATURE_MAX_SKEW", Duration::from_secs(300))?,
            git_allow_file: parsed("SLIPWAY_GIT_ALLOW_FILE", false)?,
            git_allow_networks: git_allow_networks()?,
            secrets_key: secrets_key()?,
            function_limits: function_limits()?,
            build_base_images: with_runtime_images(
                build_base_images()?,
                runtime_images().as_deref(),
            )?,
            registry: var("SLIPWAY_REGISTRY"),
            runtime_images: runtime_images(),
            event_stream: EventStreamConfig::from_env(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The Docker engine that runs functions (and, with `buildkit = "docker"`, builds them).
    pub docker_host: String,
    /// `SLIPWAY_RUNTIME`: where function instances run.
    pub runtime: RuntimeTarget,
    /// `docker` (the engine's embedded BuildKit), `tcp://host:port` or `unix:///path`.
    pub buildkit: String,
    /// `host:port` of the OCI registry images are pushed to.
    pub registry: String,
    /// `SLIPWAY_REGISTRY_KIND`: the OCI distribution API, or ECR's own.
    pub registry_kind: RegistryKind,
    /// `SLIPWAY_ECR_ENDPOINT`, for an ECR API other than AWS's.
    pub ecr_endpoint: Option<String>,
    /// `SLIPWAY_REGISTRY_USERNAME` / `_PASSWORD`, for registries that ask for credentials.
    pub registry_login: Option<RegistryLogin>,
    /// `SLIPWAY_INSECURE_REGISTRIES`: registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// How long a new container may take to answer on its port.
    pub start_timeout: Duration,
    /// How long the previous version keeps running after traffic moved, for in-flight requests.
    pub drain: Duration,
    /// Jobs of each queue this process runs at once.
    pub concurrency: usize,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// Longest a single job may run before it is abandoned.
    pub job_timeout: Duration,
    /// How long a stopping worker waits for in-flight jobs; jobs still running then are left
    /// to a peer, which re-runs them once this worker's heartbeats are overdue.
    pub shutdown_grace: Duration,
    /// Attempts for a transient fault (registry or BuildKit unreachable), with exponential backoff
    /// starting at `retry_base`.
    pub retry_attempts: u32,
    pub retry_base: Duration,
    /// Run build `RUN` steps without a network (needed when dockerd has no bridge).
    pub build_network_none: bool,
    /// `SLIPWAY_BUILD_STALL_TIMEOUT` (10m): a build that reports no progress for this long is
    /// cancelled and retried as BuildKit being unavailable.
    pub build_stall_timeout: Duration,
    /// Unique per process: apalis uses worker names as lease identities and accepts duplicates.
    pub name: String,
    /// How many of each function's newest built versions keep their image and archive, so they
    /// can be rolled back to. The active version is always kept besides.
    pub retained_versions: u32,
    /// How long a purged function's name stays reserved for its owner.
    pub name_reservation: Duration,
    /// What an archive packed from a pushed commit may hold: the same limits as an upload's.
    pub archive_limits: ArchiveLimits,
    /// `SLIPWAY_GIT_ALLOW_FILE`: fetch from file:// URLs (the api refuses such bindings otherwise).
    pub git_allow_file: bool,
    /// `SLIPWAY_GIT_ALLOW_NETWORKS`: internal addresses a fetch may go to after all.
    pub git_allow_networks: Vec<crate::git::Network>,
    /// `SLIPWAY_GIT_MAX_FETCH_BYTES`: the most one fetch may write (the pack and its index).
    pub git_max_fetch_bytes: u64,
    /// `SLIPWAY_SECRETS_KEY`: opens git bindings' credentials.
    pub secrets_key: Option<SecretsKey>,
    /// What a function's instances may use.
    pub function_limits: LimitPolicy,
    /// `SLIPWAY_BUILD_BASE_IMAGES`: what a pushed commit's Dockerfile may build `FROM`.
    pub build_base_images: BaseImageAllowList,
    /// `SLIPWAY_BUILD_SLOTS_PER_OWNER`: builds one owner may run at once across all workers;
    /// the owner's other builds wait while other owners' run.
    pub build_slots_per_owner: u32,
}

/// `SLIPWAY_FUNCTION_{MEMORY_MB,CPU,PIDS}` and their `_MAX_` counterparts.
fn function_limits() -> anyhow::Result<LimitPolicy> {
    let defaults = LimitPolicy::default();
    let cpu_millis = |name: &str, default: u32| -> anyhow::Result<u32> {
        let cpus: f64 = parsed(name, f64::from(default) / 1000.0)?;
        if !cpus.is_finite() || cpus <= 0.0 || cpus > 1024.0 {
            bail!("{name} must be a positive number of CPUs");
        }
        Ok((cpus * 1000.0).round() as u32)
    };
    let policy = LimitPolicy {
        default: FunctionLimits {
            memory_mb: parsed("SLIPWAY_FUNCTION_MEMORY_MB", defaults.default.memory_mb)?,
            cpu_millis: cpu_millis("SLIPWAY_FUNCTION_CPU", defaults.default.cpu_millis)?,
            pids: parsed("SLIPWAY_FUNCTION_PIDS", defaults.default.pids)?,
        },
        max: FunctionLimits {
            memory_mb: parsed("SLIPWAY_FUNCTION_MAX_MEMORY_MB", defaults.max.memory_mb)?,
            cpu_millis: cpu_millis("SLIPWAY_FUNCTION_MAX_CPU", defaults.max.cpu_millis)?,
            pids: parsed("SLIPWAY_FUNCTION_MAX_PIDS", defaults.max.pids)?,
        },
    };
    let requested = crate::domain::RequestedLimits {
        memory_mb: Some(policy.default.memory_mb),
        cpu_millis: Some(policy.default.cpu_millis),
        pids: Some(policy.default.pids),
    };
    policy
        .validate(&requested)
        .context("the SLIPWAY_FUNCTION_* defaults must lie within their maximums")?;
    Ok(policy)
}

fn git_allow_networks() -> anyhow::Result<Vec<crate::git::Network>> {
    crate::git::parse_networks(&var("SLIPWAY_GIT_ALLOW_NETWORKS").unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("SLIPWAY_GIT_ALLOW_NETWORKS: {e}"))
}

fn invoke_domain() -> anyhow::Result<Option<String>> {
    let Some(raw) = var("SLIPWAY_INVOKE_DOMAIN") else {
        return Ok(None);
    };
    let domain = raw.trim().trim_matches('.').to_ascii_lowercase();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !domain.split('.').all(label_ok) || !domain.contains('.') {
        bail!("SLIPWAY_INVOKE_DOMAIN={raw:?} is not a DNS name like fn.example.com");
    }
    Ok(Some(domain))
}

fn runtime_images() -> Option<String> {
    var("SLIPWAY_RUNTIME_IMAGES")
        .or_else(|| var("SLIPWAY_REGISTRY").map(|r| format!("{r}/slipway")))
}

/// The allow-list plus the templates' runtime images: a function made from a template builds
/// from them, and so may any Dockerfile.
pub fn with_runtime_images(
    allowed: BaseImageAllowList,
    runtime_images: Option<&str>,
) -> anyhow::Result<BaseImageAllowList> {
    let Some(repository) = runtime_images else {
        return Ok(allowed);
    };
    let images: Vec<String> = crate::templates::Template::ALL
        .iter()
        .map(|t| t.base_image(repository))
        .collect();
    allowed
        .with(&images.join(","))
        .map_err(|e| anyhow::anyhow!("SLIPWAY_RUNTIME_IMAGES: {e}"))
}

fn build_base_images() -> anyhow::Result<BaseImageAllowList> {
    BaseImageAllowList::parse(&var("SLIPWAY_BUILD_BASE_IMAGES").unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("SLIPWAY_BUILD_BASE_IMAGES: {e}"))
}

/// `SLIPWAY_SECRETS_KEY` (or `_FILE`), for what seals secrets outside the api and the worker
/// (`slipway create-key` seals signing secrets).
pub fn secrets_key() -> anyhow::Result<Option<SecretsKey>> {
    secret("SLIPWAY_SECRETS_KEY")?
        .map(|raw| SecretsKey::parse(&raw))
        .transpose()
        .context("SLIPWAY_SECRETS_KEY")
}

/// `SLIPWAY_MAX_ARCHIVE_BYTES`, `_UNCOMPRESSED_BYTES` and `_ENTRIES`: uploads (api) and archives
/// packed from git (worker) obey the same limits.
fn archive_limits() -> anyhow::Result<ArchiveLimits> {
    let defaults = ArchiveLimits::default();
    Ok(ArchiveLimits {
        max_compressed_bytes: parsed("SLIPWAY_MAX_ARCHIVE_BYTES", defaults.max_compressed_bytes)?,
        max_uncompressed_bytes: parsed(
            "SLIPWAY_MAX_UNCOMPRESSED_BYTES",
            defaults.max_uncompressed_bytes,
        )?,
        max_entries: parsed("SLIPWAY_MAX_ARCHIVE_ENTRIES", defaults.max_entries)?,
    })
}

/// Where function instances run (`SLIPWAY_RUNTIME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeTarget {
    /// `docker`: containers on the engine at `SLIPWAY_DOCKER_HOST`, the one that builds.
    Docker,
    /// `swarm`: services on the Docker Swarm whose manager answers at `SLIPWAY_SWARM_MANAGER`
    /// (a Docker host URL); the engine places them.
    Swarm { manager: String },
}

impl RuntimeTarget {
    fn from_env() -> anyhow::Result<Self> {
        match var("SLIPWAY_RUNTIME").as_deref().unwrap_or("docker") {
            "docker" => Ok(Self::Docker),
            "swarm" => Ok(Self::Swarm {
                manager: required("SLIPWAY_SWARM_MANAGER")?,
            }),
            other => bail!("SLIPWAY_RUNTIME must be docker or swarm, not {other:?}"),
        }
    }
}

impl WorkerConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let config = Self {
            docker_host: required("SLIPWAY_DOCKER_HOST")?,
            runtime: RuntimeTarget::from_env()?,
            buildkit: var("SLIPWAY_BUILDKIT").unwrap_or_else(|| "docker".into()),
            registry: required("SLIPWAY_REGISTRY")?,
            registry_kind: RegistryConfig::from_env()?.kind,
            ecr_endpoint: var("SLIPWAY_ECR_ENDPOINT"),
            registry_login: registry_login()?,
            insecure_registries: insecure_registries(),
            start_timeout: duration("SLIPWAY_START_TIMEOUT", Duration::from_secs(30))?,
            drain: duration("SLIPWAY_DRAIN", Duration::from_secs(2))?,
            concurrency: parsed("SLIPWAY_WORKER_CONCURRENCY", 4)?,
            heartbeat: duration("SLIPWAY_WORKER_HEARTBEAT", Duration::from_secs(2))?,
            missed_heartbeats: parsed("SLIPWAY_WORKER_MISSED_HEARTBEATS", 5)?,
            job_timeout: duration("SLIPWAY_JOB_TIMEOUT", Duration::from_secs(30 * 60))?,
            shutdown_grace: duration("SLIPWAY_WORKER_SHUTDOWN_GRACE", Duration::from_secs(30))?,
            retry_attempts: parsed("SLIPWAY_RETRY_ATTEMPTS", 5)?,
            retry_base: duration("SLIPWAY_RETRY_BASE", Duration::from_millis(500))?,
            build_network_none: parsed("SLIPWAY_BUILD_NETWORK_NONE", true)?,
            build_stall_timeout: duration("SLIPWAY_BUILD_STALL_TIMEOUT", Duration::from_secs(600))?,
            name: var("SLIPWAY_WORKER_NAME").unwrap_or_else(unique_worker_name),
            retained_versions: parsed("SLIPWAY_RETAINED_VERSIONS", 10)?,
            name_reservation: duration(
                "SLIPWAY_NAME_RESERVATION",
                Duration::from_secs(30 * 86_400),
            )?,
            archive_limits: archive_limits()?,
            git_allow_file: parsed("SLIPWAY_GIT_ALLOW_FILE", false)?,
            git_allow_networks: git_allow_networks()?,
            git_max_fetch_bytes: parsed("SLIPWAY_GIT_MAX_FETCH_BYTES", 512 * 1024 * 1024)?,
            secrets_key: secrets_key()?,
            function_limits: function_limits()?,
            build_base_images: with_runtime_images(
                build_base_images()?,
                runtime_images().as_deref(),
            )?,
            build_slots_per_owner: parsed("SLIPWAY_BUILD_SLOTS_PER_OWNER", 2)?,
        };
        if config.concurrency == 0 {
            bail!("SLIPWAY_WORKER_CONCURRENCY must be at least 1");
        }
        if config.build_slots_per_owner == 0 {
            bail!("SLIPWAY_BUILD_SLOTS_PER_OWNER must be at least 1");
        }
        if config.retained_versions == 0 {
            bail!("SLIPWAY_RETAINED_VERSIONS must be at least 1");
        }
        Ok(config)
    }
}

/// Which registry API images go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    /// The OCI distribution API (the local registry, Harbor, GHCR, …).
    Oci,
    /// Amazon ECR through its own API.
    Ecr,
}

/// The registry images are pushed to and verified at.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub kind: RegistryKind,
    /// `host[:port]`, as in image references (`SLIPWAY_REGISTRY`).
    pub host: String,
    /// Another ECR API endpoint than AWS's (moto in tests).
    pub ecr_endpoint: Option<String>,
    /// For OCI registries that ask for credentials (basic, or a token service).
    pub login: Option<RegistryLogin>,
    /// `SLIPWAY_INSECURE_REGISTRIES`: hosts spoken to over plain HTTP.
    pub insecure: Vec<String>,
}

impl RegistryConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let kind = match var("SLIPWAY_REGISTRY_KIND").as_deref() {
            None | Some("oci") => RegistryKind::Oci,
            Some("ecr") => RegistryKind::Ecr,
            Some(other) => bail!("SLIPWAY_REGISTRY_KIND={other:?} must be oci or ecr"),
        };
        Ok(Self {
            kind,
            host: required("SLIPWAY_REGISTRY")?,
            ecr_endpoint: var("SLIPWAY_ECR_ENDPOINT"),
            login: registry_login()?,
            insecure: insecure_registries(),
        })
    }
}

/// `SLIPWAY_INSECURE_REGISTRIES`: comma-separated `host[:port]`s reached over plain HTTP, as
/// dockerd's `--insecure-registry` (loopback ones always are).
fn insecure_registries() -> Vec<String> {
    var("SLIPWAY_INSECURE_REGISTRIES")
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .collect()
}

fn registry_login() -> anyhow::Result<Option<RegistryLogin>> {
    // The password is read only with a username: a stack keeps its secret file mounted even for
    // registries without a login (ECR), whatever that file holds.
    match var("SLIPWAY_REGISTRY_USERNAME") {
        Some(username) => Ok(Some(RegistryLogin {
            username,
            password: SecretString::from(required_secret("SLIPWAY_REGISTRY_PASSWORD")?),
        })),
        None if var("SLIPWAY_REGISTRY_PASSWORD").is_some() => {
            bail!("set both SLIPWAY_REGISTRY_USERNAME and SLIPWAY_REGISTRY_PASSWORD, or neither")
        }
        None => Ok(None),
    }
}

/// The scheduler's sweeps: when each fires (cron with seconds) and the thresholds they apply.
/// The api reads it too, to show schedules and run one on demand.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub cron_idle: String,
    pub cron_stale: String,
    pub cron_quota: String,
    pub cron_purge: String,
    pub cron_digest: String,
    pub cron_retention: String,
    pub cron_reap: String,
    /// A deployment in flight this long after its last change, whose job is gone, ended without
    /// settling it, or is held by a worker silent for this long, is failed by the reaper
    /// (`SLIPWAY_REAP_AFTER`).
    pub reap_after: Duration,
    /// How long invocation events, webhook deliveries, deployment logs and finished jobs are
    /// kept (`SLIPWAY_RETENTION_EVENTS`, `_DELIVERIES`, `_LOGS`, `_JOBS`); the active version's
    /// logs and failed jobs stay.
    pub retention_events: Duration,
    pub retention_deliveries: Duration,
    pub retention_logs: Duration,
    pub retention_jobs: Duration,
    /// An Active function with no invocation for this long releases its instance.
    pub idle_after: Duration,
    /// An idle function untouched for this long is scheduled for deletion (`stale_function`).
    pub stale_after: Duration,
    /// The grace period of deletions the scheduler schedules (and the api's DELETE).
    pub deletion_grace: Duration,
    pub default_function_quota: i32,
    /// How often each serving function's digest is checked at the registry.
    pub verify_every: Duration,
    /// A purge enqueued this long ago that has not finished is enqueued again.
    pub purge_retry_after: Duration,
    /// The most functions one tick of a sweep handles; the rest wait for the next tick, which
    /// also rate-limits registry checks.
    pub batch: i64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            cron_idle: "0 * * * * *".into(),
            cron_stale: "0 0 3 * * *".into(),
            cron_quota: "0 30 3 * * *".into(),
            cron_purge: "0 */5 * * * *".into(),
            cron_digest: "0 */10 * * * *".into(),
            cron_retention: "0 15 * * * *".into(),
            cron_reap: "*/30 * * * * *".into(),
            reap_after: Duration::from_secs(5 * 60),
            retention_events: Duration::from_secs(30 * 86_400),
            retention_deliveries: Duration::from_secs(30 * 86_400),
            retention_logs: Duration::from_secs(30 * 86_400),
            retention_jobs: Duration::from_secs(7 * 86_400),
            idle_after: Duration::from_secs(15 * 60),
            stale_after: Duration::from_secs(90 * 86_400),
            deletion_grace: Duration::from_secs(7 * 86_400),
            default_function_quota: 100,
            verify_every: Duration::from_secs(3600),
            purge_retry_after: Duration::from_secs(3600),
            batch: 1000,
        }
    }
}

impl SchedulerConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let d = Self::default();
        let cron = |name: &str, default: String| var(name).unwrap_or(default);
        let config = Self {
            cron_idle: cron("SLIPWAY_CRON_IDLE", d.cron_idle),
            cron_stale: cron("SLIPWAY_CRON_STALE", d.cron_stale),
            cron_quota: cron("SLIPWAY_CRON_QUOTA", d.cron_quota),
            cron_purge: cron("SLIPWAY_CRON_PURGE", d.cron_purge),
            cron_digest: cron("SLIPWAY_CRON_DIGEST", d.cron_digest),
            cron_retention: cron("SLIPWAY_CRON_RETENTION", d.cron_retention),
            cron_reap: cron("SLIPWAY_CRON_REAP", d.cron_reap),
            reap_after: duration("SLIPWAY_REAP_AFTER", d.reap_after)?,
            retention_events: duration("SLIPWAY_RETENTION_EVENTS", d.retention_events)?,
            retention_deliveries: duration("SLIPWAY_RETENTION_DELIVERIES", d.retention_deliveries)?,
            retention_logs: duration("SLIPWAY_RETENTION_LOGS", d.retention_logs)?,
            retention_jobs: duration("SLIPWAY_RETENTION_JOBS", d.retention_jobs)?,
            idle_after: duration("SLIPWAY_IDLE_AFTER", d.idle_after)?,
            stale_after: duration("SLIPWAY_STALE_AFTER", d.stale_after)?,
            deletion_grace: duration("SLIPWAY_DELETION_GRACE", d.deletion_grace)?,
            default_function_quota: parsed(
                "SLIPWAY_DEFAULT_FUNCTION_QUOTA",
                d.default_function_quota,
            )?,
            verify_every: duration("SLIPWAY_VERIFY_EVERY", d.verify_every)?,
            purge_retry_after: duration("SLIPWAY_PURGE_RETRY_AFTER", d.purge_retry_after)?,
            batch: parsed("SLIPWAY_SWEEP_BATCH", d.batch)?,
        };
        if config.default_function_quota < 0 || config.batch < 1 {
            bail!("SLIPWAY_DEFAULT_FUNCTION_QUOTA must be >= 0 and SLIPWAY_SWEEP_BATCH >= 1");
        }
        Ok(config)
    }
}

/// `host-pid-random`: distinct for every process, even two on one host.
pub fn unique_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::secret_from;

    #[test]
    fn a_secret_comes_from_its_setting_or_from_the_file_its_file_setting_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("database-url");
        std::fs::write(&path, "postgres://u:p@db/slipway\n").unwrap();
        let file = Some(path.display().to_string());

        let from_file = secret_from("DATABASE_URL", None, file.clone()).unwrap();
        assert_eq!(from_file.as_deref(), Some("postgres://u:p@db/slipway"));
        let direct = secret_from("DATABASE_URL", Some("postgres://x".into()), None).unwrap();
        assert_eq!(direct.as_deref(), Some("postgres://x"));
        assert_eq!(secret_from("DATABASE_URL", None, None).unwrap(), None);

        let both = secret_from("DATABASE_URL", Some("postgres://x".into()), file).unwrap_err();
        assert!(format!("{both:#}").contains("not both"), "{both:#}");
        let missing = dir.path().join("absent").display().to_string();
        let unreadable = secret_from("DATABASE_URL", None, Some(missing)).unwrap_err();
        assert!(
            format!("{unreadable:#}").contains("DATABASE_URL_FILE="),
            "{unreadable:#}"
        );
        let empty_path = dir.path().join("empty");
        std::fs::write(&empty_path, "\n").unwrap();
        let empty = secret_from("DATABASE_URL", None, Some(empty_path.display().to_string()));
        assert!(format!("{:#}", empty.unwrap_err()).contains("is empty"));
    }
}
