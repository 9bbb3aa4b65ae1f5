//! The operators' queue API: counts by state, filtered job lists, one job with its deployment,
//! retry of a job that ended and cancel of one still waiting, which fails its deployment with
//! `cancelled_by_operator` while the serving version keeps serving. Nobody else gets in.

use serde_json::Value;
use slipway_tests::{StackOptions, StoreKind, TestStack, hello_archive};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_queues_and_jobs_and_retry_or_cancel_them_coherently() -> anyhow::Result<()> {
    // No worker: every job waits where the api put it.
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let operator_key = stack.add_operator().await?;
    let get = |path: &str| {
        stack
            .http
            .get(stack.url(path))
            .bearer_auth(operator_key.expose())
    };
    // The operators' actions are signed, as every change is.
    let post = |path: &str| stack.request_as(operator_key.expose(), reqwest::Method::POST, path);

    // Tenants are refused.
    for path in ["/api/ops/queues", "/api/ops/jobs"] {
        let refused = stack.get(path).send().await?;
        assert_eq!(refused.status(), 403, "{path}");
        let body: Value = refused.json().await?;
        assert_eq!(body["error"]["code"], "operators_only");
    }

    let function_id = stack.init("queued").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("never built\n")?)
        .await?;

    let queues: Value = get("/api/ops/queues").send().await?.json().await?;
    let build = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "slipway::build")
        .cloned()
        .unwrap_or_default();
    assert_eq!(build["counts"]["Pending"], 1, "{queues}");
    assert_eq!(build["counts"]["Running"], 0, "{queues}");
    assert!(
        build["oldest_waiting_seconds"].as_f64().is_some(),
        "{queues}"
    );

    let page: Value = get(&format!(
        "/api/ops/jobs?queue=slipway::build&state=Pending&deployment_id={deployment}"
    ))
    .send()
    .await?
    .json()
    .await?;
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{page}");
    let job_id = jobs[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(jobs[0]["deployment_id"], deployment.to_string());
    let none: Value = get(&format!("/api/ops/jobs?deployment_id={}", Uuid::new_v4()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(none["jobs"], Value::Array(vec![]), "{none}");
    let bad = get("/api/ops/jobs?state=Sleeping").send().await?;
    assert_eq!(bad.status(), 400);

    let detail: Value = get(&format!("/api/ops/jobs/{job_id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(detail["payload"]["deployment_id"], deployment.to_string());
    assert_eq!(detail["deployment"]["status"], "building", "{detail}");
    assert_eq!(get("/api/ops/jobs/no-such-job").send().await?.status(), 404);

    // A waiting job cannot be retried; it can be cancelled, which fails its deployment.
    let refused = post(&format!("/api/ops/jobs/{job_id}/retry"))
        .send()
        .await?;
    assert_eq!(refused.status(), 409);
    let cancelled = post(&format!("/api/ops/jobs/{job_id}/cancel"))
        .send()
        .await?;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await?;
    assert_eq!(cancelled["state"], "Killed", "{cancelled}");
    assert_eq!(cancelled["deployment"]["status"], "failed", "{cancelled}");
    assert!(
        cancelled["deployment"]["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cancelled_by_operator"),
        "{cancelled}"
    );
    let function = stack.function(function_id).await?;
    assert_eq!(function["state"], "Failed", "{function}");
    assert_eq!(function["last_update_status"], "Failed", "{function}");
    // Twice is refused; and its deployment settled, so a retry has nothing to do.
    let again = post(&format!("/api/ops/jobs/{job_id}/cancel"))
        .send()
        .await?;
    assert_eq!(again.status(), 409);
    let retry = post(&format!("/api/ops/jobs/{job_id}/retry"))
        .send()
        .await?;
    assert_eq!(retry.status(), 409);
    let body: Value = retry.json().await?;
    assert_eq!(body["error"]["code"], "deployment_settled");

    // A job that ended Failed (not a pipeline job) runs again when retried.
    let (deployment2, _) = stack
        .deploy(function_id, hello_archive("second\n")?)
        .await?;
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Failed', attempts = 1, done_at = now(),
                last_result = '{\"Err\": \"registry down\"}'
         WHERE convert_from(job, 'UTF8')::jsonb ->> 'deployment_id' = $1",
    )
    .bind(deployment2.to_string())
    .execute(&stack.pool)
    .await?;
    let failed: Value = get(&format!(
        "/api/ops/jobs?state=Failed&deployment_id={deployment2}"
    ))
    .send()
    .await?
    .json()
    .await?;
    let failed_id = failed["jobs"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(failed["jobs"][0]["last_result"]["Err"], "registry down");
    let retried = post(&format!("/api/ops/jobs/{failed_id}/retry"))
        .send()
        .await?;
    assert_eq!(retried.status(), 200);
    let retried: Value = retried.json().await?;
    assert_eq!(retried["state"], "Pending", "{retried}");
    assert_eq!(retried["attempts"], 0);
    stack.shutdown().await
}
