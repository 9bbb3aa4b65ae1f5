//! Per-key limits on uploads: an owner whose deployments in flight reached
//! `SLIPWAY_MAX_QUEUED_BUILDS` gets 429 with `Retry-After` and nothing is stored; a key with
//! `SLIPWAY_MAX_CONCURRENT_UPLOADS` uploads still being read gets 429 before its body is read.
//! Other keys are not affected. An upload that names no live key is refused before its body
//! is read: nothing of it reaches the disk the API spools uploads to.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use slipway_shared::{config::ApiConfig, db};
use slipway_tests::{StackOptions, StoreKind, TestStack, hello_archive};

/// A stack without workers (deployments stay in flight) and with the api's limits changed.
async fn limited(limits: fn(&mut ApiConfig)) -> anyhow::Result<TestStack> {
    TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        api_overrides: Some(limits),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_past_its_queued_builds_gets_429_and_nothing_is_stored() -> anyhow::Result<()> {
    let stack = limited(|config| config.max_queued_builds = 2).await?;
    let function_id = stack.init("busy").await?;
    for n in 0..2 {
        stack
            .deploy(function_id, hello_archive(&format!("v{n}\n"))?)
            .await?;
    }
    let (status, body) = stack
        .deploy_raw(&function_id.to_string(), hello_archive("v3\n")?, None)
        .await?;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_builds");
    assert_eq!(stack.count("deployments").await?, 2, "nothing stored");
    let archives = stack
        .store
        .list(&format!("functions/{function_id}/"))
        .await?;
    assert_eq!(archives.len(), 2, "{archives:?}");
    stack.shutdown().await
}

/// A multipart upload whose body never ends: only the test decides when it stops.
fn endless_upload() -> reqwest::Body {
    let first_part =
        Bytes::from_static(b"--b\r\nContent-Disposition: form-data; name=\"archive\"\r\n\r\n");
    let forever = futures::stream::pending::<Bytes>();
    reqwest::Body::wrap_stream(
        futures::stream::once(async move { first_part })
            .chain(forever)
            .map(Ok::<_, std::io::Error>),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_naming_no_live_key_is_refused_before_its_body_is_read() -> anyhow::Result<()> {
    let stack = limited(|_| {}).await?;
    let url = stack.url("/api/functions/deploy");
    let within = |request: reqwest::RequestBuilder| async move {
        // The body never ends, so only an answer given before reading it arrives at all.
        tokio::time::timeout(
            Duration::from_secs(20),
            request
                .header("content-type", "multipart/form-data; boundary=b")
                .body(endless_upload())
                .send(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the API read on instead of answering"))?
        .map_err(anyhow::Error::from)
    };
    let revoked = stack.add_tenant().await?;
    {
        let mut conn = stack.pool.acquire().await?;
        let hash = slipway_shared::domain::ApiKeyHash::of(&revoked);
        let owner = db::users::authenticate(&mut conn, &hash)
            .await?
            .expect("a live key");
        db::users::revoke_api_key(&mut conn, owner.user_id, owner.key_id).await?;
    }
    let cases = [
        ("no key", stack.http.post(&url)),
        (
            "an unknown bearer key",
            stack.http.post(&url).bearer_auth("sk_nothere_0123456789"),
        ),
        (
            "a revoked bearer key",
            stack.http.post(&url).bearer_auth(&revoked),
        ),
        (
            "an unknown key id",
            stack
                .http
                .post(&url)
                .header("x-slipway-key-id", uuid::Uuid::new_v4().to_string()),
        ),
    ];
    for (case, request) in cases {
        let answer = within(request).await?;
        assert_eq!(answer.status(), 401, "{case}");
        let body: serde_json::Value = answer.json().await?;
        assert_eq!(body["error"]["code"], "unauthorized", "{case}");
    }
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_an_upload_in_progress_past_its_limit_gets_429_before_its_body_is_read()
-> anyhow::Result<()> {
    let stack = limited(|config| config.max_concurrent_uploads = 1).await?;
    let url = stack.url("/api/functions/deploy");
    // An upload whose body trickles: the first part now, the rest when the test says.
    let (more, rest) = tokio::sync::mpsc::channel::<Bytes>(1);
    let first_part =
        Bytes::from_static(b"--b\r\nContent-Disposition: form-data; name=\"archive\"\r\n\r\n");
    let rest = futures::stream::unfold(rest, |mut rest| async move {
        rest.recv().await.map(|part| (part, rest))
    });
    let body = futures::stream::once(async move { first_part })
        .chain(rest)
        .map(Ok::<_, std::io::Error>);
    let slow = stack
        .http
        .post(&url)
        .bearer_auth(&stack.api_key)
        .header("content-type", "multipart/form-data; boundary=b")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let refused = stack
        .http
        .post(&url)
        .bearer_auth(&stack.api_key)
        .header("content-type", "multipart/form-data; boundary=b")
        .body("--b--\r\n")
        .send()
        .await?;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "too_many_uploads");

    // Another key is not held up by this one's uploads.
    let other = stack.add_tenant().await?;
    let theirs = stack
        .http
        .post(&url)
        .bearer_auth(&other)
        .header("content-type", "multipart/form-data; boundary=b")
        .body("--b--\r\n")
        .send()
        .await?;
    assert_ne!(theirs.status(), 429);

    // The slow upload ends; its slot comes back.
    more.send(Bytes::from_static(b"not an archive\r\n--b--\r\n"))
        .await?;
    drop(more);
    let slow = slow.await??;
    assert_eq!(
        slow.status(),
        400,
        "a broken form is refused, not throttled"
    );
    let again = stack
        .http
        .post(&url)
        .bearer_auth(&stack.api_key)
        .header("content-type", "multipart/form-data; boundary=b")
        .body("--b--\r\n")
        .send()
        .await?;
    assert_ne!(again.status(), 429);
    stack.shutdown().await
}
