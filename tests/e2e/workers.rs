//! Horizontal workers: two workers on one queue share the work and run each job exactly once.

use std::time::{Duration, Instant};

use slipway_shared::{db, jobs::ALL_QUEUES};
use slipway_tests::{StackOptions, StoreKind, TestStack, hello_archive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_deploy_ten_functions_and_run_each_job_once() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::S3,
        workers: 2,
        // One owner deploys all ten: its share of the builders must not be what is measured.
        // Heartbeats are given slack: a loaded machine must not make the queue re-run a job
        // whose worker lives (that recovery is `crash.rs`'s), or "once" would be luck.
        worker_overrides: Some(|config| {
            config.build_slots_per_owner = 10;
            config.missed_heartbeats = 30;
        }),
        ..Default::default()
    })
    .await?;
    let started = Instant::now();
    let mut deployments = Vec::new();
    for i in 0..10 {
        let function_id = stack.init(&format!("fleet-{i}")).await?;
        let (deployment, _) = stack
            .deploy(function_id, hello_archive(&format!("member {i}\n"))?)
            .await?;
        deployments.push((function_id, deployment, i));
    }
    for (_, deployment, _) in &deployments {
        stack.wait_active(*deployment).await?;
    }
    eprintln!(
        "10 functions active in {:?} with 2 workers",
        started.elapsed()
    );
    for (function_id, _, i) in &deployments {
        assert_eq!(
            stack.invoke(*function_id, "").await?,
            (200, format!("member {i}\n"))
        );
    }

    // apalis acknowledges a finished job a moment after its handler returns.
    let jobs =
        slipway_tests::eventually(Duration::from_secs(20), "all jobs acknowledged", || async {
            let mut conn = stack.conn().await?;
            let jobs = db::queue::jobs(&mut conn, &ALL_QUEUES).await?;
            Ok(jobs.iter().all(|j| j.status == "Done").then_some(jobs))
        })
        .await?;
    assert_eq!(
        jobs.len(),
        50,
        "one build, push, cache-warm, deploy and retention purge per function: {jobs:?}"
    );
    for job in &jobs {
        assert_eq!((job.status.as_str(), job.attempts), ("Done", 1), "{job:?}");
    }
    // apalis keeps the claimer in lock_by as "<worker name>/<queue>".
    let claims: Vec<String> =
        sqlx::query_scalar("SELECT lock_by FROM apalis.jobs WHERE lock_by IS NOT NULL")
            .fetch_all(&stack.pool)
            .await?;
    let mut by_worker = std::collections::BTreeMap::<&str, usize>::new();
    for claim in &claims {
        let worker = claim.split_once('/').map_or(claim.as_str(), |(w, _)| w);
        *by_worker.entry(worker).or_default() += 1;
    }
    eprintln!("jobs run per worker: {by_worker:?}");
    assert_eq!(
        claims.len(),
        jobs.len(),
        "every job was claimed by a worker"
    );
    assert_eq!(
        by_worker.len(),
        2,
        "both workers took a share of the jobs: {by_worker:?}"
    );
    stack.shutdown().await
}
