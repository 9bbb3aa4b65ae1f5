//! The invocation proxy as an HTTP intermediary (RFC 9110 §7.6), checked against a function that
//! answers with the request line and headers exactly as they reached it
//! (`tests/functions/raw-echo`): paths and queries go on byte for byte, hop-by-hop headers and
//! those `Connection` names stay behind both ways, the caller is appended to `X-Forwarded-For`
//! and `Forwarded`, and cookies do not cross the origin every tenant shares.

use std::collections::BTreeMap;

use anyhow::Context;
use slipway_tests::{TestStack, pack_dir, repo_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

async fn raw_echo(stack: &TestStack) -> anyhow::Result<Uuid> {
    let function_id = stack.init("raw-echo").await?;
    let archive = pack_dir(
        &repo_root().join("tests/functions/raw-echo"),
        &BTreeMap::new(),
    )?;
    let (deployment, _) = stack.deploy(function_id, archive).await?;
    stack.wait_active(deployment).await?;
    Ok(function_id)
}

/// Sends `head` (request line and headers, without the blank line) as written, on a connection
/// of its own, and reads the whole answer: (head, body).
async fn exchange(stack: &TestStack, head: &str) -> anyhow::Result<(String, String)> {
    let address = stack.base_url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await?;
    socket
        .write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await?;
    let answer = String::from_utf8(answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("an HTTP answer")?;
    Ok((head.to_owned(), body.to_owned()))
}

/// The request line the function received for `target` (a request-target after the
/// function's id).
async fn received_line(stack: &TestStack, id: Uuid, target: &str) -> anyhow::Result<String> {
    let host = stack.base_url.trim_start_matches("http://");
    let (head, body) = exchange(
        stack,
        &format!(
            "GET /api/v1/functions/invoke/{id}{target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}",
            stack.api_key
        ),
    )
    .await?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}\n\n{body}");
    Ok(body.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn paths_and_queries_reach_the_function_byte_for_byte() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let id = raw_echo(&stack).await?;
    for (target, expected) in [
        ("", "GET / HTTP/1.1"),
        ("/", "GET / HTTP/1.1"),
        ("/a%3Fb", "GET /a%3Fb HTTP/1.1"),
        (
            "/a%2Fb/%20c?x=%20y&z=1%26&&",
            "GET /a%2Fb/%20c?x=%20y&z=1%26&& HTTP/1.1",
        ),
        ("?only=query", "GET /?only=query HTTP/1.1"),
        ("/deep/path/?q", "GET /deep/path/?q HTTP/1.1"),
    ] {
        assert_eq!(
            received_line(&stack, id, target).await?,
            expected,
            "{target:?}"
        );
    }
    stack.shutdown().await
}

#[tokio::test]
async fn hop_by_hop_headers_stay_behind_and_the_caller_is_appended_to_the_forwarding_chain()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let id = raw_echo(&stack).await?;
    let host = stack.base_url.trim_start_matches("http://");
    let (head, body) = exchange(
        &stack,
        &format!(
            "GET /api/v1/functions/invoke/{id}/h HTTP/1.1\r\nHost: {host}\r\n\
             Authorization: Bearer {}\r\nConnection: X-Secret\r\nX-Secret: hop-only\r\n\
             Keep-Alive: timeout=5\r\nX-Kept: end-to-end\r\nX-Forwarded-For: 203.0.113.7\r\n\
             Forwarded: for=203.0.113.7\r\nCookie: console=operator-session",
            stack.api_key
        ),
    )
    .await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let received: Vec<&str> = body.lines().collect();
    let has = |name: &str| {
        received
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
    };
    let value = |name: &str| {
        received
            .iter()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
    };
    assert_eq!(value("x-kept").as_deref(), Some("end-to-end"), "{body}");
    for dropped in ["x-secret", "keep-alive", "cookie", "authorization"] {
        assert!(!has(dropped), "{dropped} reached the function:\n{body}");
    }
    assert_eq!(
        value("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1"),
        "{body}"
    );
    assert_eq!(
        value("forwarded"),
        Some(format!(
            "for=203.0.113.7, for=127.0.0.1;proto=http;host=\"{host}\""
        )),
        "{body}"
    );

    // The function's own hop-by-hop options and its cookie stay behind on the way back.
    let answer_headers: Vec<String> = head.lines().map(str::to_ascii_lowercase).collect();
    for dropped in ["x-hop:", "set-cookie:"] {
        assert!(
            !answer_headers.iter().any(|l| l.starts_with(dropped)),
            "{dropped} reached the caller:\n{head}"
        );
    }
    assert!(
        answer_headers
            .iter()
            .any(|l| l.starts_with("x-slipway-request-id:")),
        "{head}"
    );
    stack.shutdown().await
}

fn with_invoke_domain(config: &mut slipway_shared::config::ApiConfig) {
    config.invoke_domain = Some("fn.slipway.test".into());
}

/// With `SLIPWAY_INVOKE_DOMAIN`, `<id>.<domain>` is the function's own origin: every path is the
/// function's (the API's routes are not there), and cookies pass both ways, since no other
/// tenant shares the origin.
#[tokio::test]
async fn a_function_on_its_own_origin_gets_every_path_and_its_cookies() -> anyhow::Result<()> {
    let stack = TestStack::start_with(slipway_tests::StackOptions {
        api_overrides: Some(with_invoke_domain),
        ..Default::default()
    })
    .await?;
    let id = raw_echo(&stack).await?;
    let port = stack
        .base_url
        .rsplit_once(':')
        .context("a port")?
        .1
        .to_owned();
    let on_origin = |label: String, target: &str, key: &str, extra: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: {label}.fn.slipway.test:{port}\r\n\
             Authorization: Bearer {key}{extra}"
        )
    };
    let own = id.simple().to_string();

    let (head, body) = exchange(
        &stack,
        &on_origin(
            own.clone(),
            "/a%3Fb?x=1",
            &stack.api_key,
            "\r\nCookie: session=tenant",
        ),
    )
    .await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        body.lines().next(),
        Some("GET /a%3Fb?x=1 HTTP/1.1"),
        "{body}"
    );
    assert!(
        body.to_ascii_lowercase().contains("cookie: session=tenant"),
        "{body}"
    );
    assert!(
        !body.to_ascii_lowercase().contains("authorization"),
        "{body}"
    );
    assert!(
        head.to_ascii_lowercase().contains("set-cookie: tenant=1"),
        "the function's cookie reaches the caller on its own origin:\n{head}"
    );

    for (target, first_line) in [
        ("/", "GET / HTTP/1.1"),
        ("/api/keys", "GET /api/keys HTTP/1.1"),
    ] {
        let (head, body) =
            exchange(&stack, &on_origin(own.clone(), target, &stack.api_key, "")).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{target}: {head}");
        assert_eq!(
            body.lines().next(),
            Some(first_line),
            "an API path is the function's: {body}"
        );
    }

    // Not a function, not the caller's function, not a caller: the same answers as the route's.
    let (head, body) = exchange(&stack, &on_origin("nope".into(), "/", &stack.api_key, "")).await?;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(body.contains("function_not_found"), "{body}");
    let other = stack.add_tenant().await?;
    let (head, _) = exchange(&stack, &on_origin(own.clone(), "/", &other, "")).await?;
    assert!(head.starts_with("HTTP/1.1 404"), "another tenant: {head}");
    let (head, _) = exchange(&stack, &on_origin(own, "/", "sk_nope_nope", "")).await?;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    stack.shutdown().await
}

/// The sum of a Prometheus counter's samples with this label.
fn counter(scrape: &str, name: &str, label: &str) -> f64 {
    scrape
        .lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Invocations find the key and the route in the api's cache, with no database round trip; a
/// change made by another process (here straight in SQL, as a worker or another api would) is
/// announced by Postgres and seen within moments; and when the cache's listener loses its
/// connection, calls go to the database and stay right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_and_routes_follow_changes_made_elsewhere() -> anyhow::Result<()> {
    use std::time::Duration;

    use slipway_tests::{eventually, hello_archive};

    let stack = TestStack::start().await?;
    let operator = stack.add_operator().await?;
    let scrape = || async {
        stack
            .http
            .get(stack.url("/metrics"))
            .bearer_auth(operator.expose())
            .send()
            .await?
            .text()
            .await
            .context("scraping")
    };
    let function_id = stack.init("cached").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("cached\n")?)
        .await?;
    stack.wait_active(deployment).await?;

    let hits = "slipway_invocation_route_lookups_total";
    let before = counter(&scrape().await?, hits, "source=\"cache\"");
    for _ in 0..100 {
        let (status, body) = stack.invoke(function_id, "/").await?;
        assert_eq!((status, body.as_str()), (200, "cached\n"));
    }
    let cached = counter(&scrape().await?, hits, "source=\"cache\"") - before;
    assert!(
        cached >= 99.0,
        "only {cached} of 100 calls found their route cached"
    );

    let set_enabled = |enabled: bool| {
        sqlx::query("UPDATE functions SET enabled = $2 WHERE id = $1")
            .bind(function_id)
            .bind(enabled)
            .execute(&stack.pool)
    };
    let answers = |expected: u16| {
        let stack = &stack;
        move || async move {
            let (status, _) = stack.invoke(function_id, "/").await?;
            Ok((status == expected).then_some(()))
        }
    };
    // Disabled and enabled again behind this api's back: each change is seen.
    let disable_then_enable = || async {
        set_enabled(false).await?;
        eventually(
            Duration::from_secs(5),
            "the disabled function refused",
            answers(503),
        )
        .await?;
        set_enabled(true).await?;
        eventually(
            Duration::from_secs(5),
            "the function served again",
            answers(200),
        )
        .await
    };
    disable_then_enable().await?;

    // The listener's connection cut: the cache is dropped, calls read the database, and a change
    // made meanwhile is seen at once.
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(&stack.pool)
    .await?;
    assert!(cut >= 1, "no listener connection was found to cut");
    disable_then_enable().await?;

    // A key revoked by another process stops working.
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1")
        .bind(&slipway_shared::domain::ApiKeyHash::of(&stack.api_key).0[..])
        .execute(&stack.pool)
        .await?;
    eventually(
        Duration::from_secs(5),
        "the revoked key refused",
        answers(401),
    )
    .await?;
    stack.shutdown().await
}

/// The worker stops a replaced instance a drain after the switch commits; an api that has not
/// heard the switch announced by then still holds the old route. Its refused connection sends
/// the call to the database's route, not three times to the stopped instance. The late
/// announcement is made here by moving the route with its trigger disabled, in one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_reads_the_route_again_when_a_switch_was_not_yet_announced()
-> anyhow::Result<()> {
    use slipway_tests::{containers_of, docker, hello_archive};

    let stack = TestStack::start().await?;
    let moved = stack.init("moved").await?;
    let (deployment, _) = stack
        .deploy(moved, hello_archive("old instance\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    let other = stack.init("elsewhere").await?;
    let (deployment, _) = stack
        .deploy(other, hello_archive("new instance\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    assert_eq!(
        stack.invoke(moved, "/").await?,
        (200, "old instance\n".into())
    );

    let elsewhere: String = sqlx::query_scalar(
        "SELECT runtime_endpoint FROM deployments WHERE function_id = $1 AND is_active",
    )
    .bind(other)
    .fetch_one(&stack.pool)
    .await?;
    let mut unannounced = stack.pool.begin().await?;
    sqlx::query("ALTER TABLE deployments DISABLE TRIGGER deployments_route_changed")
        .execute(&mut *unannounced)
        .await?;
    sqlx::query(
        "UPDATE deployments SET runtime_endpoint = $2 WHERE function_id = $1 AND is_active",
    )
    .bind(moved)
    .bind(&elsewhere)
    .execute(&mut *unannounced)
    .await?;
    sqlx::query("ALTER TABLE deployments ENABLE TRIGGER deployments_route_changed")
        .execute(&mut *unannounced)
        .await?;
    unannounced.commit().await?;
    assert_eq!(
        stack.invoke(moved, "/").await?,
        (200, "old instance\n".into()),
        "the api still serves its cached route: the move was not announced"
    );

    let old_instance = containers_of(moved)?;
    assert_eq!(old_instance.len(), 1, "{old_instance:?}");
    docker(&["rm", "--force", &old_instance[0]])?;
    assert_eq!(
        stack.invoke(moved, "/").await?,
        (200, "new instance\n".into()),
        "the call went to the route the database holds"
    );
    stack.shutdown().await
}
