//! Event streaming to a real RabbitMQ (Debian's, started by `scripts/test.sh` on loopback): every
//! settled event, invocation or custom, reaches a topic exchange as `functions.<id>.<type>` after
//! it is committed, and events recorded while the broker is down wait in the outbox and are
//! published once it is back. The broker is stopped and started with `rabbitmqctl`.

use std::time::{Duration, Instant};

use lapin::{
    Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::FieldTable,
};
use serde_json::{Value, json};
use slipway_shared::config::{ApiConfig, EventStreamConfig};
use slipway_tests::{StackOptions, TestStack, eventually, hello_archive, required_env};
use uuid::Uuid;

const EXCHANGE: &str = "slipway.events.test";

fn stream_to_the_test_broker(config: &mut ApiConfig) {
    config.event_stream = Some(EventStreamConfig {
        url: required_env("SLIPWAY_TEST_AMQP_URL"),
        exchange: EXCHANGE.into(),
    });
}

/// `rabbitmqctl` against the private broker of `scripts/lib/services.sh`.
fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let home = format!("{}/rabbitmq", required_env("SLIPWAY_STATE_DIR"));
    let status = std::process::Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
        .args(args)
        .env("HOME", home)
        .env("RABBITMQ_NODENAME", required_env("SLIPWAY_RABBITMQ_NODE"))
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "rabbitmqctl {args:?}: {status}");
    Ok(())
}

/// A consumer's channel with a durable queue bound to the function's events.
async fn bound_queue(function_id: Uuid) -> anyhow::Result<(Connection, lapin::Channel, String)> {
    let connection = Connection::connect(
        &required_env("SLIPWAY_TEST_AMQP_URL"),
        ConnectionProperties::default(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            EXCHANGE,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let queue = format!("slipway-test-{function_id}");
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            &queue,
            EXCHANGE,
            &format!("functions.{function_id}.#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel, queue))
}

/// `count` messages from the queue as (routing key, message id, body), waiting up to `timeout`.
async fn receive(
    channel: &lapin::Channel,
    queue: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<(String, String, Value)>> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    while received.len() < count {
        match channel
            .basic_get(queue, BasicGetOptions { no_ack: true })
            .await?
        {
            Some(message) => {
                let delivery = message.delivery;
                received.push((
                    delivery.routing_key.to_string(),
                    delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    serde_json::from_slice(&delivery.data)?,
                ));
            }
            None if Instant::now() > deadline => {
                anyhow::bail!(
                    "{} of {count} messages after {timeout:?}: {received:?}",
                    received.len()
                )
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(received)
}

/// Posts a custom event of the function's; returns it as recorded.
async fn post_custom(
    stack: &TestStack,
    function_id: Uuid,
    kind: &str,
    data: Value,
) -> anyhow::Result<Value> {
    let response = stack
        .post("/api/v3/events")
        .json(&json!({"function_id": function_id, "type": kind, "data": data}))
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    Ok(response.json().await?)
}

fn with_key(received: &[(String, String, Value)], key: &str) -> usize {
    received.iter().filter(|(k, ..)| k == key).count()
}

async fn outbox(stack: &TestStack) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM event_outbox")
        .fetch_one(&stack.pool)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_broker_and_none_is_lost_while_it_is_down() -> anyhow::Result<()> {
    let stack = TestStack::start_with(StackOptions {
        api_overrides: Some(stream_to_the_test_broker),
        ..Default::default()
    })
    .await?;
    let function_id = stack.init("streamed").await?;
    let (deployment, _) = stack
        .deploy(function_id, hello_archive("streamed\n")?)
        .await?;
    stack.wait_active(deployment).await?;
    let (_connection, channel, queue) = bound_queue(function_id).await?;

    for _ in 0..3 {
        assert_eq!(stack.invoke(function_id, "/").await?.0, 200);
    }
    let custom = post_custom(&stack, function_id, "ORDER_PLACED", json!({"order": 7})).await?;

    let received = receive(&channel, &queue, 4, Duration::from_secs(30)).await?;
    let invocation_key = format!("functions.{function_id}.FUNCTION_INVOCATION");
    assert_eq!(with_key(&received, &invocation_key), 3, "{received:?}");
    let (key, message_id, body) = received
        .iter()
        .find(|(_, _, body)| body["type"] == "ORDER_PLACED")
        .expect("the custom event");
    assert_eq!(*key, format!("functions.{function_id}.ORDER_PLACED"));
    assert_eq!(message_id, custom["id"].as_str().unwrap());
    assert_eq!(body["data"]["order"], 7);
    assert!(body.get("owner_id").is_none(), "{body}");
    for (_, _, body) in &received {
        assert_ne!(body["status"], "PENDING", "{body}");
    }
    assert_eq!(outbox(&stack).await?, 0);

    // The broker goes away: events are still recorded, and wait.
    rabbitmqctl(&["stop_app"])?;
    let restarted = async {
        for _ in 0..2 {
            assert_eq!(stack.invoke(function_id, "/").await?.0, 200);
        }
        post_custom(&stack, function_id, "OTHER", json!("while down")).await?;
        eventually(
            Duration::from_secs(10),
            "three events in the outbox",
            || async { Ok((outbox(&stack).await? == 3).then_some(())) },
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    rabbitmqctl(&["start_app"])?;
    restarted?;

    let (_connection, channel, queue) = bound_queue(function_id).await?;
    let received = receive(&channel, &queue, 3, Duration::from_secs(90)).await?;
    assert_eq!(with_key(&received, &invocation_key), 2, "{received:?}");
    assert!(
        received
            .iter()
            .any(|(_, _, body)| body["data"] == "while down")
    );
    eventually(Duration::from_secs(10), "an empty outbox", || async {
        Ok((outbox(&stack).await? == 0).then_some(()))
    })
    .await?;
    channel
        .queue_delete(&queue, QueueDeleteOptions::default())
        .await?;
    stack.shutdown().await
}
