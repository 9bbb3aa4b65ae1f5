//! Redeploys without a build (issue 17): a deployment whose build inputs match an earlier build
//! of the same function reuses that image once the registry confirms its digest, skipping
//! BuildKit and the push; history names the deployment it reused. Different inputs build, and
//! so do the same inputs once the digest is gone from the registry.

use serde_json::Value;
use slipway_tests::{TestStack, hello_archive, registry_request};
use uuid::Uuid;

async fn log_of(stack: &TestStack, deployment: Uuid) -> anyhow::Result<Vec<Value>> {
    let logs: Value = stack
        .get(&format!("/api/deployments/{deployment}/logs"))
        .send()
        .await?
        .json()
        .await?;
    Ok(logs["lines"].as_array().cloned().unwrap_or_default())
}

fn ran_buildkit(lines: &[Value]) -> bool {
    lines.iter().any(|l| l["stream"] == "step")
}

fn says(lines: &[Value], words: &str) -> bool {
    lines
        .iter()
        .any(|l| l["message"].as_str().is_some_and(|m| m.contains(words)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_redeploy_reuses_the_verified_image_without_building() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("reuse").await?;
    let archive = hello_archive("same\n")?;
    let deploy = |archive: Vec<u8>| {
        let stack = &stack;
        async move {
            let (deployment, _) = stack.deploy(function_id, archive).await?;
            stack.wait_active(deployment).await?;
            Ok::<_, anyhow::Error>(deployment)
        }
    };
    let version = |deployment: Uuid| {
        let stack = &stack;
        async move {
            let history = stack.history(function_id).await?;
            history["deployments"]
                .as_array()
                .and_then(|ds| ds.iter().find(|d| d["uuid"] == deployment.to_string()))
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("{deployment} is not in the history: {history}"))
        }
    };

    let first = deploy(archive.clone()).await?;
    assert!(ran_buildkit(&log_of(&stack, first).await?));
    let second = deploy(archive.clone()).await?;
    let (v1, v2) = (version(first).await?, version(second).await?);
    assert_eq!(v2["build_reused_from"], first.to_string(), "{v2}");
    assert_eq!(v2["image_digest"], v1["image_digest"]);
    assert!(v1.get("build_reused_from").is_none(), "{v1}");
    let lines = log_of(&stack, second).await?;
    assert!(
        !ran_buildkit(&lines),
        "BuildKit ran for an identical redeploy"
    );
    assert!(says(&lines, "reused the image of version 1"), "{lines:?}");
    assert_eq!(
        stack.invoke(function_id, "/").await?,
        (200, "same\n".to_owned())
    );

    // Other inputs build.
    let third = deploy(hello_archive("other\n")?).await?;
    assert!(version(third).await?.get("build_reused_from").is_none());
    assert!(ran_buildkit(&log_of(&stack, third).await?));

    // The recorded digest gone from the registry: the same inputs build again.
    let tag = v1["image_tag"].as_str().unwrap();
    let digest = v1["image_digest"].as_str().unwrap();
    let (registry, rest) = tag.split_once('/').unwrap();
    let (repository, _) = rest.rsplit_once(':').unwrap();
    let deleted = registry_request(
        reqwest::Method::DELETE,
        &format!("http://{registry}/v2/{repository}/manifests/{digest}"),
    )
    .send()
    .await?;
    assert_eq!(deleted.status(), 202);
    let fourth = deploy(archive).await?;
    assert!(version(fourth).await?.get("build_reused_from").is_none());
    let lines = log_of(&stack, fourth).await?;
    assert!(ran_buildkit(&lines));
    assert!(
        says(&lines, "its image is gone from the registry"),
        "{lines:?}"
    );
    assert_eq!(
        stack.invoke(function_id, "/").await?,
        (200, "same\n".to_owned())
    );
    stack.shutdown().await
}

async fn instance_of(stack: &TestStack, deployment: Uuid) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT container_id FROM deployments WHERE id = $1")
            .bind(deployment)
            .fetch_one(&stack.pool)
            .await?,
    )
}

/// An identical redeploy (same image, env, limits and sandbox) takes over the instance that
/// serves instead of starting the same process again; any difference starts a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_redeploy_serves_on_from_the_same_instance() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("serves-on").await?;
    let archive = hello_archive("on\n")?;

    let (first, _) = stack.deploy(function_id, archive.clone()).await?;
    stack.wait_active(first).await?;
    let serving = instance_of(&stack, first)
        .await?
        .expect("an active deployment records its instance");

    let (second, _) = stack.deploy(function_id, archive.clone()).await?;
    stack.wait_active(second).await?;
    assert_eq!(
        instance_of(&stack, second).await?.as_deref(),
        Some(serving.as_str())
    );
    assert_eq!(instance_of(&stack, first).await?, None);
    let lines = log_of(&stack, second).await?;
    assert!(says(&lines, "serves on, not restarted"), "{lines:?}");
    assert!(!says(&lines, "starting "), "{lines:?}");
    assert_eq!(
        stack.invoke(function_id, "/").await?,
        (200, "on\n".to_owned())
    );

    // The same image with another env is another process: a new instance, the old one stopped.
    let (status, body) = stack
        .deploy_raw(
            &function_id.to_string(),
            archive,
            Some(r#"{"GREETING": "changed"}"#),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let third: Uuid = body["deployment_id"].as_str().unwrap().parse()?;
    stack.wait_active(third).await?;
    let third_instance = instance_of(&stack, third).await?.expect("its own instance");
    assert_ne!(third_instance, serving);
    assert!(says(&log_of(&stack, third).await?, "starting "));
    slipway_tests::eventually(
        std::time::Duration::from_secs(30),
        "the replaced instance to be stopped",
        || async { Ok(instance_of(&stack, second).await?.is_none().then_some(())) },
    )
    .await?;
    assert_eq!(
        stack.invoke(function_id, "/").await?,
        (200, "on\n".to_owned())
    );
    stack.shutdown().await
}
