//! Lifecycle hooks (seed 002) against `examples/hooks`, a function whose Initializer fails as
//! often as its env says: 4xx answers are retried until success, a 5xx restarts the instance,
//! a timeout fails the start; PreStop is called before an instance stops; hooks that were not
//! configured are never called.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_tests::{TestStack, eventually, pack_dir, repo_root};
use uuid::Uuid;

fn hooks_archive() -> anyhow::Result<Vec<u8>> {
    pack_dir(&repo_root().join("examples/hooks"), &Default::default())
}

async fn init_with_hooks(stack: &TestStack, name: &str, lifecycle: Value) -> anyhow::Result<Uuid> {
    let response = stack
        .post("/api/functions/init")
        .json(&json!({"name": name, "lifecycle": lifecycle}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 201,
        "init answered {}",
        response.status()
    );
    let body: Value = response.json().await?;
    assert_eq!(body["id"].as_str().map(str::len), Some(36));
    Ok(body["id"].as_str().unwrap().parse()?)
}

async fn deploy_with_env(stack: &TestStack, function_id: Uuid, env: Value) -> anyhow::Result<Uuid> {
    let (status, body) = stack
        .deploy_raw(
            &function_id.to_string(),
            hooks_archive()?,
            Some(&env.to_string()),
        )
        .await?;
    anyhow::ensure!(status == 202, "deploy answered {status}: {body}");
    Ok(body["deployment_id"].as_str().unwrap().parse()?)
}

/// The deployment's hook log lines, oldest first.
async fn hook_lines(stack: &TestStack, deployment_id: Uuid) -> anyhow::Result<Vec<String>> {
    let log: Value = stack
        .get(&format!("/api/deployments/{deployment_id}/logs"))
        .send()
        .await?
        .json()
        .await?;
    Ok(log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["phase"] == "hook")
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initializer_is_retried_until_it_succeeds_and_pre_stop_precedes_every_stop()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = init_with_hooks(
        &stack,
        "hooked",
        json!({"initializer": {"timeout_s": 30}, "pre_stop": {"timeout_s": 5}}),
    )
    .await?;
    let function = stack.function(function_id).await?;
    assert_eq!(function["lifecycle"]["initializer"]["timeout_s"], 30);

    let first = deploy_with_env(&stack, function_id, json!({"INIT_FAILURES": "2"})).await?;
    stack.wait_active(first).await?;
    let lines = hook_lines(&stack, first).await?;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for line in &lines[..2] {
        assert!(line.contains("POST /initialize → 404"), "{line}");
        assert!(line.ends_with("; retrying"), "{line}");
    }
    assert!(
        lines[2].starts_with("initializer succeeded"),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].contains("initialized on call 3 (request "),
        "{}",
        lines[2]
    );
    assert!(
        !lines[2].contains("(request )"),
        "the hook carries x-fc-request-id"
    );

    // Invocations carry the request id too.
    let (code, body) = stack.invoke(function_id, "").await?;
    assert_eq!(code, 200);
    assert!(
        body.starts_with("ready (request ") && !body.contains("(request )"),
        "{body}"
    );

    // A recycle stops the instance (PreStop first) and initializes the new one.
    let (code, _) = {
        let response = stack
            .post(&format!("/api/v1/functions/{function_id}/runtime/recycle"))
            .send()
            .await?;
        (response.status().as_u16(), ())
    };
    assert_eq!(code, 202);
    let lines = eventually(Duration::from_secs(60), "the recycle's hooks", || async {
        let lines = hook_lines(&stack, first).await?;
        Ok((lines
            .iter()
            .filter(|l| l.starts_with("initializer succeeded"))
            .count()
            == 2)
            .then_some(lines))
    })
    .await?;
    let pre_stop = lines
        .iter()
        .position(|l| l.starts_with("GET /pre-stop → 200"))
        .expect("PreStop before the recycle");
    assert!(
        lines[pre_stop].contains("pre-stop (request "),
        "{}",
        lines[pre_stop]
    );
    assert!(pre_stop >= 3 && pre_stop < lines.len() - 1, "{lines:#?}");

    // A new version replaces this one: PreStop again on the way out.
    let second = deploy_with_env(&stack, function_id, json!({})).await?;
    stack.wait_active(second).await?;
    eventually(Duration::from_secs(30), "PreStop of version 1", || async {
        let lines = hook_lines(&stack, first).await?;
        Ok((lines
            .iter()
            .filter(|l| l.starts_with("GET /pre-stop → 200"))
            .count()
            == 2)
            .then_some(()))
    })
    .await?;
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initializer_5xx_restarts_the_instance_and_a_timeout_fails_the_start()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let restarted = init_with_hooks(
        &stack,
        "restarted",
        json!({"initializer": {"timeout_s": 30}}),
    )
    .await?;
    // Its call count lives in /tmp: on the default read-only root that is memory, which a
    // restart empties; with a writable root it stays on the container's own layer.
    let response = stack
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/functions/{restarted}"),
        )
        .json(&json!({"read_only_root_fs": false}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let deployment = deploy_with_env(
        &stack,
        restarted,
        json!({"INIT_FAILURES": "1", "INIT_FAILURE_STATUS": "500"}),
    )
    .await?;
    stack.wait_active(deployment).await?;
    let lines = hook_lines(&stack, deployment).await?;
    assert!(
        lines[0].contains("POST /initialize → 500")
            && lines[0].ends_with("restarting the instance"),
        "{lines:#?}"
    );
    // The instance kept its /tmp across the restart, so its second call is call 2.
    assert!(lines[1].contains("initialized on call 2"), "{lines:#?}");

    let stuck = init_with_hooks(&stack, "stuck", json!({"initializer": {"timeout_s": 2}})).await?;
    let deployment = deploy_with_env(&stack, stuck, json!({"INIT_FAILURES": "1000"})).await?;
    let log = stack
        .wait_settled(deployment, Duration::from_secs(60))
        .await?;
    assert_eq!(log["status"], "failed", "{log}");
    let error = log["error"].as_str().unwrap();
    assert!(
        error.starts_with("the initializer did not succeed within 2s"),
        "{error}"
    );
    let function = stack.function(stuck).await?;
    assert_eq!(function["state"], "Failed", "{function}");
    assert_eq!(function["last_update_status"], "Failed");
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_that_are_not_configured_are_never_called() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("hookless").await?;
    let deployment = deploy_with_env(&stack, function_id, json!({"INIT_FAILURES": "5"})).await?;
    stack.wait_active(deployment).await?;
    let (code, body) = stack.invoke(function_id, "").await?;
    assert_eq!(code, 200);
    assert!(body.starts_with("not initialized"), "{body}");
    assert!(hook_lines(&stack, deployment).await?.is_empty());

    // Configured later through PUT, they apply from the next start on.
    let response = stack
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/functions/{function_id}"),
        )
        .json(&json!({"lifecycle": {"initializer": {"timeout_s": 0}}}))
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let refused: Value = response.json().await?;
    assert_eq!(refused["error"]["code"], "invalid_lifecycle");
    let response = stack
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/functions/{function_id}"),
        )
        .json(&json!({"lifecycle": {"initializer": {"timeout_s": 20}}}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let response = stack
        .post(&format!("/api/v1/functions/{function_id}/runtime/restart"))
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    eventually(
        Duration::from_secs(60),
        "initialized after the restart",
        || async {
            let (code, body) = stack.invoke(function_id, "").await?;
            Ok((code == 200 && body.starts_with("ready")).then_some(()))
        },
    )
    .await?;
    stack.shutdown().await
}
