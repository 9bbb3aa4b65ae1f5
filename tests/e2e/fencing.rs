//! Fencing: the same pipeline job run twice at once, as the queue does when it re-runs a job
//! whose worker missed its heartbeats while the first run still goes on. The newer run takes the
//! deployment over; the older one stops at its next write without failing anything, and what
//! serves in the end is one instance, the one the deployment records.

use std::time::Duration;

use anyhow::Context;
use slipway_shared::{
    db,
    domain::DeploymentStatus,
    jobs::{CacheWarmJob, DeployJob, Job},
};
use slipway_tests::{
    StackOptions, StoreKind, TestStack, containers_of, docker, eventually, pack_dir,
};

/// The hello function, but its server starts only once `/tmp/go` exists in its container: a
/// deploy run waits for its instance until the test opens that gate, so the second run of the job
/// surely starts while the first still waits, however loaded the machine is.
fn gated(greeting: &str) -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("www"))?;
    std::fs::write(dir.path().join("www/index.html"), greeting)?;
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM slipway/busybox:1\nCOPY www /www\nENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \
         \"until [ -e /tmp/go ]; do sleep 0.2; done; exec /bin/busybox httpd -f -p \\\"$PORT\\\" \
         -h /www\"]\n",
    )?;
    pack_dir(dir.path(), &Default::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_job_run_twice_at_once_ends_with_one_instance_and_no_failure() -> anyhow::Result<()>
{
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("run-twice").await?;
    let (deployment_id, _) = stack.deploy(function_id, gated("once\n")?).await?;

    // The first run has started and recorded its instance, and waits for it to answer.
    let first_instance = eventually(
        Duration::from_secs(180),
        "the first run's instance",
        || async {
            let mut conn = stack.conn().await?;
            let row = db::deployments::get(&mut conn, deployment_id)
                .await?
                .context("the deployment")?;
            Ok((row.status == DeploymentStatus::Deploying)
                .then_some(row.container_id)
                .flatten())
        },
    )
    .await?;
    // What the queue does to a job whose worker went silent: it is due again, and a worker runs
    // it while the first run, which nobody stopped, goes on.
    {
        let mut conn = stack.conn().await?;
        let requeued = sqlx::query(
            "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, \
             run_at = now() WHERE job_type = $1 AND status = 'Running'",
        )
        .bind(DeployJob::NAME)
        .execute(&mut *conn)
        .await?;
        assert_eq!(requeued.rows_affected(), 1, "the deploy job was running");
    }
    // The second run took the deployment over and recorded an instance of its own; only then do
    // the instances answer, so the first run is still waiting when it loses its claim.
    eventually(
        Duration::from_secs(180),
        "the second run's instance",
        || async {
            let mut conn = stack.conn().await?;
            let row = db::deployments::get(&mut conn, deployment_id)
                .await?
                .context("the deployment")?;
            Ok(row
                .container_id
                .filter(|instance| *instance != first_instance))
        },
    )
    .await?;
    for container in containers_of(function_id)? {
        // An instance the takeover already removed has no gate to open.
        docker(&["exec", &container, "/bin/busybox", "touch", "/tmp/go"]).ok();
    }

    let settled = stack.wait_active(deployment_id).await?;
    assert_eq!(settled["error"], serde_json::Value::Null, "{settled}");
    let row = {
        let mut conn = stack.conn().await?;
        db::deployments::get(&mut conn, deployment_id)
            .await?
            .context("the deployment")?
    };
    let serving = row.container_id.context("the active version's instance")?;
    assert_ne!(
        serving, first_instance,
        "the newer run's instance serves, not the one the older run started"
    );
    // The older run's instance is gone: nothing of the function runs but what serves.
    let running = eventually(Duration::from_secs(30), "one instance left", || async {
        let containers = containers_of(function_id)?;
        Ok((containers.len() == 1).then_some(containers))
    })
    .await?;
    assert!(
        serving.starts_with(&running[0]) || running[0].starts_with(&serving),
        "{running:?} against the recorded {serving}"
    );
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "once\n".to_owned())
    );

    // The older run said why its outcome does not count; the switch happened once.
    let log = eventually(
        Duration::from_secs(60),
        "the older run's last word",
        || async {
            let mut conn = stack.conn().await?;
            let log: Vec<String> = db::logs::list(&mut conn, deployment_id, 0, 10_000)
                .await?
                .into_iter()
                .map(|line| line.message)
                .collect();
            Ok(log
                .iter()
                .any(|line| line.contains("another run of this job took over"))
                .then_some(log))
        },
    )
    .await?;
    let switches = log.iter().filter(|l| l.ends_with("is active")).count();
    assert_eq!(switches, 1, "{log:#?}");
    stack.shutdown().await
}

/// Cache-warm hands over to deploy while the deployment stays `deploying`. A cache-warm whose
/// worker died before the queue heard it finish runs again beside the deploy it already handed
/// over to: that second run must not take the deployment over, or the deploy, fenced out, would
/// stop and nothing would ever finish the deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_warm_run_again_never_takes_over_from_the_deploy_it_handed_to() -> anyhow::Result<()>
{
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("warm-twice").await?;
    let (deployment_id, _) = stack.deploy(function_id, gated("warmed\n")?).await?;

    let deploy_run = eventually(
        Duration::from_secs(180),
        "the deploy's instance",
        || async {
            let mut conn = stack.conn().await?;
            let row = db::deployments::get(&mut conn, deployment_id)
                .await?
                .context("the deployment")?;
            Ok(
                (row.status == DeploymentStatus::Deploying && row.container_id.is_some())
                    .then_some(row.run_token)
                    .flatten(),
            )
        },
    )
    .await?;
    // The queue acknowledges the cache-warm run after it has handed over to the deploy, so its
    // row may still say Running when the deploy already holds the deployment: redeliver it once
    // the acknowledgement has landed.
    let redelivered = eventually(
        Duration::from_secs(60),
        "the finished cache-warm job, redelivered",
        || async {
            let mut conn = stack.conn().await?;
            let ids = sqlx::query_scalar::<_, String>(
                "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, \
                 done_at = NULL, run_at = now() \
                 WHERE job_type = $1 AND status = 'Done' \
                   AND convert_from(job, 'UTF8')::jsonb ->> 'deployment_id' = $2 RETURNING id",
            )
            .bind(CacheWarmJob::NAME)
            .bind(deployment_id.to_string())
            .fetch_all(&mut *conn)
            .await?;
            Ok((!ids.is_empty()).then_some(ids))
        },
    )
    .await?;
    assert_eq!(redelivered.len(), 1, "one cache-warm job per deployment");
    eventually(
        Duration::from_secs(120),
        "the second cache-warm run",
        || async {
            let mut conn = stack.conn().await?;
            let status: String = sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
                .bind(&redelivered[0])
                .fetch_one(&mut *conn)
                .await?;
            Ok((status == "Done").then_some(()))
        },
    )
    .await?;
    {
        let mut conn = stack.conn().await?;
        let row = db::deployments::get(&mut conn, deployment_id)
            .await?
            .context("the deployment")?;
        assert_eq!(
            row.run_token,
            Some(deploy_run),
            "the deploy still holds the deployment"
        );
    }

    for container in containers_of(function_id)? {
        docker(&["exec", &container, "/bin/busybox", "touch", "/tmp/go"])?;
    }
    let settled = stack.wait_active(deployment_id).await?;
    assert_eq!(settled["error"], serde_json::Value::Null, "{settled}");
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "warmed\n".to_owned())
    );
    stack.shutdown().await
}
