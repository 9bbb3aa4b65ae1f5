//! Job payloads and the `Job` trait: the contract between whoever enqueues (api, scheduler, other
//! jobs) and the worker that runs them. Only this file knows how a job is written into the queue,
//! so the api and scheduler never link BuildKit or the runtime.
//!
//! Jobs are enqueued with `apalis_postgres::queries::push_tasks` on the caller's connection: inside
//! the caller's transaction, a job becomes visible (and NOTIFY fires) only when the state change
//! that caused it commits, and never exists for one that rolled back.

use apalis::prelude::TaskBuilder;
use serde::{Serialize, de::DeserializeOwned};
use sqlx::PgConnection;
use uuid::Uuid;

/// A durable job type. `NAME` is the queue name stored in every job row: never rename one.
pub trait Job: Serialize + DeserializeOwned + Clone + Send + Sync + Unpin + 'static {
    const NAME: &'static str;

    /// How many times the queue itself may hand the job out. apalis-postgres retries a failed job
    /// immediately and without backoff, so Slipway retries transient faults with backoff inside
    /// the handler and lets the queue run a job once. A job whose worker died is handed out again
    /// regardless of this limit (apalis re-enqueues orphans), which is why handlers are fenced.
    const MAX_ATTEMPTS: usize = 1;

    /// A key unique per queue for as long as the job row exists: a second enqueue of the same
    /// work is a no-op instead of a duplicate. A step run again after its commit's answer was
    /// lost (Postgres restarting just then) finds its job already there, and goes on.
    fn dedup_key(&self) -> String;

    /// Writes the job on `conn`, usually the transaction that made the change requiring it.
    fn enqueue(
        &self,
        conn: &mut PgConnection,
    ) -> impl Future<Output = Result<(), EnqueueError>> + Send {
        self.enqueue_after(conn, std::time::Duration::ZERO)
    }

    /// Writes the job to run no sooner than `delay` from now (apalis has no backoff of its own).
    fn enqueue_after(
        &self,
        conn: &mut PgConnection,
        delay: std::time::Duration,
    ) -> impl Future<Output = Result<(), EnqueueError>> + Send {
        let encoded = serde_json::to_vec(self);
        let key = self.dedup_key();
        async move {
            // Checked first: a unique violation would abort the caller's transaction.
            let enqueued = sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM apalis.jobs
                                  WHERE job_type = $1 AND idempotency_key = $2) AS "exists!""#,
                Self::NAME,
                key
            )
            .fetch_one(&mut *conn)
            .await?;
            if enqueued {
                return Ok(());
            }
            let mut task = TaskBuilder::new(encoded?)
                .max_attempts(Self::MAX_ATTEMPTS)
                .idempotency_key(key);
            if !delay.is_zero() {
                task = task.run_after(delay);
            }
            apalis_postgres::queries::push_tasks(conn, Self::NAME, vec![task.build()]).await?;
            Ok(())
        }
    }

    /// Writes many jobs in one statement, as the scheduler's sweeps do.
    fn enqueue_all(
        jobs: &[Self],
        conn: &mut PgConnection,
    ) -> impl Future<Output = Result<(), EnqueueError>> + Send {
        let tasks: Result<Vec<_>, serde_json::Error> = jobs
            .iter()
            .map(|job| {
                Ok(TaskBuilder::new(serde_json::to_vec(job)?)
                    .max_attempts(Self::MAX_ATTEMPTS)
                    .idempotency_key(job.dedup_key())
                    .build())
            })
            .collect();
        async move {
            let tasks = tasks?;
            if !tasks.is_empty() {
                apalis_postgres::queries::push_tasks(conn, Self::NAME, tasks).await?;
            }
            Ok(())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("could not encode the job: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("could not write the job: {0}")]
    Queue(#[from] apalis_postgres::Error),
    #[error("could not read the queue: {0}")]
    Database(#[from] sqlx::Error),
}

/// Fetch the pushed commit of a deployment from git, pack its subdirectory as the archive, then
/// hand over to `build`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceJob {
    pub deployment_id: Uuid,
}

impl Job for SourceJob {
    const NAME: &'static str = "slipway::source";
    fn dedup_key(&self) -> String {
        format!("source:{}", self.deployment_id)
    }
}

/// Build the deployment's archive into an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildJob {
    pub deployment_id: Uuid,
    /// How often this build found its owner's build slots all taken and was put back in the
    /// queue (each wait is a job of its own, so its key differs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slot_waits: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Push the built image and record its tag and manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushJob {
    pub deployment_id: Uuid,
}

/// Pull the recorded `image@digest` onto the runtime host before the deployment starts, so a
/// missing or unpullable image fails here, with its own reason, and the start itself is quick.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheWarmJob {
    pub deployment_id: Uuid,
}

impl Job for CacheWarmJob {
    const NAME: &'static str = "slipway::cache-warm";
    fn dedup_key(&self) -> String {
        format!("cache-warm:{}", self.deployment_id)
    }
}

/// Start the recorded digest, wait for it to answer, switch traffic, stop the previous version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeployJob {
    pub deployment_id: Uuid,
}

/// Bring back a superseded version: verify its digest is still in the registry, start it, switch
/// traffic to it, stop the version it replaces.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RollbackJob {
    pub deployment_id: Uuid,
    /// Distinct per request: the same version may be rolled back to many times.
    pub request_id: Uuid,
}

/// Remove what a function, or the versions it no longer retains, leave in the runtime, the
/// registry and the object store. Every step is idempotent, so a re-run finishes a purge that
/// died half-way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum PurgeJob {
    /// The function's grace period is over: containers, images and archives go, in that order,
    /// then the function becomes a tombstone.
    Function {
        function_id: Uuid,
        /// Distinct per request, so a purge that failed can be enqueued again.
        request_id: Uuid,
    },
    /// `activated` went live: versions past the retention window lose their image and archive.
    OldVersions { function_id: Uuid, activated: Uuid },
    /// The reaper's tick: runtime objects no deployment owns (an instance no run recorded, made
    /// before `created_before`; the network of a function that is gone) are removed.
    Orphans {
        created_before: chrono::DateTime<chrono::Utc>,
        /// At most this many objects go per tick, like every sweep's batch.
        limit: u32,
    },
}

impl Job for PurgeJob {
    const NAME: &'static str = "slipway::purge";
    fn dedup_key(&self) -> String {
        match self {
            Self::Function { request_id, .. } => format!("purge:function:{request_id}"),
            Self::OldVersions { activated, .. } => format!("purge:versions:{activated}"),
            Self::Orphans { created_before, .. } => {
                format!("purge:orphans:{}", created_before.timestamp())
            }
        }
    }
}

/// Replace the running instance of a function's active version (seed 004): the recorded digest
/// is verified at the registry first, so an image lost behind Slipway's back fails the function
/// instead of being restarted from a stale local copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuntimeJob {
    pub function_id: Uuid,
    pub action: RuntimeAction,
    pub request_id: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeAction {
    /// A fresh container from the cached `image@digest`.
    Restart,
    /// Also drop the cached image and pull `image@digest` again before starting.
    Recycle,
}

impl Job for RuntimeJob {
    const NAME: &'static str = "slipway::runtime";
    fn dedup_key(&self) -> String {
        format!("runtime:{}", self.request_id)
    }
}

/// Check the serving version's recorded tag and digest at the registry and apply the result
/// (drift reported, or the function Failed): the scheduler's digest sweep.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyJob {
    pub function_id: Uuid,
    pub request_id: Uuid,
}

impl Job for VerifyJob {
    const NAME: &'static str = "slipway::verify";
    fn dedup_key(&self) -> String {
        format!("verify:{}", self.request_id)
    }
}

/// Release an idle function's instance (PreStop, stop, drop the cached image): Inactive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReleaseJob {
    pub function_id: Uuid,
    pub request_id: Uuid,
    /// Release this version instance (`db::aliases`) rather than the function's own instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_instance: Option<Uuid>,
}

impl Job for ReleaseJob {
    const NAME: &'static str = "slipway::release";
    fn dedup_key(&self) -> String {
        format!("release:{}", self.request_id)
    }
}

/// Bring an Inactive function back (Pending): cache-warm its image, start it, Initializer, Active.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WakeJob {
    pub function_id: Uuid,
    pub request_id: Uuid,
    /// Start an instance of this version, which is not the active one, for invocations of an
    /// alias or of `@N` (`db::aliases`); `request_id` is then its run token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_instance: Option<Uuid>,
}

impl Job for WakeJob {
    const NAME: &'static str = "slipway::wake";
    fn dedup_key(&self) -> String {
        format!("wake:{}", self.request_id)
    }
}

impl Job for RollbackJob {
    const NAME: &'static str = "slipway::rollback";
    fn dedup_key(&self) -> String {
        format!("rollback:{}", self.request_id)
    }
}

impl Job for BuildJob {
    const NAME: &'static str = "slipway::build";
    fn dedup_key(&self) -> String {
        match self.slot_waits {
            0 => format!("build:{}", self.deployment_id),
            n => format!("build:{}:wait{n}", self.deployment_id),
        }
    }
}

impl Job for PushJob {
    const NAME: &'static str = "slipway::push";
    fn dedup_key(&self) -> String {
        format!("push:{}", self.deployment_id)
    }
}

impl Job for DeployJob {
    const NAME: &'static str = "slipway::deploy";
    fn dedup_key(&self) -> String {
        format!("deploy:{}", self.deployment_id)
    }
}

/// Every queue, for operators' views and for tests that count jobs.
pub const ALL_QUEUES: [&str; 11] = [
    SourceJob::NAME,
    BuildJob::NAME,
    PushJob::NAME,
    CacheWarmJob::NAME,
    DeployJob::NAME,
    RollbackJob::NAME,
    PurgeJob::NAME,
    RuntimeJob::NAME,
    VerifyJob::NAME,
    ReleaseJob::NAME,
    WakeJob::NAME,
];

/// The queues of a deployment's pipeline, whose jobs carry its `deployment_id`: while one of
/// them is waiting or held by a live worker, the deployment is not stuck.
pub const PIPELINE_QUEUES: [&str; 5] = [
    SourceJob::NAME,
    BuildJob::NAME,
    PushJob::NAME,
    CacheWarmJob::NAME,
    DeployJob::NAME,
];
