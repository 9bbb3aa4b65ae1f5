//! Slipway's scheduler: fires the sweeps of `slipway_shared::schedule` on their cron
//! expressions. Any number of replicas may run; each tick fires once across them.
//!
//! Architecture invariant: the scheduler never does the work itself; its sweeps pick rows with
//! set-based SQL and enqueue the jobs the worker runs.

use std::{sync::Arc, time::Duration};

use slipway_shared::{
    config::SchedulerConfig,
    db,
    schedule::{self, Clock, Schedules, Sweep},
};
use sqlx::PgPool;
use tracing::{info, warn};

pub struct Scheduler {
    pool: PgPool,
    config: SchedulerConfig,
    schedules: Schedules,
    clock: Arc<dyn Clock>,
    name: String,
}

/// A tick this replica fired.
#[derive(Debug, Clone)]
pub struct Fired {
    pub sweep: Sweep,
    pub fire_at: chrono::DateTime<chrono::Utc>,
    pub result: serde_json::Value,
}

impl Scheduler {
    pub fn new(
        pool: PgPool,
        config: SchedulerConfig,
        clock: Arc<dyn Clock>,
        name: String,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            schedules: Schedules::parse(&config)?,
            config,
            clock,
            name,
        })
    }

    /// Fires every sweep whose latest tick is due and not yet fired by any replica.
    pub async fn tick(&self) -> anyhow::Result<Vec<Fired>> {
        let now = self.clock.now();
        let mut fired = Vec::new();
        for (sweep, schedule) in self.schedules.iter() {
            let last = {
                let mut conn = self.pool.acquire().await?;
                db::sweeps::last_scheduled_tick(&mut conn, sweep.as_str()).await?
            };
            let Some(fire_at) = schedule::due_tick(schedule, last, now) else {
                continue;
            };
            if let Some(result) =
                schedule::fire(&self.pool, &self.config, sweep, fire_at, &self.name, false).await?
            {
                info!(%sweep, %fire_at, %result, "sweep fired");
                fired.push(Fired {
                    sweep,
                    fire_at,
                    result,
                });
            }
        }
        Ok(fired)
    }

    /// Ticks every second until `shutdown` resolves. A failed tick is logged and retried at the
    /// next second: the tick it could not fire is still due.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        info!(name = %self.name, "scheduler starting");
        let mut shutdown = std::pin::pin!(shutdown);
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = interval.tick() => {
                    if let Err(e) = self.tick().await {
                        warn!(error = %format!("{e:#}"), "tick failed; retrying");
                    }
                }
            }
        }
        info!("scheduler stopped");
    }
}
