//! Every SQL statement of Slipway (besides `migrations/`), one module per aggregate. Functions take
//! `&mut PgConnection` so the caller decides whether they run on a pooled connection or inside the
//! transaction it owns.

pub mod aliases;
pub mod console;
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

/// Whether `error` is Postgres being unreachable or going away rather than a fault of ours: no
/// connection could be had or kept, or the server said it is shutting down or starting (SQLSTATE
/// classes 08 and 57P). Asking again later is the right move; the pool reconnects by itself.
pub fn unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) || error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
}

/// Whether any cause in the chain from `error` is [`unavailable`].
pub fn unavailable_in(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current
            .downcast_ref::<sqlx::Error>()
            .is_some_and(unavailable)
        {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Applies apalis-postgres's migrations (schema `apalis`, with its own history table), then
/// Slipway's, which may build on the job table (the trigger that parks paused queues' jobs), so
/// one command brings a database to the version this binary expects.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    apalis_postgres::PostgresStorage::<()>::setup(pool)
        .await
        .context("applying apalis-postgres's migrations")?;
    sqlx::migrate!("../migrations")
        .run(pool)
        .await
        .context("applying Slipway's migrations")?;
    Ok(())
}

/// Statuses are stored as their names and decoded into the domain's enums as rows are read
/// (`status AS "status: DeploymentStatus"`), so no code past `db` compares them as strings and an
/// unknown name is an error at the row, not a silent mismatch later.
macro_rules! status_column {
    ($status:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $status {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $status {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(Self::parse(name)?)
            }
        }
    };
}

status_column!(crate::domain::DeploymentStatus);
status_column!(crate::domain::FunctionStatus);
