//! `slipway-scheduler`: fires the sweeps until SIGINT/SIGTERM. Run as many replicas as wanted.

use std::sync::Arc;

use slipway_scheduler::Scheduler;
use slipway_shared::{
    config::{DatabaseConfig, SchedulerConfig, unique_worker_name},
    db,
    schedule::SystemClock,
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let config = SchedulerConfig::from_env()?;
    slipway_shared::metrics::serve_if_configured()?;
    let pool = db::connect(&DatabaseConfig::from_env()?).await?;
    let scheduler = Scheduler::new(pool, config, Arc::new(SystemClock), unique_worker_name())?;
    scheduler.run(telemetry::shutdown_signal()).await;
    Ok(())
}
