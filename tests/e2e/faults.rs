//! Transient faults: an unreachable BuildKit or registry is retried with backoff, and when it
//! stays unreachable the deployment fails saying so, while nothing else is touched.

use std::time::Duration;

use serde_json::Value;
use slipway_shared::config::WorkerConfig;
use slipway_tests::{StackOptions, StoreKind, TestStack, hello_archive};

async fn deploy_expecting_failure(stack: &TestStack, name: &str) -> anyhow::Result<Value> {
    let function_id = stack.init(name).await?;
    let (deployment, _) = stack.deploy(function_id, hello_archive("never\n")?).await?;
    let log = stack
        .wait_settled(deployment, Duration::from_secs(60))
        .await?;
    assert_eq!(log["status"], "failed", "{log}");
    let function = stack.function(function_id).await?;
    assert_eq!(
        function["status"], "init",
        "a first version that failed leaves the function in init"
    );
    assert_eq!(function["active_version"], Value::Null);
    Ok(log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_buildkit_is_retried_then_fails_the_deployment_clearly() -> anyhow::Result<()>
{
    fn dead_buildkit(config: &mut WorkerConfig) {
        // Nothing listens on the discard port on loopback.
        config.buildkit = "tcp://127.0.0.1:9".into();
    }
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        worker_overrides: Some(dead_buildkit),
        ..Default::default()
    })
    .await?;
    let log = deploy_expecting_failure(&stack, "unbuildable").await?;
    let error = log["error"].as_str().unwrap();
    assert!(error.contains("still failing after 3 attempts"), "{error}");
    assert!(error.to_lowercase().contains("buildkit"), "{error}");
    // Each retry shows in the deployment's log with its reason and wait.
    let retries: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter(|m| m.contains("failed (") && m.contains("retrying in"))
        .collect();
    assert_eq!(retries.len(), 2, "attempts 1 and 2 were retried: {log}");
    assert!(retries[0].contains("attempt 1"), "{retries:?}");
    assert!(retries[1].contains("attempt 2"), "{retries:?}");
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_retried_then_fails_the_deployment_clearly() -> anyhow::Result<()>
{
    fn dead_registry(config: &mut WorkerConfig) {
        config.registry = "127.0.0.1:9".into();
    }
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        worker_overrides: Some(dead_registry),
        ..Default::default()
    })
    .await?;
    let log = deploy_expecting_failure(&stack, "unpushable").await?;
    let error = log["error"].as_str().unwrap();
    assert!(error.starts_with("push failed"), "{error}");
    assert!(error.contains("still failing after 3 attempts"), "{error}");
    let phases: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["phase"].as_str())
        .collect();
    assert!(
        phases.contains(&"build") && phases.contains(&"push"),
        "built, then failed to push: {phases:?}"
    );
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_makes_no_progress_is_cancelled_and_retried_then_fails_saying_so()
-> anyhow::Result<()> {
    fn impatient(config: &mut WorkerConfig) {
        config.build_stall_timeout = Duration::from_secs(3);
    }
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        worker_overrides: Some(impatient),
        ..Default::default()
    })
    .await?;
    // A step that says nothing for longer than the stall timeout: what a hung solve looks like.
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM slipway/busybox:1\nRUN sleep 30\n",
    )?;
    let archive = slipway_tests::pack_dir(dir.path(), &Default::default())?;
    let function_id = stack.init("stalled").await?;
    let (deployment, _) = stack.deploy(function_id, archive).await?;
    let log = stack
        .wait_settled(deployment, Duration::from_secs(90))
        .await?;
    assert_eq!(log["status"], "failed", "{log}");
    let error = log["error"].as_str().unwrap();
    assert!(error.contains("made no progress for 3s"), "{error}");
    assert!(error.contains("still failing after 3 attempts"), "{error}");
    let retries = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter(|m| m.contains("made no progress") && m.contains("retrying in"))
        .count();
    assert_eq!(retries, 2, "{log}");
    stack.shutdown().await
}
