//! Redis: the key layout ([`keys`]) and the Lua scripts in lua/, one typed call each.
//!
//! Every script is embedded with `include_str!`, run by EVALSHA through fred and
//! loaded again after NOSCRIPT, so a Redis restart or `SCRIPT FLUSH` never breaks
//! the gateway. Replies become Rust values here and nowhere else.

pub mod keys;

use bytes::Bytes;
use fred::{
    interfaces::ClientLike,
    prelude::{Client, Pool},
    types::{Value, scripts::Script},
};

pub use keys::{EventKeys, Keys};

/// A Lua file with the number of KEYS its header declares.
struct ScriptDef {
    name: &'static str,
    source: &'static str,
    keys: usize,
}

const LIST_AVAILABLE: ScriptDef = ScriptDef {
    name: "list_available",
    source: include_str!("../../lua/list_available.lua"),
    keys: 3,
};

const READ_EVENT: ScriptDef = ScriptDef {
    name: "read_event",
    source: include_str!("../../lua/read_event.lua"),
    keys: 2,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer in time or is unreachable; the caller answers 503.
    #[error("redis unavailable: {0}")]
    Unavailable(#[from] fred::error::Error),
    /// A script answered in a shape this code does not know: a bug, not load.
    #[error("unexpected reply from script {script}: {reply}")]
    Reply { script: &'static str, reply: String },
}

/// One page of available seats.
#[derive(Debug, Clone)]
pub struct SeatPage {
    /// Every available seat of the event, not just this page.
    pub count: u64,
    /// Each seat's JSON object, ready to be joined into a response.
    pub seats: Vec<Bytes>,
    /// The id of the page's last seat: `after` for the next page.
    pub last_id: Option<i64>,
}

/// An on-sale event as Redis holds it.
#[derive(Debug, Clone)]
pub struct EventInfo {
    pub name: String,
    pub venue: String,
    pub starts_at: String,
    pub total_seats: u64,
    pub status: String,
    pub available: u64,
}

/// The Redis side of herdgate: a connection pool, the key layout and the scripts.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    keys: Keys,
    list_available: Script,
    read_event: Script,
}

impl Store {
    pub fn new(pool: Pool, keys: Keys) -> Self {
        Store {
            pool,
            keys,
            list_available: Script::from_lua(LIST_AVAILABLE.source),
            read_event: Script::from_lua(READ_EVENT.source),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn client(&self) -> &Client {
        self.pool.next()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client().ping::<()>(None).await?;
        Ok(())
    }

    /// One page of an event's available seats; `None` when the event is not loaded.
    pub async fn list_available(
        &self,
        event_id: i64,
        after: i64,
        limit: u32,
    ) -> Result<Option<SeatPage>, StoreError> {
        let k = self.keys.event(event_id);
        let reply = self
            .eval(
                &LIST_AVAILABLE,
                &self.list_available,
                vec![k.event(), k.available(), k.seats()],
                vec![after.to_string(), limit.to_string()],
            )
            .await?;
        let bad = || reply_error(&LIST_AVAILABLE, &reply);
        let Value::Array(items) = &reply else {
            return Err(bad());
        };
        match items.first().and_then(Value::as_i64) {
            Some(0) => return Ok(None),
            Some(1) if items.len() >= 3 => {}
            _ => return Err(bad()),
        }
        let count = items[1].as_u64().ok_or_else(bad)?;
        let last_id = items[2].as_i64().ok_or_else(bad)?;
        let seats = items[3..]
            .iter()
            .map(|v| v.as_bytes().map(Bytes::copy_from_slice).ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        Ok(Some(SeatPage {
            count,
            seats,
            last_id: (last_id > 0).then_some(last_id),
        }))
    }

    /// The event as loaded into Redis with its live available count; `None` when
    /// it is not loaded (unknown, or not on sale).
    pub async fn read_event(&self, event_id: i64) -> Result<Option<EventInfo>, StoreError> {
        let k = self.keys.event(event_id);
        let reply = self
            .eval(
                &READ_EVENT,
                &self.read_event,
                vec![k.event(), k.available()],
                Vec::new(),
            )
            .await?;
        let bad = || reply_error(&READ_EVENT, &reply);
        let Value::Array(items) = &reply else {
            return Err(bad());
        };
        if items.is_empty() {
            return Ok(None);
        }
        let [name, venue, starts_at, total, status, available] = &items[..] else {
            return Err(bad());
        };
        let text = |v: &Value| v.as_string().ok_or_else(bad);
        Ok(Some(EventInfo {
            name: text(name)?,
            venue: text(venue)?,
            starts_at: text(starts_at)?,
            total_seats: total.as_u64().ok_or_else(bad)?,
            status: text(status)?,
            available: available.as_u64().ok_or_else(bad)?,
        }))
    }

    async fn eval(
        &self,
        def: &ScriptDef,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, StoreError> {
        debug_assert_eq!(keys.len(), def.keys, "{} takes {} keys", def.name, def.keys);
        Ok(script
            .evalsha_with_reload::<Value, _, _>(self.client(), keys, args)
            .await?)
    }
}

fn reply_error(def: &ScriptDef, reply: &Value) -> StoreError {
    StoreError::Reply {
        script: def.name,
        reply: format!("{reply:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The highest `KEYS[n]` a script's header mentions.
    fn declared_keys(source: &str) -> usize {
        let header = source.split("]]").next().unwrap();
        header
            .match_indices("KEYS[")
            .filter_map(|(at, _)| {
                let rest = &header[at + 5..];
                rest[..rest.find(']')?].parse::<usize>().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn each_wrapper_passes_as_many_keys_as_its_header_lists() {
        for def in [&LIST_AVAILABLE, &READ_EVENT] {
            assert!(def.source.starts_with(&format!("--[[ {}:", def.name)));
            assert_eq!(declared_keys(def.source), def.keys, "{}", def.name);
        }
    }
}
