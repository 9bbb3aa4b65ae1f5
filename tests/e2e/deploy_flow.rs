//! The spine, end to end: archive in, running function out, new versions switched without a
//! failed request, broken builds leaving the old version serving.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use slipway_shared::{
    db,
    jobs::{BuildJob, Job},
};
use slipway_tests::{TestStack, eventually, hello_archive, registry_digest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_v2_switches_traffic_without_a_failed_invocation_and_records_registry_digests()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("greeter").await?;

    let submitted = Instant::now();
    let (v1, version) = stack
        .deploy(function_id, hello_archive("hello from v1\n")?)
        .await?;
    assert_eq!(version, 1);
    let log = stack.wait_active(v1).await?;
    eprintln!("v1 submit → active: {:?}", submitted.elapsed());
    let steps: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["phase"] == "build" && l["stream"] == "step")
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.contains("COPY") || s.contains("FROM")),
        "the build log shows BuildKit's steps: {steps:?}"
    );
    let phases: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["phase"].as_str())
        .collect();
    // Each phase must be there: compared as Options, a missing one (None) would sort first.
    let first = |phase: &str| {
        phases
            .iter()
            .position(|p| *p == phase)
            .unwrap_or_else(|| panic!("no {phase} phase in the log: {phases:?}"))
    };
    assert!(
        first("build") < first("push")
            && first("push") < first("cache-warm")
            && first("cache-warm") < first("deploy"),
        "the image is pulled onto the runtime host between push and start: {phases:?}"
    );
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "hello from v1\n".into())
    );

    let function = stack.function(function_id).await?;
    assert_eq!(function["status"], "active");
    assert_eq!(function["active_version"], 1);

    // Invoke continuously while v2 rolls out: every request must succeed. Each failure is kept
    // with its time and what came back, so a red run says which moment of the switch failed.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen_v2 = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let switch_began = Instant::now();
    let invoker = {
        let (client, url, key) = (
            stack.http.clone(),
            stack.url(&format!("/api/v1/functions/invoke/{function_id}")),
            stack.api_key.clone(),
        );
        let (stop, failures, seen_v2, requests) = (
            stop.clone(),
            failures.clone(),
            seen_v2.clone(),
            requests.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                requests.fetch_add(1, Ordering::SeqCst);
                let failure = match client.get(&url).bearer_auth(&key).send().await {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.text().await.unwrap_or_default();
                        match (status.as_u16(), body.as_str()) {
                            (200, "hello from v2\n") => {
                                seen_v2.store(true, Ordering::SeqCst);
                                None
                            }
                            (200, "hello from v1\n") => None,
                            _ => Some(format!("{status}: {body}")),
                        }
                    }
                    Err(error) => Some(format!("no response: {error:#}")),
                };
                if let Some(failure) = failure {
                    let at = switch_began.elapsed();
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("at {at:.2?}: {failure}"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let submitted = Instant::now();
    let (v2, version) = stack
        .deploy(function_id, hello_archive("hello from v2\n")?)
        .await?;
    assert_eq!(version, 2);
    stack.wait_active(v2).await?;
    eprintln!(
        "v2 submit → active: {:?} ({:.2?} after the invoker began)",
        submitted.elapsed(),
        switch_began.elapsed()
    );
    // Keep invoking until the previous version's container is gone.
    let label = format!("label=dev.slipway.function={function_id}");
    slipway_tests::eventually(
        Duration::from_secs(30),
        "the v1 container to stop",
        || async {
            let running = slipway_tests::docker(&["ps", "-q", "--filter", &label])?;
            Ok((running.lines().count() == 1).then_some(()))
        },
    )
    .await?;
    stop.store(true, Ordering::SeqCst);
    invoker.await?;
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} invocations failed during the switch: {failures:#?}",
        failures.len(),
        requests.load(Ordering::SeqCst)
    );
    assert!(
        requests.load(Ordering::SeqCst) > 10,
        "the invoker really ran"
    );
    assert!(seen_v2.load(Ordering::SeqCst), "the invoker saw v2 answer");
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "hello from v2\n".into())
    );

    let history = stack.history(function_id).await?;
    assert_eq!(history["count"], 2);
    assert_eq!(history["function_status"], "active");
    let deployments = history["deployments"].as_array().unwrap();
    assert_eq!(deployments[0]["version"], 2);
    assert_eq!(deployments[0]["status"], "active");
    assert_eq!(deployments[0]["is_active"], true);
    assert_eq!(deployments[1]["version"], 1);
    assert_eq!(deployments[1]["status"], "inactive");
    assert_eq!(deployments[1]["is_active"], false);
    for deployment in deployments {
        print_phase_timings(deployment);
        let tag = deployment["image_tag"].as_str().unwrap();
        assert!(
            tag.starts_with(&format!("{}/greeter-", stack.registry)),
            "{tag}"
        );
        let digest = deployment["image_digest"].as_str().unwrap();
        assert_eq!(
            registry_digest(tag).await?.as_deref(),
            Some(digest),
            "recorded digest of {tag} is the registry's Docker-Content-Digest"
        );
        assert_eq!(
            deployment["s3_key"],
            format!("functions/{function_id}/v{}.tar.gz", deployment["version"])
        );
        assert!(
            stack
                .store
                .exists(deployment["s3_key"].as_str().unwrap())
                .await?
        );
    }
    let all = slipway_tests::docker(&["ps", "-aq", "--filter", &label])?;
    assert_eq!(
        all.lines().count(),
        1,
        "the v1 container was removed, not just stopped: {all}"
    );
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_dockerfile_fails_the_deployment_with_buildkits_message_and_v1_keeps_serving()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("sturdy").await?;
    let (v1, _) = stack
        .deploy(function_id, hello_archive("steady v1\n")?)
        .await?;
    stack.wait_active(v1).await?;

    let broken = slipway_tests::pack_dir(
        &slipway_tests::repo_root().join("examples/hello"),
        &[("Dockerfile", "FROM scratch\nCOPY does-not-exist /nowhere\n")].into(),
    )?;
    let (v2, version) = stack.deploy(function_id, broken).await?;
    assert_eq!(version, 2);
    let log = stack.wait_settled(v2, Duration::from_secs(120)).await?;
    assert_eq!(log["status"], "failed");
    let error = log["error"].as_str().unwrap();
    assert!(
        error.contains("does-not-exist"),
        "BuildKit's own message: {error}"
    );
    assert!(
        log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["stream"] == "error"
                && l["message"].as_str().unwrap().contains("does-not-exist")),
        "the log carries the failure: {log}"
    );

    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "steady v1\n".into())
    );
    let function = stack.function(function_id).await?;
    assert_eq!(function["status"], "active");
    assert_eq!(function["active_version"], 1);
    assert_eq!(function["latest_version"], 2);

    // The build job ended Failed with the same reason, where operators look for failures.
    let build = eventually(Duration::from_secs(10), "the build job ended", || async {
        let mut conn = stack.conn().await?;
        let jobs = db::queue::jobs(&mut conn, &[BuildJob::NAME]).await?;
        Ok(jobs.into_iter().find(|j| {
            j.payload.as_ref().and_then(|p| p["deployment_id"].as_str())
                == Some(v2.to_string().as_str())
                && j.status != "Running"
        }))
    })
    .await?;
    assert_eq!(build.status, "Failed", "{build:?}");
    let result = build.last_result.unwrap_or_default().to_string();
    assert!(result.contains("does-not-exist"), "{result}");
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_passes_method_query_headers_body_and_status_through() -> anyhow::Result<()> {
    let stack = TestStack::start_with(slipway_tests::StackOptions {
        store: slipway_tests::StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("echoer").await?;
    let (id, _) = stack
        .deploy_raw(
            &function_id.to_string(),
            hello_archive("echo\n")?,
            Some(r#"{"GREETING":"bonjour"}"#),
        )
        .await
        .map(|(status, body)| {
            assert_eq!(status, 202, "{body}");
            (body["deployment_id"].as_str().unwrap().parse().unwrap(), ())
        })?;
    stack.wait_active(id).await?;

    let response = stack
        .post(&format!(
            "/api/v1/functions/invoke/{function_id}/cgi-bin/echo?status=201&x=1"
        ))
        .header("x-test", "passed-through")
        .body("the body")
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("x-slipway-request-id"));
    let text = response.text().await?;
    for expected in [
        "POST",
        "status=201&x=1",
        "passed-through",
        "the body",
        "bonjour",
    ] {
        assert!(text.contains(expected), "{expected:?} in {text:?}");
    }
    // The platform's credentials never reach the function.
    assert!(!text.contains(&stack.api_key), "{text}");
    stack.shutdown().await
}

/// Prints how long each phase of a deployment took (queue → build start, build, push, start),
/// from the timestamps the API reports.
fn print_phase_timings(deployment: &Value) {
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(deployment[field].as_str().unwrap_or_default()).ok()
    };
    let span = |from: &str, to: &str| match (at(from), at(to)) {
        (Some(a), Some(b)) => format!("{} ms", (b - a).num_milliseconds()),
        _ => "?".into(),
    };
    eprintln!(
        "v{}: queued {} · build {} · push {} · start+switch {}",
        deployment["version"],
        span("created_at", "build_started_at"),
        span("build_started_at", "built_at"),
        span("built_at", "pushed_at"),
        span("pushed_at", "deployed_at"),
    );
}

#[tokio::test]
async fn an_uploaded_archive_builds_without_what_its_dockerignore_names() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("ignoring").await?;
    // Uploaded as curl would: the archive still holds what .dockerignore names.
    let archive = slipway_tests::pack_dir(
        &slipway_tests::repo_root().join("examples/hello"),
        &[
            (
                ".dockerignore",
                "# not for the image\nwww/secret.txt\nwww/logs\n!www/logs/keep.txt\n",
            ),
            ("www/secret.txt", "s3cret\n"),
            ("www/logs/drop.txt", "drop\n"),
            ("www/logs/keep.txt", "keep\n"),
        ]
        .into(),
    )?;
    let (deployment, _) = stack.deploy(function_id, archive).await?;
    let log = stack.wait_active(deployment).await?;
    assert!(
        log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"] == "left 2 entries out of the context, as .dockerignore says"),
        "{log}"
    );
    for (path, expected) in [
        ("/secret.txt", None),
        ("/logs/drop.txt", None),
        ("/logs/keep.txt", Some("keep\n")),
    ] {
        let (status, body) = stack.invoke(function_id, path).await?;
        match expected {
            Some(content) => assert_eq!((status, body.as_str()), (200, content), "{path}"),
            None => assert_eq!(status, 404, "{path} reached the image: {body}"),
        }
    }
    stack.shutdown().await
}
