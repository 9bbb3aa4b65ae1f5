//! Idempotency-Key: a retried init, deploy, rollback, delete or cancel gets the first answer and
//! changes nothing more; the same key on another request is refused; a retry during the first run
//! is told to wait; a 5xx leaves the key free; expired records never block.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_shared::{
    db,
    domain::ApiKey,
    jobs::{BuildJob, Job, RollbackJob},
};
use slipway_tests::{StackOptions, StoreKind, TestStack, eventually, hello_archive};
use sqlx::Connection;
use uuid::Uuid;

/// A deploy through reqwest's form: a new random boundary on every call, as any client does.
fn deploy(
    stack: &TestStack,
    function_id: Uuid,
    archive: Vec<u8>,
    key: &str,
) -> anyhow::Result<slipway_tests::SignedRequest> {
    let form = slipway_tests::deploy_form(&function_id.to_string(), archive)?;
    Ok(stack
        .post("/api/functions/deploy")
        .header("idempotency-key", key)
        .multipart(form))
}

async fn answer(request: slipway_tests::SignedRequest) -> anyhow::Result<(u16, bool, Value)> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let replayed = match response.headers().get("idempotent-replayed") {
        None => false,
        Some(v) if v == "true" => true,
        Some(v) => anyhow::bail!("Idempotent-Replayed: {v:?}"),
    };
    Ok((status, replayed, response.json().await?))
}

async fn jobs(stack: &TestStack, queue: &str) -> anyhow::Result<usize> {
    let mut conn = stack.conn().await?;
    Ok(db::queue::jobs(&mut conn, &[queue]).await?.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_init_deploy_and_rollback_get_the_first_answer_and_change_nothing_more()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let init = |name: &str, key: &str| {
        stack
            .post("/api/functions/init")
            .header("idempotency-key", key)
            .json(&json!({ "name": name }))
    };

    let first = answer(init("retried", "init-1")).await?;
    assert_eq!((first.0, first.1), (201, false), "{}", first.2);
    let again = answer(init("retried", "init-1")).await?;
    assert_eq!((again.0, again.1), (201, true), "the first answer, marked");
    assert_eq!(again.2, first.2, "byte for byte the same body");
    let function_id: Uuid = first.2["id"].as_str().unwrap().parse()?;
    let reused = answer(init("other-name", "init-1")).await?;
    assert_eq!(reused.0, 422);
    assert_eq!(reused.2["error"]["code"], "idempotency_key_reused");
    assert_eq!(stack.count("functions").await?, 1);

    // Keys are per user: the same key from someone else is a new request.
    let mallory_key = ApiKey::generate();
    {
        let mut conn = stack.conn().await?;
        let mallory = db::users::ensure(&mut conn, "mallory").await?;
        db::users::insert_api_key(&mut conn, mallory, &mallory_key, None).await?;
    }
    let theirs = stack
        .http
        .post(stack.url("/api/functions/init"))
        .bearer_auth(mallory_key.expose())
        .header("idempotency-key", "init-1")
        .json(&json!({ "name": "retried" }))
        .send()
        .await?;
    assert_eq!(theirs.status(), 201);
    assert!(!theirs.headers().contains_key("idempotent-replayed"));
    assert_eq!(stack.count("functions").await?, 2);

    let archive = hello_archive("once\n")?;
    let first = answer(deploy(&stack, function_id, archive.clone(), "deploy-1")?).await?;
    assert_eq!((first.0, first.1), (202, false), "{}", first.2);
    let again = answer(deploy(&stack, function_id, archive.clone(), "deploy-1")?).await?;
    assert_eq!((again.0, again.1), (202, true), "{}", again.2);
    assert_eq!(again.2, first.2);
    let reused = answer(deploy(
        &stack,
        function_id,
        hello_archive("twice\n")?,
        "deploy-1",
    )?)
    .await?;
    assert_eq!(reused.0, 422, "another archive under the same key");
    assert_eq!(reused.2["error"]["code"], "idempotency_key_reused");
    assert_eq!(stack.count("deployments").await?, 1);
    assert_eq!(jobs(&stack, BuildJob::NAME).await?, 1);
    let v1: Uuid = first.2["deployment_id"].as_str().unwrap().parse()?;
    stack.wait_active(v1).await?;
    let (v2, _) = stack.deploy(function_id, hello_archive("two\n")?).await?;
    stack.wait_active(v2).await?;

    let rollback = |version: i64| {
        stack
            .post(&format!("/api/functions/{function_id}/rollback"))
            .header("idempotency-key", "rollback-1")
            .json(&json!({ "version": version }))
    };
    let first = answer(rollback(1)).await?;
    assert_eq!((first.0, first.1), (202, false), "{}", first.2);
    let again = answer(rollback(1)).await?;
    assert_eq!((again.0, again.1), (202, true));
    assert_eq!(again.2, first.2);
    let reused = answer(rollback(2)).await?;
    assert_eq!(reused.0, 422);
    assert_eq!(reused.2["error"]["code"], "idempotency_key_reused");
    assert_eq!(
        jobs(&stack, RollbackJob::NAME).await?,
        1,
        "one rollback job"
    );
    eventually(
        Duration::from_secs(60),
        "version 1 serving again",
        || async { Ok((stack.function(function_id).await?["active_version"] == 1).then_some(())) },
    )
    .await?;
    // Answers that were errors are answers too: replayed, not re-run.
    let conflict = |key: &str| {
        stack
            .post(&format!("/api/functions/{function_id}/rollback"))
            .header("idempotency-key", key)
            .json(&json!({ "version": 1 }))
    };
    let first = answer(conflict("rollback-2")).await?;
    assert_eq!(first.0, 409, "{}", first.2);
    let again = answer(conflict("rollback-2")).await?;
    assert_eq!((again.0, again.1, &again.2), (409, true, &first.2));
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_during_the_first_run_waits_a_5xx_frees_the_key_and_expired_records_never_block()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("contended").await?;
    let archive = hello_archive("slow\n")?;

    // Hold the function's row lock, so the first deploy stops inside its use case.
    let mut blocker = sqlx::PgConnection::connect(&stack.db.url).await?;
    let mut hold = blocker.begin().await?;
    sqlx::query("SELECT 1 FROM functions WHERE id = $1 FOR UPDATE")
        .bind(function_id)
        .execute(&mut *hold)
        .await?;
    let first = tokio::spawn(answer(deploy(
        &stack,
        function_id,
        archive.clone(),
        "slow",
    )?));
    eventually(Duration::from_secs(10), "the key claimed", || async {
        Ok((stack.count("idempotency_keys").await? == 1).then_some(()))
    })
    .await?;
    let during = answer(deploy(&stack, function_id, archive.clone(), "slow")?).await?;
    assert_eq!(during.0, 409, "{}", during.2);
    assert_eq!(during.2["error"]["code"], "idempotency_in_progress");
    hold.rollback().await?;
    let first = first.await??;
    assert_eq!((first.0, first.1), (202, false), "{}", first.2);
    let after = answer(deploy(&stack, function_id, archive.clone(), "slow")?).await?;
    assert_eq!((after.0, after.1, &after.2), (202, true, &first.2));

    // A store that cannot write makes the deploy a 500; the key is not kept for it.
    let function_dir = stack.store_dir().join(format!("functions/{function_id}"));
    let aside = stack.store_dir().join("aside");
    std::fs::rename(&function_dir, &aside)?;
    std::fs::write(&function_dir, b"not a directory")?;
    let broken = answer(deploy(&stack, function_id, archive.clone(), "store-down")?).await?;
    assert_eq!(broken.0, 500, "{}", broken.2);
    std::fs::remove_file(&function_dir)?;
    std::fs::rename(&aside, &function_dir)?;
    let retried = answer(deploy(&stack, function_id, archive.clone(), "store-down")?).await?;
    assert_eq!(
        (retried.0, retried.1),
        (202, false),
        "run again: {}",
        retried.2
    );
    assert_eq!(retried.2["version"], 2);
    assert_eq!(stack.count("deployments").await?, 2);
    assert_eq!(jobs(&stack, BuildJob::NAME).await?, 2);

    // Records past their lifetime — an unfinished one after 5 minutes (its request presumed
    // dead), a finished one after 24 hours — give way to a new request, even a different one.
    for (key, age, finished) in [
        ("crashed", "6 minutes", false),
        ("yesterday", "25 hours", true),
    ] {
        let sql = format!(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, claim_id, created_at,
                 response_status, response_type, response_body, completed_at)
             SELECT $1, $2, sha256('something else'), gen_random_uuid(), now() - interval '{age}',
                 s, 'application/json', b, c
             FROM (SELECT CASE WHEN $3 THEN 202 END::smallint AS s,
                          CASE WHEN $3 THEN '{{}}'::bytea END AS b,
                          CASE WHEN $3 THEN now() END AS c) AS v"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(stack.user_id)
            .bind(key)
            .bind(finished)
            .execute(&stack.pool)
            .await?;
        let fresh = answer(deploy(&stack, function_id, archive.clone(), key)?).await?;
        assert_eq!((fresh.0, fresh.1), (202, false), "{key}: {}", fresh.2);
    }
    assert_eq!(stack.count("deployments").await?, 4);
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_delete_and_cancel_get_the_first_answer_and_change_nothing_more()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("deleted-twice").await?;
    let delete = || {
        stack
            .delete(&format!("/api/functions/{function_id}"))
            .header("idempotency-key", "delete-1")
    };
    let first = answer(delete()).await?;
    assert_eq!((first.0, first.1), (202, false), "{}", first.2);
    let again = answer(delete()).await?;
    assert_eq!((again.0, again.1), (202, true), "{}", again.2);
    assert_eq!(again.2, first.2);
    assert_eq!(stack.count("pending_deletions").await?, 1);

    let cancel = || {
        stack
            .post(&format!("/api/functions/{function_id}/cancel-deletion"))
            .header("idempotency-key", "cancel-1")
    };
    let first = answer(cancel()).await?;
    assert_eq!((first.0, first.1), (200, false), "{}", first.2);
    let again = answer(cancel()).await?;
    assert_eq!((again.0, again.1), (200, true), "{}", again.2);
    let statuses: Vec<(String,)> =
        sqlx::query_as("SELECT status FROM pending_deletions WHERE function_id = $1")
            .bind(function_id)
            .fetch_all(&stack.pool)
            .await?;
    assert_eq!(statuses, [("cancelled".to_owned(),)]);
    stack.shutdown().await
}
