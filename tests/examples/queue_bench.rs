//! Benchmark (not a test): the operators' views over a job table of a million rows. The queues
//! overview, a filtered job page and the metrics scrape are timed through the api, next to the
//! query the overview used to run (`count(*)` over the jobs, grouped by queue and state) and a
//! plain `count(*)` in the same run, so the figures read as ratios on any machine.
//!
//! ```sh
//! bench/queues.sh          # SLIPWAY_BENCH_JOBS=1000000, SLIPWAY_BENCH_CALLS=200
//! ```

use std::time::{Duration, Instant};

use slipway_shared::jobs::ALL_QUEUES;
use slipway_tests::{
    StackOptions, StoreKind, TestStack,
    bench::{self, Figures, print_table},
};

/// A job table as a busy platform leaves it: nearly all finished, a few failed or killed, a
/// few waiting; newest first by `run_at`.
async fn seed(stack: &TestStack, jobs: i64) -> anyhow::Result<()> {
    let mut tx = stack.pool.begin().await?;
    // One NOTIFY per inserted row would only wake workers this bench does not run.
    sqlx::query("ALTER TABLE apalis.jobs DISABLE TRIGGER notify_workers")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, run_at,
                                  done_at, last_result)
         SELECT convert_to(json_build_object('deployment_id', gen_random_uuid())::text, 'UTF8'),
                'bench-' || i,
                ($2::text[])[1 + i % array_length($2, 1)],
                s.status,
                CASE WHEN s.status = 'Pending' THEN 0 ELSE 1 END,
                CASE WHEN s.status = 'Failed' THEN 1 ELSE 5 END,
                now() - i * interval '1 second',
                CASE WHEN s.status IN ('Done', 'Failed', 'Killed')
                     THEN now() - i * interval '1 second' + interval '1 second' END,
                CASE WHEN s.status = 'Failed' THEN '{\"Err\": \"bench\"}'::jsonb END
         FROM generate_series(1, $1) AS i,
              LATERAL (SELECT CASE WHEN i % 100 < 2 THEN 'Failed'
                                   WHEN i % 100 = 2 THEN 'Killed'
                                   WHEN i % 100 = 3 THEN 'Pending'
                                   ELSE 'Done' END AS status) AS s",
    )
    .bind(jobs)
    .bind(ALL_QUEUES.map(str::to_owned).to_vec())
    .execute(&mut *tx)
    .await?;
    sqlx::query("ALTER TABLE apalis.jobs ENABLE TRIGGER notify_workers")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    sqlx::query("VACUUM ANALYZE apalis.jobs")
        .execute(&stack.pool)
        .await?;
    Ok(())
}

async fn timed_get(
    stack: &TestStack,
    key: &str,
    path: &str,
    calls: usize,
) -> anyhow::Result<Figures> {
    let mut took = Vec::with_capacity(calls);
    for round in 0..calls + 5 {
        let started = Instant::now();
        let response = stack
            .http
            .get(stack.url(path))
            .bearer_auth(key)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(status == 200, "{path}: {status} {body:?}");
        // The first few warm the caches and the connection.
        if round >= 5 {
            took.push(started.elapsed());
        }
    }
    Ok(Figures::of(took))
}

async fn timed_sql(stack: &TestStack, sql: &'static str, calls: usize) -> anyhow::Result<Figures> {
    let mut took: Vec<Duration> = Vec::with_capacity(calls);
    for round in 0..calls + 2 {
        let started = Instant::now();
        sqlx::query(sql).fetch_all(&stack.pool).await?;
        if round >= 2 {
            took.push(started.elapsed());
        }
    }
    Ok(Figures::of(took))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls = bench::calls(200)?;
    let jobs: i64 = std::env::var("SLIPWAY_BENCH_JOBS")
        .ok()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    // No worker: nothing but the api and Postgres compete for the cores.
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let operator = stack.add_operator().await?;
    let key = operator.expose();
    let started = Instant::now();
    seed(&stack, jobs).await?;
    println!("seeded {jobs} jobs in {:.1?}", started.elapsed());

    // Counting scans: a few calls are enough to see their p50.
    let scans = calls.min(20);
    let count = timed_sql(&stack, "SELECT count(*) FROM apalis.jobs", scans).await?;
    let grouped = timed_sql(
        &stack,
        "SELECT job_type, status, count(*) FROM apalis.jobs GROUP BY job_type, status",
        scans,
    )
    .await?;
    let overview = timed_get(&stack, key, "/api/ops/queues", calls).await?;
    let page = timed_get(
        &stack,
        key,
        "/api/ops/jobs?queue=slipway::build&state=Failed&per_page=50",
        calls,
    )
    .await?;
    let queue_page = timed_get(&stack, key, "/api/ops/jobs?queue=slipway::deploy", calls).await?;
    let deep_page = timed_get(
        &stack,
        key,
        "/api/ops/jobs?queue=slipway::push&state=Done&page=100&per_page=50",
        calls,
    )
    .await?;
    let scrape = timed_get(&stack, key, "/metrics", calls).await?;
    stack.shutdown().await?;

    let within = |f: &Figures| {
        if f.p50 <= Duration::from_millis(50) {
            "within 50 ms"
        } else {
            "OVER 50 ms"
        }
    };
    println!(
        "{calls} sequential calls per route ({scans} per scan); target p50 ≤ 50 ms: overview {}, \
         filtered page {}",
        within(&overview),
        within(&page)
    );
    print_table(
        "request",
        "p50÷count",
        &[
            ("count(*) (baseline)", count),
            ("count(*) by queue, state", grouped),
            ("GET /api/ops/queues", overview),
            ("jobs: queue + state", page),
            ("jobs: queue", queue_page),
            ("jobs: page 100", deep_page),
            ("GET /metrics", scrape),
        ],
    );
    Ok(())
}
