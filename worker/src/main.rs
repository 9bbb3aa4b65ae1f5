//! `slipway-worker`: runs jobs; run as many replicas as needed against one Postgres.
// The release build's layout of the job handlers' futures (apalis's service stack around them)
// nests deeper than the default limit of 128.
#![recursion_limit = "256"]

use std::sync::Arc;

use slipway_shared::{
    config::{DatabaseConfig, StoreConfig, WorkerConfig},
    db,
    store::ArchiveStore,
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let config = WorkerConfig::from_env()?;
    slipway_shared::metrics::serve_if_configured()?;
    let pool = db::connect(&DatabaseConfig::from_env()?).await?;
    let store = ArchiveStore::from_config(&StoreConfig::from_env()?).await?;
    let env = slipway_worker::Environment::new(pool, Arc::new(store), config)?;
    slipway_worker::run(Arc::new(env), telemetry::shutdown_signal()).await
}
