//! Rollback (seed 000): a superseded version comes back from its recorded digest, and every way
//! it cannot leaves the active version serving.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_shared::jobs::{Job, RollbackJob};
use slipway_tests::{StackOptions, StoreKind, TestStack, eventually, hello_archive};
use uuid::Uuid;

async fn rollback(
    stack: &TestStack,
    function_id: Uuid,
    version: Value,
) -> anyhow::Result<(u16, Value)> {
    let response = stack
        .post(&format!("/api/functions/{function_id}/rollback"))
        .json(&json!({ "version": version }))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn active_version(stack: &TestStack, function_id: Uuid) -> anyhow::Result<Value> {
    Ok(stack.function(function_id).await?["active_version"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_back_serves_the_old_version_again_and_refuses_what_cannot_serve()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("reversible").await?;
    let (v1, _) = stack.deploy(function_id, hello_archive("one\n")?).await?;
    stack.wait_active(v1).await?;
    let (v2, _) = stack.deploy(function_id, hello_archive("two\n")?).await?;
    stack.wait_active(v2).await?;
    assert_eq!(stack.invoke(function_id, "").await?, (200, "two\n".into()));

    let (status, body) = rollback(&stack, function_id, json!(1)).await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["target_version"], 1);
    assert_eq!(body["function"]["uuid"], function_id.to_string());
    assert_eq!(body["function"]["name"], "reversible");
    assert_eq!(body["function"]["status"], "active");
    eventually(
        Duration::from_secs(60),
        "version 1 active again",
        || async { Ok((active_version(&stack, function_id).await? == 1).then_some(())) },
    )
    .await?;
    assert_eq!(stack.invoke(function_id, "").await?, (200, "one\n".into()));
    let history = stack.history(function_id).await?;
    let statuses: Vec<(i64, &str, bool)> = history["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["version"].as_i64().unwrap(),
                d["status"].as_str().unwrap(),
                d["is_active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [(2, "inactive", false), (1, "active", true)]);
    assert_eq!(history["count"], 2, "a rollback creates no new version");

    // Forward again to 2, then the refusals.
    let (status, _) = rollback(&stack, function_id, json!(2)).await?;
    assert_eq!(status, 202);
    eventually(
        Duration::from_secs(60),
        "version 2 active again",
        || async { Ok((active_version(&stack, function_id).await? == 2).then_some(())) },
    )
    .await?;
    assert_eq!(stack.invoke(function_id, "").await?, (200, "two\n".into()));

    let broken = slipway_tests::pack_dir(
        &slipway_tests::repo_root().join("examples/hello"),
        &[("Dockerfile", "FROM scratch\nCOPY nothing-here /\n")].into(),
    )?;
    let (v3, _) = stack.deploy(function_id, broken).await?;
    assert_eq!(
        stack.wait_settled(v3, Duration::from_secs(60)).await?["status"],
        "failed"
    );

    for (case, version, status, code) in [
        (
            "the active version",
            json!(2),
            409,
            "version_already_active",
        ),
        (
            "a version that never built",
            json!(3),
            409,
            "version_not_built",
        ),
        (
            "a version that does not exist",
            json!(9),
            404,
            "version_not_found",
        ),
        ("version zero", json!(0), 400, "invalid_version"),
        ("a non-integer version", json!("two"), 422, "invalid_body"),
    ] {
        let (got, body) = rollback(&stack, function_id, version).await?;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{case}: {body}"
        );
    }
    let jobs = {
        let mut conn = stack.conn().await?;
        slipway_shared::db::queue::jobs(&mut conn, &[RollbackJob::NAME]).await?
    };
    assert_eq!(jobs.len(), 2, "refused rollbacks enqueue nothing: {jobs:?}");
    assert_eq!(stack.invoke(function_id, "").await?, (200, "two\n".into()));
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_version_whose_image_was_deleted_is_refused_and_the_active_version_keeps_serving()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("forgetful").await?;
    let (v1, _) = stack.deploy(function_id, hello_archive("first\n")?).await?;
    stack.wait_active(v1).await?;
    let (v2, _) = stack
        .deploy(function_id, hello_archive("second\n")?)
        .await?;
    stack.wait_active(v2).await?;

    // Delete version 1's manifest behind Slipway's back (a registry clean-up rule would).
    let history = stack.history(function_id).await?;
    let v1_row = &history["deployments"][1];
    let tag = v1_row["image_tag"].as_str().unwrap();
    let digest = v1_row["image_digest"].as_str().unwrap();
    let (registry, rest) = tag.split_once('/').unwrap();
    let repository = rest.rsplit_once(':').unwrap().0;
    let deleted = slipway_tests::registry_request(
        reqwest::Method::DELETE,
        &format!("http://{registry}/v2/{repository}/manifests/{digest}"),
    )
    .send()
    .await?;
    assert_eq!(deleted.status(), 202, "registry deleted the manifest");

    let (status, body) = rollback(&stack, function_id, json!(1)).await?;
    assert_eq!(
        status, 202,
        "only the job can know the image is gone: {body}"
    );
    let log = eventually(Duration::from_secs(60), "the rollback to fail", || async {
        let log: Value = stack
            .get(&format!("/api/deployments/{v1}/logs"))
            .send()
            .await?
            .json()
            .await?;
        let failed = log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["phase"] == "rollback" && l["stream"] == "error");
        Ok(failed.then_some(log))
    })
    .await?;
    let line = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["phase"] == "rollback" && l["stream"] == "error")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(line.contains("no longer in the registry"), "{line}");
    assert_eq!(log["status"], "inactive");
    assert_eq!(active_version(&stack, function_id).await?, 2);
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "second\n".into())
    );
    stack.shutdown().await
}
