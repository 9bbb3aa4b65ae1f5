//! The scheduler's sweeps and ticks, shared by the scheduler (which fires them on their cron
//! expressions) and the api (which lists them and fires one on an operator's request).
//!
//! Each tick fires exactly once across any number of replicas: firing inserts
//! `(sweep, fire_at)` into `scheduler_ticks` in the transaction that runs the sweep, and only one
//! insert can win. A replica computes the *latest* due tick, so ticks missed while every replica
//! was down are caught up once, not once per missed tick. Sweeps only pick rows and enqueue jobs;
//! the worker does the work.

use std::{fmt, str::FromStr, sync::Mutex, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    config::SchedulerConfig,
    db,
    jobs::{Job, PurgeJob, ReleaseJob, VerifyJob},
};

/// Where "now" comes from, so tests move time instead of sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += chrono::TimeDelta::from_std(by).unwrap_or(chrono::TimeDelta::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sweep {
    /// Active functions idle for `idle_after` release their instance (Inactive).
    Idle,
    /// Idle functions untouched for `stale_after` are scheduled for deletion.
    Stale,
    /// Users over their function quota lose their least recently used Inactive functions.
    Quota,
    /// Deletions past their grace period are purged.
    Purge,
    /// Serving digests are checked at the registry.
    Digest,
    /// Invocation events, webhook deliveries and deployment logs past their retention go.
    Retention,
    /// Deployments left in flight by a job that is gone, ended, timed out or lost its worker
    /// are failed with the reason, and their functions settle.
    Reap,
}

impl Sweep {
    pub const ALL: [Self; 7] = [
        Self::Idle,
        Self::Stale,
        Self::Quota,
        Self::Purge,
        Self::Digest,
        Self::Retention,
        Self::Reap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Stale => "stale",
            Self::Quota => "quota",
            Self::Purge => "purge",
            Self::Digest => "digest",
            Self::Retention => "retention",
            Self::Reap => "reap",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn cron(self, config: &SchedulerConfig) -> &str {
        match self {
            Self::Idle => &config.cron_idle,
            Self::Stale => &config.cron_stale,
            Self::Quota => &config.cron_quota,
            Self::Purge => &config.cron_purge,
            Self::Digest => &config.cron_digest,
            Self::Retention => &config.cron_retention,
            Self::Reap => &config.cron_reap,
        }
    }
}

impl fmt::Display for Sweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every sweep's parsed cron expression; a bad expression fails start-up, naming its variable.
pub struct Schedules(Vec<(Sweep, cron::Schedule)>);

impl Schedules {
    pub fn parse(config: &SchedulerConfig) -> anyhow::Result<Self> {
        Sweep::ALL
            .into_iter()
            .map(|sweep| {
                let expression = sweep.cron(config);
                let schedule = cron::Schedule::from_str(expression).with_context(|| {
                    format!(
                        "SLIPWAY_CRON_{}={expression:?} is not a cron expression with seconds \
                         (sec min hour day month weekday)",
                        sweep.as_str().to_uppercase()
                    )
                })?;
                Ok((sweep, schedule))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Sweep, &cron::Schedule)> {
        self.0.iter().map(|(sweep, schedule)| (*sweep, schedule))
    }
}

/// How far back a replica looks for a missed tick; older ones are simply gone.
const CATCH_UP: chrono::TimeDelta = chrono::TimeDelta::days(2);

/// The latest fire time of `schedule` at or before `now` and after `last`, if any: the one tick
/// to fire now, however many were missed.
pub fn due_tick(
    schedule: &cron::Schedule,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let floor = last.unwrap_or(now - CATCH_UP).max(now - CATCH_UP);
    schedule
        .after(&floor)
        .take_while(|at| *at <= now)
        .last()
        .filter(|at| last.is_none_or(|last| *at > last))
}

/// The next fire time after `now`.
pub fn next_tick(schedule: &cron::Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&now).next()
}

/// Fires `sweep` for `fire_at` unless another replica already did; returns its result when this
/// call fired it.
pub async fn fire(
    pool: &PgPool,
    config: &SchedulerConfig,
    sweep: Sweep,
    fire_at: DateTime<Utc>,
    fired_by: &str,
    manual: bool,
) -> anyhow::Result<Option<serde_json::Value>> {
    let mut tx = pool.begin().await?;
    if !db::sweeps::claim_tick(&mut tx, sweep.as_str(), fire_at, fired_by, manual).await? {
        return Ok(None);
    }
    let result = run(&mut tx, config, sweep, fire_at).await?;
    db::sweeps::record_tick(&mut tx, sweep.as_str(), fire_at, &result).await?;
    tx.commit().await?;
    let picked = result.as_object().into_iter().flatten();
    crate::metrics::sweep_ran(
        sweep.as_str(),
        picked.filter_map(|(_, count)| count.as_u64()).sum(),
    );
    Ok(Some(result))
}

/// One sweep, in the caller's transaction; `now` is the tick's time.
async fn run(
    conn: &mut sqlx::PgConnection,
    config: &SchedulerConfig,
    sweep: Sweep,
    now: DateTime<Utc>,
) -> anyhow::Result<serde_json::Value> {
    let functions = match sweep {
        Sweep::Idle => {
            let due = db::sweeps::due_releases(conn, now, config.idle_after, config.batch).await?;
            let versions =
                db::aliases::due_releases(conn, now, config.idle_after, config.batch).await?;
            let jobs: Vec<ReleaseJob> = due
                .iter()
                .map(|&function_id| (function_id, None))
                .chain(
                    versions
                        .iter()
                        .map(|&(function_id, deployment_id)| (function_id, Some(deployment_id))),
                )
                .map(|(function_id, version_instance)| ReleaseJob {
                    function_id,
                    request_id: Uuid::new_v4(),
                    version_instance,
                })
                .collect();
            ReleaseJob::enqueue_all(&jobs, conn).await?;
            due.into_iter()
                .chain(versions.into_iter().map(|(function_id, _)| function_id))
                .collect()
        }
        Sweep::Stale => {
            db::sweeps::schedule_stale(
                conn,
                now,
                config.stale_after,
                config.deletion_grace,
                config.batch,
            )
            .await?
        }
        Sweep::Quota => {
            db::sweeps::schedule_over_quota(
                conn,
                now,
                config.default_function_quota,
                config.deletion_grace,
                config.batch,
            )
            .await?
        }
        Sweep::Purge => {
            let due =
                db::sweeps::due_purges(conn, now, config.purge_retry_after, config.batch).await?;
            let jobs: Vec<PurgeJob> = due
                .iter()
                .map(|&function_id| PurgeJob::Function {
                    function_id,
                    request_id: Uuid::new_v4(),
                })
                .collect();
            PurgeJob::enqueue_all(&jobs, conn).await?;
            due
        }
        Sweep::Digest => {
            let due =
                db::sweeps::due_verifications(conn, now, config.verify_every, config.batch).await?;
            let jobs: Vec<VerifyJob> = due
                .iter()
                .map(|&function_id| VerifyJob {
                    function_id,
                    request_id: Uuid::new_v4(),
                })
                .collect();
            VerifyJob::enqueue_all(&jobs, conn).await?;
            due
        }
        Sweep::Retention => {
            let pruned = db::sweeps::prune_by_age(
                conn,
                now,
                db::sweeps::Retention {
                    events: config.retention_events,
                    deliveries: config.retention_deliveries,
                    logs: config.retention_logs,
                    jobs: config.retention_jobs,
                },
                config.batch,
            )
            .await?;
            return Ok(json!({
                "events": pruned.events,
                "deliveries": pruned.deliveries,
                "logs": pruned.logs,
                "jobs": pruned.jobs,
            }));
        }
        Sweep::Reap => {
            // Every 30 s by default: the queue counts' changes never pile up unread.
            db::queue::fold_counts(conn).await?;
            let stuck = db::sweeps::stuck_deployments(
                conn,
                now,
                config.reap_after,
                &crate::jobs::PIPELINE_QUEUES,
                config.batch,
            )
            .await?;
            let mut failed = 0;
            for deployment in &stuck {
                let reason = deployment.reason(config.reap_after);
                tracing::warn!(deployment_id = %deployment.deployment_id, reason, "reaping a stuck deployment");
                if crate::settle::fail_deployment(
                    conn,
                    deployment.deployment_id,
                    None,
                    deployment.function_id,
                    &deployment.phase(),
                    &reason,
                )
                .await?
                {
                    failed += 1;
                }
            }
            // What the runtime holds and no deployment owns goes too; only a worker can see it.
            PurgeJob::Orphans {
                created_before: now - config.reap_after,
                limit: u32::try_from(config.batch).unwrap_or(u32::MAX),
            }
            .enqueue(conn)
            .await?;
            return Ok(json!({ "deployments": failed, "orphan_sweep": "enqueued" }));
        }
    };
    Ok(json!({ "functions": functions.len() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> DateTime<Utc> {
        raw.parse().unwrap()
    }

    #[test]
    fn a_missed_run_of_ticks_fires_once_at_the_latest() {
        let every_minute = cron::Schedule::from_str("0 * * * * *").unwrap();
        let now = at("2026-11-23T10:05:30Z");
        assert_eq!(
            due_tick(&every_minute, Some(at("2026-11-23T10:00:00Z")), now),
            Some(at("2026-11-23T10:05:00Z"))
        );
        assert_eq!(
            due_tick(&every_minute, Some(at("2026-11-23T10:05:00Z")), now),
            None,
            "that tick already fired"
        );
        assert_eq!(
            due_tick(&every_minute, None, now),
            Some(at("2026-11-23T10:05:00Z")),
            "a first start fires the latest tick"
        );
        assert_eq!(
            next_tick(&every_minute, now),
            Some(at("2026-11-23T10:06:00Z"))
        );
    }

    #[test]
    fn a_tick_exactly_now_is_due() {
        let daily = cron::Schedule::from_str("0 0 3 * * *").unwrap();
        let now = at("2026-11-23T03:00:00Z");
        assert_eq!(
            due_tick(&daily, Some(at("2026-11-22T03:00:00Z")), now),
            Some(now)
        );
    }

    #[test]
    fn bad_expressions_name_their_variable() {
        let mut config = SchedulerConfig {
            cron_idle: "0 * * * * *".into(),
            cron_stale: "0 * * * * *".into(),
            cron_quota: "0 * * * * *".into(),
            cron_purge: "every five minutes".into(),
            cron_digest: "0 * * * * *".into(),
            idle_after: Duration::from_secs(60),
            stale_after: Duration::from_secs(60),
            deletion_grace: Duration::from_secs(60),
            default_function_quota: 1,
            verify_every: Duration::from_secs(60),
            purge_retry_after: Duration::from_secs(60),
            batch: 10,
            ..Default::default()
        };
        let error = Schedules::parse(&config).err().unwrap().to_string();
        assert!(error.contains("SLIPWAY_CRON_PURGE"), "{error}");
        config.cron_purge = "0 */5 * * * *".into();
        assert_eq!(
            Schedules::parse(&config).unwrap().iter().count(),
            Sweep::ALL.len()
        );
    }
}
