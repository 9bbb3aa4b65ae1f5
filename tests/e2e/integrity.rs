//! Serving states (seed 001) and digest integrity: a tag overwritten behind Slipway's back is
//! reported while the recorded digest keeps serving; a recorded digest that is gone fails the
//! function at its next restart; a failed update leaves the traffic on the previous version.
//! Runtime controls (seed 004): restart, recycle, disable.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_tests::{
    StackOptions, StoreKind, TestStack, containers_of, docker, eventually, hello_archive, pack_dir,
    repo_root,
};
use uuid::Uuid;

async fn deploy_active(stack: &TestStack, name: &str, greeting: &str) -> anyhow::Result<Uuid> {
    let function_id = stack.init(name).await?;
    let (deployment, _) = stack.deploy(function_id, hello_archive(greeting)?).await?;
    stack.wait_active(deployment).await?;
    Ok(function_id)
}

async fn post_json(stack: &TestStack, path: &str) -> anyhow::Result<(u16, Value)> {
    let response = stack.post(path).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn put_json(stack: &TestStack, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let response = stack
        .request(reqwest::Method::PUT, path)
        .json(&body)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// Pushes the local base image over `tag` in the registry, as someone with push rights might.
fn overwrite_tag(tag: &str) -> anyhow::Result<()> {
    docker(&["tag", "slipway/busybox:1", tag])?;
    docker(&["push", tag])?;
    Ok(())
}

/// Deletes a manifest from the registry by digest, behind Slipway's back.
async fn delete_manifest(tag: &str, digest: &str) -> anyhow::Result<()> {
    let (registry, rest) = tag.split_once('/').unwrap();
    let (repository, _) = rest.rsplit_once(':').unwrap();
    let response = slipway_tests::registry_request(
        reqwest::Method::DELETE,
        &format!("http://{registry}/v2/{repository}/manifests/{digest}"),
    )
    .send()
    .await?;
    anyhow::ensure!(
        response.status() == 202,
        "DELETE answered {}",
        response.status()
    );
    Ok(())
}

async fn wait_failed(stack: &TestStack, function_id: Uuid) -> anyhow::Result<Value> {
    eventually(Duration::from_secs(30), "the function Failed", || async {
        let function = stack.function(function_id).await?;
        Ok((function["state"] == "Failed").then_some(function))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_tag_is_reported_and_a_lost_digest_fails_the_function_at_restart()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = deploy_active(&stack, "overwritten", "recorded\n").await?;
    let function = stack.function(function_id).await?;
    assert_eq!(function["state"], "Active", "{function}");
    assert_eq!(function["last_update_status"], "Successful");
    let tag = function["image_tag"].as_str().unwrap().to_owned();
    let recorded = function["image_digest"].as_str().unwrap().to_owned();

    let (code, verified) =
        post_json(&stack, &format!("/api/functions/{function_id}/verify")).await?;
    assert_eq!(code, 200, "{verified}");
    assert_eq!(verified["result"], "intact");

    overwrite_tag(&tag)?;
    let (code, verified) =
        post_json(&stack, &format!("/api/functions/{function_id}/verify")).await?;
    assert_eq!(code, 200, "{verified}");
    assert_eq!(verified["result"], "image_drift", "{verified}");
    assert_eq!(verified["recorded_digest"], recorded.as_str());
    let current = verified["current_digest"].as_str().unwrap().to_owned();
    assert_ne!(current, recorded);
    assert_eq!(verified["state"], "Active");
    let function = stack.function(function_id).await?;
    assert_eq!(function["image_drift"]["current_digest"], current.as_str());
    assert_eq!(function["image_drift"]["tag"], tag.as_str());
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "recorded\n".into()),
        "the recorded digest keeps serving"
    );

    // A restart with the recorded digest still there runs it again.
    let old_container = containers_of(function_id)?;
    let (code, accepted) = post_json(
        &stack,
        &format!("/api/v1/functions/{function_id}/runtime/restart"),
    )
    .await?;
    assert_eq!(code, 202, "{accepted}");
    eventually(Duration::from_secs(30), "a new instance", || async {
        let now = containers_of(function_id)?;
        Ok((now.len() == 1 && now != old_container).then_some(()))
    })
    .await?;
    eventually(Duration::from_secs(30), "serving again", || async {
        Ok((stack.invoke(function_id, "").await? == (200, "recorded\n".into())).then_some(()))
    })
    .await?;

    // Now the recorded digest goes too: the next restart must not run a stale local copy.
    delete_manifest(&tag, &recorded).await?;
    let (code, _) = post_json(
        &stack,
        &format!("/api/v1/functions/{function_id}/runtime/restart"),
    )
    .await?;
    assert_eq!(code, 202);
    let failed = wait_failed(&stack, function_id).await?;
    let reason = failed["state_reason"].as_str().unwrap();
    assert!(reason.starts_with("image_tag_overwritten: "), "{reason}");
    let response = stack
        .get(&format!("/api/v1/functions/invoke/{function_id}"))
        .send()
        .await?;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "function_failed");

    // A redeploy is the way out.
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("redeployed\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    let function = stack.function(function_id).await?;
    assert_eq!(function["state"], "Active", "{function}");
    assert_eq!(function["image_drift"], Value::Null);
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "redeployed\n".into())
    );
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tag_fails_the_function_and_the_fail_policy_fails_on_an_overwrite()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;

    // The tag's manifest deleted outright: tag and digest are both gone.
    let gone = deploy_active(&stack, "vanished", "vanishing\n").await?;
    let function = stack.function(gone).await?;
    let tag = function["image_tag"].as_str().unwrap().to_owned();
    let digest = function["image_digest"].as_str().unwrap().to_owned();
    delete_manifest(&tag, &digest).await?;
    let (code, _) = post_json(&stack, &format!("/api/v1/functions/{gone}/runtime/restart")).await?;
    assert_eq!(code, 202);
    let failed = wait_failed(&stack, gone).await?;
    let reason = failed["state_reason"].as_str().unwrap();
    assert!(reason.starts_with("image_not_found: "), "{reason}");

    // With on_tag_overwrite=fail an overwrite alone fails the function, as seed 001 says.
    let strict = deploy_active(&stack, "strict", "strict\n").await?;
    let (code, updated) = put_json(
        &stack,
        &format!("/api/v1/functions/{strict}"),
        json!({"on_tag_overwrite": "fail"}),
    )
    .await?;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["on_tag_overwrite"], "fail");
    let (code, refused) = put_json(
        &stack,
        &format!("/api/v1/functions/{strict}"),
        json!({"on_tag_overwrite": "sometimes"}),
    )
    .await?;
    assert_eq!(code, 400);
    assert_eq!(refused["error"]["code"], "invalid_on_tag_overwrite");
    let tag = stack.function(strict).await?["image_tag"]
        .as_str()
        .unwrap()
        .to_owned();
    overwrite_tag(&tag)?;
    let (code, verified) = post_json(&stack, &format!("/api/functions/{strict}/verify")).await?;
    assert_eq!(code, 200, "{verified}");
    assert_eq!(verified["result"], "image_drift");
    assert_eq!(verified["state"], "Failed");
    let function = stack.function(strict).await?;
    assert!(
        function["state_reason"]
            .as_str()
            .unwrap()
            .starts_with("image_tag_overwritten: "),
        "{function}"
    );
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_update_keeps_the_traffic_on_the_previous_version() -> anyhow::Result<()> {
    let mut stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("steady").await?;
    let fresh = stack.function(function_id).await?;
    assert_eq!(fresh["state"], "Pending");
    assert_eq!(fresh["last_update_status"], Value::Null);

    let (first, _) = stack
        .deploy(function_id, hello_archive("steady\n")?)
        .await?;
    let pending = stack.function(function_id).await?;
    assert_eq!(pending["state"], "Pending");
    assert_eq!(pending["last_update_status"], "InProgress");
    let worker = stack.spawn_worker(|_| {})?;
    stack.adopt(worker);
    stack.wait_active(first).await?;

    // With no worker free to run it, the broken update stays InProgress: traffic on version 1.
    let broken = pack_dir(
        &repo_root().join("examples/hello"),
        &[("Dockerfile", "FROM scratch\nCOPY nothing-here /\n")].into(),
    )?;
    let (second, _) = stack.deploy(function_id, broken).await?;
    let updating = stack.function(function_id).await?;
    assert_eq!(updating["state"], "Active");
    assert!(
        ["InProgress", "Failed"].contains(&updating["last_update_status"].as_str().unwrap()),
        "{updating}"
    );
    let log = stack.wait_settled(second, Duration::from_secs(60)).await?;
    assert_eq!(log["status"], "failed");
    let after = stack.function(function_id).await?;
    assert_eq!(after["state"], "Active", "{after}");
    assert_eq!(after["last_update_status"], "Failed");
    assert!(
        after["last_update_status_reason"]
            .as_str()
            .unwrap()
            .contains("nothing-here"),
        "{after}"
    );
    assert_eq!(after["active_version"], 1);
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "steady\n".into())
    );
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycle_pulls_again_and_a_disabled_function_neither_serves_nor_restarts()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = deploy_active(&stack, "controlled", "controlled\n").await?;
    let runtime: Value = stack
        .get(&format!("/api/v1/functions/{function_id}/runtime"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(runtime["state"], "active", "{runtime}");
    assert_eq!(runtime["revision_number"], 1);
    let before = runtime["container_id"].as_str().unwrap().to_owned();

    let (code, _) = post_json(
        &stack,
        &format!("/api/v1/functions/{function_id}/runtime/recycle"),
    )
    .await?;
    assert_eq!(code, 202);
    eventually(Duration::from_secs(30), "a recycled instance", || async {
        let runtime: Value = stack
            .get(&format!("/api/v1/functions/{function_id}/runtime"))
            .send()
            .await?
            .json()
            .await?;
        Ok((runtime["container_id"].as_str() != Some(before.as_str())
            && stack.invoke(function_id, "").await? == (200, "controlled\n".into()))
            .then_some(()))
    })
    .await?;

    let (code, updated) = put_json(
        &stack,
        &format!("/api/v1/functions/{function_id}"),
        json!({"enabled": false}),
    )
    .await?;
    assert_eq!(code, 200, "{updated}");
    let response = stack
        .get(&format!("/api/v1/functions/invoke/{function_id}"))
        .send()
        .await?;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "function_disabled");
    let (code, refused) = post_json(
        &stack,
        &format!("/api/v1/functions/{function_id}/runtime/restart"),
    )
    .await?;
    assert_eq!(code, 409);
    assert_eq!(refused["error"]["code"], "function_disabled");
    let runtime: Value = stack
        .get(&format!("/api/v1/functions/{function_id}/runtime"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(runtime["state"], "disabled");

    let (code, _) = put_json(
        &stack,
        &format!("/api/v1/functions/{function_id}"),
        json!({"enabled": true}),
    )
    .await?;
    assert_eq!(code, 200);
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "controlled\n".into())
    );
    stack.shutdown().await
}
