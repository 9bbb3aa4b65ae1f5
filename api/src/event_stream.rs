//! Event streaming (seed 003's RabbitMQ integration): with `SLIPWAY_EVENTS_AMQP_URL` set, every
//! settled event — invocations and custom events alike — is published to a durable topic
//! exchange with routing key `functions.<function id>.<type>`, persistent, JSON, its message id
//! the event's id. Events reach the outbox (`event_outbox`) in the transaction that settles them;
//! this task takes the oldest, publishes them with publisher confirms, and deletes them only once
//! the broker acknowledged every one. While the broker is unreachable they wait in the outbox,
//! and the task reconnects with backoff: nothing is lost, and a crash between the confirm and the
//! delete publishes again (at least once; consumers deduplicate on the message id). Several api
//! processes share the outbox: each batch is locked with `SKIP LOCKED`.

use std::time::Duration;

use anyhow::Context;
use lapin::{
    BasicProperties, Connection, ConnectionProperties, ExchangeKind,
    options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions},
    publisher_confirm::Confirmation,
    types::FieldTable,
};
use slipway_shared::{config::EventStreamConfig, db};
use sqlx::PgPool;
use tracing::{info, warn};

/// Events per publish round: one transaction, one wait for the broker's confirms.
const BATCH: i64 = 200;
/// How often an empty outbox is looked at again.
const IDLE_POLL: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Turns the outbox on and publishes from it for as long as the process runs.
pub fn start(pool: PgPool, config: EventStreamConfig) {
    tokio::spawn(run(pool, config));
}

async fn run(pool: PgPool, config: EventStreamConfig) {
    let mut backoff = Duration::from_millis(500);
    while !pool.is_closed() {
        let enabled = async {
            let mut conn = pool.acquire().await?;
            db::events::enable_outbox(&mut conn).await
        }
        .await;
        match enabled {
            Ok(()) => break,
            Err(e) => {
                warn!(error = %e, "cannot turn the event outbox on yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    // Until the process closes its pool (shutting down).
    while !pool.is_closed() {
        let error = publish_until_broken(&pool, &config, &mut backoff)
            .await
            .unwrap_err();
        if pool.is_closed() {
            break;
        }
        warn!(error = %format!("{error:#}"), retry_in = ?backoff, "event stream interrupted; events wait in the outbox");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Publishes until the broker or the database fails; only returns an error.
async fn publish_until_broken(
    pool: &PgPool,
    config: &EventStreamConfig,
    backoff: &mut Duration,
) -> anyhow::Result<()> {
    let connection = Connection::connect(
        &config.url,
        ConnectionProperties::default().with_connection_name("slipway-api events".into()),
    )
    .await
    .context("connecting to the broker")?;
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("asking for publisher confirms")?;
    channel
        .exchange_declare(
            &config.exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring the exchange {}", config.exchange))?;
    info!(exchange = %config.exchange, "streaming events to the broker");
    *backoff = Duration::from_millis(500);
    loop {
        let mut tx = pool.begin().await?;
        let batch = db::events::outbox_batch(&mut tx, BATCH).await?;
        if batch.is_empty() {
            drop(tx);
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        }
        let mut confirms = Vec::with_capacity(batch.len());
        for entry in &batch {
            let payload = serde_json::to_vec(&entry.payload)?;
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(entry.event_id.to_string().into());
            confirms.push(
                channel
                    .basic_publish(
                        &config.exchange,
                        &entry.routing_key,
                        BasicPublishOptions::default(),
                        &payload,
                        properties,
                    )
                    .await
                    .context("publishing an event")?,
            );
        }
        for confirm in confirms {
            match confirm.await.context("waiting for the broker's confirm")? {
                Confirmation::Ack(_) => {}
                Confirmation::Nack(_) => anyhow::bail!("the broker refused an event (nack)"),
                Confirmation::NotRequested => anyhow::bail!("the channel lost publisher confirms"),
            }
        }
        let ids: Vec<i64> = batch.iter().map(|entry| entry.id).collect();
        db::events::outbox_published(&mut tx, &ids).await?;
        tx.commit().await?;
        slipway_shared::metrics::events_streamed(ids.len());
    }
}
