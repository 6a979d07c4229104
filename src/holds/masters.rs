//! Redis Cluster: an event's commands go straight to its slot's master, on a
//! pool of plain connections of that master's own, so one master's loss stops
//! only its own events.
//!
//! Why not fred's cluster client alone: fred 10.1 drives every node's
//! connection of a cluster client from one task, and when one connection drops
//! that task reconnects the whole client (`CLUSTER SLOTS`, then a connection
//! to each master listed), taking no new command until it succeeds, which it
//! cannot while the dead master still owns slots. Every event waited, and the
//! client said it was disconnected (docs/redis-cluster.md, Failover). Here a
//! dead master's pool alone is disconnected: its events get 503 at once, the
//! others go on.
//!
//! Which master serves a slot: the cluster client's map at first, then the
//! answer of `CLUSTER SLOTS` to a live master, asked again (at most every
//! [`REFRESH_EVERY`]) when a slot's master is unreachable (has a replica taken
//! over?) or answers MOVED. Waiting for the cluster client's map instead cost
//! its reconnect backoff after each promotion. A command refused with MOVED is
//! sent once more to the new master; refused again, it goes through the
//! cluster client, which follows the redirect.
//!
//! A command refused with ASK (its slot migrating, its keys already on the
//! new master) is not followed: the caller gets [`StoreError::Moving`], as for
//! TRYAGAIN. fred 10.1's cluster client follows ASK by writing `ASKING` to the
//! new master's connection and reading the next reply there as its answer,
//! while that connection may have other commands in flight: that reply is
//! another command's, and every later reply on the connection goes to the
//! command before its own (docs/redis-cluster.md, Limits).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use fred::{
    error::{Error, ErrorKind},
    interfaces::{ClientLike, ClusterInterface, EventInterface},
    prelude::{Client, Pool, Server},
    types::{Value, cluster::ClusterRouting},
};

use super::StoreError;
use crate::config::RedisConfig;

/// The least time between two `CLUSTER SLOTS` asked for a new slot map.
const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// The masters of a cluster, each with a pool of its own.
pub(super) struct Masters {
    /// The cluster client: the first slot map, and the way for redirected commands.
    cluster: Pool,
    config: RedisConfig,
    pools: Mutex<HashMap<Server, Arc<Node>>>,
    /// The slot map last asked for, and when it was last asked for.
    routing: Mutex<(Option<ClusterRouting>, Option<Instant>)>,
}

impl Masters {
    pub fn new(cluster: Pool, config: RedisConfig) -> Self {
        Masters {
            cluster,
            config,
            pools: Mutex::default(),
            routing: Mutex::default(),
        }
    }

    /// A connected client of the master serving `key`'s slot; `None` while
    /// the slot map is unknown (the caller uses the cluster client), and
    /// [`StoreError::Disconnected`] at once while that master is unreachable
    /// and no replica has taken over.
    pub async fn client_for(&self, key: &str) -> Result<Option<Client>, StoreError> {
        let slot = ClusterRouting::hash_key(key.as_bytes());
        let Some((owner, routing)) = self.owner(slot) else {
            return Ok(None);
        };
        if let Some(client) = self.connected(&owner, &routing).await? {
            return Ok(Some(client));
        }
        if self.refresh().await
            && let Some((now, routing)) = self.owner(slot)
            && now != owner
            && let Some(client) = self.connected(&now, &routing).await?
        {
            return Ok(Some(client));
        }
        Err(StoreError::Disconnected)
    }

    /// After `moved` (MOVED) from `key`'s master: a client of the master it
    /// names, once the cluster's map agrees and if that master is connected.
    pub async fn moved(&self, key: &str, moved: &Error) -> Result<Option<Client>, StoreError> {
        let Some(target) = moved.details().split_whitespace().nth(2) else {
            return Ok(None);
        };
        self.refresh().await;
        match self.owner(ClusterRouting::hash_key(key.as_bytes())) {
            Some((owner, routing)) if format!("{}:{}", owner.host, owner.port) == target => {
                self.connected(&owner, &routing).await
            }
            _ => Ok(None),
        }
    }

    /// Pings every master this process has a pool for; fine when one answers
    /// (a dead master stops its own events, not the gateway). `None` before
    /// any pool is made.
    pub async fn ping(&self) -> Option<Result<(), StoreError>> {
        let nodes: Vec<Arc<Node>> = self.pools.lock().unwrap().values().cloned().collect();
        if nodes.is_empty() {
            return None;
        }
        let pings = nodes
            .iter()
            .filter_map(|node| node.connected())
            .map(|c| async move { c.ping::<()>(None).await });
        let answers = futures::future::join_all(pings).await;
        Some(match answers.iter().find(|a| a.is_ok()) {
            Some(_) => Ok(()),
            None => match answers.into_iter().next() {
                Some(Err(e)) => Err(StoreError::Unavailable(e)),
                _ => Err(StoreError::Disconnected),
            },
        })
    }

    /// The master serving `key`'s slot, as this process's map has it.
    pub fn owner_of(&self, key: &str) -> Option<Server> {
        self.owner(ClusterRouting::hash_key(key.as_bytes()))
            .map(|(owner, _)| owner)
    }

    /// The master of `slot` and the map that says so.
    fn owner(&self, slot: u16) -> Option<(Server, ClusterRouting)> {
        let mut routing = self.routing.lock().unwrap();
        if routing.0.is_none() {
            routing.0 = self.cluster.next().cached_cluster_state();
        }
        let map = routing.0.clone()?;
        Some((map.get_server(slot)?.clone(), map))
    }

    /// A connected client of `owner`'s pool, if it has one.
    async fn connected(
        &self,
        owner: &Server,
        routing: &ClusterRouting,
    ) -> Result<Option<Client>, StoreError> {
        let node = self.node(owner, routing)?;
        // A master not seen before (at start, or a promoted replica): the
        // requests that find its pool connecting wait for it (at most the
        // Redis timeout, once) rather than failing.
        if !node.connecting.initialized() {
            let first = tokio::time::timeout(self.config.timeout, node.pool.wait_for_connect());
            node.connecting
                .get_or_init(|| async move { drop(first.await) })
                .await;
        }
        Ok(node.connected())
    }

    /// Asks a live master for the slot map, unless it was asked for less than
    /// [`REFRESH_EVERY`] ago; true when the map was replaced.
    async fn refresh(&self) -> bool {
        {
            let mut routing = self.routing.lock().unwrap();
            if routing.1.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
                return false;
            }
            routing.1 = Some(Instant::now());
        }
        let live: Vec<(Server, Client)> = {
            let pools = self.pools.lock().unwrap();
            pools
                .iter()
                .filter_map(|(server, node)| Some((server.clone(), node.connected()?)))
                .collect()
        };
        for (server, client) in live {
            let asked = tokio::time::timeout(self.config.timeout, client.cluster_slots::<Value>());
            let map = match asked.await {
                Ok(Ok(slots)) => ClusterRouting::from_cluster_slots(slots, server.host.clone()),
                Ok(Err(e)) => Err(e),
                Err(_) => continue,
            };
            match map {
                Ok(map) if !map.slots().is_empty() => {
                    self.routing.lock().unwrap().0 = Some(map);
                    return true;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(node = %server, error = %e, "CLUSTER SLOTS failed"),
            }
        }
        false
    }

    /// The pool of `owner`, made on first use. Pools of nodes no longer
    /// masters are closed when a new one is made.
    fn node(&self, owner: &Server, routing: &ClusterRouting) -> Result<Arc<Node>, StoreError> {
        let mut pools = self.pools.lock().unwrap();
        if let Some(node) = pools.get(owner) {
            return Ok(node.clone());
        }
        let pool = self
            .config
            .node_pool(owner)
            .map_err(|e| StoreError::Unavailable(Error::new(ErrorKind::Config, e.to_string())))?;
        tracing::info!(master = %owner, "redis cluster: connecting to a master");
        let node = Arc::new(Node::watch(pool));
        node.pool.connect_pool();
        let masters = routing.unique_primary_nodes();
        pools.retain(|server, old| {
            let keep = masters.contains(server);
            if !keep {
                tracing::info!(node = %server, "redis cluster: no longer a master, disconnecting");
                let old = old.pool.clone();
                tokio::spawn(async move { old.quit().await });
            }
            keep
        });
        pools.insert(owner.clone(), node.clone());
        Ok(node)
    }
}

/// One master's pool, and which of its clients lost their connection.
struct Node {
    pool: Pool,
    /// Per client of the pool: its connection dropped and it has not
    /// reconnected yet. fred says so at once (an error event), while the
    /// client's state stays "connected" through its first reconnect delay
    /// (50-150 ms), in which a command would wait for the timeout.
    dropped: Vec<Arc<AtomicBool>>,
    /// Round robin over the clients.
    next: AtomicUsize,
    /// Set once its first connection was awaited.
    connecting: tokio::sync::OnceCell<()>,
}

impl Node {
    /// Follows the connection events of `pool`'s clients (before it connects).
    fn watch(pool: Pool) -> Self {
        use tokio::sync::broadcast::error::RecvError;
        let dropped = pool
            .clients()
            .iter()
            .map(|client| {
                let flag = Arc::new(AtomicBool::new(false));
                let (mut errors, mut reconnects) = (client.error_rx(), client.reconnect_rx());
                let dropped = flag.clone();
                tokio::spawn(async move {
                    loop {
                        let (event, down) = tokio::select! {
                            e = errors.recv() => (e.map(drop), true),
                            r = reconnects.recv() => (r.map(drop), false),
                        };
                        match event {
                            Ok(()) => dropped.store(down, Ordering::SeqCst),
                            Err(RecvError::Lagged(_)) => {}
                            Err(RecvError::Closed) => break,
                        }
                    }
                });
                flag
            })
            .collect();
        Node {
            pool,
            dropped,
            next: AtomicUsize::new(0),
            connecting: tokio::sync::OnceCell::new(),
        }
    }

    /// A client whose connection is up, if one is.
    fn connected(&self) -> Option<Client> {
        let clients = self.pool.clients();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..clients.len())
            .map(|i| (start + i) % clients.len())
            .find(|&i| clients[i].is_connected() && !self.dropped[i].load(Ordering::SeqCst))
            .map(|i| clients[i].clone())
    }
}

/// MOVED: the node does not serve the slot, and did not run the command.
pub(super) fn redirected(e: &Error) -> bool {
    *e.kind() == ErrorKind::Cluster && e.details().starts_with("MOVED ")
}

/// ASK or TRYAGAIN: the slot is migrating, and the node did not run the command.
pub(super) fn migrating(e: &Error) -> bool {
    (*e.kind() == ErrorKind::Cluster && e.details().starts_with("ASK "))
        || e.details().starts_with("TRYAGAIN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_is_followed_ask_and_tryagain_are_a_migration() {
        let error = |text: &'static str| Error::new(ErrorKind::Cluster, text);
        assert!(redirected(&error("MOVED 3999 127.0.0.1:6381")));
        assert!(!redirected(&error("ASK 3999 127.0.0.1:6381")));
        assert!(!redirected(&error("CLUSTERDOWN The cluster is down")));
        assert!(!redirected(&Error::new(ErrorKind::IO, "MOVED 1 a:1")));
        assert!(migrating(&error("ASK 3999 127.0.0.1:6381")));
        let tryagain = "TRYAGAIN Multiple keys request during rehashing of slot";
        assert!(migrating(&Error::new(ErrorKind::Unknown, tryagain)));
        assert!(!migrating(&error("MOVED 3999 127.0.0.1:6381")));
    }
}
