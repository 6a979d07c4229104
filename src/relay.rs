//! The relay: moves hold events from each event's Redis outbox to the RabbitMQ
//! exchange, and deletes an entry only after the broker confirmed it. The events
//! to drain are those in the `outboxes` set, so an event taken off sale is still
//! drained.
//!
//! Relays read through a Redis consumer group, so any number of gateways share
//! the work. An entry is acked and deleted only after its publisher confirm; a
//! relay that dies leaves its entries pending, and another relay (or itself,
//! restarted) claims them once they have been idle for `claim_idle`. Delivery
//! is therefore at least once: the writer makes repeats harmless.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use fred::{
    interfaces::{SetsInterface, StreamsInterface},
    types::Value,
};
use lapin::{
    BasicProperties, Channel,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::{
    broker::Broker,
    hold_event::HoldEvent,
    holds::Store,
    prometheus, retry,
    telemetry::{self, spans},
};

const GROUP: &str = "relay";
/// Pause after a round that found nothing to move; doubles while idle, up to the max.
const IDLE_POLL: Duration = Duration::from_millis(5);
const MAX_IDLE_POLL: Duration = Duration::from_millis(100);
/// How often the set of outboxes to drain is read again.
const EVENTS_REFRESH: Duration = Duration::from_secs(1);

pub struct Relay {
    store: Store,
    broker: Arc<Broker>,
    /// This process's name in the consumer group.
    consumer: String,
    batch: usize,
    /// Entries another relay has had this long without confirming are taken over.
    claim_idle: Duration,
}

/// An outbox entry: its stream id and its fields.
type Entry = (String, HashMap<String, String>);

impl Relay {
    pub fn new(store: Store, broker: Arc<Broker>, batch: usize, claim_idle: Duration) -> Self {
        Relay {
            store,
            broker,
            consumer: format!("relay-{}", uuid::Uuid::now_v7()),
            batch,
            claim_idle,
        }
    }

    /// Relays until `stop` is cancelled, reconnecting after failures.
    pub async fn run(self, stop: CancellationToken) {
        retry::with_backoff("relay", &stop, || self.session(&stop)).await
    }

    async fn session(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let (connection, channel) = self.broker.open_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut groups = HashSet::new();
        // Our own pending entries (a failed round) are retried before new ones.
        let mut retry: HashSet<i64> = HashSet::new();
        let mut next_claim = Instant::now();
        let mut events: Vec<i64> = Vec::new();
        let mut next_refresh = Instant::now();
        let mut idle = IDLE_POLL;
        loop {
            if stop.is_cancelled() {
                let _ = connection.close(200, "relay stopping".into()).await;
                return Ok(());
            }
            let claim = Instant::now() >= next_claim;
            if claim {
                next_claim = Instant::now() + self.claim_idle / 2;
            }
            if Instant::now() >= next_refresh {
                events = self
                    .store
                    .client()
                    .smembers(self.store.keys().outboxes())
                    .await?;
                next_refresh = Instant::now() + EVENTS_REFRESH;
                for &event_id in &events {
                    let outbox = self.store.keys().event(event_id).outbox();
                    let depth: u64 = self.store.client().xlen(outbox).await?;
                    metrics::gauge!(prometheus::OUTBOX_DEPTH, "event" => event_id.to_string())
                        .set(depth as f64);
                }
            }
            let mut moved = 0;
            for &event_id in &events {
                if groups.insert(event_id) {
                    self.create_group(event_id).await?;
                    // A session that failed may have left entries pending under our name.
                    retry.insert(event_id);
                }
                if claim && self.claim(event_id).await? {
                    retry.insert(event_id);
                }
                let pending = retry.remove(&event_id);
                let entries = self.read(event_id, pending).await?;
                if pending && !entries.is_empty() {
                    retry.insert(event_id);
                }
                self.publish(&channel, event_id, &entries).await?;
                moved += entries.len();
            }
            if moved > 0 {
                idle = IDLE_POLL;
            } else {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
                idle = (idle * 2).min(MAX_IDLE_POLL);
            }
        }
    }

    async fn create_group(&self, event_id: i64) -> anyhow::Result<()> {
        let outbox = self.store.keys().event(event_id).outbox();
        match self
            .store
            .client()
            .xgroup_create::<(), _, _, _>(outbox, GROUP, "0", true)
            .await
        {
            Err(e) if e.details().starts_with("BUSYGROUP") => Ok(()),
            result => Ok(result?),
        }
    }

    /// Takes over entries other relays left unconfirmed for too long; true if any.
    async fn claim(&self, event_id: i64) -> anyhow::Result<bool> {
        let outbox = self.store.keys().event(event_id).outbox();
        let reply: Value = self
            .store
            .client()
            .xautoclaim(
                outbox,
                GROUP,
                &self.consumer,
                self.claim_idle.as_millis() as u64,
                "0-0",
                Some(self.batch as u64),
                true,
            )
            .await?;
        let claimed = match &reply {
            Value::Array(parts) => parts
                .get(1)
                .is_some_and(|ids| !matches!(ids, Value::Array(a) if a.is_empty())),
            _ => false,
        };
        if claimed {
            tracing::info!(event_id, "relay claimed entries of a relay that stopped");
        }
        Ok(claimed)
    }

    /// New entries, or with `pending` this relay's own unconfirmed ones.
    async fn read(&self, event_id: i64, pending: bool) -> anyhow::Result<Vec<Entry>> {
        let outbox = self.store.keys().event(event_id).outbox();
        let reply: Value = self
            .store
            .client()
            .xreadgroup(
                GROUP,
                &self.consumer,
                Some(self.batch as u64),
                None,
                false,
                outbox,
                if pending { "0" } else { ">" },
            )
            .await?;
        parse_entries(&reply).context("unexpected XREADGROUP reply")
    }

    /// Publishes every entry, waits for the confirms, then acks and deletes
    /// the confirmed ones. Unconfirmed entries stay pending and are retried.
    async fn publish(
        &self,
        channel: &Channel,
        event_id: i64,
        entries: &[Entry],
    ) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let exchange = &self.broker.topology.exchange;
        let mut confirms = Vec::with_capacity(entries.len());
        let mut malformed = Vec::new();
        for (id, fields) in entries {
            let event = match HoldEvent::from_outbox(event_id, fields) {
                Ok(event) => event,
                Err(reason) => {
                    // Written by our own script, so this is a bug; keep it out of the way.
                    tracing::error!(
                        event_id,
                        entry = id,
                        reason,
                        "dropping malformed outbox entry"
                    );
                    malformed.push(id.clone());
                    continue;
                }
            };
            let payload = serde_json::to_vec(&event)?;
            // Traced, the message carries the publish span's context, so the
            // writer's span is its child; untraced, the stored one passes through.
            let span = telemetry::exporting().then(|| spans::publish(exchange, &event));
            let traceparent = match &span {
                Some(span) => telemetry::context::traceparent(span),
                None => None,
            };
            let traceparent = traceparent.as_deref().or(event.traceparent.as_deref());
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    event.kind.as_str().into(),
                    BasicPublishOptions::default(),
                    &payload,
                    properties(&event, traceparent),
                )
                .instrument(span.clone().unwrap_or_else(Span::none))
                .await?;
            confirms.push((id.clone(), confirm, span));
        }
        let malformed_count = malformed.len();
        let mut done = malformed;
        let mut refused = 0;
        // A publish span ends with its confirm.
        for (id, confirm, span) in confirms {
            if confirm.await?.is_ack() {
                done.push(id);
            } else {
                refused += 1;
                if let Some(span) = span {
                    span.record("otel.status_code", "ERROR");
                }
            }
        }
        metrics::counter!(prometheus::RELAY_CONFIRMED)
            .increment((done.len() - malformed_count) as u64);
        metrics::counter!(prometheus::RELAY_REFUSED).increment(refused);
        if !done.is_empty() {
            let outbox = self.store.keys().event(event_id).outbox();
            let client = self.store.client();
            // Delete first: an entry acked but not deleted would stay in the stream
            // for good, while one deleted but still pending comes back without fields
            // and is cleaned up as such.
            client.xdel::<(), _, _>(&outbox, done.clone()).await?;
            client.xack::<(), _, _, _>(&outbox, GROUP, done).await?;
        }
        anyhow::ensure!(refused == 0, "RabbitMQ refused {refused} hold events");
        Ok(())
    }
}

/// Persistent JSON, with the trace context in the `traceparent` header.
fn properties(event: &HoldEvent, traceparent: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(traceparent) = traceparent {
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(traceparent.into()),
        );
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(format!("{}:{}", event.booking_id, event.version).into())
        .with_timestamp(event.occurred_at.timestamp() as u64)
        .with_app_id("herdgate".into())
        .with_headers(headers)
}

/// Entries of a one-stream XREADGROUP reply: `[[stream, [[id, [f, v, ...]], ...]]]`.
fn parse_entries(reply: &Value) -> Option<Vec<Entry>> {
    let streams = match reply {
        Value::Null => return Some(Vec::new()),
        Value::Array(streams) => streams,
        _ => return None,
    };
    let mut entries = Vec::new();
    for stream in streams {
        let Value::Array(parts) = stream else {
            return None;
        };
        let Some(Value::Array(items)) = parts.get(1) else {
            return None;
        };
        for item in items {
            let Value::Array(pair) = item else {
                return None;
            };
            let id = pair.first()?.as_string()?;
            let mut fields = HashMap::new();
            // An entry deleted while pending comes back with no fields: nothing to publish.
            if let Some(Value::Array(kv)) = pair.get(1) {
                for kv in kv.chunks(2) {
                    fields.insert(kv.first()?.as_string()?, kv.get(1)?.as_string()?);
                }
            }
            entries.push((id, fields));
        }
    }
    Some(entries)
}
