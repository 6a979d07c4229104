//! The relay: moves hold events from each event's Redis outbox to the RabbitMQ
//! exchange. The events to drain are those in the `outboxes` set, so an event
//! taken off sale is still drained.
//!
//! Relays read through a Redis consumer group, so any number of gateways share
//! the work. An entry is acked in the group only after its publisher confirm; a
//! relay that dies leaves its entries pending, and another relay (or itself,
//! restarted) claims them once they have been idle for `claim_idle`.
//!
//! The entry itself stays in the outbox until the writer has committed it to
//! PostgreSQL and deletes it. A confirm only says RabbitMQ has the message, and
//! a queue deleted or purged by an operator loses it: entries confirmed
//! `resend_after` ago and still there are published again once the writer
//! queue is empty. The outbox bound therefore covers the whole way to
//! PostgreSQL, and a writer that falls behind turns holds away with 503.
//! Delivery is at least once: the writer makes repeats harmless.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Span;

use crate::{
    broker::Broker,
    config::HoldConfig,
    hold_event::{HoldBatch, HoldEvent},
    holds::{Activity, OutboxEntry, Store},
    metric, retry,
    status::BookingStatus,
    telemetry::{self, spans},
};

/// Pause before a batch RabbitMQ refused or could not route is published again.
const REFUSED_PAUSE: Duration = Duration::from_millis(200);
/// While a batch keeps being refused, how often that is logged.
const REFUSED_WARN_EVERY: Duration = Duration::from_secs(10);
/// How often the outbox depth of the events being relayed is measured.
const GAUGES: Duration = Duration::from_secs(1);

pub struct Relay {
    store: Store,
    broker: Arc<Broker>,
    /// This process's name in the consumer group.
    consumer: String,
    batch: usize,
    /// Entries another relay has had this long without confirming are taken over.
    claim_idle: Duration,
    /// How often every loaded event's outbox is looked at, notices or not: the
    /// bound on how long a lost notice or a stopped relay can delay an entry
    /// (plus `claim_idle` for the latter).
    scan: Duration,
    /// Entries confirmed this long ago and not yet deleted by the writer are
    /// published again (at a scan, while the writer queue is empty).
    resend_after: Duration,
}

type Entry = OutboxEntry;

impl Relay {
    pub fn new(store: Store, broker: Arc<Broker>, config: &HoldConfig) -> Self {
        Relay {
            store,
            broker,
            consumer: format!("relay-{}", uuid::Uuid::now_v7()),
            batch: config.relay_batch,
            claim_idle: config.relay_claim_idle,
            scan: config.scan_interval,
            resend_after: config.relay_resend_after,
        }
    }

    /// Relays until `stop` is cancelled, reconnecting after failures.
    pub async fn run(self, stop: CancellationToken) {
        retry::with_backoff("relay", &stop, || self.session(&stop)).await
    }

    async fn session(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let mut publisher = Publisher::open(&self.broker).await?;
        let mut activity = self.store.watch_activity().await?;
        let mut groups = HashSet::new();
        // Events with entries to read: drained ones leave, notices bring them back.
        let mut active: BTreeSet<i64> = BTreeSet::new();
        // Our own pending entries (a failed round) are retried before new ones.
        let mut retry: HashSet<i64> = HashSet::new();
        // Events a scan found entries in: once drained, look for entries to claim.
        let mut unclaimed: HashSet<i64> = HashSet::new();
        // Drained events whose next entry will be announced again: one more
        // empty read (for entries appended before that) and they rest.
        let mut rearmed: HashSet<i64> = HashSet::new();
        // When each event's overdue entries were last published again.
        let mut resent: HashMap<i64, Instant> = HashMap::new();
        let mut depths = Depths::default();
        let mut next_scan = Instant::now();
        let mut next_gauges = Instant::now();
        loop {
            if stop.is_cancelled() {
                let _ = publisher
                    .connection
                    .close(200, "relay stopping".into())
                    .await;
                return Ok(());
            }
            while let Some(notice) = activity.try_next() {
                heed(notice, &mut active, &mut next_scan);
            }
            let scan = Instant::now() >= next_scan;
            if scan {
                next_scan = Instant::now() + self.scan;
                // Entries a notice did not announce (lost, or left by a relay that
                // stopped) are found here: events with entries become active, and
                // those we find nothing new in are checked for entries to claim.
                let mut waiting = Vec::new();
                for (event_id, depth) in self.store.outbox_depths().await? {
                    depths.record(event_id, depth);
                    if depth > 0 {
                        active.insert(event_id);
                        unclaimed.insert(event_id);
                        waiting.push(event_id);
                    }
                }
                self.resend_overdue(&mut publisher, &waiting, &mut resent, stop)
                    .await?;
                next_gauges = Instant::now() + GAUGES;
            }
            if active.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    notice = activity.next() => heed(notice, &mut active, &mut next_scan),
                    _ = tokio::time::sleep_until(next_scan) => {}
                }
                continue;
            }
            let gauges = Instant::now() >= next_gauges;
            if gauges {
                next_gauges = Instant::now() + GAUGES;
            }
            for event_id in active.clone() {
                if groups.insert(event_id) {
                    self.store.join_outbox_group(event_id).await?;
                    // A session that failed may have left entries pending under our name.
                    retry.insert(event_id);
                }
                let pending = retry.remove(&event_id);
                let entries = self.read(event_id, pending).await?;
                if !entries.is_empty() {
                    rearmed.remove(&event_id);
                }
                self.publish(&mut publisher, event_id, &entries, stop)
                    .await?;
                if pending && !entries.is_empty() {
                    retry.insert(event_id);
                }
                if !pending && entries.is_empty() {
                    // Drained, unless a relay that stopped left entries pending.
                    if unclaimed.remove(&event_id) && self.claim(event_id).await? {
                        retry.insert(event_id);
                    } else if rearmed.insert(event_id) {
                        self.store.announce_outbox_again(event_id).await?;
                    } else {
                        rearmed.remove(&event_id);
                        active.remove(&event_id);
                    }
                }
                if gauges {
                    depths.record(event_id, self.store.outbox_depth(event_id).await?);
                }
            }
        }
    }

    /// Publishes again the entries of `events` RabbitMQ confirmed at least
    /// `resend_after` ago that the writer has still not deleted, if the writer
    /// queue holds no message ready: then their messages were lost (the queue
    /// deleted or purged under them). While messages wait in the queue, those
    /// entries may be among them, and sending them again would only lengthen
    /// the writer's backlog. Entries still pending for a relay are sent too;
    /// a repeat is harmless to the writer.
    async fn resend_overdue(
        &self,
        publisher: &mut Publisher,
        events: &[i64],
        resent: &mut HashMap<i64, Instant>,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        resent.retain(|_, at| now < *at + self.resend_after);
        let before_ms = Utc::now().timestamp_millis() - self.resend_after.as_millis() as i64;
        let mut queue_empty = None;
        for &event_id in events {
            if resent.contains_key(&event_id) {
                continue;
            }
            let mut after: Option<String> = None;
            loop {
                let entries = self
                    .store
                    .outbox_entries_before(event_id, before_ms, after.as_deref(), self.batch as u64)
                    .await?;
                let Some((last, _)) = entries.last() else {
                    break;
                };
                if queue_empty.is_none() {
                    queue_empty = Some(self.writer_queue_empty(&publisher.connection).await?);
                }
                if queue_empty == Some(false) {
                    return Ok(());
                }
                after = Some(last.clone());
                tracing::warn!(
                    event_id,
                    events = entries.len(),
                    after = ?self.resend_after,
                    "hold events RabbitMQ confirmed long ago are not in PostgreSQL \
                     (was the writer queue deleted or purged?): publishing them again"
                );
                metrics::counter!(metric::RELAY_RESENT).increment(entries.len() as u64);
                self.publish(publisher, event_id, &entries, stop).await?;
                if stop.is_cancelled() || entries.len() < self.batch {
                    break;
                }
            }
            resent.insert(event_id, now);
        }
        Ok(())
    }

    /// True when the writer queue exists and holds no message ready for the writer.
    async fn writer_queue_empty(&self, connection: &Connection) -> anyhow::Result<bool> {
        let topology = &self.broker.topology;
        let bound = self.broker.connect_timeout();
        let ready = tokio::time::timeout(bound, topology.writer_queue_ready(connection))
            .await
            .map_err(|_| anyhow::anyhow!("RabbitMQ did not answer within {bound:?}"))??;
        Ok(match ready {
            Some(ready) => ready == 0,
            None => {
                tracing::warn!(
                    queue = topology.writer_queue,
                    "the writer queue does not exist: hold events wait in the outbox \
                     until a writer declares it again"
                );
                false
            }
        })
    }

    /// Takes over entries other relays left unconfirmed for too long; true if any.
    async fn claim(&self, event_id: i64) -> anyhow::Result<bool> {
        let claimed = self
            .store
            .claim_outbox(event_id, &self.consumer, self.claim_idle, self.batch)
            .await?;
        if claimed {
            tracing::info!(event_id, "relay claimed entries of a relay that stopped");
        }
        // Stopped relays hold nothing once their entries are claimed.
        self.store
            .forget_idle_relays(event_id, &self.consumer, self.claim_idle)
            .await?;
        Ok(claimed)
    }

    /// New entries, or with `pending` this relay's own unconfirmed ones.
    async fn read(&self, event_id: i64, pending: bool) -> anyhow::Result<Vec<Entry>> {
        Ok(self
            .store
            .read_outbox(event_id, &self.consumer, self.batch, pending)
            .await?)
    }

    /// Publishes the entries as batches (one message per type, in outbox order,
    /// `hold.placed` first), waits for the confirms, then acks the entries of
    /// every confirmed batch in the group (the writer deletes them after its
    /// commit). A refused or unroutable batch is published again, from memory,
    /// every [`REFUSED_PAUSE`] until it is confirmed: a queue of another service
    /// that refused it must still get it, while the writer may have committed
    /// it and deleted its entries already. Each time on a new channel: a
    /// channel whose first publish to a quorum queue came while the queue was
    /// electing a leader can go on refusing every publish after the queue has
    /// one (seen on RabbitMQ 3.10 when a cluster node died), while a new
    /// channel is confirmed at once. Stopping leaves it pending.
    async fn publish(
        &self,
        publisher: &mut Publisher,
        event_id: i64,
        entries: &[Entry],
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let exchange = &self.broker.topology.exchange;
        let mut batches: Vec<Batch> = Vec::new();
        let mut done = Vec::new();
        let mut dropped = Vec::new();
        for (id, fields) in entries {
            if fields.is_empty() {
                // Deleted while pending here: the writer committed it before our confirm came.
                done.push(id.clone());
                continue;
            }
            let event = match HoldEvent::from_outbox(event_id, id, fields) {
                Ok(event) => event,
                Err(reason) => {
                    // Written by our own script, so this is a bug; keep it out of the way.
                    tracing::error!(
                        event_id,
                        entry = id,
                        reason,
                        "dropping malformed outbox entry"
                    );
                    dropped.push(id.clone());
                    continue;
                }
            };
            let at = match batches.iter().position(|b| b.message.kind == event.kind) {
                Some(at) => at,
                None => {
                    batches.push(Batch::new(&event.kind, event_id));
                    batches.len() - 1
                }
            };
            batches[at].push(id, event);
        }
        // A booking's hold.placed goes out before its later event (see HoldBatch).
        batches.sort_by_key(|b| b.message.kind != BookingStatus::Pending.event_type());
        let mut outgoing = Vec::with_capacity(batches.len());
        for Batch { ids, mut message } in batches {
            let spans = trace(&mut message, exchange);
            outgoing.push(Outgoing {
                payload: serde_json::to_vec(&message)?,
                properties: properties(event_id, &ids, message.events[0].occurred_at),
                kind: message.kind,
                ids,
                spans,
            });
        }
        self.settle(event_id, &mut done, dropped).await?;
        let mut first = true;
        let mut refusals = 0u64;
        let mut warned: Option<Instant> = None;
        while !outgoing.is_empty() {
            if !first {
                // The broker is full or unrouted: give it a moment instead of a busy loop.
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(REFUSED_PAUSE) => {}
                }
                publisher.renew(&self.broker).await?;
            }
            // A node of a cluster that dies may never answer for what it was
            // given: when RabbitMQ stays silent for the bound, the session ends
            // and the entries, still pending, are published again on a live
            // node (a repeat is harmless).
            let bound = self.broker.connect_timeout();
            let confirms = publish_round(&publisher.channel, exchange, outgoing, bound)
                .await
                .inspect_err(|e| {
                    if e.is::<Silent>() {
                        self.broker.pass_over_preferred();
                    }
                })?;
            let (mut refused, mut confirmed) = (Vec::new(), 0);
            // A publish span ends with its confirm.
            for (mut message, confirmation) in confirms {
                let refusal = match confirmation {
                    Confirmation::Ack(None) => None,
                    Confirmation::Ack(Some(_)) => Some("unroutable: no queue is bound for it"),
                    Confirmation::Nack(_) => Some("refused by RabbitMQ (a queue at its limit?)"),
                    Confirmation::NotRequested => Some("not confirmed"),
                };
                match refusal {
                    None => {
                        confirmed += message.ids.len();
                        done.append(&mut message.ids);
                    }
                    Some(reason) => {
                        metrics::counter!(metric::RELAY_REFUSED)
                            .increment(message.ids.len() as u64);
                        refusals += 1;
                        // Once, then every few seconds while it lasts: a relay
                        // stuck here relays nothing else.
                        if warned.is_none_or(|at| at.elapsed() >= REFUSED_WARN_EVERY) {
                            warned = Some(Instant::now());
                            tracing::warn!(
                                event_id,
                                events = message.ids.len(),
                                refusals,
                                reason,
                                "hold events kept to be published again"
                            );
                        }
                        for span in message.spans.drain(..) {
                            span.record("otel.status_code", "ERROR");
                        }
                        refused.push(message);
                    }
                }
            }
            metrics::counter!(metric::RELAY_CONFIRMED).increment(confirmed as u64);
            self.settle(event_id, &mut done, Vec::new()).await?;
            outgoing = refused;
            first = false;
        }
        Ok(())
    }

    /// Acks `done` in the group, after deleting `dropped` (malformed entries,
    /// which no writer will delete) and counting them as done.
    async fn settle(
        &self,
        event_id: i64,
        done: &mut Vec<String>,
        dropped: Vec<String>,
    ) -> anyhow::Result<()> {
        Ok(self
            .store
            .settle_outbox(event_id, std::mem::take(done), dropped)
            .await?)
    }
}

/// Publishes every batch of `outgoing` (`mandatory`), then waits for each confirm.
///
/// `silence` bounds each step, not the round: a round grows with the backlog,
/// and a slow broker (a quorum queue catching up after a failover, on busy
/// cores) can take longer than any fixed bound to confirm it all. A bound on
/// the whole round would then fail every retry of an ever larger round; a
/// bound on each step fails only a broker that stopped answering.
async fn publish_round(
    channel: &Channel,
    exchange: &str,
    outgoing: Vec<Outgoing>,
    silence: Duration,
) -> anyhow::Result<Vec<(Outgoing, Confirmation)>> {
    let silent = || anyhow::Error::new(Silent("a publish or its confirm", silence));
    let mut confirms = Vec::with_capacity(outgoing.len());
    for message in outgoing {
        let publish = channel.basic_publish(
            exchange.into(),
            message.kind.as_str().into(),
            BasicPublishOptions {
                // Unroutable (no queue bound) comes back instead of being confirmed.
                mandatory: true,
                ..Default::default()
            },
            &message.payload,
            message.properties.clone(),
        );
        let confirm = tokio::time::timeout(silence, publish)
            .await
            .map_err(|_| silent())??;
        confirms.push((message, confirm));
    }
    // Confirms come in publish order: each wait starts when the one before ended.
    let mut confirmed = Vec::with_capacity(confirms.len());
    for (message, confirm) in confirms {
        let confirmation = tokio::time::timeout(silence, confirm)
            .await
            .map_err(|_| silent())??;
        confirmed.push((message, confirmation));
    }
    Ok(confirmed)
}

/// A connection to RabbitMQ and a channel on it in confirm mode.
struct Publisher {
    connection: Connection,
    channel: Channel,
}

impl Publisher {
    async fn open(broker: &Broker) -> anyhow::Result<Self> {
        let (connection, channel) = broker.open_channel().await?;
        confirming(broker, &channel).await?;
        Ok(Publisher {
            connection,
            channel,
        })
    }

    /// Replaces the channel by a new one on the same connection.
    async fn renew(&mut self, broker: &Broker) -> anyhow::Result<()> {
        let bound = broker.connect_timeout();
        let channel = tokio::time::timeout(bound, self.connection.create_channel())
            .await
            .map_err(|_| anyhow::Error::new(Silent("a new channel", bound)))??;
        confirming(broker, &channel).await?;
        let old = std::mem::replace(&mut self.channel, channel);
        // Its refusals are answered already: nothing of ours is left on it.
        tokio::spawn(async move { old.close(200, "renewed".into()).await });
        Ok(())
    }
}

/// Puts `channel` in confirm mode, within the bound.
async fn confirming(broker: &Broker, channel: &Channel) -> anyhow::Result<()> {
    let bound = broker.connect_timeout();
    tokio::time::timeout(
        bound,
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .map_err(|_| anyhow::Error::new(Silent("confirm.select", bound)))??;
    Ok(())
}

/// RabbitMQ left a request (a publish, a confirm, a new channel) unanswered for the bound.
#[derive(Debug, thiserror::Error)]
#[error("RabbitMQ did not answer {0} within {1:?} (HERDGATE_AMQP_CONNECT_TIMEOUT)")]
struct Silent(&'static str, Duration);

/// A batch on its way to RabbitMQ, kept until it is confirmed.
struct Outgoing {
    ids: Vec<String>,
    kind: String,
    payload: Vec<u8>,
    properties: BasicProperties,
    spans: Vec<Span>,
}

/// An event with work becomes active; lost notices bring the scan forward.
fn heed(notice: Activity, active: &mut BTreeSet<i64>, next_scan: &mut Instant) {
    match notice {
        Activity::Event(event_id) => {
            active.insert(event_id);
        }
        Activity::Missed => *next_scan = Instant::now(),
    }
}

/// The outbox depth gauges, set only when a depth changed: a scan of a large,
/// quiet catalogue then touches no metric.
#[derive(Default)]
struct Depths(HashMap<i64, u64>);

impl Depths {
    fn record(&mut self, event_id: i64, depth: u64) {
        if self.0.insert(event_id, depth) != Some(depth) {
            metrics::gauge!(metric::OUTBOX_DEPTH, "event" => event_id.to_string())
                .set(depth as f64);
        }
    }
}

/// The outbox entries of one type read in one round, and the message they make.
struct Batch {
    ids: Vec<String>,
    message: HoldBatch,
}

impl Batch {
    fn new(kind: &str, event_id: i64) -> Self {
        Batch {
            ids: Vec::new(),
            message: HoldBatch::new(kind, event_id, Vec::new()),
        }
    }

    fn push(&mut self, id: &str, event: HoldEvent) {
        self.ids.push(id.to_string());
        self.message.events.push(event);
    }
}

/// A publish span for each event of `message` whose trace is exported: traced,
/// an event carries its publish span's context, so the writer's span is its
/// child; untraced, the context stored with the entry passes through.
fn trace(message: &mut HoldBatch, exchange: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    if !telemetry::exporting() {
        return spans;
    }
    for event in &mut message.events {
        let sampled = event.traceparent.as_deref();
        if !sampled.is_some_and(telemetry::context::is_sampled) {
            continue;
        }
        let span = spans::publish(exchange, event);
        if let Some(traceparent) = telemetry::context::traceparent(&span) {
            event.traceparent = Some(traceparent);
            spans.push(span);
        }
    }
    spans
}

/// Persistent JSON; the message id names the event and the batch's first and
/// last outbox entries, so a consumer can deduplicate a batch published again.
fn properties(event_id: i64, ids: &[String], occurred_at: DateTime<Utc>) -> BasicProperties {
    let first = ids.first().map_or("", String::as_str);
    let last = ids.last().map_or("", String::as_str);
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(format!("{event_id}:{first}:{last}").into())
        .with_timestamp(occurred_at.timestamp() as u64)
        .with_app_id("herdgate".into())
}
