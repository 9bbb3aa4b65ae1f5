//! The scheduler with an injected clock: replicas fire each tick exactly once between them,
//! missed ticks are caught up once, and the sweeps schedule stale and over-quota functions for
//! deletion, purge them when their grace period is over, and find an overwritten tag.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;
use slipway_scheduler::Scheduler;
use slipway_shared::{
    config::SchedulerConfig,
    db,
    jobs::{Job, PurgeJob, VerifyJob},
    schedule::{self, Clock, ManualClock, Sweep},
    store::function_prefix,
};
use slipway_tests::{
    StackOptions, StoreKind, TestStack, containers_of, docker, engine_images, eventually,
    hello_archive, registry_has_manifest,
};
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(86_400);

fn every_minute() -> SchedulerConfig {
    SchedulerConfig {
        cron_idle: "0 * * * * *".into(),
        cron_stale: "0 * * * * *".into(),
        cron_quota: "0 * * * * *".into(),
        cron_purge: "0 * * * * *".into(),
        cron_digest: "0 * * * * *".into(),
        cron_retention: "0 * * * * *".into(),
        cron_reap: "0 * * * * *".into(),
        stale_after: 90 * DAY,
        deletion_grace: 7 * DAY,
        default_function_quota: 100,
        ..Default::default()
    }
}

fn clock_at(raw: &str) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(raw.parse::<DateTime<Utc>>().unwrap()))
}

async fn ticks_per_sweep(stack: &TestStack) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT sweep, count(*) FROM scheduler_ticks GROUP BY sweep")
            .fetch_all(&stack.pool)
            .await?;
    Ok(rows.into_iter().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_fire_each_tick_exactly_once_and_catch_up_once() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let clock = clock_at("2030-01-01T00:00:30Z");
    let replicas: Vec<Scheduler> = (0..3)
        .map(|i| {
            Scheduler::new(
                stack.pool.clone(),
                every_minute(),
                clock.clone(),
                format!("replica-{i}"),
            )
        })
        .collect::<anyhow::Result<_>>()?;

    let mut fired_total = 0;
    for round in 0..21 {
        if round > 0 {
            clock.advance(Duration::from_secs(60));
        }
        let (a, b, c) = tokio::join!(replicas[0].tick(), replicas[1].tick(), replicas[2].tick());
        let fired = a?.len() + b?.len() + c?.len();
        assert_eq!(
            fired,
            Sweep::ALL.len(),
            "round {round}: one firing per sweep"
        );
        fired_total += fired;
    }
    assert_eq!(fired_total, 21 * Sweep::ALL.len());
    let counts = ticks_per_sweep(&stack).await?;
    assert_eq!(counts.len(), Sweep::ALL.len());
    assert!(counts.values().all(|n| *n == 21), "{counts:?}");

    // Every replica down for ten minutes: one catch-up tick per sweep, not ten.
    clock.advance(Duration::from_secs(10 * 60));
    let (a, b, c) = tokio::join!(replicas[0].tick(), replicas[1].tick(), replicas[2].tick());
    assert_eq!(a?.len() + b?.len() + c?.len(), Sweep::ALL.len());
    let counts = ticks_per_sweep(&stack).await?;
    assert!(counts.values().all(|n| *n == 22), "{counts:?}");
    // And nothing more at the same instant.
    assert!(replicas[0].tick().await?.is_empty());
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_function_is_scheduled_for_deletion_then_purged_after_its_grace_period()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("forgotten").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("forgotten\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    let function = stack.function(function_id).await?;
    let tag = function["image_tag"].as_str().unwrap().to_owned();
    let digest = function["image_digest"].as_str().unwrap().to_owned();
    let invoked = stack.init("used").await?;
    sqlx::query("UPDATE functions SET last_invoked_at = now() + interval '91 days' WHERE id = $1")
        .bind(invoked)
        .execute(&stack.pool)
        .await?;

    // 91 days later, never invoked: stale.
    let clock = Arc::new(ManualClock::new(Utc::now() + chrono::TimeDelta::days(91)));
    let config = every_minute();
    let fired = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Stale,
        clock.now(),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(fired["functions"], 1, "{fired} {function}");
    let status: Value = stack
        .get(&format!("/api/functions/{function_id}/deletion-status"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(status["has_pending_deletion"], true, "{status}");
    assert_eq!(status["deletion_info"]["reason"], "stale_function");
    assert_eq!(stack.function(invoked).await?["status"], "init");
    // Running the sweep again schedules nothing new.
    let again = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Stale,
        clock.now() + chrono::TimeDelta::seconds(1),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(again["functions"], 0);

    // Before the grace period ends the purge sweep leaves it alone; after, it enqueues one purge.
    clock.advance(6 * DAY);
    let early = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Purge,
        clock.now(),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(early["functions"], 0);
    clock.advance(2 * DAY);
    let due = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Purge,
        clock.now(),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(due["functions"], 1);
    let rerun = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Purge,
        clock.now() + chrono::TimeDelta::seconds(1),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(rerun["functions"], 0, "the purge is already enqueued");

    eventually(Duration::from_secs(60), "the function purged", || async {
        Ok((stack.function(function_id).await?["status"] == "deleted").then_some(()))
    })
    .await?;
    assert!(!registry_has_manifest(&tag, &digest).await?);
    assert!(containers_of(function_id)?.is_empty());
    assert!(
        stack
            .store
            .list(&function_prefix(function_id))
            .await?
            .is_empty()
    );
    let mut conn = stack.conn().await?;
    let jobs = db::queue::jobs(&mut conn, &[PurgeJob::NAME]).await?;
    let purges = jobs
        .iter()
        .filter(|j| j.payload.as_ref().is_some_and(|p| p["scope"] == "function"))
        .count();
    assert_eq!(purges, 1, "{jobs:?}");
    drop(conn);
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_the_least_recently_invoked_inactive_functions_go() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    // (name, state, last invoked days ago)
    let setup = [
        ("busy", "Active", Some(0)),
        ("recent", "Inactive", Some(1)),
        ("oldest", "Inactive", Some(10)),
        ("older", "Inactive", Some(5)),
    ];
    let mut ids = BTreeMap::new();
    for (name, state, days) in setup {
        let id = stack.init(name).await?;
        sqlx::query(
            "UPDATE functions SET state = $2, last_invoked_at = now() - make_interval(days => $3) WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(days.unwrap_or(0))
        .execute(&stack.pool)
        .await?;
        ids.insert(name, id);
    }
    let config = every_minute();
    let within = schedule::fire(&stack.pool, &config, Sweep::Quota, Utc::now(), "test", true)
        .await?
        .unwrap();
    assert_eq!(within["functions"], 0, "within the default quota");

    {
        let mut conn = stack.conn().await?;
        db::users::set_function_quota(&mut conn, stack.user_id, Some(2)).await?;
    }
    let now = Utc::now() + chrono::TimeDelta::seconds(1);
    let over = schedule::fire(&stack.pool, &config, Sweep::Quota, now, "test", true)
        .await?
        .unwrap();
    assert_eq!(over["functions"], 2, "{over}");
    for (name, expected) in [
        ("busy", "init"),
        ("recent", "init"),
        ("oldest", "pending_deletion"),
        ("older", "pending_deletion"),
    ] {
        let function = stack.function(ids[name]).await?;
        assert_eq!(function["status"], expected, "{name}: {function}");
    }
    let pending: Value = stack
        .get("/api/functions/pending-deletions")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(pending["count"], 2);
    assert!(
        pending["pending_deletions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["reason"] == "quota_exceeded")
    );
    let again = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Quota,
        now + chrono::TimeDelta::seconds(1),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(again["functions"], 0, "back within quota");
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_sweep_finds_an_overwritten_tag() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("watched").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("watched\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    let tag = stack.function(function_id).await?["image_tag"]
        .as_str()
        .unwrap()
        .to_owned();
    docker(&["tag", "slipway/busybox:1", &tag])?;
    docker(&["push", &tag])?;

    let config = every_minute();
    let fired = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Digest,
        Utc::now(),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(fired["functions"], 1);
    let function = eventually(Duration::from_secs(30), "the drift recorded", || async {
        let function = stack.function(function_id).await?;
        Ok(function["image_drift"].is_object().then_some(function))
    })
    .await?;
    assert_eq!(function["state"], "Active", "keep policy: still serving");
    assert_eq!(function["image_drift"]["tag"], tag.as_str());
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "watched\n".into())
    );
    let again = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Digest,
        Utc::now() + chrono::TimeDelta::seconds(1),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(again["functions"], 0, "checked within SLIPWAY_VERIFY_EVERY");
    let mut conn = stack.conn().await?;
    assert_eq!(
        db::queue::jobs(&mut conn, &[VerifyJob::NAME]).await?.len(),
        1
    );
    drop(conn);
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_and_fire_schedules_and_nobody_else_does() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let refused = stack.get("/api/schedules").send().await?;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "operators_only");

    let operator_key = stack.add_operator().await?;
    let as_operator = |request: reqwest::RequestBuilder| request.bearer_auth(operator_key.expose());
    let listed: Value = as_operator(stack.http.get(stack.url("/api/schedules")))
        .send()
        .await?
        .json()
        .await?;
    let names: Vec<&str> = listed["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "idle",
            "stale",
            "quota",
            "purge",
            "digest",
            "retention",
            "reap"
        ]
    );
    assert!(listed["schedules"][3]["next_fire_at"].is_string());
    assert_eq!(listed["schedules"][3]["last_fire_at"], Value::Null);

    let run = stack
        .request_as(
            operator_key.expose(),
            reqwest::Method::POST,
            "/api/schedules/purge/run",
        )
        .send()
        .await?;
    assert_eq!(run.status(), 200);
    let run: Value = run.json().await?;
    assert_eq!(run["result"]["functions"], 0);
    let listed: Value = as_operator(stack.http.get(stack.url("/api/schedules")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["schedules"][3]["last_manual"], true);
    assert_eq!(listed["schedules"][3]["last_fire_at"], run["fire_at"]);

    let unknown = stack
        .request_as(
            operator_key.expose(),
            reqwest::Method::POST,
            "/api/schedules/sometimes/run",
        )
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_function_is_released_and_its_next_invocation_wakes_it() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("sleepy").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("sleepy\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    let tag = stack.function(function_id).await?["image_tag"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "sleepy\n".into())
    );
    let first = containers_of(function_id)?;
    assert_eq!(first.len(), 1);

    // Sixteen minutes without an invocation (idle_after is 15 minutes by default).
    let config = every_minute();
    let later = Utc::now() + chrono::TimeDelta::minutes(16);
    let fired = schedule::fire(&stack.pool, &config, Sweep::Idle, later, "test", true)
        .await?
        .unwrap();
    assert_eq!(fired["functions"], 1, "{fired}");
    // Released means all three: Inactive, no container, and none recorded (the record is
    // forgotten just after the container goes).
    eventually(Duration::from_secs(30), "the instance released", || async {
        let function = stack.function(function_id).await?;
        let runtime: Value = stack
            .get(&format!("/api/v1/functions/{function_id}/runtime"))
            .send()
            .await?
            .json()
            .await?;
        Ok((function["state"] == "Inactive"
            && runtime["state"] == "idle"
            && containers_of(function_id)?.is_empty())
        .then_some(()))
    })
    .await?;
    assert!(
        engine_images(&tag)?.is_empty(),
        "the cached image is dropped"
    );
    let again = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Idle,
        later + chrono::TimeDelta::seconds(1),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(again["functions"], 0);

    // The next invocation waits while the function wakes (Pending → Active), then is served.
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "sleepy\n".into())
    );
    let function = stack.function(function_id).await?;
    assert_eq!(function["state"], "Active", "{function}");
    let second = containers_of(function_id)?;
    assert_eq!(second.len(), 1);
    assert_ne!(second, first, "a new instance");
    let log: Value = stack
        .get(&format!("/api/deployments/{deployment}/logs"))
        .send()
        .await?
        .json()
        .await?;
    let runtime_lines: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["phase"] == "runtime")
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(
        runtime_lines[0].starts_with("idle: instance released"),
        "{runtime_lines:?}"
    );
    assert!(
        runtime_lines.last().unwrap().starts_with("woken: "),
        "{runtime_lines:?}"
    );
    stack.shutdown().await
}

#[tokio::test]
async fn old_events_deliveries_logs_and_finished_jobs_go_but_the_serving_log_and_dead_letters_stay()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("kept").await?;
    let (serving, _) = stack.deploy(function_id, hello_archive("kept\n")?).await?;
    stack.wait_active(serving).await?;
    assert_eq!(stack.invoke(function_id, "").await?.0, 200);
    // Completed, not just begun.
    slipway_tests::eventually(Duration::from_secs(10), "the event completed", || async {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE status = 'PENDING') FROM invocation_events",
        )
        .fetch_one(&stack.pool)
        .await?;
        let n = stack.count("invocation_events").await?;
        Ok((n > 0 && pending == 0).then_some(n))
    })
    .await?;
    // Events are counted as aged, not in total: a write the event batcher repeats after the
    // sweep comes back with its own, recent, time, and retention rightly keeps it.
    let aged_events = || async {
        anyhow::Ok(
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM invocation_events WHERE created_at < now() - interval '30 days'",
            )
            .fetch_one(&stack.pool)
            .await?,
        )
    };
    // A delivery and an older deployment's log, both written long ago.
    sqlx::query(
        "INSERT INTO webhook_deliveries (provider, delivery_id, event, received_at, response)
         VALUES ('github', 'ancient', 'push', now() - interval '40 days', '{}')",
    )
    .execute(&stack.pool)
    .await?;
    let serving_log_lines = stack.count("deployment_logs").await?;
    sqlx::query("UPDATE deployment_logs SET created_at = now() - interval '40 days'")
        .execute(&stack.pool)
        .await?;
    sqlx::query("UPDATE invocation_events SET created_at = now() - interval '40 days'")
        .execute(&stack.pool)
        .await?;
    let events = aged_events().await?;
    assert!(events > 0);
    sqlx::query(
        "INSERT INTO webhook_deliveries (provider, delivery_id, event, received_at, response)
         VALUES ('github', 'recent', 'push', now() - interval '1 day', '{}')",
    )
    .execute(&stack.pool)
    .await?;

    // Finished jobs past their week go; a failed one (a dead letter) stays, and so does a job
    // that finished yesterday.
    let done_jobs = sqlx::query(
        "UPDATE apalis.jobs SET done_at = now() - interval '8 days' WHERE status = 'Done'",
    )
    .execute(&stack.pool)
    .await?
    .rows_affected();
    assert!(done_jobs > 1, "the deploy's jobs are done");
    sqlx::query(
        "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, done_at)
         VALUES ('\\x7b7d', 'dead-letter', 'slipway::verify', 'Failed', 1, 1, now() - interval '9 days'),
                ('\\x7b7d', 'yesterday', 'slipway::verify', 'Done', 1, 1, now() - interval '1 day')",
    )
    .execute(&stack.pool)
    .await?;

    let config = SchedulerConfig {
        cron_retention: "0 * * * * *".into(),
        ..Default::default()
    };
    let fired = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Retention,
        Utc::now(),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(fired["jobs"], done_jobs, "{fired}");
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM apalis.jobs WHERE id IN ('dead-letter', 'yesterday') ORDER BY id",
    )
    .fetch_all(&stack.pool)
    .await?;
    assert_eq!(kept, ["dead-letter", "yesterday"]);
    let counted = db::queue::counts_by_state(&mut *stack.conn().await?).await?;
    let done_counted: i64 = counted
        .iter()
        .filter(|c| c.state == "Done")
        .map(|c| c.count)
        .sum();
    let done_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE status = 'Done'")
            .fetch_one(&stack.pool)
            .await?;
    assert_eq!(
        done_counted, done_left,
        "the kept counts follow the deletes"
    );
    assert_eq!(fired["events"], events, "{fired}");
    assert_eq!(fired["deliveries"], 1, "{fired}");
    assert_eq!(fired["logs"], 0, "the serving version's log stays: {fired}");
    assert_eq!(aged_events().await?, 0);
    assert_eq!(stack.count("deployment_logs").await?, serving_log_lines);
    let left: Vec<String> = sqlx::query_scalar("SELECT delivery_id FROM webhook_deliveries")
        .fetch_all(&stack.pool)
        .await?;
    assert_eq!(left, ["recent"]);

    // Once another version serves, the old one's ancient log goes.
    let (next, _) = stack.deploy(function_id, hello_archive("next\n")?).await?;
    stack.wait_active(next).await?;
    let fired = schedule::fire(
        &stack.pool,
        &config,
        Sweep::Retention,
        Utc::now() + chrono::TimeDelta::seconds(1),
        "test",
        true,
    )
    .await?
    .unwrap();
    assert_eq!(fired["logs"], serving_log_lines, "{fired}");
    stack.shutdown().await
}

/// The reaper, on each way a deployment gets stuck: its job timed out, its job is gone, the
/// worker holding its job went silent. A deployment whose job still waits is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_fails_deployments_nothing_will_move_on_and_settles_their_functions()
-> anyhow::Result<()> {
    // No worker: every deployment stays where the api left it, its build job waiting.
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let mut deployments = Vec::new();
    for name in ["timed-out", "job-gone", "worker-silent", "still-queued"] {
        let function_id = stack.init(name).await?;
        let (deployment, _) = stack.deploy(function_id, hello_archive("x\n")?).await?;
        deployments.push((name, function_id, deployment));
    }
    let job_of = |deployment: Uuid| {
        format!("convert_from(job, 'UTF8')::jsonb ->> 'deployment_id' = '{deployment}'")
    };
    let execute = |sql: String| {
        let pool = stack.pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .map(|_| ())
        }
    };
    // The job ran out of time: apalis recorded the timeout and ended it.
    execute(format!(
        r#"UPDATE apalis.jobs SET status = 'Failed', last_result = '{{"Err": "task timed out"}}'
           WHERE {}"#,
        job_of(deployments[0].2)
    ))
    .await?;
    // The job row is gone.
    execute(format!(
        "DELETE FROM apalis.jobs WHERE {}",
        job_of(deployments[1].2)
    ))
    .await?;
    // A worker claimed the job and then stopped beating.
    execute(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ('dead-worker', 'slipway::build', 'test', '', now() - interval '1 hour')"
            .into(),
    )
    .await?;
    execute(format!(
        "UPDATE apalis.jobs SET status = 'Running', lock_by = 'dead-worker', lock_at = now()
         WHERE {}",
        job_of(deployments[2].2)
    ))
    .await?;

    let config = SchedulerConfig {
        reap_after: Duration::from_secs(60),
        ..every_minute()
    };
    // Too early: everything changed less than a minute ago.
    let now = chrono::Utc::now();
    let early = schedule::fire(&stack.pool, &config, Sweep::Reap, now, "test", true).await?;
    assert_eq!(early.unwrap()["deployments"], 0);

    let later = now + chrono::TimeDelta::minutes(2);
    let fired = schedule::fire(&stack.pool, &config, Sweep::Reap, later, "test", true).await?;
    assert_eq!(fired.unwrap()["deployments"], 3);
    let expected = [
        ("timed-out", Some("timed_out: ")),
        ("job-gone", Some("worker_lost: ")),
        ("worker-silent", Some("worker_lost: ")),
        ("still-queued", None),
    ];
    for ((name, function_id, deployment), (_, reason)) in deployments.iter().zip(expected) {
        let log = stack
            .get(&format!("/api/deployments/{deployment}/logs"))
            .send()
            .await?;
        let log: Value = log.json().await?;
        let function = stack.function(*function_id).await?;
        match reason {
            Some(prefix) => {
                assert_eq!(log["status"], "failed", "{name}: {log}");
                let error = log["error"].as_str().unwrap_or_default();
                assert!(error.starts_with(prefix), "{name}: {error}");
                // The function settles: nothing served before, so it is Failed with the reason.
                assert_eq!(function["state"], "Failed", "{name}: {function}");
                assert_eq!(function["last_update_status"], "Failed", "{name}");
                assert!(
                    function["state_reason"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with(prefix),
                    "{name}: {function}"
                );
            }
            None => assert_eq!(log["status"], "building", "{name}: {log}"),
        }
    }
    // A second pass finds nothing more.
    let again = later + chrono::TimeDelta::minutes(1);
    let fired = schedule::fire(&stack.pool, &config, Sweep::Reap, again, "test", true).await?;
    assert_eq!(fired.unwrap()["deployments"], 0);
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_removes_runtime_objects_no_deployment_owns_and_leaves_the_rest()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let serving = stack.init("serving").await?;
    let (first, _) = stack.deploy(serving, hello_archive("first\n")?).await?;
    stack.wait_active(first).await?;
    let (deployment, _) = stack.deploy(serving, hello_archive("kept\n")?).await?;
    stack.wait_active(deployment).await?;

    // Left behind by a run that crashed before recording it: labelled, owned by no deployment.
    let labelled = |function: Uuid| {
        [
            "run".to_owned(),
            "-d".into(),
            "--network".into(),
            "none".into(),
            "--label".into(),
            format!("dev.slipway.function={function}"),
            "--label".into(),
            format!("dev.slipway.deployment={}", Uuid::new_v4()),
            "slipway/busybox:1".into(),
            "sleep".into(),
            "600".into(),
        ]
    };
    let run = |args: [String; 11]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args).map(|id| id.trim().to_owned())
    };
    let orphan = run(labelled(serving))?;
    // A worker died while the previous version drained: its instance runs on, and the version,
    // inactive for long, still names it.
    let drained = run(labelled(serving))?;
    sqlx::query("UPDATE deployments SET container_id = $2, updated_at = now() - interval '1 hour' WHERE id = $1")
        .bind(first)
        .bind(&drained)
        .execute(&stack.pool)
        .await?;
    // Another installation's on the same engine: a function this database does not know.
    let foreign_function = Uuid::new_v4();
    let foreign = run(labelled(foreign_function))?;
    // The network of a purged function, which still holds its share of the address pool.
    let purged = stack.init("purged").await?;
    sqlx::query("UPDATE functions SET status = 'deleted', deleted_at = now() WHERE id = $1")
        .bind(purged)
        .execute(&stack.pool)
        .await?;
    let network = format!("slipway-fn-{}", purged.simple());
    docker(&[
        "network",
        "create",
        "--label",
        &format!("dev.slipway.function={purged}"),
        &network,
    ])?;

    let config = SchedulerConfig {
        reap_after: Duration::from_secs(60),
        ..every_minute()
    };
    // Fires the sweep at `at` and waits until the orphan job it enqueued, and every other purge
    // job, has run.
    let (pool, config) = (&stack.pool, &config);
    let sweep_at = |at: DateTime<Utc>| async move {
        let purge_jobs = || async {
            let mut conn = pool.acquire().await?;
            anyhow::Ok(db::queue::jobs(&mut conn, &[PurgeJob::NAME]).await?)
        };
        let before = purge_jobs().await?.len();
        schedule::fire(pool, config, Sweep::Reap, at, "test", true).await?;
        eventually(Duration::from_secs(60), "the orphan sweep done", || async {
            let jobs = purge_jobs().await?;
            Ok((jobs.len() > before && jobs.iter().all(|j| j.status == "Done")).then_some(()))
        })
        .await
    };
    // Everything here is younger than `reap_after`: no instance goes yet.
    let now = Utc::now();
    sweep_at(now).await?;
    assert!(
        containers_of(serving)?
            .iter()
            .any(|c| orphan.starts_with(c))
    );

    // Two minutes on, they are old enough.
    sweep_at(now + chrono::TimeDelta::minutes(2)).await?;
    let left = containers_of(serving)?;
    assert_eq!(left.len(), 1, "only the serving instance is left: {left:?}");
    assert!(
        !orphan.starts_with(&left[0]) && !drained.starts_with(&left[0]),
        "the orphan and the drained instance went: {left:?}"
    );
    let forgotten: Option<String> =
        sqlx::query_scalar("SELECT container_id FROM deployments WHERE id = $1")
            .bind(first)
            .fetch_one(&stack.pool)
            .await?;
    assert_eq!(forgotten, None, "the inactive version no longer names it");
    assert_eq!(stack.invoke(serving, "").await?, (200, "kept\n".to_owned()));
    assert_eq!(
        containers_of(foreign_function)?.len(),
        1,
        "another installation's container stays"
    );
    let networks = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name={network}"),
    ])?;
    assert!(
        networks.trim().is_empty(),
        "the purged function's network went: {networks}"
    );

    docker(&["rm", "-f", &foreign])?;
    stack.shutdown().await
}
