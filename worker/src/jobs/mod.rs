//! Job handlers, one file per job, and what they share: the `RunJob` trait, retry with backoff
//! for transient faults, and the one way a deployment fails.
//!
//! Handlers are idempotent and fenced. Each run of a pipeline job claims its deployment
//! (`db::deployments::claim_run`: a fresh token, only while the deployment is in the status the
//! job expects), and every write it makes — status changes, instances, the switch, a failure —
//! applies only while that token is still the stored one. A duplicate run (the queue re-ran the
//! job after a missed heartbeat while the first run still goes on) takes the claim; the older run
//! stops at its next write, removes what it made itself, and fails nothing.

mod build;
mod cache_warm;
mod deploy;
mod idle;
mod purge;
mod push;
mod rollback;
mod runtime;
mod source;
mod verify;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use slipway_shared::{
    db::{self, deployments::StatusChange},
    domain::{Digest, FunctionName, ImageRef, PipelineStep, ServingEvent},
    jobs::Job,
    metrics, settle,
};
use tracing::{error, warn};
use uuid::Uuid;

use crate::Environment;

/// A job the worker knows how to run: payload from `slipway_shared::jobs`, behaviour here.
pub trait RunJob: Job {
    fn run(self, env: Arc<Environment>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Why a step failed, which decides whether it is worth another try.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Network, 5xx, a daemon restarting: retried with backoff.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// The input is at fault (bad Dockerfile, function that never answers): fails the deployment
    /// with this text, which the user reads.
    #[error("{0}")]
    Permanent(String),
    /// A newer version of the function has already served: this one must never take the
    /// traffic. The deployment ends `superseded`, not failed.
    #[error("version {newer_version} is newer and has already served")]
    Overtaken { newer: Uuid, newer_version: i32 },
    /// Another run of the job took the deployment over (or it settled meanwhile): this run stops
    /// without a word on the deployment's outcome, which is no longer its to decide.
    #[error("another run took the deployment over")]
    LostClaim,
}

impl StepError {
    /// What the user reads about the failure.
    pub fn into_reason(self) -> String {
        match self {
            Self::Permanent(reason) => reason,
            other => format!("{other:#}"),
        }
    }
}

impl From<sqlx::Error> for StepError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(e.into())
    }
}

tokio::task_local! {
    /// The deployment and phase a pipeline step runs for, so a retry deep inside it reaches the
    /// deployment's log without every caller passing it down.
    static STEP_LOG: (Uuid, String);
}

/// The wait before retry `attempt` (1 for the first retry): `base` doubling per attempt up to a
/// minute, of which a random half is jitter, so the workers that hit the same outage do not come
/// back in step.
fn backoff(base: Duration, attempt: u32) -> Duration {
    use rand::Rng as _;
    let ceiling = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(Duration::from_secs(60));
    let half = ceiling / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// Runs `step` until it succeeds, fails permanently, or has used its attempts, with exponential
/// backoff and jitter after each transient failure (the infrastructure: database, registry,
/// BuildKit, engine). Inside a pipeline step each retry and its reason goes to the deployment's
/// log. apalis-postgres retries without any backoff, so this is where retrying happens.
pub async fn with_retries<T, F, Fut>(
    env: &Environment,
    what: &str,
    mut step: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    let mut attempt = 1;
    loop {
        match step().await {
            Err(StepError::Transient(e)) if attempt < env.config.retry_attempts => {
                let delay = backoff(env.config.retry_base, attempt);
                let error = format!("{e:#}");
                warn!(what, attempt, error, ?delay, "transient failure; retrying");
                if let Ok((deployment_id, phase)) = STEP_LOG.try_with(Clone::clone) {
                    let line = format!(
                        "{what}: attempt {attempt} failed ({error}); retrying in {} ms",
                        delay.as_millis()
                    );
                    log_lines(env, deployment_id, &phase, vec![("info".into(), line)]).await;
                }
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(StepError::Transient(e)) => {
                return Err(StepError::Transient(
                    e.context(format!("{what} still failing after {attempt} attempts")),
                ));
            }
            other => return other,
        }
    }
}

/// Appends lines to a deployment's log; losing a log line must not fail a deployment.
pub async fn log_lines(
    env: &Environment,
    deployment_id: Uuid,
    phase: &str,
    lines: Vec<(String, String)>,
) {
    let result = async {
        let mut conn = env.pool.acquire().await?;
        db::logs::append(&mut conn, deployment_id, phase, &lines).await
    }
    .await;
    if let Err(e) = result {
        warn!(%deployment_id, error = %e, "could not store log lines");
    }
}

pub async fn log_info(
    env: &Environment,
    deployment_id: Uuid,
    phase: &str,
    message: impl Into<String>,
) {
    log_lines(
        env,
        deployment_id,
        phase,
        vec![("info".into(), message.into())],
    )
    .await;
}

/// Marks the deployment failed with `reason` and settles its function, in one transaction. The
/// previously active version, if any, is untouched and keeps serving. Returns whether this run
/// recorded the failure (not when another run took the deployment over, or it settled).
pub async fn fail_deployment(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    phase: &str,
    reason: &str,
) -> anyhow::Result<bool> {
    let mut tx = env.pool.begin().await?;
    let failed = settle::fail_deployment(
        &mut tx,
        deployment.id,
        deployment.run_token,
        deployment.function_id,
        phase,
        reason,
    )
    .await?;
    tx.commit().await?;
    if failed {
        error!(deployment_id = %deployment.id, phase, reason, "deployment failed");
    } else {
        warn!(deployment_id = %deployment.id, phase, reason, "failure not recorded: another run took the deployment over, or it settled");
        log_info(
            env,
            deployment.id,
            phase,
            format!(
                "another run of this job took over, or the deployment settled: this run's \
                 failure is not recorded ({reason})"
            ),
        )
        .await;
    }
    Ok(failed)
}

pub use settle::{settle_function, update_failed};

/// Runs one step of a deployment's pipeline, fenced: the step runs only if it can claim the
/// deployment for `step` (otherwise another run of the job, a later step, or a newer decision
/// moved it on and this run has nothing to do), and the row it is handed carries the claim for
/// its writes.
/// A failed step fails the deployment, and then the job too, with the same reason: operators
/// find failures where they look, in the queue's `Failed` jobs (jobs run once, so it is final). A
/// run that lost its claim, or whose deployment was overtaken, ends `Done`: the outcome is not
/// its to report.
///
/// Postgres unavailable (a restart, a failover) is no fault of the deployment's: the claim and
/// the step are run again, with backoff and jitter, for up to `DATABASE_ATTEMPTS` attempts. Steps
/// are idempotent and fenced, so running one again from the top is safe.
/// The stage a step's whole run measures. A build measures itself once it holds a slot (a run
/// that only waits for one is not a build); a deploy measures its start and initializer.
fn timed_stage(step: PipelineStep) -> Option<metrics::Stage> {
    match step {
        PipelineStep::Source => Some(metrics::Stage::Fetch),
        PipelineStep::Push => Some(metrics::Stage::Push),
        PipelineStep::CacheWarm => Some(metrics::Stage::CacheWarm),
        PipelineStep::Build | PipelineStep::Deploy | PipelineStep::Rollback => None,
    }
}

pub async fn run_step<F, Fut>(
    env: Arc<Environment>,
    deployment_id: Uuid,
    step: PipelineStep,
    run: F,
) -> anyhow::Result<()>
where
    F: Fn(Arc<Environment>, db::deployments::DeploymentRow) -> Fut,
    Fut: Future<Output = Result<(), StepError>>,
{
    let phase = step.phase();
    let mut attempt = 1;
    let (deployment, outcome) = loop {
        let database_down =
            |e: &anyhow::Error| db::unavailable_in(e.as_ref()) && attempt < DATABASE_ATTEMPTS;
        let deployment = match claim(&env, deployment_id, step).await {
            Ok(Some(deployment)) => deployment,
            Ok(None) => return Ok(()),
            Err(e) if database_down(&e) => {
                wait_for_database(&env, phase, attempt, &e).await;
                attempt += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let step_log = (deployment_id, phase.to_owned());
        let work = STEP_LOG.scope(step_log, run(Arc::clone(&env), deployment.clone()));
        let outcome = match timed_stage(step) {
            Some(stage) => metrics::timed(stage, work).await,
            None => work.await,
        };
        match &outcome {
            Err(StepError::Transient(e)) if database_down(e) => {
                wait_for_database(&env, phase, attempt, e).await;
                attempt += 1;
            }
            _ => break (deployment, outcome),
        }
    };
    let reason = match outcome {
        Ok(()) => return Ok(()),
        Err(StepError::Permanent(reason)) => reason,
        Err(StepError::Transient(e)) => format!("{phase} failed: {e:#}"),
        Err(StepError::Overtaken {
            newer,
            newer_version,
        }) => {
            return overtake(&env, &deployment, newer, newer_version, phase).await;
        }
        Err(StepError::LostClaim) => {
            warn!(%deployment_id, phase, "another run of this job took the deployment over; stopping");
            log_info(
                &env,
                deployment_id,
                phase,
                "another run of this job took over; this run stopped",
            )
            .await;
            return Ok(());
        }
    };
    if fail_deployment(&env, &deployment, phase, &reason).await? {
        anyhow::bail!("{reason}");
    }
    Ok(())
}

/// How often a step meets an unavailable database before it fails the deployment: with the
/// backoff below, about a minute of outage.
const DATABASE_ATTEMPTS: u32 = 9;

async fn wait_for_database(env: &Environment, phase: &str, attempt: u32, error: &anyhow::Error) {
    let delay = backoff(env.config.retry_base, attempt);
    warn!(phase, attempt, error = %format!("{error:#}"), ?delay, "the database is unavailable; running the step again");
    tokio::time::sleep(delay).await;
}

/// Claims the deployment for this run of `step` (`db::deployments::claim_run`) and reads it,
/// carrying the claimed token; `None` (logged) when it has moved on.
pub async fn claim(
    env: &Environment,
    deployment_id: Uuid,
    step: PipelineStep,
) -> anyhow::Result<Option<db::deployments::DeploymentRow>> {
    let phase = step.phase();
    let mut conn = env.pool.acquire().await?;
    let claimed = db::deployments::claim_run(&mut conn, deployment_id, step).await?;
    let mut deployment = db::deployments::get(&mut conn, deployment_id)
        .await?
        .with_context(|| format!("deployment {deployment_id} does not exist"))?;
    let Some(token) = claimed else {
        warn!(%deployment_id, phase, status = %deployment.status, "deployment already moved on; nothing to do");
        return Ok(None);
    };
    // The token this run claimed, even if a newer run has replaced it in the row since.
    deployment.run_token = Some(token);
    Ok(Some(deployment))
}

/// Ends a deployment that a newer, already served version overtook: `superseded`, and the
/// function settles as if it had finished, without a failure to report.
async fn overtake(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
    newer: Uuid,
    newer_version: i32,
    phase: &str,
) -> anyhow::Result<()> {
    let (deployment_id, function_id) = (deployment.id, deployment.function_id);
    let mut tx = env.pool.begin().await?;
    let function = db::functions::lock(&mut tx, function_id)
        .await?
        .context("the deployment's function is gone")?;
    let overtaken = StatusChange::Overtaken { by: newer };
    if db::deployments::change(&mut tx, deployment_id, deployment.run_token, overtaken).await? {
        settle_function(&mut tx, function_id, deployment_id, function.status).await?;
        let others_in_flight =
            db::deployments::others_in_flight(&mut tx, function_id, deployment_id).await?;
        db::functions::transition_serving(
            &mut tx,
            function_id,
            &ServingEvent::UpdateOvertaken { others_in_flight },
        )
        .await?;
        db::logs::append(
            &mut tx,
            deployment_id,
            phase,
            &[(
                "info".to_owned(),
                format!("superseded: version {newer_version} is newer and has already served"),
            )],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The deployment's image is in the registry as `tag` at `digest` (pushed, or an identical
/// earlier build's): records it and hands over, in the caller's transaction (function row
/// locked, as `function`): to cache-warm, or for a held deployment to nobody — it waits
/// `built`, not in flight, and its function settles. `line` is logged. False, with nothing
/// written, when another run took the deployment over.
pub async fn record_image(
    tx: &mut sqlx::PgConnection,
    deployment: &db::deployments::DeploymentRow,
    function: &db::functions::LockedFunction,
    tag: &str,
    digest: &str,
    phase: &str,
    line: String,
) -> Result<bool, StepError> {
    let change = if deployment.hold {
        StatusChange::Held {
            image_tag: tag,
            image_digest: digest,
        }
    } else {
        StatusChange::Pushed {
            image_tag: tag,
            image_digest: digest,
        }
    };
    if !db::deployments::change(tx, deployment.id, deployment.run_token, change).await? {
        return Ok(false);
    }
    let mut lines = vec![("info".to_owned(), line)];
    if deployment.hold {
        settle_function(tx, deployment.function_id, deployment.id, function.status)
            .await
            .map_err(StepError::Transient)?;
        lines.push((
            "info".to_owned(),
            format!(
                "version {} is built and held: POST /api/v1/functions/deploy/{} deploys it",
                deployment.version, deployment.function_id
            ),
        ));
    } else {
        slipway_shared::jobs::CacheWarmJob {
            deployment_id: deployment.id,
        }
        .enqueue(tx)
        .await
        .context("enqueueing the cache-warm")
        .map_err(StepError::Transient)?;
    }
    db::logs::append(tx, deployment.id, phase, &lines).await?;
    Ok(true)
}

/// The tag and digest push recorded for the deployment: what every later start runs.
pub fn recorded_image(
    deployment: &db::deployments::DeploymentRow,
) -> Result<(ImageRef, Digest), StepError> {
    let missing = |what: &str| {
        StepError::Permanent(format!(
            "version {} has no recorded {what}",
            deployment.version
        ))
    };
    let image = deployment
        .image_tag
        .as_deref()
        .and_then(ImageRef::parse_tagged)
        .ok_or_else(|| missing("image tag"))?;
    let digest = deployment
        .image_digest
        .as_deref()
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| missing("digest"))?;
    Ok((image, digest))
}

/// The endpoint the deployment's instance answers on (kept while its function is Inactive).
pub fn recorded_endpoint(deployment: &db::deployments::DeploymentRow) -> Result<String, StepError> {
    deployment.runtime_endpoint.clone().ok_or_else(|| {
        StepError::Permanent(format!("version {} has no endpoint", deployment.version))
    })
}

/// `registry/<name>-<id8>:v<version>` for the deployment, on this worker's registry.
pub fn image_of(
    env: &Environment,
    deployment: &db::deployments::DeploymentRow,
) -> Result<ImageRef, StepError> {
    let name = FunctionName::parse(&deployment.function_name)
        .map_err(|e| StepError::Permanent(format!("stored function name is invalid: {e}")))?;
    Ok(ImageRef::for_version(
        env.registry.host(),
        &name,
        deployment.function_id,
        deployment.version,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_with_up_to_half_of_it_jitter() {
        let base = Duration::from_millis(200);
        for (attempt, ceiling) in [(1, 200), (2, 400), (3, 800), (10, 60_000), (40, 60_000)] {
            let ceiling = Duration::from_millis(ceiling);
            let waits: Vec<Duration> = (0..200).map(|_| backoff(base, attempt)).collect();
            assert!(
                waits.iter().all(|w| *w >= ceiling / 2 && *w <= ceiling),
                "attempt {attempt}: {waits:?}"
            );
            // Jitter: the waits are not all the same.
            assert!(waits.iter().any(|w| *w != waits[0]), "attempt {attempt}");
        }
    }
}
