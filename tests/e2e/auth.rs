//! Authentication and ownership: no key, a wrong key, or someone else's function all look the
//! same from outside (401 for the first two, 404 for the last).

use serde_json::Value;
use slipway_shared::{db, domain::ApiKey};
use slipway_tests::{StackOptions, StoreKind, TestStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_never_sees_another_users_functions() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let mine = stack.init("mine").await?;

    let other_key = ApiKey::generate();
    {
        let mut conn = stack.conn().await?;
        let other = db::users::ensure(&mut conn, "mallory").await?;
        db::users::insert_api_key(&mut conn, other, &other_key, None).await?;
    }
    let as_other = |path: String| {
        stack
            .http
            .get(stack.url(&path))
            .bearer_auth(other_key.expose())
    };

    for path in [
        format!("/api/functions/{mine}"),
        format!("/api/functions/{mine}/deployments"),
        format!("/api/v1/functions/invoke/{mine}"),
    ] {
        let response = as_other(path.clone()).send().await?;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["code"], "function_not_found", "{path}");
    }
    let listed: Value = as_other("/api/functions".into())
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["count"], 0);
    let listed: Value = stack.get("/api/functions").send().await?.json().await?;
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["functions"][0]["name"], "mine");

    // Init of the same name by the owner returns the existing function.
    let again = stack
        .post("/api/functions/init")
        .json(&serde_json::json!({"name": "mine"}))
        .send()
        .await?;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await?;
    assert_eq!(again["already_exists"], true);
    assert_eq!(again["message"], "Function already exists");
    assert_eq!(again["id"], mine.to_string());
    assert_eq!(again["deployment_version"], 0);

    // The same name is free for another user.
    let theirs = stack
        .http
        .post(stack.url("/api/functions/init"))
        .bearer_auth(other_key.expose())
        .json(&serde_json::json!({"name": "mine"}))
        .send()
        .await?;
    assert_eq!(theirs.status(), 201);

    for (case, request) in [
        ("no key", stack.http.get(stack.url("/api/functions"))),
        (
            "unknown key",
            stack
                .http
                .get(stack.url("/api/functions"))
                .bearer_auth("sk_nope_nope"),
        ),
        (
            "not bearer",
            stack
                .http
                .get(stack.url("/api/functions"))
                .header("authorization", "Basic Zm9vOmJhcg=="),
        ),
    ] {
        let response = request.send().await?;
        assert_eq!(response.status(), 401, "{case}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["code"], "unauthorized", "{case}");
    }
    stack.shutdown().await
}
