//! `GET /metrics`: operators scrape Prometheus' text format, and a deploy, an invocation, a
//! webhook delivery and a sweep each move their figures. The registry is the test process's
//! (every stack in it records there), so the checks compare a scrape before with one after and
//! ask only that this test's own work shows up.

use std::{collections::BTreeMap, time::Duration};

use slipway_tests::{StackOptions, StoreKind, TestStack, hello_archive};

/// Each sample of a scrape, keyed by its name and labels exactly as exposed.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum over every series of `name` whose labels include all of `labels`.
fn sum(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_deploy_shows_the_jobs_stages_invocations_and_sweeps_it_caused()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let operator_key = stack.add_operator().await?;
    let scrape = || async {
        let response = stack
            .http
            .get(stack.url("/metrics"))
            .bearer_auth(operator_key.expose())
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "scrape: {}", response.status());
        let content_type = response.headers()["content-type"].to_str()?.to_owned();
        anyhow::ensure!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await?;
        Ok::<_, anyhow::Error>((samples(&text), text))
    };

    // A tenant's key is refused; so is no key at all.
    let refused = stack.get("/metrics").send().await?;
    assert_eq!(refused.status(), 403);
    let anonymous = stack.http.get(stack.url("/metrics")).send().await?;
    assert_eq!(anonymous.status(), 401);

    let (before, _) = scrape().await?;
    let function_id = stack.init("measured").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("counted\n")?)
        .await?;
    let settled = stack
        .wait_settled(deployment, Duration::from_secs(120))
        .await?;
    assert_eq!(settled["status"], "active", "{settled}");
    let (status, body) = stack.invoke(function_id, "/").await?;
    assert_eq!((status, body.as_str()), (200, "counted\n"));
    // A delivery no binding signed: refused, and counted under its provider.
    let delivery = stack
        .http
        .post(stack.url("/api/webhooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", uuid::Uuid::new_v4().to_string())
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .header("content-type", "application/json")
        .body(r#"{"repository":{"full_name":"someone/else"}}"#)
        .send()
        .await?;
    assert!(delivery.status().is_client_error(), "{}", delivery.status());
    let swept = stack
        .request_as(
            operator_key.expose(),
            reqwest::Method::POST,
            "/api/schedules/digest/run",
        )
        .send()
        .await?;
    assert_eq!(swept.status(), 200);

    let (after, text) = scrape().await?;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sum(&after, name, labels) - sum(&before, name, labels)
    };
    for queue in ["slipway::build", "slipway::push", "slipway::deploy"] {
        assert!(
            moved("slipway_jobs_total", &[("queue", queue), ("outcome", "ok")]) >= 1.0,
            "{queue}:\n{text}"
        );
        assert!(
            moved("slipway_job_duration_seconds_count", &[("queue", queue)]) >= 1.0,
            "{queue}:\n{text}"
        );
    }
    for stage in [
        "queue_wait",
        "build",
        "push",
        "cache_warm",
        "start",
        "total",
    ] {
        assert!(
            moved(
                "slipway_deploy_stage_duration_seconds_count",
                &[("stage", stage), ("outcome", "ok")]
            ) >= 1.0,
            "{stage}:\n{text}"
        );
    }
    // Histograms, not summaries: Prometheus aggregates buckets across workers.
    assert!(
        text.contains("slipway_deploy_stage_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        moved("slipway_invocations_total", &[("status", "200")]) >= 1.0,
        "{text}"
    );
    assert!(
        moved("slipway_invocation_duration_seconds_count", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        moved(
            "slipway_webhook_deliveries_total",
            &[("provider", "github"), ("outcome", "refused")]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        moved("slipway_sweep_runs_total", &[("sweep", "digest")]) >= 1.0,
        "{text}"
    );
    // What it picked depends on when this function was last verified; the series is there.
    assert!(
        after.contains_key("slipway_sweep_picked_total{sweep=\"digest\"}"),
        "{text}"
    );

    // Read from Postgres at scrape time: every queue and state has a series.
    for state in ["Pending", "Running", "Done", "Failed", "Paused"] {
        assert!(
            after.contains_key(&format!(
                "slipway_queue_jobs{{queue=\"slipway::build\",state=\"{state}\"}}"
            )),
            "{state}:\n{text}"
        );
    }
    assert!(
        after.contains_key("slipway_queue_oldest_waiting_seconds{queue=\"slipway::build\"}"),
        "{text}"
    );
    assert!(after.contains_key("slipway_build_slots_in_use"), "{text}");
    stack.shutdown().await
}
