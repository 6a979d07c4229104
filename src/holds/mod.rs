//! Redis: the key layout ([`keys`]), the Lua scripts in lua/ (one typed call
//! each) and every other command herdgate sends. Nothing outside this module
//! names a key, a hash field or a command, so each layout lives in one Rust
//! place and in its scripts.
//!
//! Every script is embedded with `include_str!`, run by EVALSHA through fred and
//! loaded again after NOSCRIPT, so a Redis restart or `SCRIPT FLUSH` never breaks
//! the gateway. Replies become Rust values here and nowhere else.

mod activity;
mod inventory;
pub mod keys;
mod loaded;
mod masters;
mod outbox;
mod queue;
mod reads;
mod replication;
mod transitions;

use std::{future::Future, sync::Arc};

use anyhow::Context;
use fred::{
    interfaces::ClientLike,
    prelude::{Client, Pool},
    types::{Value, scripts::Script},
};
use tracing::Instrument;

use crate::telemetry::spans;

pub use activity::{Activity, ActivityFeed};
pub use inventory::{EventEntry, RestoredHold, SeatEntry};
pub use keys::{EventKeys, Keys};
pub use outbox::OutboxEntry;
pub use queue::{RoomSettings, RoomStats, RoomWrite, RoomWritten, Visit, VisitKind};
pub use reads::{EventInfo, HoldState, SeatPage};
use replication::Replication;
pub use transitions::{HoldOutcome, PlaceHold, Transition};

/// `lua/<name>.lua`, with the number of KEYS its header declares.
macro_rules! script {
    ($name:literal, $keys:literal) => {
        ScriptDef {
            name: $name,
            source: include_str!(concat!("../../lua/", $name, ".lua")),
            keys: $keys,
        }
    };
}

/// A Lua file with the number of KEYS its header declares.
struct ScriptDef {
    name: &'static str,
    source: &'static str,
    keys: usize,
}

const LIST_AVAILABLE: ScriptDef = script!("list_available", 3);
const READ_EVENT: ScriptDef = script!("read_event", 2);
const PLACE_HOLD: ScriptDef = script!("place_hold", 13);
const SET_EVENT_STATUS: ScriptDef = script!("set_event_status", 1);
const EXPIRE_HOLD: ScriptDef = script!("expire_hold", 8);
const CONFIRM_HOLD: ScriptDef = script!("confirm_hold", 9);
const CANCEL_HOLD: ScriptDef = script!("cancel_hold", 10);
const RELEASE_LOCK: ScriptDef = script!("release_lock", 1);
const RESTORE_CONFIRM: ScriptDef = script!("restore_confirm", 4);
const WAITING_ROOM: ScriptDef = script!("waiting_room", 8);
const SET_ROOM: ScriptDef = script!("set_room", 1);

/// How long an ended hold's state stays in Redis for status reads; PostgreSQL answers after.
pub const HOLD_RETENTION_MS: i64 = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer in time, or the connection failed with the command
    /// on its way: whether it ran is unknown. The caller answers 503 and says so.
    #[error("redis unavailable: {0}")]
    Unavailable(#[from] fred::error::Error),
    /// No connection to Redis at the moment of the call, so nothing was sent:
    /// certainly not run. Answered at once (503) instead of waiting for the
    /// command timeout while the client reconnects.
    #[error("redis unreachable: not connected, nothing sent")]
    Disconnected,
    /// On a cluster, the slot of the keys is migrating to another master and
    /// the command was refused (TRYAGAIN: its keys are split between the two;
    /// ASK: they are on the new one): certainly not run.
    #[error("redis slot migrating, command not run: {0}")]
    Moving(fred::error::Error),
    /// A script or command answered in a shape this code does not know: a
    /// bug, not load.
    #[error("unexpected reply from {call}: {reply}")]
    Reply { call: &'static str, reply: String },
    /// The change is made on the master, but `confirmed` (none: the barrier
    /// could not run) of the `wanted` replicas acknowledged it within
    /// `HERDGATE_REDIS_REPLICA_TIMEOUT`: it might not survive a failover.
    /// The same request again finds it, and answers once it is replicated.
    #[error(
        "written on the master, not known to be on {wanted} replica(s): {confirmed:?} acknowledged"
    )]
    Unreplicated { wanted: u32, confirmed: Option<i64> },
}

/// The Redis side of herdgate: a connection pool, the key layout and the scripts.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// On a cluster, a pool per master for each event's own commands (see
    /// [`masters`]); `None` on a single Redis.
    masters: Option<Arc<masters::Masters>>,
    keys: Keys,
    /// Barriers a change the buyer is told about waits for (see
    /// [`replication`]); `None` with `HERDGATE_REDIS_MIN_REPLICAS` 0.
    replication: Option<Arc<Replication>>,
    list_available: Script,
    read_event: Script,
    place_hold: Script,
    set_event_status: Script,
    expire_hold: Script,
    confirm_hold: Script,
    cancel_hold: Script,
    release_lock: Script,
    restore_confirm: Script,
    waiting_room: Script,
    set_room: Script,
}

impl Store {
    pub fn new(pool: Pool, keys: Keys) -> Self {
        Store {
            pool,
            masters: None,
            keys,
            replication: None,
            list_available: Script::from_lua(LIST_AVAILABLE.source),
            read_event: Script::from_lua(READ_EVENT.source),
            place_hold: Script::from_lua(PLACE_HOLD.source),
            set_event_status: Script::from_lua(SET_EVENT_STATUS.source),
            expire_hold: Script::from_lua(EXPIRE_HOLD.source),
            confirm_hold: Script::from_lua(CONFIRM_HOLD.source),
            cancel_hold: Script::from_lua(CANCEL_HOLD.source),
            release_lock: Script::from_lua(RELEASE_LOCK.source),
            restore_confirm: Script::from_lua(RESTORE_CONFIRM.source),
            waiting_room: Script::from_lua(WAITING_ROOM.source),
            set_room: Script::from_lua(SET_ROOM.source),
        }
    }

    /// Connects to `REDIS_URL` (it must answer now) with the configured key prefix.
    pub async fn connect(config: &crate::config::RedisConfig) -> anyhow::Result<Self> {
        let pool = config
            .connect()
            .await
            .context("failed to connect to Redis (REDIS_URL)")?;
        Ok(Store::new(pool, Keys::new(config.prefix.clone())).with_masters(config))
    }

    /// Adds the replication barriers `config` asks for (none when its
    /// `min_replicas` is 0), on a client of their own connected now.
    pub async fn with_replication(
        mut self,
        config: &crate::config::RedisConfig,
    ) -> anyhow::Result<Self> {
        if config.min_replicas > 0 {
            let client = config
                .connect_barriers()
                .await
                .context("failed to connect the replication barriers to Redis (REDIS_URL)")?;
            let replication =
                Replication::new(client, self.masters.clone(), config, self.keys.clone());
            replication.check_replicas().await;
            self.replication = Some(replication);
        }
        Ok(self)
    }

    /// Once the changes of `event_id` Redis answered so far are on enough
    /// replicas; at once when replication is not asked for.
    async fn replicated(&self, event_id: i64) -> Result<(), StoreError> {
        match &self.replication {
            Some(replication) => replication.replicated(event_id).await,
            None => Ok(()),
        }
    }

    /// Like [`Store::connect`], without waiting for Redis to answer.
    pub fn connect_in_background(config: &crate::config::RedisConfig) -> anyhow::Result<Self> {
        let pool = config
            .connect_in_background()
            .context("failed to set up Redis (REDIS_URL)")?;
        Ok(Store::new(pool, Keys::new(config.prefix.clone())).with_masters(config))
    }

    /// On a cluster, sends each event's own commands to its master directly.
    fn with_masters(mut self, config: &crate::config::RedisConfig) -> Self {
        if config.is_cluster() {
            let masters = masters::Masters::new(self.pool.clone(), config.clone());
            self.masters = Some(Arc::new(masters));
        }
        self
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connected client of the pool when there is one (background work may
    /// wait on it for a reconnect; requests use [`Store::live_client`]).
    fn client(&self) -> &Client {
        self.pool.next_connected()
    }

    /// A connected client, or [`StoreError::Disconnected`] at once: while the
    /// client knows Redis is down (refused, closed), a request fails fast
    /// rather than waiting the command timeout for a reconnect.
    fn live_client(&self) -> Result<&Client, StoreError> {
        let client = self.pool.next_connected();
        if client.is_connected() {
            Ok(client)
        } else {
            Err(StoreError::Disconnected)
        }
    }

    /// Runs `call` on a connected client of the master serving `key`'s slot
    /// (on a single Redis, of the pool). On a cluster, a call the master
    /// refused with MOVED (not run) is sent again to the new master, or
    /// through the cluster client, which follows the redirect; one refused
    /// with ASK or TRYAGAIN, its slot migrating, is [`StoreError::Moving`]. See
    /// [`masters`]. Without a client of the master (or of the pool) connected,
    /// [`StoreError::Disconnected`] at once, as [`Store::live_client`] does.
    async fn on_master_of<T, F, Fut>(&self, key: &str, call: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, fred::error::Error>>,
    {
        self.on_master(key, call, false).await
    }

    /// [`Store::on_master_of`] for background work: on a single Redis (or
    /// through the cluster client) it waits for a reconnect, as
    /// [`Store::client`] does, rather than failing at once.
    async fn on_master_of_waiting<T, F, Fut>(&self, key: &str, call: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, fred::error::Error>>,
    {
        self.on_master(key, call, true).await
    }

    async fn on_master<T, F, Fut>(&self, key: &str, call: F, wait: bool) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, fred::error::Error>>,
    {
        if let Some(masters) = &self.masters
            && let Some(client) = masters.client_for(key).await?
        {
            let mut reply = call(client).await;
            if let Err(e) = &reply
                && e.details().starts_with("MOVED ")
                && let Some(client) = masters.moved(key, e).await?
            {
                reply = call(client).await;
            }
            match reply {
                Err(e) if masters::migrating(&e) => return Err(StoreError::Moving(e)),
                Err(e) if masters::redirected(&e) => {
                    tracing::debug!(error = %e, "redirected: sent again through the cluster client");
                }
                reply => return Ok(reply?),
            }
        }
        let client = match wait {
            true => self.client(),
            false => self.live_client()?,
        };
        Ok(call(client.clone()).await?)
    }

    /// Redis answers: on a cluster, one of the masters the gateway uses.
    pub async fn ping(&self) -> Result<(), StoreError> {
        if let Some(masters) = &self.masters
            && let Some(answer) = masters.ping().await
        {
            return answer;
        }
        self.live_client()?.ping::<()>(None).await?;
        Ok(())
    }

    /// Deletes `key` only while it still holds `token`; true when released.
    async fn release_lock(&self, key: String, token: &str) -> Result<bool, StoreError> {
        let reply = self
            .eval(
                &RELEASE_LOCK,
                &self.release_lock,
                vec![key],
                vec![token.to_string()],
            )
            .await?;
        Ok(reply.as_i64() == Some(1))
    }

    /// Makes a hold Redis has as PENDING the CONFIRMED booking PostgreSQL
    /// stored after a rebuild (see `restore_confirm.lua`); true when it did.
    /// False for a hold PostgreSQL has not confirmed.
    pub async fn restore_confirm(
        &self,
        event_id: i64,
        hold: &RestoredHold,
    ) -> Result<bool, StoreError> {
        let Some(confirmed_ms) = hold.confirmed_ms else {
            return Ok(false);
        };
        let k = self.keys.event(event_id);
        let reply = self
            .eval(
                &RESTORE_CONFIRM,
                &self.restore_confirm,
                vec![
                    k.hold(&hold.booking_id),
                    k.lock(hold.seat_id),
                    k.holds(),
                    k.user_holds(hold.user_id),
                ],
                vec![
                    hold.booking_id.clone(),
                    hold.version.to_string(),
                    hold.seq.to_string(),
                    confirmed_ms.to_string(),
                ],
            )
            .await?;
        Ok(reply.as_i64() == Some(1))
    }

    async fn eval(
        &self,
        def: &ScriptDef,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, StoreError> {
        debug_assert_eq!(keys.len(), def.keys, "{} takes {} keys", def.name, def.keys);
        let started = std::time::Instant::now();
        let (first, keys, args) = (keys[0].clone(), &keys, &args);
        let call = self.on_master_of(&first, |client| async move {
            script
                .evalsha_with_reload::<Value, _, _>(&client, keys.clone(), args.clone())
                .await
        });
        // Only inside a kept trace: a dropped request pays for no span.
        let traced = crate::telemetry::exporting() && crate::telemetry::context::in_sampled_span();
        let reply = match traced {
            true => call.instrument(spans::script(def.name)).await,
            false => call.await,
        };
        metrics::histogram!(crate::metric::SCRIPT_DURATION, "script" => def.name)
            .record(started.elapsed());
        reply
    }
}

/// A `status` field of a hash, read by a command rather than a script.
fn status_field<T>(text: String) -> Result<T, StoreError>
where
    T: std::str::FromStr<Err = crate::status::UnknownStatus>,
{
    text.parse().map_err(|_| StoreError::Reply {
        call: "HGET status",
        reply: text,
    })
}

fn reply_error(def: &ScriptDef, reply: &Value) -> StoreError {
    StoreError::Reply {
        call: def.name,
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
        for def in [
            &LIST_AVAILABLE,
            &READ_EVENT,
            &PLACE_HOLD,
            &SET_EVENT_STATUS,
            &EXPIRE_HOLD,
            &CONFIRM_HOLD,
            &CANCEL_HOLD,
            &RELEASE_LOCK,
            &RESTORE_CONFIRM,
            &WAITING_ROOM,
            &SET_ROOM,
        ] {
            assert!(def.source.starts_with(&format!("--[[ {}:", def.name)));
            assert_eq!(declared_keys(def.source), def.keys, "{}", def.name);
        }
    }
}
