//! Aliases (issue 18): a stable name for one version, invoked at `{id}@{alias}` (and `{id}@{N}`)
//! while another version is active; its instance starts on demand and idles out; a rollback moves
//! the active version, never an alias; retention never prunes an aliased version.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use slipway_shared::{
    config::{SchedulerConfig, WorkerConfig},
    schedule::{self, Sweep},
};
use slipway_tests::{
    StackOptions, StoreKind, TestStack, containers_of, docker, eventually, hello_archive,
    registry_has_manifest,
};
use uuid::Uuid;

async fn alias(
    stack: &TestStack,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = stack.request(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    };
    Ok((status, body))
}

async fn deploy_active(
    stack: &TestStack,
    function_id: Uuid,
    greeting: &str,
) -> anyhow::Result<Uuid> {
    let (deployment, _) = stack.deploy(function_id, hello_archive(greeting)?).await?;
    stack.wait_active(deployment).await?;
    Ok(deployment)
}

async fn version_instances(stack: &TestStack, function_id: Uuid) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT state FROM version_instances WHERE function_id = $1 ORDER BY state",
    )
    .bind(function_id)
    .fetch_all(&stack.pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_serves_its_version_while_another_is_active_and_idles_out() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("aliased").await?;
    let v1 = deploy_active(&stack, function_id, "one\n").await?;
    deploy_active(&stack, function_id, "two\n").await?;
    let aliases = format!("/api/functions/{function_id}/aliases");

    let (status, created) = alias(
        &stack,
        reqwest::Method::POST,
        &aliases,
        Some(json!({"name": "stable", "version": 1})),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "stable");
    assert_eq!(created["version"], 1);
    assert_eq!(created["deployment_id"], v1.to_string());
    assert_eq!(
        created["invoke_url"],
        format!("/api/v1/functions/invoke/{function_id}@stable")
    );

    // What an alias cannot be.
    for (body, expected_status, code) in [
        (
            json!({"name": "Stable", "version": 1}),
            400,
            "invalid_alias_name",
        ),
        (
            json!({"name": "3", "version": 1}),
            400,
            "invalid_alias_name",
        ),
        (
            json!({"name": "later", "version": 9}),
            404,
            "version_not_found",
        ),
        (json!({"name": "stable", "version": 2}), 409, "alias_exists"),
    ] {
        let (status, refused) =
            alias(&stack, reqwest::Method::POST, &aliases, Some(body.clone())).await?;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (expected_status, Some(code)),
            "{body} → {refused}"
        );
    }
    // Another tenant sees no function, neither to alias nor to invoke through an alias.
    let stranger = stack.add_tenant().await?;
    let response = stack
        .request_as(&stranger, reqwest::Method::POST, &aliases)
        .json(&json!({"name": "mine", "version": 1}))
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    let response = stack
        .request_as(
            &stranger,
            reqwest::Method::GET,
            &format!("/api/v1/functions/invoke/{function_id}@stable"),
        )
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    assert_eq!(version_instances(&stack, function_id).await?.len(), 0);

    // The alias reaches version 1 while version 2 serves the function; `@N` names versions.
    for (qualified, expected) in [
        ("@stable", "one\n"),
        ("", "two\n"),
        ("@2", "two\n"),
        ("@1", "one\n"),
        ("%40stable", "one\n"),
        ("@stable/index.html", "one\n"),
    ] {
        assert_eq!(
            stack.invoke(function_id, qualified).await?,
            (200, expected.to_owned()),
            "{qualified}"
        );
    }
    for (qualified, code) in [("@nope", "alias_not_found"), ("@7", "version_not_found")] {
        let (status, body) = stack.invoke(function_id, qualified).await?;
        assert_eq!(status, 404, "{qualified}: {body}");
        assert!(body.contains(code), "{qualified}: {body}");
    }
    assert_eq!(version_instances(&stack, function_id).await?, ["ready"]);
    // Version 1's first instance, replaced by version 2's deploy, is removed after its drain:
    // under load it may still be there.
    eventually(
        Duration::from_secs(30),
        "the active instance and version 1's, and no other",
        || async { Ok((containers_of(function_id)?.len() == 2).then_some(())) },
    )
    .await?;
    // Its invocations are recorded against version 1.
    eventually(Duration::from_secs(20), "the alias's events", || async {
        let versions: Vec<Option<i32>> = sqlx::query_scalar(
            "SELECT DISTINCT version FROM invocation_events WHERE function_id = $1 \
                 AND status <> 'PENDING' ORDER BY version",
        )
        .bind(function_id)
        .fetch_all(&stack.pool)
        .await?;
        Ok((versions == [Some(1), Some(2)]).then_some(()))
    })
    .await?;

    // Version 1's instance dies behind Slipway's back: the next call through the alias starts
    // another and is answered by it.
    let dead: String =
        sqlx::query_scalar("SELECT container_id FROM version_instances WHERE deployment_id = $1")
            .bind(v1)
            .fetch_one(&stack.pool)
            .await?;
    docker(&["rm", "-f", &dead])?;
    assert_eq!(
        stack.invoke(function_id, "@stable").await?,
        (200, "one\n".to_owned())
    );
    let replacement: Option<String> = sqlx::query_scalar(
        "SELECT container_id FROM version_instances WHERE deployment_id = $1 AND state = 'ready'",
    )
    .bind(v1)
    .fetch_one(&stack.pool)
    .await?;
    assert!(replacement.is_some_and(|id| id != dead));

    let (status, listed) = alias(&stack, reqwest::Method::GET, &aliases, None).await?;
    assert_eq!(status, 200);
    assert_eq!(
        listed["aliases"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // Pointed at the active version, the alias is served by the function's own instance.
    let (status, pointed) = alias(
        &stack,
        reqwest::Method::PUT,
        &format!("{aliases}/stable"),
        Some(json!({"version": 2})),
    )
    .await?;
    assert_eq!((status, &pointed["version"]), (200, &json!(2)), "{pointed}");
    assert_eq!(
        stack.invoke(function_id, "@stable").await?,
        (200, "two\n".into())
    );

    // Traffic splitting: half of the alias's calls go to version 2, drawn per call.
    for (weights, expected_status, code) in [
        (json!({"2": 0.5, "3": 0.1}), 400, "invalid_weights"),
        (json!({"1": 0.5}), 400, "invalid_weights"),
        (json!({"2": 1.0}), 400, "invalid_weights"),
        (json!({"9": 0.5}), 404, "version_not_found"),
    ] {
        let (status, refused) = alias(
            &stack,
            reqwest::Method::PUT,
            &format!("{aliases}/stable"),
            Some(json!({"version": 1, "weights": weights})),
        )
        .await?;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (expected_status, Some(code)),
            "{weights} → {refused}"
        );
    }
    let (status, split) = alias(
        &stack,
        reqwest::Method::PUT,
        &format!("{aliases}/stable"),
        Some(json!({"version": 1, "weights": {"2": 0.5}})),
    )
    .await?;
    assert_eq!(status, 200, "{split}");
    assert_eq!(split["weights"], json!({"2": 0.5}));
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let (status, body) = stack.invoke(function_id, "@stable").await?;
        assert_eq!(status, 200, "{body}");
        *answers.entry(body).or_insert(0) += 1;
    }
    // Either version answering all 40 calls has a chance of 2 in 2^40.
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(
        answers.keys().collect::<Vec<_>>(),
        ["one\n", "two\n"],
        "{answers:?}"
    );

    // Idle: the version instance is released like the function's own. The sweep skips a row
    // that is locked at that moment (an invocation's throttled mark may still be writing it),
    // so it is fired again, a second later each time, until both were picked.
    let later = Utc::now() + chrono::TimeDelta::minutes(16);
    let mut picked = 0;
    for tick in 0..20 {
        let fired = schedule::fire(
            &stack.pool,
            &SchedulerConfig::default(),
            Sweep::Idle,
            later + chrono::TimeDelta::seconds(tick),
            "test",
            true,
        )
        .await?
        .unwrap();
        picked += fired["functions"].as_i64().unwrap_or_default();
        if picked >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(picked, 2, "the function's instance and version 1's");
    eventually(
        Duration::from_secs(60),
        "every instance released",
        || async {
            Ok((version_instances(&stack, function_id).await?.is_empty()
                && containers_of(function_id)?.is_empty())
            .then_some(()))
        },
    )
    .await?;
    // And started again by the next invocation, as the function is woken by its own.
    assert_eq!(
        stack.invoke(function_id, "@1").await?,
        (200, "one\n".into())
    );
    assert_eq!(stack.invoke(function_id, "").await?, (200, "two\n".into()));

    let (status, _) = alias(
        &stack,
        reqwest::Method::DELETE,
        &format!("{aliases}/stable"),
        None,
    )
    .await?;
    assert_eq!(status, 204);
    let (status, gone) = alias(
        &stack,
        reqwest::Method::GET,
        &format!("{aliases}/stable"),
        None,
    )
    .await?;
    assert_eq!(
        (status, &gone["error"]["code"]),
        (404, &json!("alias_not_found"))
    );
    assert_eq!(stack.invoke(function_id, "@stable").await?.0, 404);
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_survives_a_rollback_and_retention() -> anyhow::Result<()> {
    fn keep_one(config: &mut WorkerConfig) {
        config.retained_versions = 1;
    }
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        worker_overrides: Some(keep_one),
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("pinned").await?;
    let aliases = format!("/api/functions/{function_id}/aliases");
    deploy_active(&stack, function_id, "one\n").await?;
    let (status, body) = alias(
        &stack,
        reqwest::Method::POST,
        &aliases,
        Some(json!({"name": "pinned", "version": 1})),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let pinned_image = stack.function(function_id).await?;
    deploy_active(&stack, function_id, "two\n").await?;
    deploy_active(&stack, function_id, "three\n").await?;

    // Retention keeps one version: 3, serving. Version 2 goes; version 1, aliased, stays.
    eventually(Duration::from_secs(60), "version 2 pruned", || async {
        let history = stack.history(function_id).await?;
        let pruned: Vec<(i64, bool)> = history["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["version"].as_i64().unwrap(), d["pruned_at"].is_string()))
            .collect();
        Ok((pruned == [(3, false), (2, true), (1, false)]).then_some(()))
    })
    .await?;
    let (tag, digest) = (
        pinned_image["image_tag"].as_str().unwrap(),
        pinned_image["image_digest"].as_str().unwrap(),
    );
    assert!(registry_has_manifest(tag, digest).await?, "{tag}@{digest}");
    assert_eq!(
        stack.invoke(function_id, "@pinned").await?,
        (200, "one\n".into())
    );
    let (status, refused) = alias(
        &stack,
        reqwest::Method::POST,
        &aliases,
        Some(json!({"name": "gone", "version": 2})),
    )
    .await?;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (409, &json!("version_pruned"))
    );

    // A rollback moves the active version only.
    let (status, body) = alias(
        &stack,
        reqwest::Method::POST,
        &aliases,
        Some(json!({"name": "latest", "version": 3})),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let response = stack
        .post(&format!("/api/functions/{function_id}/rollback"))
        .json(&json!({"version": 1}))
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    eventually(
        Duration::from_secs(60),
        "version 1 active again",
        || async { Ok((stack.function(function_id).await?["active_version"] == 1).then_some(())) },
    )
    .await?;
    let (_, listed) = alias(&stack, reqwest::Method::GET, &aliases, None).await?;
    let pointing: Vec<(String, i64)> = listed["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pointing,
        [("latest".to_owned(), 3), ("pinned".to_owned(), 1)]
    );
    for (qualified, expected) in [("", "one\n"), ("@pinned", "one\n"), ("@latest", "three\n")] {
        assert_eq!(
            stack.invoke(function_id, qualified).await?,
            (200, expected.to_owned()),
            "{qualified}"
        );
    }
    stack.shutdown().await
}
