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

/// A paused queue's jobs wait (`Paused`) until it resumes, then run; a bulk cancel over a filter
/// fails every matching deployment while the serving version keeps serving; a bulk retry skips
/// jobs whose deployment settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_and_resume_a_queue_and_act_on_every_matching_job() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
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
    let post = |path: &str| stack.request_as(operator_key.expose(), reqwest::Method::POST, path);
    let build_jobs = |state: &'static str, deployment: Uuid| {
        let get = &get;
        async move {
            let page: Value = get(&format!(
                "/api/ops/jobs?queue=slipway::build&state={state}&deployment_id={deployment}"
            ))
            .send()
            .await?
            .json()
            .await?;
            anyhow::Ok(page["jobs"].as_array().map_or(0, Vec::len))
        }
    };

    let function_id = stack.init("pausable").await?;
    let (first, _) = stack.deploy(function_id, hello_archive("first\n")?).await?;
    stack.wait_active(first).await?;

    // Tenants cannot pause; an unknown queue is not found.
    let refused = stack
        .request_as(
            &stack.api_key,
            reqwest::Method::POST,
            "/api/ops/queues/slipway::build/pause",
        )
        .send()
        .await?;
    assert_eq!(refused.status(), 403);
    let unknown = post("/api/ops/queues/slipway::nothing/pause")
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);

    let paused = post("/api/ops/queues/slipway::build/pause").send().await?;
    assert_eq!(paused.status(), 200);
    let queues: Value = get("/api/ops/queues").send().await?.json().await?;
    let queue = |name: &str| {
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(queue("slipway::build")["paused"], true, "{queues}");
    assert_eq!(queue("slipway::deploy")["paused"], false, "{queues}");

    // A build enqueued while paused is parked, and stays so: no worker claims it.
    let (second, _) = stack
        .deploy(function_id, hello_archive("second\n")?)
        .await?;
    assert_eq!(build_jobs("Paused", second).await?, 1);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(build_jobs("Paused", second).await?, 1);
    let waiting: Value = stack
        .get(&format!("/api/deployments/{second}/logs"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(waiting["status"], "building", "{waiting}");
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "first\n".into())
    );

    let resumed: Value = post("/api/ops/queues/slipway::build/resume")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(resumed["jobs"], 1, "{resumed}");
    stack.wait_active(second).await?;
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "second\n".into())
    );

    // Paused again: a bulk cancel over the function's build jobs fails the waiting deployment.
    post("/api/ops/queues/slipway::build/pause").send().await?;
    let (third, _) = stack.deploy(function_id, hello_archive("third\n")?).await?;
    assert_eq!(build_jobs("Paused", third).await?, 1);
    let paged = post(&format!(
        "/api/ops/jobs/cancel?queue=slipway::build&function_id={function_id}&page=1"
    ))
    .send()
    .await?;
    assert_eq!(paged.status(), 400, "a bulk action takes no page");
    let cancelled: Value = post(&format!(
        "/api/ops/jobs/cancel?queue=slipway::build&function_id={function_id}"
    ))
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(cancelled["changed"], 1, "{cancelled}");
    let settled = stack
        .wait_settled_as(&stack.api_key, third, std::time::Duration::from_secs(30))
        .await?;
    assert_eq!(settled["status"], "failed", "{settled}");
    assert!(
        settled["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cancelled_by_operator"),
        "{settled}"
    );
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "second\n".into())
    );

    // Its deployment settled: a bulk retry of the function's killed jobs skips it.
    let retried: Value = post(&format!(
        "/api/ops/jobs/retry?function_id={function_id}&state=Killed"
    ))
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(retried["changed"], 0, "{retried}");
    assert_eq!(retried["skipped"], 1, "{retried}");
    post("/api/ops/queues/slipway::build/resume").send().await?;

    // A build that fails ends its job Failed with the reason: a dead letter, which a redrive
    // skips, as its deployment settled.
    let broken = slipway_tests::pack_dir(
        &slipway_tests::repo_root().join("examples/hello"),
        &[("Dockerfile", "FROM scratch\nCOPY does-not-exist /nowhere\n")].into(),
    )?;
    let (fourth, _) = stack.deploy(function_id, broken).await?;
    let settled = stack
        .wait_settled_as(&stack.api_key, fourth, std::time::Duration::from_secs(120))
        .await?;
    assert_eq!(settled["status"], "failed", "{settled}");
    let dead = slipway_tests::eventually(
        std::time::Duration::from_secs(10),
        "the failed build among the dead letters",
        || async {
            let page: Value = get(&format!("/api/ops/dead-letters?deployment_id={fourth}"))
                .send()
                .await?
                .json()
                .await?;
            Ok((page["jobs"].as_array().map_or(0, Vec::len) == 1).then_some(page))
        },
    )
    .await?;
    let letter = &dead["jobs"][0];
    assert_eq!(letter["state"], "Failed", "{dead}");
    assert_eq!(letter["queue"], "slipway::build", "{dead}");
    assert!(
        letter["last_result"]["Err"]
            .as_str()
            .unwrap_or_default()
            .contains("does-not-exist"),
        "{dead}"
    );
    let tenant = stack.get("/api/ops/dead-letters").send().await?;
    assert_eq!(tenant.status(), 403);
    let redriven: Value = post(&format!(
        "/api/ops/dead-letters/redrive?deployment_id={fourth}"
    ))
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(redriven["changed"], 0, "{redriven}");
    assert_eq!(redriven["skipped"], 1, "{redriven}");
    stack.shutdown().await
}

/// The counts the overview reads are kept by triggers, not counted: after concurrent inserts,
/// status changes (a pause parking jobs among them), deletes and folds at any moment, they must
/// equal a full count of the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_counts_kept_by_triggers_equal_a_full_count() -> anyhow::Result<()> {
    use std::collections::BTreeMap;

    use slipway_shared::db;

    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let queues = ["slipway::build", "slipway::push", "slipway::purge"];
    let writers = (0..4).map(|writer| {
        let pool = stack.pool.clone();
        tokio::spawn(async move {
            for round in 0..25 {
                let queue = queues[(writer + round) % queues.len()];
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO apalis.jobs (job, id, job_type, status)
                     SELECT '\\x7b7d', $1 || '-' || i, $2, 'Pending' FROM generate_series(1, 5) i",
                )
                .bind(format!("count-{writer}-{round}"))
                .bind(queue)
                .execute(&mut *tx)
                .await?;
                // Some finish, some fail, one of each batch twice over in one statement's rows.
                sqlx::query(
                    "UPDATE apalis.jobs SET status = CASE WHEN right(id, 1) IN ('1', '2') THEN 'Done'
                                                        WHEN right(id, 1) = '3' THEN 'Failed'
                                                        ELSE status END
                     WHERE id LIKE $1 || '-%'",
                )
                .bind(format!("count-{writer}-{round}"))
                .execute(&mut *tx)
                .await?;
                if round % 3 == 0 {
                    sqlx::query("DELETE FROM apalis.jobs WHERE id = $1")
                        .bind(format!("count-{writer}-{round}-1"))
                        .execute(&mut *tx)
                        .await?;
                }
                // A rolled-back change counts for nothing.
                if round % 5 == 4 {
                    tx.rollback().await?;
                } else {
                    tx.commit().await?;
                }
                if round % 7 == 0 {
                    db::queue::fold_counts(&mut *pool.acquire().await?).await?;
                }
            }
            anyhow::Ok(())
        })
    });
    let writers: Vec<_> = writers.collect();
    // A pause parks the waiting jobs of a queue while the writers go on; a resume frees them.
    let operator_key = stack.add_operator().await?;
    let post = |path: &str| stack.request_as(operator_key.expose(), reqwest::Method::POST, path);
    let paused = post("/api/ops/queues/slipway::push/pause").send().await?;
    assert_eq!(paused.status(), 200);
    for writer in writers {
        writer.await??;
    }
    let mut conn = stack.conn().await?;
    let counted = |rows: Vec<db::queue::StateCount>| -> BTreeMap<(String, String), i64> {
        rows.into_iter()
            .filter(|row| row.count != 0)
            .map(|row| ((row.queue, row.state), row.count))
            .collect()
    };
    let full = || async {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT job_type, status, count(*) FROM apalis.jobs GROUP BY job_type, status",
        )
        .fetch_all(&stack.pool)
        .await?;
        anyhow::Ok(
            rows.into_iter()
                .map(|(queue, state, count)| ((queue, state), count))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    let kept = counted(db::queue::counts_by_state(&mut conn).await?);
    let truth = full().await?;
    assert!(
        truth.contains_key(&("slipway::push".to_owned(), "Paused".to_owned())),
        "{truth:?}"
    );
    assert_eq!(kept, truth);
    let resumed = post("/api/ops/queues/slipway::push/resume").send().await?;
    assert_eq!(resumed.status(), 200);
    db::queue::fold_counts(&mut conn).await?;
    assert_eq!(
        counted(db::queue::counts_by_state(&mut conn).await?),
        full().await?
    );
    drop(conn);
    stack.shutdown().await
}
