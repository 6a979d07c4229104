//! The writer: consumes hold events from RabbitMQ and applies them to PostgreSQL
//! in batches, one transaction each, acking only after the commit.
//!
//! A message is a batch of hold events (see `hold_event`); a writer batch
//! gathers messages until it holds `batch` events or `linger` has passed.
//! After the commit, the writer deletes the events' entries from the Redis
//! outbox (see `relay`): until then, the relay keeps them to send again.
//! A message that can never be applied (malformed) is rejected to the
//! dead-letter queue with its reason logged, and an event of a batch refused
//! by a constraint is published there alone, so neither blocks the queue nor
//! holds back the rest of its batch. Anything else that fails (PostgreSQL or
//! RabbitMQ away) drops the session: unacked messages go back to the queue, and
//! the writer reconnects with backoff.

pub mod apply;

use std::{collections::HashMap, sync::Arc};

use anyhow::Context;
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::{
    broker::Broker,
    config::WriterConfig,
    hold_event::{self, HoldEvent},
    holds::Store,
    metric, retry,
    telemetry::{self, spans},
};

pub struct Writer {
    pg: deadpool_postgres::Pool,
    broker: Arc<Broker>,
    /// Where the outbox entries of committed events are deleted.
    store: Store,
    config: WriterConfig,
}

impl Writer {
    pub fn new(
        pg: deadpool_postgres::Pool,
        broker: Arc<Broker>,
        store: Store,
        config: WriterConfig,
    ) -> Self {
        Writer {
            pg,
            broker,
            store,
            config,
        }
    }

    /// Consumes until `stop` is cancelled, reconnecting after failures.
    pub async fn run(self, stop: CancellationToken) {
        retry::with_backoff("writer", &stop, || self.session(&stop)).await
    }

    async fn session(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let (connection, channel) = self.broker.open_channel().await?;
        let topology = &self.broker.topology;
        // Messages are batches of up to a relay round each: a few in flight are plenty.
        let prefetch = self.config.prefetch.min(u16::MAX as usize) as u16;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        // Dead-lettering one event of a batch is a publish of ours, confirmed before the ack.
        channel
            .confirm_select(ConfirmSelectOptions::default())
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
            let mut batch = vec![Message::parse(first)];
            let mut events = batch[0].len();
            let deadline = Instant::now() + self.config.linger;
            while events < self.config.batch {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(Some(delivery)) => {
                        let message = Message::parse(delivery?);
                        events += message.len();
                        batch.push(message);
                    }
                    Ok(None) => anyhow::bail!("consumer closed"),
                    Err(_) => break,
                }
            }
            // The batch is settled before the next one is taken, even when stopping.
            if let Err(e) = self.settle(&channel, batch).await {
                let _ = connection.close(200, "writer restarting".into()).await;
                return Err(e);
            }
        }
    }

    /// Applies one batch and acks it, or dead-letters what can never apply.
    async fn settle(&self, channel: &Channel, batch: Vec<Message>) -> anyhow::Result<()> {
        let mut parsed: Vec<(Delivery, Vec<HoldEvent>)> = Vec::with_capacity(batch.len());
        for Message { delivery, events } in batch {
            match events {
                Ok(events) => parsed.push((delivery, events)),
                Err(reason) => dead_letter(&delivery, &reason).await?,
            }
        }
        if parsed.is_empty() {
            return Ok(());
        }
        // Ended when this function returns: after the commit and the ack.
        let mut spans = self.spans(&parsed);
        let events: Vec<HoldEvent> = parsed.iter().flat_map(|(_, e)| e.iter().cloned()).collect();
        let started = Instant::now();
        match self.apply(&events).await {
            Ok(applied) => {
                let lag = events
                    .iter()
                    .map(|e| e.occurred_at)
                    .min()
                    .map(|t| chrono::Utc::now() - t);
                metrics::histogram!(metric::WRITER_BATCH).record(events.len() as f64);
                metrics::counter!(metric::WRITER_ROWS).increment(applied.rows);
                metrics::counter!(metric::WRITER_EVENTS).increment(events.len() as u64);
                if let Some(lag) = lag.and_then(|l| l.to_std().ok()) {
                    metrics::histogram!(metric::WRITER_LAG).record(lag);
                }
                tracing::debug!(
                    messages = parsed.len(),
                    events = events.len(),
                    rows = applied.rows,
                    stale = applied.stale,
                    lag_ms = lag.map(|l| l.num_milliseconds()),
                    apply_ms = started.elapsed().as_millis() as u64,
                    "batch committed"
                );
                for (i, reason) in &applied.refused {
                    let span = spans.get_mut(*i).and_then(Option::take);
                    self.dead_letter_event(channel, &events[*i], reason)
                        .instrument(span.unwrap_or_else(Span::none))
                        .await?;
                }
                // One ack for the whole batch: everything before it is settled already.
                let (last, _) = parsed.last().expect("batch is not empty");
                last.acker.ack(BasicAckOptions { multiple: true }).await?;
                self.clear_outboxes(&events).await;
                Ok(())
            }
            Err(e) if is_permanent(&e) => {
                // One bad event spoiled the batch: find it by applying one at a time.
                let mut spans = spans.into_iter();
                for (delivery, events) in &parsed {
                    for event in events {
                        let span = spans.next().flatten().unwrap_or_else(Span::none);
                        let reason = match self.apply(std::slice::from_ref(event)).await {
                            Ok(applied) => applied.refused.into_iter().next().map(|(_, r)| r),
                            Err(e) if is_permanent(&e) => Some(db_reason(&e)),
                            Err(e) => return Err(e).context("failed to apply a hold event"),
                        };
                        if let Some(reason) = reason {
                            // Logged inside the event's span: the line names its trace.
                            self.dead_letter_event(channel, event, &reason)
                                .instrument(span)
                                .await?
                        }
                    }
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                }
                metrics::counter!(metric::WRITER_EVENTS).increment(events.len() as u64);
                self.clear_outboxes(&events).await;
                Ok(())
            }
            Err(e) => Err(e).context("failed to apply a batch of hold events"),
        }
    }

    /// Deletes the outbox entries of events now in PostgreSQL (or dead-lettered).
    /// Redis away leaves them there: the relay sends them again later, and they
    /// apply as repeats, so the batch is not held up for it.
    async fn clear_outboxes(&self, events: &[HoldEvent]) {
        let mut entries: HashMap<i64, Vec<String>> = HashMap::new();
        for event in events {
            if let Some(id) = &event.outbox_id {
                entries.entry(event.event_id).or_default().push(id.clone());
            }
        }
        for (event_id, ids) in entries {
            let count = ids.len() as u64;
            if let Err(e) = self.store.clear_outbox(event_id, ids).await {
                metrics::counter!(metric::WRITER_OUTBOX_LEFT).increment(count);
                tracing::warn!(
                    event_id,
                    entries = count,
                    error = %e,
                    "committed hold events stay in the outbox: they will be sent again"
                );
            }
        }
    }

    /// One span per event whose trace is exported, each a child of the
    /// context the event carries (or, for a schema-1 message, its header),
    /// in the order of the batch's events; none while traces are not exported.
    fn spans(&self, parsed: &[(Delivery, Vec<HoldEvent>)]) -> Vec<Option<Span>> {
        if !telemetry::exporting() {
            return Vec::new();
        }
        let queue = &self.broker.topology.writer_queue;
        let count: usize = parsed.iter().map(|(_, events)| events.len()).sum();
        parsed
            .iter()
            .flat_map(|(delivery, events)| {
                events.iter().map(move |event| {
                    let parent = traceparent(delivery).or(event.traceparent.as_deref());
                    parent
                        .filter(|t| telemetry::context::is_sampled(t))
                        .map(|parent| spans::apply(queue, event, Some(parent), count))
                })
            })
            .collect()
    }

    /// Sends one event that can never apply to the dead-letter exchange, alone,
    /// with the reason in its headers, so the rest of its batch is applied.
    async fn dead_letter_event(
        &self,
        channel: &Channel,
        event: &HoldEvent,
        reason: &str,
    ) -> anyhow::Result<()> {
        metrics::counter!(metric::DEAD_LETTERED).increment(1);
        tracing::error!(
            reason,
            booking_id = %event.booking_id,
            kind = event.kind,
            "dead-lettering a hold event that can never be applied"
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "x-herdgate-reason".into(),
            AMQPValue::LongString(reason.into()),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(format!("{}:{}", event.booking_id, event.version).into())
            .with_app_id("herdgate".into())
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                self.broker.topology.dead.as_str().into(),
                event.kind.as_str().into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(event)?,
                properties,
            )
            .await?
            .await?;
        anyhow::ensure!(
            matches!(confirm, Confirmation::Ack(None)),
            "the dead-letter exchange did not take a hold event ({confirm:?})"
        );
        Ok(())
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

/// A delivery and the hold events it carries, or why it carries none.
struct Message {
    delivery: Delivery,
    events: Result<Vec<HoldEvent>, String>,
}

impl Message {
    fn parse(delivery: Delivery) -> Self {
        let events = hold_event::parse_message(&delivery.data);
        Message { delivery, events }
    }

    /// Events it adds to a batch; a malformed message counts as one.
    fn len(&self) -> usize {
        self.events.as_ref().map_or(1, Vec::len)
    }
}

async fn dead_letter(delivery: &Delivery, reason: &str) -> anyhow::Result<()> {
    metrics::counter!(metric::DEAD_LETTERED).increment(1);
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
