//! Durability: a worker that dies while holding a job does not lose it. Its heartbeats stop, a
//! peer re-enqueues the orphan and runs it, and the deployment completes; the dead worker's
//! half-done run cannot overwrite the outcome.

use std::time::Duration;

use slipway_shared::{
    config::WorkerConfig,
    db,
    jobs::{BuildJob, Job},
};
use slipway_tests::{StackOptions, StoreKind, TestStack, eventually, hello_archive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_by_a_worker_that_died_is_run_again_by_a_peer() -> anyhow::Result<()> {
    let mut stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;

    // The doomed worker cannot reach BuildKit and waits long between attempts, so it holds the
    // build job while the test kills it. Its run goes on after the kill (apalis runs handlers on
    // tasks of their own, as a partitioned worker would), so it must not give up (and fail the
    // deployment) before a loaded machine lets the peer take over: backoff is capped at a
    // minute, and eight attempts outlast any takeover by minutes.
    fn stuck(config: &mut WorkerConfig) {
        config.buildkit = "tcp://127.0.0.1:9".into();
        config.retry_base = Duration::from_secs(600);
        config.retry_attempts = 8;
    }
    let doomed = stack.spawn_worker(stuck)?;
    let function_id = stack.init("survivor").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("survived\n")?)
        .await?;
    eventually(
        Duration::from_secs(20),
        "the doomed worker to hold the build",
        || async {
            let mut conn = stack.conn().await?;
            let jobs = db::queue::jobs(&mut conn, &[BuildJob::NAME]).await?;
            Ok(jobs.iter().any(|j| j.status == "Running").then_some(()))
        },
    )
    .await?;
    doomed.abort();
    let _ = doomed.await;

    // A healthy peer takes the orphan over once the dead worker's heartbeats are overdue.
    let peer = stack.spawn_worker(|_| {})?;
    stack.adopt(peer);
    stack.wait_active(deployment).await?;
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "survived\n".into())
    );

    let jobs = eventually(
        Duration::from_secs(20),
        "the build acknowledged",
        || async {
            let mut conn = stack.conn().await?;
            let jobs = db::queue::jobs(&mut conn, &[BuildJob::NAME]).await?;
            Ok(jobs.iter().all(|j| j.status == "Done").then_some(jobs))
        },
    )
    .await?;
    assert_eq!(
        jobs.len(),
        1,
        "the same job was run again, not a copy: {jobs:?}"
    );
    assert!(
        jobs[0].attempts >= 2,
        "the re-run counts as another attempt: {jobs:?}"
    );
    stack.shutdown().await
}
