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
    written: Mutex<HashMap<Uuid, Instant>>,
}

impl InvocationMarks {
    /// Records that `function_id` was invoked now, if this process has not recently.
    pub fn mark(&self, pool: &PgPool, function_id: Uuid) {
        let now = Instant::now();
        {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            if written
                .get(&function_id)
                .is_some_and(|at| now.duration_since(*at) < EVERY)
            {
                return;
            }
            // Bounded by the number of functions invoked within EVERY.
            written.retain(|_, at| now.duration_since(*at) < EVERY);
            written.insert(function_id, now);
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let result = async {
                let mut conn = pool.acquire().await?;
                db::functions::mark_invoked(&mut conn, function_id).await
            }
            .await;
            if let Err(e) = result {
                warn!(%function_id, error = %e, "could not record the invocation time");
            }
        });
    }
}
