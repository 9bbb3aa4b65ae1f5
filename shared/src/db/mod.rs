//! Every SQL statement of Slipway (besides `migrations/`), one module per aggregate. Functions take
//! `&mut PgConnection` so the caller decides whether they run on a pooled connection or inside the
//! transaction it owns.

pub mod deletions;
pub mod deployments;
pub mod events;
pub mod functions;
pub mod git;
pub mod idempotency;
pub mod logs;
pub mod nonces;
pub mod queue;
pub mod sweeps;
pub mod users;

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::config::DatabaseConfig;

pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(config.url.expose_secret())
        .await
        .context("connecting to Postgres (DATABASE_URL)")
}

/// Applies Slipway's migrations, then apalis-postgres's own (schema `apalis`, with its own
/// history table), so one command brings a database to the version this binary expects.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations")
        .run(pool)
        .await
        .context("applying Slipway's migrations")?;
    apalis_postgres::PostgresStorage::<()>::setup(pool)
        .await
        .context("applying apalis-postgres's migrations")?;
    Ok(())
}
