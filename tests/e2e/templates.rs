//! Functions from handler code (seed 003): `POST /api/v1/functions` with a template and a
//! handler, built (`POST /api/v1/functions/build/{id}`, the version waits `built`) and deployed
//! (`POST /api/v1/functions/deploy/{id}`) as two steps, then invoked with a JSON body. The
//! runtime images are the real ones `scripts/lib/runtimes.sh` makes from Debian's packages.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_tests::{SignedRequest, TestStack, eventually, hello_archive};
use uuid::Uuid;

const NODE_HANDLER: &str = r#"export default function(data) {
  if (data && data.fail) throw new Error("boom: " + data.fail);
  return { echo: data, runtime: "node" };
}
"#;

const PYTHON_HANDLER: &str = r#"def handler(data):
    if isinstance(data, dict) and data.get("fail"):
        raise ValueError("boom: " + data["fail"])
    return {"echo": data, "runtime": "python"}
"#;

async fn answer(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    answer(request.send().await?).await
}

async fn send_signed(request: SignedRequest) -> anyhow::Result<(u16, Value)> {
    answer(request.send().await?).await
}

async fn create(stack: &TestStack, body: Value) -> anyhow::Result<(u16, Value)> {
    let response = stack.post("/api/v1/functions").json(&body).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// Builds, waits for `built`, deploys, waits for `active`; returns the deployment.
async fn build_and_deploy(stack: &TestStack, function_id: &str) -> anyhow::Result<Uuid> {
    let (status, built) =
        send_signed(stack.post(&format!("/api/v1/functions/build/{function_id}"))).await?;
    assert_eq!(status, 202, "{built}");
    let deployment: Uuid = built["deployment_id"].as_str().unwrap().parse()?;
    let settled = stack
        .wait_settled_as(&stack.api_key, deployment, Duration::from_secs(180))
        .await?;
    assert_eq!(settled["status"], "built", "{settled}");
    let (status, released) =
        send_signed(stack.post(&format!("/api/v1/functions/deploy/{function_id}"))).await?;
    assert_eq!(status, 202, "{released}");
    assert_eq!(released["deployment_id"], deployment.to_string());
    stack.wait_active(deployment).await?;
    Ok(deployment)
}

async fn invoke_json(
    stack: &TestStack,
    function_id: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    send(
        stack
            .http
            .post(stack.url(&format!("/api/v1/functions/invoke/{function_id}")))
            .bearer_auth(&stack.api_key)
            .json(&body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_python_handlers_answer_json_and_a_throwing_handler_is_a_failure()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    for (template, handler) in [("node", NODE_HANDLER), ("python", PYTHON_HANDLER)] {
        let label = format!("from-{template}");
        let (status, function) = create(
            &stack,
            json!({"label": label, "description": "echoes", "template": template,
                   "runtime": template, "handler": handler}),
        )
        .await?;
        assert_eq!(status, 201, "{function}");
        assert_eq!(function["label"], label.as_str());
        assert_eq!(function["name"], label.as_str());
        assert_eq!(function["template"], template);
        assert_eq!(function["runtime"], template);
        assert_eq!(function["handler"], handler);
        assert_eq!(function["description"], "echoes");
        let id = function["id"].as_str().unwrap().to_owned();
        let (_, read) = send(stack.get(&format!("/api/v1/functions/{id}"))).await?;
        assert_eq!(read["handler"], handler);

        build_and_deploy(&stack, &id).await?;
        let (status, answer) =
            invoke_json(&stack, &id, json!({"data": {"message": "Hello, World!"}})).await?;
        assert_eq!(status, 200, "{template}: {answer}");
        assert_eq!(
            answer,
            json!({"echo": {"message": "Hello, World!"}, "runtime": template})
        );
        let (status, answer) =
            send(stack.get(&format!("/api/v1/functions/invoke/{id}?city=Oslo"))).await?;
        assert_eq!((status, &answer["echo"]), (200, &json!({"city": "Oslo"})));

        let (status, answer) = invoke_json(&stack, &id, json!({"data": {"fail": "bad"}})).await?;
        assert_eq!(status, 500, "{template}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("boom: bad")),
            "{template}: {answer}"
        );
        let failures = eventually(Duration::from_secs(10), "the FAILURE event", || async {
            let (_, page) =
                send(stack.get(&format!("/api/v3/events?function_id={id}&status=FAILURE"))).await?;
            Ok((page["count"] == 1).then_some(page))
        })
        .await?;
        assert_eq!(failures["events"][0]["status_code"], 500);
    }
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_version_waits_while_the_active_one_serves_and_deploys_on_request()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let (status, function) = create(
        &stack,
        json!({"label": "two-steps", "template": "python", "runtime": "python",
               "handler": "def handler(data):\n    return 'first'\n"}),
    )
    .await?;
    assert_eq!(status, 201, "{function}");
    let id = function["id"].as_str().unwrap().to_owned();
    let path = |route: &str| format!("/api/v1/functions/{route}/{id}");

    // Nothing built yet: nothing to deploy.
    let (status, refused) = send_signed(stack.post(&path("deploy"))).await?;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("nothing_built"))
    );
    // Another tenant's key neither builds nor deploys it, and nothing is made.
    let stranger = stack.add_tenant().await?;
    for route in ["build", "deploy"] {
        let response = stack
            .request_as(&stranger, reqwest::Method::POST, &path(route))
            .send()
            .await?;
        assert_eq!(response.status(), 404, "{route}");
    }
    assert_eq!(stack.count("deployments").await?, 0);

    build_and_deploy(&stack, &id).await?;
    assert_eq!(
        invoke_json(&stack, &id, json!({})).await?,
        (200, json!("first"))
    );

    // A new handler, built: it waits, and version 1 goes on serving.
    let (status, changed) = send_signed(
        stack
            .request(reqwest::Method::PUT, &format!("/api/v1/functions/{id}"))
            .json(
                &json!({"handler": "def handler(data):\n    return 'second'\n",
                          "description": "changed"}),
            ),
    )
    .await?;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["description"], "changed");
    let (status, built) = send_signed(stack.post(&path("build"))).await?;
    assert_eq!(status, 202, "{built}");
    let second: Uuid = built["deployment_id"].as_str().unwrap().parse()?;
    let settled = stack
        .wait_settled_as(&stack.api_key, second, Duration::from_secs(180))
        .await?;
    assert_eq!(settled["status"], "built", "{settled}");
    assert_eq!(
        invoke_json(&stack, &id, json!({})).await?,
        (200, json!("first"))
    );
    // Tried before it serves: an alias reaches the built version, version 1 serving on.
    let (status, alias) = send_signed(
        stack
            .post(&format!("/api/functions/{id}/aliases"))
            .json(&json!({"name": "next", "version": 2})),
    )
    .await?;
    assert_eq!(status, 201, "{alias}");
    assert_eq!(
        invoke_json(&stack, &format!("{id}@next"), json!({})).await?,
        (200, json!("second"))
    );
    let (_, read) = send(stack.get(&format!("/api/v1/functions/{id}"))).await?;
    assert_eq!(read["active_version"], 1, "{read}");
    assert_eq!(read["state"], "Active", "{read}");
    assert_eq!(read["status"], "active", "{read}");

    // A built version is deployed, not rolled back to.
    let (status, refused) = send_signed(
        stack
            .post(&format!("/api/functions/{id}/rollback"))
            .json(&json!({"version": 2})),
    )
    .await?;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("version_never_deployed"))
    );
    let (status, released) =
        send_signed(stack.post(&path("deploy")).json(&json!({"version": 2}))).await?;
    assert_eq!(status, 202, "{released}");
    stack.wait_active(second).await?;
    assert_eq!(
        invoke_json(&stack, &id, json!({})).await?,
        (200, json!("second"))
    );
    let (status, refused) =
        send_signed(stack.post(&path("deploy")).json(&json!({"version": 1}))).await?;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("version_not_built"))
    );
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_template_requests_are_refused_and_store_nothing() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    for (body, code) in [
        (
            json!({"label": "ts", "template": "typescript", "runtime": "node",
                   "handler": "export default (d: unknown) => d;"}),
            "unsupported_template",
        ),
        (
            json!({"label": "mismatch", "template": "python", "runtime": "node",
                   "handler": "def handler(d):\n    return d\n"}),
            "invalid_runtime",
        ),
        (
            json!({"label": "empty", "template": "node", "runtime": "node", "handler": " "}),
            "invalid_handler",
        ),
        (
            json!({"label": "Not A Name", "template": "node", "runtime": "node",
                   "handler": "export default (d) => d;"}),
            "invalid_name",
        ),
    ] {
        let (status, refused) = create(&stack, body).await?;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (400, Some(code))
        );
    }
    let functions: i64 = sqlx::query_scalar("SELECT count(*) FROM functions")
        .fetch_one(&stack.pool)
        .await?;
    assert_eq!(functions, 0);

    let body = json!({"label": "once", "template": "node", "runtime": "node",
                      "handler": "export default (d) => d;"});
    assert_eq!(create(&stack, body.clone()).await?.0, 201);
    let (status, refused) = create(&stack, body).await?;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("function_exists"))
    );

    // A function that takes archives has no handler to build.
    let archive_function = stack.init("takes-archives").await?;
    let (deployment, _) = stack
        .deploy(archive_function, hello_archive("archive\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    let (status, refused) =
        send_signed(stack.post(&format!("/api/v1/functions/build/{archive_function}"))).await?;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("not_a_template_function"))
    );
    stack.shutdown().await
}
