//! API keys over the API: a new key works at once, listings never show a key, and a revoked key
//! stops working on the very next request. Nobody touches another user's keys.

use serde_json::{Value, json};
use slipway_shared::{db, domain::ApiKey};
use slipway_tests::{StackOptions, StoreKind, TestStack};
use uuid::Uuid;

async fn status_with(stack: &TestStack, key: &str) -> anyhow::Result<u16> {
    Ok(stack
        .http
        .get(stack.url("/api/functions"))
        .bearer_auth(key)
        .send()
        .await?
        .status()
        .as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_key_works_is_listed_by_prefix_only_and_stops_at_once_when_revoked()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;

    let response = stack
        .post("/api/keys")
        .json(&json!({"name": "ci"}))
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await?;
    let key = created["key"].as_str().unwrap().to_owned();
    let prefix = created["prefix"].as_str().unwrap();
    let id: Uuid = created["id"].as_str().unwrap().parse()?;
    assert!(key.starts_with(prefix) && prefix.starts_with("sk_") && prefix.len() == 11);
    assert_eq!(created["name"], "ci");
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(created["revoked_at"], Value::Null);
    assert_eq!(status_with(&stack, &key).await?, 200, "the new key works");

    // No body at all: an unnamed key.
    let unnamed: Value = stack.post("/api/keys").send().await?.json().await?;
    assert_eq!(unnamed["name"], Value::Null);
    assert!(unnamed["key"].is_string());

    let listed: Value = stack.get("/api/keys").send().await?.json().await?;
    assert_eq!(
        listed["count"], 3,
        "the stack's own key and two new ones: {listed}"
    );
    for entry in listed["keys"].as_array().unwrap() {
        let mut fields: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["created_at", "id", "name", "prefix", "revoked_at"],
            "{entry}"
        );
    }
    let text = listed.to_string();
    assert!(!text.contains(&key), "a listing never shows a key");
    assert!(!text.contains(&stack.api_key));
    assert_eq!(listed["keys"][1]["id"], id.to_string());
    assert_eq!(listed["keys"][1]["prefix"], prefix);

    let response = stack.delete(&format!("/api/keys/{id}")).send().await?;
    assert_eq!(response.status(), 200);
    let revoked: Value = response.json().await?;
    assert_eq!(revoked["id"], id.to_string());
    let revoked_at = revoked["revoked_at"].as_str().unwrap().to_owned();
    assert_eq!(
        status_with(&stack, &key).await?,
        401,
        "revoked: refused at once"
    );
    let again: Value = stack
        .delete(&format!("/api/keys/{id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        again["revoked_at"], revoked_at,
        "revoking twice keeps the first time"
    );
    let listed: Value = stack.get("/api/keys").send().await?.json().await?;
    assert_eq!(listed["keys"][1]["revoked_at"], revoked_at);
    assert_eq!(
        status_with(&stack, &stack.api_key).await?,
        200,
        "others unaffected"
    );

    for (case, path) in [
        ("unknown", format!("/api/keys/{}", Uuid::new_v4())),
        ("malformed", "/api/keys/not-a-uuid".to_owned()),
    ] {
        let response = stack.delete(&path).send().await?;
        assert_eq!(response.status(), 404, "{case}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["code"], "key_not_found", "{case}");
    }
    for (case, body, code) in [
        ("empty name", json!({"name": ""}), "invalid_key_name"),
        ("unknown field", json!({"label": "x"}), "invalid_body"),
    ] {
        let response = stack.post("/api/keys").json(&body).send().await?;
        assert_eq!(response.status(), 400, "{case}");
        let answer: Value = response.json().await?;
        assert_eq!(answer["error"]["code"], code, "{case}: {answer}");
    }

    // A user may revoke the key they are using; the next request is a stranger's.
    let unnamed_key = unnamed["key"].as_str().unwrap();
    stack.api.remember_signer(
        unnamed_key,
        unnamed["id"].as_str().unwrap().parse()?,
        unnamed["signing_secret"].as_str().unwrap(),
    );
    let response = stack
        .request_as(
            unnamed_key,
            reqwest::Method::DELETE,
            &format!("/api/keys/{}", unnamed["id"].as_str().unwrap()),
        )
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        status_with(&stack, unnamed["key"].as_str().unwrap()).await?,
        401
    );
    stack.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_lists_or_revokes_another_users_keys() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        workers: 0,
        ..Default::default()
    })
    .await?;
    let mallory_key = ApiKey::generate();
    {
        let mut conn = stack.conn().await?;
        let mallory = db::users::ensure(&mut conn, "mallory").await?;
        db::users::insert_api_key(&mut conn, mallory, &mallory_key, None).await?;
    }
    let mine: Value = stack.get("/api/keys").send().await?.json().await?;
    let my_key_id = mine["keys"][0]["id"].as_str().unwrap().to_owned();

    // Signed (mallory's key predates signing secrets: v1), so the answer is about the key.
    let response = stack
        .request_as(
            mallory_key.expose(),
            reqwest::Method::DELETE,
            &format!("/api/keys/{my_key_id}"),
        )
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "key_not_found");
    assert_eq!(
        status_with(&stack, &stack.api_key).await?,
        200,
        "still works"
    );

    let theirs: Value = stack
        .http
        .get(stack.url("/api/keys"))
        .bearer_auth(mallory_key.expose())
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(theirs["count"], 1);
    assert_ne!(theirs["keys"][0]["id"], my_key_id);

    for (case, request) in [
        ("list", stack.http.get(stack.url("/api/keys"))),
        ("create", stack.http.post(stack.url("/api/keys"))),
    ] {
        let response = request.send().await?;
        assert_eq!(response.status(), 401, "{case} without a key");
    }
    stack.shutdown().await
}
