//! Deletion with a grace period (seed 000) and the purge that ends it: a deleted function stops
//! serving but loses nothing until the purge; a cancel brings it back; a purge, even one killed
//! half-way and run again, leaves nothing of the function in the runtime, the registry or the
//! object store, and a tombstone that keeps its history and reserves its name.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_shared::{
    config::WorkerConfig,
    db,
    jobs::{ALL_QUEUES, Job, PurgeJob},
    store::function_prefix,
};
use slipway_tests::{
    StackOptions, StoreKind, TestStack, containers_of, engine_images, eventually, hello_archive,
    registry_has_manifest,
};
use uuid::Uuid;

async fn delete(stack: &TestStack, function_id: Uuid) -> anyhow::Result<(u16, Value)> {
    let response = stack
        .delete(&format!("/api/functions/{function_id}"))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn cancel(stack: &TestStack, function_id: Uuid) -> anyhow::Result<(u16, Value)> {
    let response = stack
        .post(&format!("/api/functions/{function_id}/cancel-deletion"))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// The (tag, digest) the function serves.
async fn active_image(stack: &TestStack, function_id: Uuid) -> anyhow::Result<(String, String)> {
    let function = stack.function(function_id).await?;
    let field = |name: &str| {
        function[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no {name}: {function}"))
    };
    Ok((field("image_tag")?, field("image_digest")?))
}

async fn get_json(stack: &TestStack, path: &str) -> anyhow::Result<Value> {
    Ok(stack.get(path).send().await?.json().await?)
}

async fn enqueue_purge(stack: &TestStack, function_id: Uuid) -> anyhow::Result<()> {
    let mut conn = stack.conn().await?;
    PurgeJob::Function {
        function_id,
        request_id: Uuid::new_v4(),
    }
    .enqueue(&mut conn)
    .await?;
    Ok(())
}

/// Waits until no job of any queue is waiting or running.
async fn all_jobs_done(stack: &TestStack) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), "every job done", || async {
        let mut conn = stack.conn().await?;
        let jobs = db::queue::jobs(&mut conn, &ALL_QUEUES).await?;
        Ok(jobs
            .iter()
            .all(|j| j.status == "Done" || j.status == "Failed")
            .then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_function_stops_serving_until_its_deletion_is_cancelled() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("regretted").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("still here\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    let (image_tag, _) = active_image(&stack, function_id).await?;

    let (status, body) = delete(&stack, function_id).await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["function"]["status"], "pending_deletion", "{body}");
    assert_eq!(body["function"]["uuid"], function_id.to_string());
    let info = &body["deletion_info"];
    assert_eq!(info["reason"], "user_requested", "{body}");
    assert_eq!(info["days_remaining"], 7, "{body}");
    assert_eq!(info["image_tag"], image_tag.as_str(), "{body}");

    // It no longer serves, and says why.
    let response = stack
        .get(&format!("/api/v1/functions/invoke/{function_id}"))
        .send()
        .await?;
    assert_eq!(response.status(), 410);
    let refused: Value = response.json().await?;
    assert_eq!(refused["error"]["code"], "function_pending_deletion");

    let pending = get_json(&stack, "/api/functions/pending-deletions").await?;
    assert_eq!(pending["count"], 1, "{pending}");
    let entry = &pending["pending_deletions"][0];
    assert_eq!(entry["function_uuid"], function_id.to_string());
    assert_eq!(entry["function_name"], "regretted");
    assert_eq!(entry["function_status"], "pending_deletion");
    assert_eq!(entry["id"], info["id"]);
    assert_eq!(entry["deletion_date"], info["deletion_date"]);
    assert_eq!(entry["scheduled_at"], info["scheduled_at"]);

    let status = get_json(
        &stack,
        &format!("/api/functions/{function_id}/deletion-status"),
    )
    .await?;
    assert_eq!(status["has_pending_deletion"], true, "{status}");
    assert_eq!(status["function_name"], "regretted");
    assert_eq!(status["deletion_info"]["id"], info["id"]);

    // Nothing new while it waits, and no second deletion.
    let (code, _) = stack
        .deploy_raw(&function_id.to_string(), hello_archive("sneaky\n")?, None)
        .await?;
    assert_eq!(code, 409);
    let (code, again) = delete(&stack, function_id).await?;
    assert_eq!(code, 409);
    assert_eq!(again["error"]["code"], "deletion_already_scheduled");

    // Nothing was destroyed: the container still runs and the image is still there.
    assert_eq!(containers_of(function_id)?.len(), 1);

    let (code, restored) = cancel(&stack, function_id).await?;
    assert_eq!(code, 200, "{restored}");
    assert_eq!(restored["success"], true);
    assert_eq!(restored["message"], "Deletion cancelled successfully");
    assert_eq!(restored["function"]["status"], "active");
    assert_eq!(
        stack.invoke(function_id, "").await?,
        (200, "still here\n".into())
    );

    let status = get_json(
        &stack,
        &format!("/api/functions/{function_id}/deletion-status"),
    )
    .await?;
    assert_eq!(status["has_pending_deletion"], false, "{status}");
    assert_eq!(status["deletion_info"], Value::Null);
    let pending = get_json(&stack, "/api/functions/pending-deletions").await?;
    assert_eq!(pending["count"], 0);
    let (code, again) = cancel(&stack, function_id).await?;
    assert_eq!(code, 409);
    assert_eq!(again["error"]["code"], "no_pending_deletion");
    {
        let mut conn = stack.conn().await?;
        let kept: Vec<(String, bool)> = sqlx::query_as(
            "SELECT status, cancelled_at IS NOT NULL FROM pending_deletions WHERE function_id = $1",
        )
        .bind(function_id)
        .fetch_all(&mut *conn)
        .await?;
        assert_eq!(
            kept,
            [("cancelled".to_owned(), true)],
            "the record stays, cancelled"
        );
    }

    // A deletion can be scheduled again after a cancel.
    let (code, _) = delete(&stack, function_id).await?;
    assert_eq!(code, 202);
    stack.shutdown().await
}

/// The doomed worker cannot reach the registry and waits long between attempts, so it is stuck
/// in the purge's image step, after the containers are gone, when the test kills it.
fn registry_unreachable(config: &mut WorkerConfig) {
    config.registry = "127.0.0.1:9".into();
    config.retry_base = Duration::from_secs(600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_killed_half_way_finishes_when_run_again_and_leaves_a_tombstone()
-> anyhow::Result<()> {
    let mut stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await?;
    let builder = stack.spawn_worker(|_| {})?;
    let function_id = stack.init("doomed").await?;
    let mut images = Vec::new();
    for greeting in ["one\n", "two\n"] {
        let (deployment, _) = stack.deploy(function_id, hello_archive(greeting)?).await?;
        stack.wait_active(deployment).await?;
        images.push(active_image(&stack, function_id).await?);
    }
    all_jobs_done(&stack).await?;
    builder.abort();
    let _ = builder.await;
    for (tag, digest) in &images {
        assert!(registry_has_manifest(tag, digest).await?);
    }
    assert_eq!(
        stack.store.list(&function_prefix(function_id)).await?.len(),
        2
    );
    assert_eq!(containers_of(function_id)?.len(), 1);

    let (code, _) = delete(&stack, function_id).await?;
    assert_eq!(code, 202);
    let doomed = stack.spawn_worker(registry_unreachable)?;
    enqueue_purge(&stack, function_id).await?;
    eventually(
        Duration::from_secs(30),
        "the purge to remove the containers",
        || async { Ok(containers_of(function_id)?.is_empty().then_some(())) },
    )
    .await?;

    // Half-way: nothing serves, the images and archives are still there, and the deletion can no
    // longer be cancelled.
    let (code, refused) = cancel(&stack, function_id).await?;
    assert_eq!(code, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "purge_in_progress");
    assert_eq!(
        stack.function(function_id).await?["status"],
        "pending_deletion"
    );
    for (tag, digest) in &images {
        assert!(registry_has_manifest(tag, digest).await?);
    }
    doomed.abort();
    let _ = doomed.await;

    // A healthy peer re-runs the orphaned purge once the dead worker's heartbeats are overdue.
    let peer = stack.spawn_worker(|_| {})?;
    stack.adopt(peer);
    let function = eventually(Duration::from_secs(60), "the function purged", || async {
        let function = stack.function(function_id).await?;
        Ok((function["status"] == "deleted").then_some(function))
    })
    .await?;
    assert!(function["deleted_at"].is_string(), "{function}");

    for (tag, digest) in &images {
        assert!(
            !registry_has_manifest(tag, digest).await?,
            "{tag}@{digest} is still in the registry"
        );
        assert!(
            engine_images(tag)?.is_empty(),
            "{tag} is still in the engine"
        );
    }
    assert!(containers_of(function_id)?.is_empty());
    assert!(
        stack
            .store
            .list(&function_prefix(function_id))
            .await?
            .is_empty()
    );
    {
        let mut conn = stack.conn().await?;
        let jobs = db::queue::jobs(&mut conn, &[PurgeJob::NAME]).await?;
        let purge: Vec<_> = jobs
            .iter()
            .filter(|j| j.payload.as_ref().is_some_and(|p| p["scope"] == "function"))
            .collect();
        assert_eq!(purge.len(), 1, "{jobs:?}");
        assert!(purge[0].attempts >= 2, "the orphan was run again: {jobs:?}");
    }

    // The tombstone: history readable, name reserved, nothing served, nothing more to delete.
    let history = stack.history(function_id).await?;
    assert_eq!(history["count"], 2, "{history}");
    assert_eq!(history["function_status"], "deleted");
    for deployment in history["deployments"].as_array().unwrap() {
        assert!(deployment["pruned_at"].is_string(), "{deployment}");
        assert_eq!(deployment["is_active"], false);
    }
    let listed = get_json(&stack, "/api/functions").await?;
    assert_eq!(
        listed["count"], 0,
        "deleted functions are not listed: {listed}"
    );
    let reinit = stack
        .post("/api/functions/init")
        .json(&json!({"name": "doomed"}))
        .send()
        .await?;
    assert_eq!(reinit.status(), 409);
    let reinit: Value = reinit.json().await?;
    assert_eq!(reinit["error"]["code"], "name_reserved");
    let response = stack
        .get(&format!("/api/v1/functions/invoke/{function_id}"))
        .send()
        .await?;
    assert_eq!(response.status(), 410);
    let (code, _) = delete(&stack, function_id).await?;
    assert_eq!(code, 410);
    let pending = get_json(&stack, "/api/functions/pending-deletions").await?;
    assert_eq!(pending["count"], 0);

    // Purging a tombstone again is a no-op that succeeds.
    enqueue_purge(&stack, function_id).await?;
    all_jobs_done(&stack).await?;
    {
        let mut conn = stack.conn().await?;
        let jobs = db::queue::jobs(&mut conn, &[PurgeJob::NAME]).await?;
        assert!(jobs.iter().all(|j| j.status == "Done"), "{jobs:?}");
        let deletions: Vec<(String,)> =
            sqlx::query_as("SELECT status FROM pending_deletions WHERE function_id = $1")
                .bind(function_id)
                .fetch_all(&mut *conn)
                .await?;
        assert_eq!(deletions, [("completed".to_owned(),)]);
    }
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_past_the_retention_window_lose_their_image_but_never_a_digest_in_use()
-> anyhow::Result<()> {
    fn keep_two(config: &mut WorkerConfig) {
        config.retained_versions = 2;
    }
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        worker_overrides: Some(keep_two),
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("retained").await?;
    // Version 3 rebuilds version 1's code: BuildKit's output is reproducible, so both versions
    // pin the same digest.
    let mut images = Vec::new();
    for greeting in ["one\n", "two\n", "one\n", "four\n"] {
        let (deployment, _) = stack.deploy(function_id, hello_archive(greeting)?).await?;
        stack.wait_active(deployment).await?;
        images.push(active_image(&stack, function_id).await?);
    }
    assert_eq!(
        images[0].1, images[2].1,
        "an unchanged rebuild yields the same digest"
    );
    assert_ne!(images[0].1, images[1].1);

    let history = eventually(
        Duration::from_secs(30),
        "versions 1 and 2 pruned",
        || async {
            let history = stack.history(function_id).await?;
            let pruned: Vec<bool> = history["deployments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["pruned_at"].is_string())
                .collect();
            Ok((pruned == [false, false, true, true]).then_some(history))
        },
    )
    .await?;
    assert_eq!(history["deployments"][3]["version"], 1);

    // Version 2's digest is gone; version 1's stays, since version 3 (retained) pins it.
    let (tag, digest) = &images[1];
    assert!(!registry_has_manifest(tag, digest).await?, "{tag}@{digest}");
    for (tag, digest) in [&images[0], &images[2], &images[3]] {
        assert!(
            registry_has_manifest(tag, digest).await?,
            "{tag}@{digest} was kept"
        );
    }
    let archives = stack.store.list(&function_prefix(function_id)).await?;
    let names: Vec<&str> = archives
        .iter()
        .filter_map(|k| k.rsplit('/').next())
        .collect();
    assert_eq!(names, ["v3.tar.gz", "v4.tar.gz"]);

    // Pruned versions can no longer be rolled back to; version 3, inside the window, can.
    let refused = stack
        .post(&format!("/api/functions/{function_id}/rollback"))
        .json(&json!({"version": 2}))
        .send()
        .await?;
    assert_eq!(refused.status(), 409);
    let refused: Value = refused.json().await?;
    assert_eq!(refused["error"]["code"], "version_pruned");
    let accepted = stack
        .post(&format!("/api/functions/{function_id}/rollback"))
        .json(&json!({"version": 3}))
        .send()
        .await?;
    assert_eq!(accepted.status(), 202);
    eventually(Duration::from_secs(30), "version 3 serving", || async {
        let (code, body) = stack.invoke(function_id, "").await?;
        Ok((code == 200 && body == "one\n").then_some(()))
    })
    .await?;
    stack.shutdown().await
}
