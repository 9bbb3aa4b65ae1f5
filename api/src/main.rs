//! `slipway-api`: the REST API alone; run as many replicas as needed against one Postgres.

use std::sync::Arc;

use anyhow::Context;
use slipway_shared::{
    config::{ApiConfig, DatabaseConfig, StoreConfig},
    db,
    store::ArchiveStore,
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let api = ApiConfig::from_env()?;
    let pool = db::connect(&DatabaseConfig::from_env()?).await?;
    let store = ArchiveStore::from_config(&StoreConfig::from_env()?).await?;
    let listener = tokio::net::TcpListener::bind(api.bind)
        .await
        .with_context(|| format!("binding {}", api.bind))?;
    tracing::info!(bind = %api.bind, "api listening");
    let state = slipway_api::AppState::new(pool, Arc::new(store), api)?;
    slipway_api::serve(listener, state, telemetry::shutdown_signal()).await
}
