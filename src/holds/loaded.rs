//! The loaded events: the set of events whose outbox the relay drains and whose
//! holds the sweeper expires, and what is read of every one of them at once.

use fred::{
    clients::Client,
    interfaces::{HashesInterface, SetsInterface, SortedSetsInterface, StreamsInterface},
};

use super::{EventKeys, Store, StoreError, keys::event_field, status_field};
use crate::status::EventStatus;

/// Commands in flight at once when visiting every event.
const AT_ONCE: usize = 1_000;

impl Store {
    /// The events whose outbox the relay drains and whose holds the sweeper
    /// expires: every event loaded here, until it is off sale and finished.
    pub async fn loaded_events(&self) -> Result<Vec<i64>, StoreError> {
        Ok(self.client().smembers(self.keys.outboxes()).await?)
    }

    /// Has the relay drain and the sweeper watch these events (`outboxes`).
    pub async fn watch_events(&self, events: &[i64]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        Ok(self
            .client()
            .sadd(self.keys.outboxes(), events.to_vec())
            .await?)
    }

    /// Of `events`, none on sale in PostgreSQL, stops watching those with
    /// nothing left to relay or expire: not on sale in Redis either, an empty
    /// outbox and no live hold. No script can then add an entry (a hold needs
    /// the event on sale, ending one needs it live), so nothing is missed; the
    /// loader watches an event again once it is back on sale. Returns those.
    pub async fn forget_finished_events(&self, events: &[i64]) -> Result<Vec<i64>, StoreError> {
        let statuses = self.event_statuses(events).await?;
        let depths: Vec<u64> = self
            .pipelined(events, |p, k| async move { p.xlen(k.outbox()).await })
            .await?;
        let live: Vec<u64> = self
            .pipelined(events, |p, k| async move { p.zcard(k.holds()).await })
            .await?;
        let finished: Vec<i64> = events
            .iter()
            .zip(statuses.iter().zip(depths.iter().zip(&live)))
            .filter(|(_, (status, (depth, live)))| {
                **status != Some(EventStatus::OnSale) && **depth == 0 && **live == 0
            })
            .map(|(&id, _)| id)
            .collect();
        if !finished.is_empty() {
            self.client()
                .srem::<(), _, _>(self.keys.outboxes(), finished.clone())
                .await?;
        }
        Ok(finished)
    }

    /// How many events are watched (the `outboxes` set's size).
    pub async fn loaded_event_count(&self) -> Result<u64, StoreError> {
        Ok(self.client().scard(self.keys.outboxes()).await?)
    }

    /// When the event's first live hold falls due (ms since epoch), if it has one.
    pub async fn first_due(&self, event_id: i64) -> Result<Option<i64>, StoreError> {
        let head: Vec<(String, f64)> = self
            .client()
            .zrange(
                self.keys.event(event_id).holds(),
                0,
                0,
                None,
                false,
                None,
                true,
            )
            .await?;
        Ok(head.first().map(|(_, due)| *due as i64))
    }

    /// [`Store::first_due`] of every loaded event, pipelined.
    pub async fn first_due_all(&self) -> Result<Vec<(i64, Option<i64>)>, StoreError> {
        let events = self.loaded_events().await?;
        let heads: Vec<Vec<(String, f64)>> = self
            .pipelined(&events, |p, k| async move {
                p.zrange(k.holds(), 0, 0, None, false, None, true).await
            })
            .await?;
        Ok(events
            .into_iter()
            .zip(heads)
            .map(|(id, head)| (id, head.first().map(|(_, due)| *due as i64)))
            .collect())
    }

    /// The status each event has in Redis, `None` for one not loaded, pipelined.
    pub async fn event_statuses(
        &self,
        events: &[i64],
    ) -> Result<Vec<Option<EventStatus>>, StoreError> {
        let texts: Vec<Option<String>> = self
            .pipelined(events, |p, k| async move {
                p.hget(k.event(), event_field::STATUS).await
            })
            .await?;
        texts
            .into_iter()
            .map(|text| text.map(status_field).transpose())
            .collect()
    }

    /// One command per event, `AT_ONCE` at a time; the replies in order.
    ///
    /// Sent as concurrent commands rather than as a fred `Pipeline`: fred
    /// pipelines concurrent commands on its connections anyway, and each one
    /// goes to its event's master (see `masters`) and follows MOVED on its own. A
    /// `Pipeline` spanning several events' slots timed out on every call after
    /// one of those slots moved to another master (tests/it/redis_cluster.rs).
    pub(super) async fn pipelined<T, F, Fut>(
        &self,
        events: &[i64],
        send: F,
    ) -> Result<Vec<T>, StoreError>
    where
        F: Fn(Client, EventKeys) -> Fut,
        Fut: Future<Output = Result<T, fred::error::Error>>,
    {
        let mut replies = Vec::with_capacity(events.len());
        for chunk in events.chunks(AT_ONCE) {
            let sent = chunk.iter().map(|&event_id| {
                let k = self.keys.event(event_id);
                let send = &send;
                async move {
                    let event = k.event();
                    self.on_master_of_waiting(&event, |c| send(c, self.keys.event(event_id)))
                        .await
                }
            });
            for reply in futures::future::join_all(sent).await {
                replies.push(reply?);
            }
        }
        Ok(replies)
    }
}
