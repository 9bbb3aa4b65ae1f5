//! Invocation events (seed 003): every routed invocation is recorded, PENDING then SUCCESS or
//! FAILURE, with its timings and sizes; the caller gets the event's id in `x-slipway-event-id`
//! and can list (filtered, paginated) and read only the events of their own functions.

use std::time::Duration;

use serde_json::Value;
use slipway_shared::{db, domain::ApiKey};
use slipway_tests::{TestStack, containers_of, docker, eventually, hello_archive};
use uuid::Uuid;

async fn events(stack: &TestStack, query: &str) -> anyhow::Result<(u16, Value)> {
    let response = stack.get(&format!("/api/v3/events{query}")).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_are_recorded_with_their_outcome_and_only_their_owner_reads_them()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("recorded").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("recorded\n")?)
        .await?;
    stack.wait_active(deployment).await?;

    let mut event_ids = Vec::new();
    for _ in 0..3 {
        let response = stack
            .get(&format!("/api/v1/functions/invoke/{function_id}"))
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        let event_id: Uuid = response.headers()["x-slipway-event-id"].to_str()?.parse()?;
        let request_id = response.headers()["x-slipway-request-id"]
            .to_str()?
            .to_owned();
        assert_eq!(response.text().await?, "recorded\n");
        event_ids.push((event_id, request_id));
    }
    let posted = stack
        .post(&format!(
            "/api/v1/functions/invoke/{function_id}/cgi-bin/echo"
        ))
        .body("twelve bytes")
        .send()
        .await?;
    assert_eq!(posted.status(), 200);
    let posted_id: Uuid = posted.headers()["x-slipway-event-id"].to_str()?.parse()?;

    // The instance vanishes behind Slipway's back: the proxy answers 502, a FAILURE.
    for container in containers_of(function_id)? {
        docker(&["rm", "-f", &container])?;
    }
    let broken = stack
        .get(&format!("/api/v1/functions/invoke/{function_id}"))
        .send()
        .await?;
    assert_eq!(broken.status(), 502);

    let listed = eventually(Duration::from_secs(10), "five settled events", || async {
        let (_, page) = events(&stack, "").await?;
        let settled = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] != "PENDING");
        Ok((page["count"] == 5 && settled).then_some(page))
    })
    .await?;
    let newest = &listed["events"][0];
    assert_eq!(newest["status"], "FAILURE", "{newest}");
    assert_eq!(newest["failure_reason"], "function_unreachable");
    assert_eq!(newest["status_code"], 502);

    let (code, failures) = events(&stack, "?status=FAILURE").await?;
    assert_eq!(code, 200);
    assert_eq!(failures["count"], 1);
    let (_, successes) = events(
        &stack,
        &format!("?status=SUCCESS&function_id={function_id}"),
    )
    .await?;
    assert_eq!(successes["count"], 4);
    let (_, paged) = events(&stack, "?per_page=2&page=2").await?;
    assert_eq!(
        (paged["total_pages"].clone(), paged["has_next"].clone()),
        (Value::from(3), Value::from(true))
    );
    assert_eq!(paged["events"].as_array().unwrap().len(), 2);
    for (query, code) in [
        ("?status=DONE", "invalid_filter"),
        ("?function_id=nope", "invalid_filter"),
        ("?per_page=0", "invalid_pagination"),
    ] {
        let (status, body) = events(&stack, query).await?;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["code"], code, "{query}");
    }

    let (event_id, request_id) = &event_ids[0];
    let one: Value = stack
        .get(&format!("/api/v3/events/{event_id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(one["type"], "FUNCTION_INVOCATION");
    assert_eq!(one["status"], "SUCCESS");
    assert_eq!(one["request_id"], request_id.as_str());
    assert_eq!(one["version"], 1);
    assert_eq!(one["status_code"], 200);
    assert_eq!(one["response_bytes"], "recorded\n".len());
    assert!(one["processing_time_ms"].as_f64().unwrap() > 0.0, "{one}");
    assert!(one["completed_at"].is_string());
    let post: Value = stack
        .get(&format!("/api/v3/events/{posted_id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(post["method"], "POST");
    assert_eq!(post["path"], "/cgi-bin/echo");
    assert_eq!(post["request_bytes"], 12);

    // Someone else sees none of it.
    let other_key = ApiKey::generate();
    {
        let mut conn = stack.conn().await?;
        let other =
            db::users::ensure(&mut conn, &format!("eve-{}", Uuid::new_v4().simple())).await?;
        db::users::insert_api_key(&mut conn, other, &other_key, None).await?;
    }
    let theirs = stack
        .http
        .get(stack.url(&format!("/api/v3/events/{event_id}")))
        .bearer_auth(other_key.expose())
        .send()
        .await?;
    assert_eq!(theirs.status(), 404);
    let body: Value = theirs.json().await?;
    assert_eq!(body["error"]["code"], "event_not_found");
    let listed: Value = stack
        .http
        .get(stack.url("/api/v3/events"))
        .bearer_auth(other_key.expose())
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["count"], 0);
    stack.shutdown().await
}

/// `POST /api/v3/events`: a custom event for one of the caller's own functions, settled at once,
/// listed and filtered beside invocation events; bad input is refused and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_events_are_recorded_for_the_callers_functions_and_listed_with_the_others()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let function_id = stack.init("custom-events").await?;
    let post = |body: Value| {
        let stack = &stack;
        async move {
            let response = stack.post("/api/v3/events").json(&body).send().await?;
            Ok::<_, anyhow::Error>((response.status().as_u16(), response.json::<Value>().await?))
        }
    };

    let (status, created) = post(serde_json::json!({
        "function_id": function_id,
        "type": "ORDER_PLACED",
        "data": {"order": 42, "items": ["a", "b"]},
    }))
    .await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["type"], "ORDER_PLACED");
    assert_eq!(created["status"], "SUCCESS");
    assert_eq!(created["source"], "custom");
    assert_eq!(created["data"]["items"][1], "b");
    assert!(created.get("method").is_none(), "{created}");
    let (status, failed) = post(serde_json::json!({
        "function_id": function_id, "type": "PAYMENT_PROCESSED", "status": "FAILURE",
        "data": "declined",
    }))
    .await?;
    assert_eq!(status, 201, "{failed}");

    let (_, all) = events(&stack, &format!("?function_id={function_id}")).await?;
    assert_eq!(all["count"], 2, "{all}");
    assert_eq!(all["events"][0]["type"], "PAYMENT_PROCESSED");
    let (_, failures) = events(&stack, "?status=FAILURE").await?;
    assert_eq!(failures["count"], 1);
    let one: Value = stack
        .get(&format!(
            "/api/v3/events/{}",
            created["id"].as_str().unwrap()
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(one["data"]["order"], 42);

    for (body, code) in [
        (
            serde_json::json!({"function_id": function_id, "type": "FUNCTION_INVOCATION"}),
            "invalid_event_type",
        ),
        (
            serde_json::json!({"function_id": function_id, "type": "SOMETHING"}),
            "invalid_event_type",
        ),
        (
            serde_json::json!({"function_id": function_id, "type": "OTHER", "status": "PENDING"}),
            "invalid_event_status",
        ),
        (
            serde_json::json!({"function_id": function_id, "type": "OTHER",
                               "data": "x".repeat(70 * 1024)}),
            "event_data_too_large",
        ),
    ] {
        let (status, refused) = post(body).await?;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (400, Some(code))
        );
    }
    // Another tenant's function, or none: 404, and nothing stored.
    let other_key = stack.add_tenant().await?;
    let response = stack
        .request_as(&other_key, reqwest::Method::POST, "/api/v3/events")
        .json(&serde_json::json!({"function_id": function_id, "type": "OTHER"}))
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    let (status, _) =
        post(serde_json::json!({"function_id": Uuid::new_v4(), "type": "OTHER"})).await?;
    assert_eq!(status, 404);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM invocation_events")
        .fetch_one(&stack.pool)
        .await?;
    assert_eq!(stored, 2);
    stack.shutdown().await
}

/// The writer stores an event that settled within its PENDING hold by a plain insert. One
/// stored before it settled (a flush writes young PENDING rows) makes that insert fail; the
/// batch then goes again as upserts, and every row ends in its final state, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_event_thought_new_but_already_stored_is_written_as_an_update()
-> anyhow::Result<()> {
    use std::sync::Arc;

    use chrono::Utc;
    use slipway_api::events::EventRecorder;
    use slipway_shared::db::events::EventRow;
    use slipway_tests::TestDb;

    let db = TestDb::create().await?;
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let recorder = EventRecorder::start(pool.clone(), true);
    let (function_id, owner_id) = (Uuid::new_v4(), Uuid::new_v4());
    let started = |id: Uuid| EventRow {
        id,
        function_id,
        owner_id,
        deployment_id: None,
        version: Some(1),
        status: "PENDING",
        request_id: Uuid::new_v4(),
        method: "POST".into(),
        path: Arc::from("/orders"),
        status_code: None,
        failure_reason: None,
        request_bytes: 12,
        response_bytes: None,
        processing_time_ms: None,
        created_at: Utc::now(),
        completed_at: None,
    };
    let settled = |mut row: EventRow, status_code: i32| {
        row.status = if status_code < 500 {
            "SUCCESS"
        } else {
            "FAILURE"
        };
        row.status_code = Some(status_code);
        row.response_bytes = Some(3);
        row.processing_time_ms = Some(1.5);
        row.completed_at = Some(row.created_at + chrono::TimeDelta::milliseconds(2));
        row
    };

    let (stored_early, new) = (Uuid::now_v7(), Uuid::now_v7());
    let early = started(stored_early);
    recorder.record(early.clone());
    recorder.flush().await;
    let status_of = |id: Uuid| {
        sqlx::query_scalar::<_, String>("SELECT status FROM invocation_events WHERE id = $1")
            .bind(id)
            .fetch_optional(&pool)
    };
    assert_eq!(
        status_of(stored_early).await?.as_deref(),
        Some("PENDING"),
        "a flush stores a PENDING state however young"
    );

    recorder.record(settled(early, 502));
    recorder.record(settled(started(new), 200));
    recorder.flush().await;
    let rows: Vec<(Uuid, String, Option<i32>, Option<i64>)> = sqlx::query_as(
        "SELECT id, status, status_code, response_bytes FROM invocation_events ORDER BY id",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(
        rows,
        vec![
            (stored_early, "FAILURE".to_owned(), Some(502), Some(3)),
            (new, "SUCCESS".to_owned(), Some(200), Some(3)),
        ]
    );
    pool.close().await;
    Ok(())
}
