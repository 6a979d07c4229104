//! Group commit: a change the buyer is told about (a hold, a confirm, a
//! cancel) is answered only once `HERDGATE_REDIS_MIN_REPLICAS` replicas of its
//! master have it, so a failover right after the answer cannot lose it.
//!
//! A *barrier* is a write on a client of its own (a short-lived
//! [`EventKeys::barrier`] key) followed by `WAIT n ms` on the same connection:
//! Redis answers `WAIT` once `n` replicas have acknowledged that connection's
//! last write, hence every write the master applied before it, whichever
//! connection sent it. Every change whose script had answered before a
//! barrier's write started is covered by that barrier. One barrier is in
//! flight per master; changes that arrive meanwhile wait for the next one, so
//! under a herd one `WAIT` covers many holds.
//!
//! Why not a `WAIT` per hold on the request pool: fred stops pipelining on a
//! connection while `WAIT` blocks it, and a pooled connection that wrote
//! nothing of its own returns from `WAIT` at once, covering nothing.
//!
//! [`EventKeys::barrier`]: super::EventKeys::barrier

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fred::{
    interfaces::{ClientLike, ClusterInterface, KeysInterface},
    prelude::Client,
    types::{ClusterHash, CustomCommand, Expiration, config::Server},
};
use tokio::sync::watch;

use super::{Keys, StoreError, masters::Masters};
use crate::{config::RedisConfig, metric};

/// How long a barrier key outlives its barrier (it only needs to be written).
const BARRIER_KEY_TTL_MS: i64 = 10_000;

/// What one barrier found.
#[derive(Debug, Clone)]
enum Outcome {
    /// `WAIT` counted at least the replicas asked for.
    Replicated,
    /// `WAIT` timed out with this many replicas.
    Short(i64),
    /// The barrier could not run (no connection, an error, a moved slot).
    Failed,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Replicated => "replicated",
            Outcome::Short(_) => "short",
            Outcome::Failed => "failed",
        }
    }
}

/// The changes waiting for the next barrier of one master.
struct Next {
    /// A key in the slot of the first change waiting, so on that master.
    key: String,
    /// Their number, for the metric.
    changes: usize,
    done: watch::Sender<Option<Outcome>>,
}

#[derive(Default)]
struct Master {
    state: Mutex<MasterState>,
}

#[derive(Default)]
struct MasterState {
    next: Option<Next>,
    /// A task is running this master's barriers, one after the other.
    running: bool,
}

/// Barriers for every master, on a client of their own.
pub struct Replication {
    client: Client,
    keys: Keys,
    min_replicas: u32,
    timeout: Duration,
    cluster: bool,
    /// By master; `None` on a single Redis (or before the routing table is known).
    masters: Mutex<HashMap<Option<Server>, Arc<Master>>>,
    /// On a cluster, which master serves a slot: the map the requests follow.
    routing: Option<Arc<Masters>>,
    /// On a cluster, a client of each master's own for its barriers: fred's
    /// cluster client reconnects as a whole when one master drops, and every
    /// master's barriers would fail until the promotion (see [`Masters`]).
    nodes: Mutex<HashMap<Server, Client>>,
    config: RedisConfig,
}

impl Replication {
    pub fn new(
        client: Client,
        routing: Option<Arc<Masters>>,
        config: &RedisConfig,
        keys: Keys,
    ) -> Arc<Self> {
        let cluster = client.is_clustered();
        Arc::new(Replication {
            client,
            keys,
            min_replicas: config.min_replicas,
            timeout: config.replica_timeout,
            cluster,
            masters: Mutex::new(HashMap::new()),
            routing,
            nodes: Mutex::new(HashMap::new()),
            config: config.clone(),
        })
    }

    /// Warns about each master with fewer replicas connected than required
    /// now: its every change would be answered 503 until they connect.
    pub async fn check_replicas(&self) {
        let masters = match self.cluster {
            true => self
                .client
                .cached_cluster_state()
                .map(|routing| {
                    routing
                        .unique_primary_nodes()
                        .into_iter()
                        .map(Some)
                        .collect()
                })
                .unwrap_or_default(),
            false => vec![None],
        };
        for master in masters {
            let info = CustomCommand::new_static("INFO", ClusterHash::Random, false);
            let reply: Result<String, _> = match &master {
                Some(node) => {
                    let pinned = self.client.with_cluster_node(node);
                    pinned.custom(info, vec!["replication"]).await
                }
                None => self.client.custom(info, vec!["replication"]).await,
            };
            let connected = reply.ok().and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("connected_slaves:"))
                    .and_then(|n| n.trim().parse::<u32>().ok())
            });
            let master = master.map(|m| m.to_string()).unwrap_or_default();
            match connected {
                Some(n) if n >= self.min_replicas => {}
                Some(n) => tracing::warn!(
                    master,
                    connected = n,
                    required = self.min_replicas,
                    "fewer Redis replicas than HERDGATE_REDIS_MIN_REPLICAS: holds, confirms \
                     and cancels will be answered 503 not-replicated until they connect"
                ),
                None => tracing::warn!(master, "could not count the Redis replicas"),
            }
        }
    }

    /// Returns once a barrier that started after this call covered a change of
    /// `event_id` already answered by its master; or says it could not.
    pub async fn replicated(self: &Arc<Self>, event_id: i64) -> Result<(), StoreError> {
        let key = self.keys.event(event_id).barrier();
        let node = self.master_of(&key);
        let mut done = {
            let master = self
                .masters
                .lock()
                .expect("not poisoned")
                .entry(node.clone())
                .or_default()
                .clone();
            let mut state = master.state.lock().expect("not poisoned");
            let next = state.next.get_or_insert_with(|| Next {
                key,
                changes: 0,
                done: watch::channel(None).0,
            });
            next.changes += 1;
            let done = next.done.subscribe();
            if !state.running {
                state.running = true;
                // A task of its own: a request given up mid-wait never strands the others.
                tokio::spawn(self.clone().run(node, master.clone()));
            }
            done
        };
        let outcome = match done.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().expect("waited for Some"),
            Err(_) => Outcome::Failed,
        };
        match outcome {
            Outcome::Replicated => Ok(()),
            Outcome::Short(replicas) => Err(StoreError::Unreplicated {
                wanted: self.min_replicas,
                confirmed: Some(replicas),
            }),
            Outcome::Failed => Err(StoreError::Unreplicated {
                wanted: self.min_replicas,
                confirmed: None,
            }),
        }
    }

    /// The master serving `key`'s slot, as the requests' map has it (else
    /// this client's routing table).
    fn master_of(&self, key: &str) -> Option<Server> {
        if !self.cluster {
            return None;
        }
        if let Some(owner) = self.routing.as_ref().and_then(|r| r.owner_of(key)) {
            return Some(owner);
        }
        let slot = fred::util::redis_keyslot(key.as_bytes());
        self.client
            .cached_cluster_state()
            .and_then(|routing| routing.get_server(slot).cloned())
    }

    /// Runs barriers for one master until no change waits.
    async fn run(self: Arc<Self>, node: Option<Server>, master: Arc<Master>) {
        loop {
            // Taken before the barrier's write is sent: every change in it was
            // answered by Redis before that write.
            let next = {
                let mut state = master.state.lock().expect("not poisoned");
                match state.next.take() {
                    Some(next) => next,
                    None => {
                        state.running = false;
                        return;
                    }
                }
            };
            let started = Instant::now();
            let outcome = self.barrier(node.as_ref(), &next.key).await;
            metrics::histogram!(metric::REPLICATION_WAIT).record(started.elapsed());
            metrics::histogram!(metric::REPLICATION_COVERED).record(next.changes as f64);
            metrics::counter!(metric::REPLICATION_BARRIERS, "outcome" => outcome.label())
                .increment(1);
            next.done.send_replace(Some(outcome));
        }
    }

    /// One write and one `WAIT`, both on `node`'s connection (pinned: should
    /// the slot have moved, the write fails with MOVED rather than covering
    /// another master), or on the only connection of a single Redis.
    async fn barrier(&self, node: Option<&Server>, key: &str) -> Outcome {
        let result = match node {
            Some(node) if self.routing.is_some() => {
                let (client, new) = match self.node_client(node) {
                    Ok(made) => made,
                    Err(error) => {
                        tracing::warn!(%error, master = %node, "replication barrier failed");
                        return Outcome::Failed;
                    }
                };
                if new {
                    // A master not seen before (at start, or a promoted
                    // replica): its first barrier waits for the connection.
                    let connect = client.wait_for_connect();
                    let _ = tokio::time::timeout(self.config.timeout, connect).await;
                }
                if !client.is_connected() {
                    return Outcome::Failed;
                }
                self.write_and_wait(&client, key).await
            }
            _ if !self.client.is_connected() => return Outcome::Failed,
            Some(node) => {
                let pinned = self.client.with_cluster_node(node);
                self.write_and_wait(&pinned, key).await
            }
            None => self.write_and_wait(&self.client, key).await,
        };
        match result {
            Ok(replicas) if replicas >= i64::from(self.min_replicas) => Outcome::Replicated,
            Ok(replicas) => {
                tracing::warn!(
                    replicas,
                    wanted = self.min_replicas,
                    timeout_ms = self.timeout.as_millis() as u64,
                    "too few replicas acknowledged in time"
                );
                Outcome::Short(replicas)
            }
            Err(error) => {
                tracing::warn!(%error, "replication barrier failed");
                Outcome::Failed
            }
        }
    }

    /// `node`'s own barrier client, made (and connecting) on first use; true
    /// when made now.
    fn node_client(&self, node: &Server) -> anyhow::Result<(Client, bool)> {
        let mut nodes = self.nodes.lock().expect("not poisoned");
        if let Some(client) = nodes.get(node) {
            return Ok((client.clone(), false));
        }
        let client = self.config.node_barrier_client(node)?;
        nodes.insert(node.clone(), client.clone());
        Ok((client, true))
    }

    async fn write_and_wait<C>(&self, client: &C, key: &str) -> Result<i64, fred::error::Error>
    where
        C: KeysInterface + ClientLike + Sync,
    {
        client
            .set::<(), _, _>(
                key,
                1,
                Some(Expiration::PX(BARRIER_KEY_TTL_MS)),
                None,
                false,
            )
            .await?;
        // Not marked blocking: fred would hold back this client's other
        // masters' barriers; on this connection nothing else is ever sent
        // while it waits. Keyless: routed by the key's slot when not pinned.
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let wait = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), false);
        let millis = self.timeout.as_millis().max(1) as i64;
        client
            .custom(wait, vec![i64::from(self.min_replicas), millis])
            .await
    }
}
