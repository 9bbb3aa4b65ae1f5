//! Benchmark (not a test): seeds a database with a million functions and times one tick of each
//! sweep against it, next to a baseline in the same run (a sequential count of the functions
//! table), so the figures read as ratios that survive a different machine.
//!
//! ```sh
//! bench/sweeps.sh            # starts the services, makes a scratch database, runs this
//! ```
//!
//! Reads `DATABASE_URL` (an empty, migrated database) and `SLIPWAY_BENCH_FUNCTIONS` (1000000).

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use slipway_shared::{
    config::SchedulerConfig,
    schedule::{self, Sweep},
};
use sqlx::{AssertSqlSafe, PgPool};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL")?;
    let functions: i64 = std::env::var("SLIPWAY_BENCH_FUNCTIONS")
        .ok()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let pool = PgPool::connect(&url).await?;

    let started = Instant::now();
    seed(&pool, functions).await?;
    println!("seeded {functions} functions in {:.1?}", started.elapsed());

    let baseline = time(|| async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM functions")
            .fetch_one(&pool)
            .await?;
        Ok(())
    })
    .await?;
    println!("baseline (count(*) over functions): {baseline:.1?}");

    let config = SchedulerConfig {
        default_function_quota: 90,
        ..Default::default()
    };
    let mut at = Utc::now();
    println!(
        "{:<8} {:>10} {:>8} {:>10}",
        "sweep", "time", "rows", "÷baseline"
    );
    for sweep in Sweep::ALL {
        at += chrono::TimeDelta::seconds(1);
        let started = Instant::now();
        let result = schedule::fire(&pool, &config, sweep, at, "bench", true)
            .await?
            .context("tick taken")?;
        let took = started.elapsed();
        println!(
            "{:<8} {:>10.1?} {:>8} {:>10.3}",
            sweep.as_str(),
            took,
            result["functions"],
            took.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    Ok(())
}

async fn time<F, Fut>(run: F) -> anyhow::Result<Duration>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run().await?; // warm the cache once
    let started = Instant::now();
    run().await?;
    Ok(started.elapsed())
}

/// 1 user per 100 functions. 60% Active and invoked within the last 30 minutes (some idle past
/// 15), 15% Inactive with a last invocation up to 200 days ago, 25% never deployed (Pending)
/// and created up to 200 days ago. Active functions have an active deployment with an instance.
async fn seed(pool: &PgPool, functions: i64) -> anyhow::Result<()> {
    let statements = [
        format!(
            "INSERT INTO users (id, name) SELECT gen_random_uuid(), 'bench-' || u \
             FROM generate_series(1, {}) u",
            (functions / 100).max(1)
        ),
        format!(
            "INSERT INTO functions (id, owner_id, name, status, state, last_update_status, \
                                    last_invoked_at, created_at, updated_at) \
             SELECT gen_random_uuid(), o.ids[1 + (n / 100) % o.count], 'f-' || n, \
                    CASE WHEN n % 20 < 15 THEN 'active' ELSE 'init' END, \
                    CASE WHEN n % 20 < 12 THEN 'Active' WHEN n % 20 < 15 THEN 'Inactive' \
                         ELSE 'Pending' END, \
                    CASE WHEN n % 20 < 15 THEN 'Successful' END, \
                    CASE WHEN n % 20 < 12 THEN now() - (n % 1800) * interval '1 second' \
                         WHEN n % 20 < 15 THEN now() - (n % 200) * interval '1 day' END, \
                    now() - (n % 200) * interval '1 day', now() - interval '1 hour' \
             FROM generate_series(1, {functions}) n, \
                  (SELECT array_agg(id) AS ids, count(*) AS count FROM users) o"
        ),
        "INSERT INTO deployments (id, function_id, version, archive_key, archive_sha256, \
                                  archive_bytes, status, is_active, image_tag, image_digest, \
                                  runtime_endpoint, container_id) \
         SELECT gen_random_uuid(), f.id, 1, 'functions/' || f.id || '/v1.tar.gz', \
                repeat('a', 64), 1, 'active', true, 'registry/' || f.name || ':v1', \
                'sha256:' || repeat('b', 64), '127.0.0.1:1', 'container-' || f.id \
         FROM functions f WHERE f.state = 'Active'"
            .to_owned(),
        "ANALYZE".to_owned(),
    ];
    for statement in statements {
        sqlx::query(AssertSqlSafe(statement)).execute(pool).await?;
    }
    Ok(())
}
