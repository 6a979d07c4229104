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
//! Which master serves a slot is read from the cluster client's map, which it
//! refreshes after MOVED and at each reconnect (so once a replica is promoted).
//! A command a master refuses with MOVED or ASK was not run: it is sent again
//! through the cluster client, which follows the redirect and refreshes its map.

use std::{collections::HashMap, sync::Mutex};

use fred::{
    error::{Error, ErrorKind},
    interfaces::{ClientLike, ClusterInterface},
    prelude::{Client, Pool, Server},
    types::cluster::ClusterRouting,
};

use super::StoreError;
use crate::config::RedisConfig;

/// The masters of a cluster, each with a pool of its own.
pub(super) struct Masters {
    /// The cluster client: its slot map, and the way for redirected commands.
    cluster: Pool,
    config: RedisConfig,
    pools: Mutex<HashMap<Server, Pool>>,
}

impl Masters {
    pub fn new(cluster: Pool, config: RedisConfig) -> Self {
        Masters {
            cluster,
            config,
            pools: Mutex::default(),
        }
    }

    /// A connected client of the master serving `key`'s slot; `None` while
    /// the slot map is unknown (the caller uses the cluster client), and
    /// [`StoreError::Disconnected`] at once while that master is unreachable.
    pub async fn client_for(&self, key: &str) -> Result<Option<Client>, StoreError> {
        let Some(routing) = self.cluster.next().cached_cluster_state() else {
            return Ok(None);
        };
        let Some(owner) = routing.get_server(ClusterRouting::hash_key(key.as_bytes())) else {
            return Ok(None);
        };
        let (pool, new) = self.pool(owner, &routing)?;
        if new {
            // A master not seen before (a promoted replica): its first request
            // waits for the connection rather than failing.
            let connected = tokio::time::timeout(self.config.timeout, pool.wait_for_connect());
            let _ = connected.await;
        }
        let client = pool.next_connected();
        match client.is_connected() {
            true => Ok(Some(client.clone())),
            false => Err(StoreError::Disconnected),
        }
    }

    /// The pool of `owner`, made on first use (and true then). Pools of nodes
    /// no longer masters are closed when a new one is made.
    fn pool(&self, owner: &Server, routing: &ClusterRouting) -> Result<(Pool, bool), StoreError> {
        let mut pools = self.pools.lock().unwrap();
        if let Some(pool) = pools.get(owner) {
            return Ok((pool.clone(), false));
        }
        let pool = self
            .config
            .node_pool(owner)
            .map_err(|e| StoreError::Unavailable(Error::new(ErrorKind::Config, e.to_string())))?;
        tracing::info!(master = %owner, "redis cluster: connecting to a master");
        let masters = routing.unique_primary_nodes();
        pools.retain(|server, old| {
            let keep = masters.contains(server);
            if !keep {
                tracing::info!(node = %server, "redis cluster: no longer a master, disconnecting");
                let old = old.clone();
                tokio::spawn(async move { old.quit().await });
            }
            keep
        });
        pools.insert(owner.clone(), pool.clone());
        Ok((pool, true))
    }
}

/// MOVED or ASK: the node does not serve the slot (or not this key of it now),
/// and did not run the command.
pub(super) fn redirected(e: &Error) -> bool {
    *e.kind() == ErrorKind::Cluster
        && (e.details().starts_with("MOVED ") || e.details().starts_with("ASK "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_moved_and_ask_are_redirects() {
        let error = |text: &'static str| Error::new(ErrorKind::Cluster, text);
        assert!(redirected(&error("MOVED 3999 127.0.0.1:6381")));
        assert!(redirected(&error("ASK 3999 127.0.0.1:6381")));
        assert!(!redirected(&error("CLUSTERDOWN The cluster is down")));
        assert!(!redirected(&Error::new(ErrorKind::IO, "MOVED 1 a:1")));
    }
}
