//! The writer: consumes hold events from RabbitMQ and applies them to PostgreSQL
//! in batches, one transaction each, acking only after the commit.
//!
//! A message that can never be applied (malformed, or refused by a constraint)
//! is rejected to the dead-letter queue with its reason logged, so it never
//! blocks the queue. Anything else that fails (PostgreSQL or RabbitMQ away)
//! drops the session: unacked messages go back to the queue, and the writer
//! reconnects with backoff.

pub mod apply;

use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::{
    broker::Broker,
    config::WriterConfig,
    hold_event::HoldEvent,
    prometheus, retry,
    telemetry::{self, spans},
};

pub struct Writer {
    pg: deadpool_postgres::Pool,
    broker: Arc<Broker>,
    config: WriterConfig,
}

impl Writer {
    pub fn new(pg: deadpool_postgres::Pool, broker: Arc<Broker>, config: WriterConfig) -> Self {
        Writer { pg, broker, config }
    }

    /// Consumes until `stop` is cancelled, reconnecting after failures.
    pub async fn run(self, stop: CancellationToken) {
        retry::with_backoff("writer", &stop, || self.session(&stop)).await
    }

    async fn session(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let (connection, channel) = self.broker.open_channel().await?;
        let topology = &self.broker.topology;
        let prefetch = (self.config.batch * 2).min(u16::MAX as usize) as u16;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                topology.writer_queue.as_str().into(),
                "herdgate-writer".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = topology.writer_queue, "writer consuming");
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = connection.close(200, "writer stopping".into()).await;
                    return Ok(());
                }
                next = consumer.next() => next.context("consumer closed")??,
            };
            let mut deliveries = vec![first];
            let deadline = Instant::now() + self.config.linger;
            while deliveries.len() < self.config.batch {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(Some(delivery)) => deliveries.push(delivery?),
                    Ok(None) => anyhow::bail!("consumer closed"),
                    Err(_) => break,
                }
            }
            // The batch is settled before the next one is taken, even when stopping.
            if let Err(e) = self.settle(deliveries).await {
                let _ = connection.close(200, "writer restarting".into()).await;
                return Err(e);
            }
        }
    }

    /// Applies one batch and acks it, or dead-letters what can never apply.
    async fn settle(&self, deliveries: Vec<Delivery>) -> anyhow::Result<()> {
        let mut parsed: Vec<(Delivery, HoldEvent)> = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match parse(&delivery.data) {
                Ok(event) => parsed.push((delivery, event)),
                Err(reason) => dead_letter(&delivery, &reason).await?,
            }
        }
        if parsed.is_empty() {
            return Ok(());
        }
        // Ended when this function returns: after the commit and the ack.
        let spans = self.spans(&parsed);
        let events: Vec<HoldEvent> = parsed.iter().map(|(_, e)| e.clone()).collect();
        let started = Instant::now();
        match self.apply(&events).await {
            Ok(applied) => {
                let lag = events
                    .iter()
                    .map(|e| e.occurred_at)
                    .min()
                    .map(|t| chrono::Utc::now() - t);
                metrics::histogram!(prometheus::WRITER_BATCH).record(events.len() as f64);
                metrics::counter!(prometheus::WRITER_ROWS).increment(applied.rows);
                if let Some(lag) = lag.and_then(|l| l.to_std().ok()) {
                    metrics::histogram!(prometheus::WRITER_LAG).record(lag);
                }
                tracing::debug!(
                    messages = events.len(),
                    rows = applied.rows,
                    stale = applied.stale,
                    lag_ms = lag.map(|l| l.num_milliseconds()),
                    apply_ms = started.elapsed().as_millis() as u64,
                    "batch committed"
                );
                // One ack for the whole batch: everything before it is settled already.
                let (last, _) = parsed.last().expect("batch is not empty");
                last.acker.ack(BasicAckOptions { multiple: true }).await?;
                Ok(())
            }
            Err(e) if is_permanent(&e) => {
                // One bad message spoiled the batch: find it by applying one at a time.
                for (i, (delivery, event)) in parsed.iter().enumerate() {
                    match self.apply(std::slice::from_ref(event)).await {
                        Ok(_) => {
                            delivery.acker.ack(BasicAckOptions::default()).await?;
                        }
                        Err(e) if is_permanent(&e) => {
                            // Logged inside the message's span: the line names its trace.
                            let span = spans.get(i).cloned().unwrap_or_else(Span::none);
                            dead_letter(delivery, &db_reason(&e))
                                .instrument(span)
                                .await?
                        }
                        Err(e) => return Err(e).context("failed to apply a hold event"),
                    }
                }
                Ok(())
            }
            Err(e) => Err(e).context("failed to apply a batch of hold events"),
        }
    }

    /// One span per message, each a child of its own message's context, while
    /// traces are exported; none otherwise.
    fn spans(&self, parsed: &[(Delivery, HoldEvent)]) -> Vec<Span> {
        if !telemetry::exporting() {
            return Vec::new();
        }
        let queue = &self.broker.topology.writer_queue;
        parsed
            .iter()
            .map(|(delivery, event)| {
                spans::apply(queue, event, traceparent(delivery), parsed.len())
            })
            .collect()
    }

    async fn apply(&self, events: &[HoldEvent]) -> Result<apply::Applied, WriteError> {
        let mut client = self.pg.get().await?;
        let tx = client.transaction().await?;
        let applied = apply::apply(&tx, events).await?;
        tx.commit().await?;
        Ok(applied)
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// Errors that retrying cannot fix: the message itself is wrong for the data
/// (integrity constraint violations, class 23, and data exceptions, class 22).
fn is_permanent(e: &WriteError) -> bool {
    match e {
        WriteError::Db(e) => e
            .code()
            .is_some_and(|code| code.code().starts_with("23") || code.code().starts_with("22")),
        WriteError::Pool(_) => false,
    }
}

fn db_reason(e: &WriteError) -> String {
    match e {
        WriteError::Db(e) => match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        },
        e => e.to_string(),
    }
}

/// The message's `traceparent` header, put there by the relay.
fn traceparent(delivery: &Delivery) -> Option<&str> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == "traceparent")?
        .1
    {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        _ => None,
    }
}

fn parse(data: &[u8]) -> Result<HoldEvent, String> {
    let event: HoldEvent =
        serde_json::from_slice(data).map_err(|e| format!("not a hold event: {e}"))?;
    event.validate()?;
    Ok(event)
}

async fn dead_letter(delivery: &Delivery, reason: &str) -> anyhow::Result<()> {
    metrics::counter!(prometheus::DEAD_LETTERED).increment(1);
    tracing::error!(
        reason,
        routing_key = %delivery.routing_key,
        bytes = delivery.data.len(),
        "dead-lettering a hold event that can never be applied"
    );
    delivery
        .acker
        .nack(BasicNackOptions {
            requeue: false,
            ..Default::default()
        })
        .await?;
    Ok(())
}
