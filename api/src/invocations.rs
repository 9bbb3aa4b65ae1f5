//! When each function was last invoked, for the scheduler's idle, stale and quota sweeps. Writing
//! it on every invocation would put a database write on the hot path, so each api process writes
//! at most once per `EVERY` per function, off the request's task; the sweeps work in minutes
//! and days, so being up to `EVERY` late changes nothing.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use slipway_shared::db;
use sqlx::PgPool;
use tracing::warn;
use uuid::Uuid;

const EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct InvocationMarks {
    written: Mutex<HashMap<Invoked, Instant>>,
}

/// What an invocation reached: a function's own instance, or a version instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Invoked {
    Function(Uuid),
    Version(Uuid),
}

impl InvocationMarks {
    /// Records that `function_id` was invoked now, if this process has not recently.
    pub fn mark(&self, pool: &PgPool, function_id: Uuid) {
        self.mark_once(pool, Invoked::Function(function_id));
    }

    /// Records that the version instance of `deployment_id` (an alias's) was invoked now, for its
    /// own idle release, if this process has not recently.
    pub fn mark_version(&self, pool: &PgPool, deployment_id: Uuid) {
        self.mark_once(pool, Invoked::Version(deployment_id));
    }

    fn mark_once(&self, pool: &PgPool, invoked: Invoked) {
        let now = Instant::now();
        {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            if written
                .get(&invoked)
                .is_some_and(|at| now.duration_since(*at) < EVERY)
            {
                return;
            }
            // Bounded by the number of functions and versions invoked within EVERY.
            written.retain(|_, at| now.duration_since(*at) < EVERY);
            written.insert(invoked, now);
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let result = async {
                let mut conn = pool.acquire().await?;
                match invoked {
                    Invoked::Function(id) => db::functions::mark_invoked(&mut conn, id).await,
                    Invoked::Version(id) => db::aliases::mark_invoked(&mut conn, id).await,
                }
            }
            .await;
            if let Err(e) = result {
                warn!(?invoked, error = %e, "could not record the invocation time");
            }
        });
    }
}
