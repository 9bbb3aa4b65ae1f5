//! A function's environment at rest: sealed in the database (names and values), secret entries
//! never shown again, yet every value reaches the function; a purge wipes them all.

use std::time::Duration;

use serde_json::{Value, json};
use slipway_shared::jobs::{Job, PurgeJob};
use slipway_tests::{StackOptions, StoreKind, TestStack, eventually, hello_archive};
use uuid::Uuid;

async fn deploy_with_env(
    stack: &TestStack,
    function_id: Uuid,
    env: &Value,
    secret_env: &Value,
) -> anyhow::Result<(u16, Value)> {
    let form = slipway_tests::deploy_form(&function_id.to_string(), hello_archive("sealed\n")?)?
        .text("env", env.to_string())
        .text("secret_env", secret_env.to_string());
    let response = stack
        .post("/api/functions/deploy")
        .multipart(form)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// Every stored env of the function, as Postgres holds it.
async fn stored_env(stack: &TestStack, function_id: Uuid) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT env::text FROM functions WHERE id = $1
         UNION ALL SELECT env::text FROM deployments WHERE function_id = $1",
    )
    .bind(function_id)
    .fetch_all(&stack.pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_values_are_sealed_secret_ones_never_shown_and_a_purge_wipes_them() -> anyhow::Result<()>
{
    let stack = TestStack::start_with(StackOptions {
        store: StoreKind::Filesystem,
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("sealed").await?;

    // A secret name that env does not set is refused, and nothing is written.
    let (status, body) = deploy_with_env(
        &stack,
        function_id,
        &json!({"REGION": "eu-west-1"}),
        &json!(["GREETING"]),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_env");
    assert!(
        stored_env(&stack, function_id)
            .await?
            .iter()
            .all(|e| e == "{}")
    );

    let (status, body) = deploy_with_env(
        &stack,
        function_id,
        &json!({"GREETING": "bonjour-5ec2e7", "REGION": "eu-west-1"}),
        &json!(["GREETING"]),
    )
    .await?;
    assert_eq!(status, 202, "{body}");
    let deployment: Uuid = body["deployment_id"].as_str().unwrap().parse()?;
    stack.wait_active(deployment).await?;

    // The function gets the secret value.
    let (status, echoed) = stack.invoke(function_id, "/cgi-bin/echo").await?;
    assert_eq!(status, 200, "{echoed}");
    assert!(echoed.contains("greeting=bonjour-5ec2e7"), "{echoed}");

    // Its owner sees the plain value and the secret's name, never the secret's value.
    let function = stack.function(function_id).await?;
    assert_eq!(
        function["env"],
        json!({"GREETING": null, "REGION": "eu-west-1"}),
        "{function}"
    );
    assert_eq!(function["secret_env"], json!(["GREETING"]));
    assert!(!function.to_string().contains("bonjour-5ec2e7"));

    // The database holds neither values nor names in clear.
    let stored = stored_env(&stack, function_id).await?;
    assert_eq!(stored.len(), 2, "{stored:?}");
    for env in &stored {
        for clear in ["bonjour-5ec2e7", "eu-west-1", "GREETING", "REGION"] {
            assert!(!env.contains(clear), "{clear} stored in clear: {env}");
        }
    }

    // A purge keeps the history and wipes every value.
    let deleted = stack
        .delete(&format!("/api/functions/{function_id}"))
        .send()
        .await?;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    {
        let mut conn = stack.conn().await?;
        PurgeJob::Function {
            function_id,
            request_id: Uuid::new_v4(),
        }
        .enqueue(&mut conn)
        .await?;
    }
    eventually(Duration::from_secs(60), "the purge", || async {
        let status: String = sqlx::query_scalar("SELECT status FROM functions WHERE id = $1")
            .bind(function_id)
            .fetch_one(&stack.pool)
            .await?;
        Ok((status == "deleted").then_some(()))
    })
    .await?;
    let stored = stored_env(&stack, function_id).await?;
    assert_eq!(stored, vec!["{}".to_owned(), "{}".to_owned()]);
    stack.shutdown().await
}
