//! The transactional outbox: each event's stream of hold events not yet in
//! PostgreSQL, read by the relays as one consumer group and cleared by the writer.

use std::{collections::HashMap, time::Duration};

use fred::{
    interfaces::{KeysInterface, StreamsInterface},
    prelude::Client,
    types::Value,
};

use super::{Store, StoreError};

/// An outbox entry: its stream id and its fields (none for an entry deleted
/// while it was pending).
pub type OutboxEntry = (String, HashMap<String, String>);

/// The relays' consumer group on every outbox.
const GROUP: &str = "relay";

impl Store {
    /// Entries in one event's outbox: not yet relayed, or relayed and not yet
    /// in PostgreSQL.
    pub async fn outbox_depth(&self, event_id: i64) -> Result<u64, StoreError> {
        let outbox = self.keys.event(event_id).outbox();
        let depth = |c: Client| {
            let outbox = outbox.clone();
            async move { c.xlen(outbox).await }
        };
        self.on_master_of_waiting(&self.keys.event(event_id).outbox(), depth)
            .await
    }

    /// Deletes outbox entries PostgreSQL holds now (the writer committed them).
    pub async fn clear_outbox(&self, event_id: i64, ids: Vec<String>) -> Result<(), StoreError> {
        let outbox = self.keys.event(event_id).outbox();
        let clear = |c: Client| {
            let (outbox, ids) = (outbox.clone(), ids.clone());
            async move { c.xdel(outbox, ids).await }
        };
        self.on_master_of(&self.keys.event(event_id).outbox(), clear)
            .await
    }

    /// Up to `count` outbox entries appended before `before_ms` (Redis's clock
    /// names the entries), after entry `after` (exclusive) or from the start.
    pub async fn outbox_entries_before(
        &self,
        event_id: i64,
        before_ms: i64,
        after: Option<&str>,
        count: u64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let outbox = self.keys.event(event_id).outbox();
        let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
        // Entry ids are `<ms>-<n>`: every entry of an earlier millisecond.
        let end = format!("({before_ms}-0");
        let range = |c: Client| {
            let (outbox, start, end) = (outbox.clone(), start.clone(), end.clone());
            async move { c.xrange(outbox, start, end, Some(count)).await }
        };
        self.on_master_of_waiting(&self.keys.event(event_id).outbox(), range)
            .await
    }

    /// Has the next entry of the event announced on the activity channel: the
    /// relay calls it once it has read everything, then reads once more.
    pub async fn announce_outbox_again(&self, event_id: i64) -> Result<(), StoreError> {
        let announced = self.keys.event(event_id).outbox_announced();
        let again = |c: Client| {
            let announced = announced.clone();
            async move { c.del(announced).await }
        };
        self.on_master_of_waiting(&self.keys.event(event_id).outbox(), again)
            .await
    }

    /// Every loaded event with the depth of its outbox, pipelined.
    pub async fn outbox_depths(&self) -> Result<Vec<(i64, u64)>, StoreError> {
        let events = self.loaded_events().await?;
        let depths: Vec<u64> = self
            .pipelined(&events, |p, k| async move { p.xlen(k.outbox()).await })
            .await?;
        Ok(events.into_iter().zip(depths).collect())
    }

    /// Makes sure the event's outbox has the relays' group (from its first
    /// entry), creating the stream if need be.
    pub async fn join_outbox_group(&self, event_id: i64) -> Result<(), StoreError> {
        let outbox = self.keys.event(event_id).outbox();
        let created = self.on_master_of_waiting(&outbox, |c| {
            let outbox = outbox.clone();
            async move {
                match c
                    .xgroup_create::<(), _, _, _>(outbox, GROUP, "0", true)
                    .await
                {
                    Err(e) if e.details().starts_with("BUSYGROUP") => Ok(()),
                    result => result,
                }
            }
        });
        created.await
    }

    /// Up to `count` entries for `relay`: new ones, or with `pending` those it
    /// read before and has not acked.
    pub async fn read_outbox(
        &self,
        event_id: i64,
        relay: &str,
        count: usize,
        pending: bool,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let outbox = self.keys.event(event_id).outbox();
        let from = if pending { "0" } else { ">" };
        let reply: Value = self
            .on_master_of_waiting(&outbox, |c| {
                let outbox = outbox.clone();
                let relay = relay.to_string();
                async move {
                    c.xreadgroup(GROUP, relay, Some(count as u64), None, false, outbox, from)
                        .await
                }
            })
            .await?;
        // Read by hand: with fred's typed `xreadgroup_map` instead, the relay read
        // no entries at all (tests/it/durable.rs timed out, 2026-12-02).
        entries(&reply).ok_or_else(|| StoreError::Reply {
            call: "XREADGROUP",
            reply: format!("{reply:?}"),
        })
    }

    /// Gives `relay` up to `count` entries other relays read and have not
    /// acked for `idle`; true if it took any.
    pub async fn claim_outbox(
        &self,
        event_id: i64,
        relay: &str,
        idle: Duration,
        count: usize,
    ) -> Result<bool, StoreError> {
        let outbox = self.keys.event(event_id).outbox();
        // JUSTID: `[next-start, [id, ...], [deleted-id, ...]]`.
        let idle_ms = idle.as_millis() as u64;
        let reply: Value = self
            .on_master_of_waiting(&outbox, |c| {
                let outbox = outbox.clone();
                let relay = relay.to_string();
                async move {
                    c.xautoclaim(
                        outbox,
                        GROUP,
                        relay,
                        idle_ms,
                        "0-0",
                        Some(count as u64),
                        true,
                    )
                    .await
                }
            })
            .await?;
        Ok(match &reply {
            Value::Array(parts) => parts
                .get(1)
                .is_some_and(|ids| !matches!(ids, Value::Array(a) if a.is_empty())),
            _ => false,
        })
    }

    /// Removes from the group every relay but `relay` that holds no entry and
    /// has been idle past `idle` (a stopped one: each session joins under a
    /// new name), so the group does not grow with every restart.
    pub async fn forget_idle_relays(
        &self,
        event_id: i64,
        relay: &str,
        idle: Duration,
    ) -> Result<(), StoreError> {
        let outbox = self.keys.event(event_id).outbox();
        let idle_ms = idle.as_millis() as i64;
        let forget = |client: Client| {
            let outbox = outbox.clone();
            async move {
                let consumers: Vec<HashMap<String, Value>> =
                    client.xinfo_consumers(&outbox, GROUP).await?;
                for consumer in consumers {
                    let field = |name: &str| consumer.get(name).and_then(Value::as_i64);
                    let Some(name) = consumer.get("name").and_then(Value::as_string) else {
                        continue;
                    };
                    if name != relay
                        && field("pending") == Some(0)
                        && field("idle").is_some_and(|idle| idle > idle_ms)
                    {
                        client
                            .xgroup_delconsumer::<(), _, _, _>(&outbox, GROUP, name)
                            .await?;
                    }
                }
                Ok(())
            }
        };
        self.on_master_of_waiting(&self.keys.event(event_id).outbox(), forget)
            .await
    }

    /// Acks `done` in the group, after deleting `dropped` (entries no writer
    /// will delete) and acking them too.
    pub async fn settle_outbox(
        &self,
        event_id: i64,
        mut done: Vec<String>,
        dropped: Vec<String>,
    ) -> Result<(), StoreError> {
        let outbox = self.keys.event(event_id).outbox();
        done.extend(dropped.iter().cloned());
        let settle = |client: Client| {
            let (outbox, done, dropped) = (outbox.clone(), done.clone(), dropped.clone());
            async move {
                if !dropped.is_empty() {
                    // Delete before the ack: one deleted but still pending comes
                    // back without fields and is acked as such.
                    client.xdel::<(), _, _>(&outbox, dropped).await?;
                }
                if !done.is_empty() {
                    client.xack::<(), _, _, _>(&outbox, GROUP, done).await?;
                }
                Ok(())
            }
        };
        self.on_master_of_waiting(&self.keys.event(event_id).outbox(), settle)
            .await
    }
}

/// Entries of a one-stream XREADGROUP reply: `[[stream, [[id, [f, v, ...]], ...]]]`.
fn entries(reply: &Value) -> Option<Vec<OutboxEntry>> {
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
