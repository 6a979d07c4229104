//! Which user ids PostgreSQL knows, so a hold is only acknowledged for a user its
//! booking row can reference.
//!
//! A 201 promises the booking reaches PostgreSQL, and the writer refuses a
//! booking whose user does not exist: a validly signed token for a user that
//! does not exist (deleted, or minted by hand) would get a 201 the writer can
//! never apply. Tokens alone
//! cannot tell, and PostgreSQL must stay off the hot path, so the gateway keeps
//! every user id in memory (8 bytes each, sorted), loads them all at start and
//! every HERDGATE_USERS_INTERVAL, and catches up with one query for the ids
//! added since when it meets an id it does not know (a user seeded a moment ago).
//! Ids still unknown after that are remembered as such for one interval.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use moka::future::Cache;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

pub struct Users {
    pg: deadpool_postgres::Pool,
    /// Every id PostgreSQL had at the last load, ascending.
    known: RwLock<Arc<Vec<i64>>>,
    /// One catch-up query at a time; the callers waiting behind it find their id after.
    catching_up: tokio::sync::Mutex<()>,
    /// Ids PostgreSQL did not have when last asked.
    unknown: Cache<i64, ()>,
}

impl Users {
    pub fn new(pg: deadpool_postgres::Pool, interval: Duration) -> Self {
        Users {
            pg,
            known: RwLock::default(),
            catching_up: tokio::sync::Mutex::new(()),
            unknown: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(interval)
                .build(),
        }
    }

    fn known(&self) -> Arc<Vec<i64>> {
        self.known.read().expect("users lock").clone()
    }

    fn contains(&self, id: i64) -> bool {
        self.known().binary_search(&id).is_ok()
    }

    /// Whether PostgreSQL has user `id`; almost always answered from memory.
    pub async fn exists(&self, id: i64) -> Result<bool, UsersError> {
        if self.contains(id) {
            return Ok(true);
        }
        if self.unknown.contains_key(&id) {
            return Ok(false);
        }
        let _turn = self.catching_up.lock().await;
        if self.contains(id) {
            return Ok(true);
        }
        self.catch_up().await?;
        if self.contains(id) {
            return Ok(true);
        }
        self.unknown.insert(id, ()).await;
        Ok(false)
    }

    /// Adds the ids above the largest known one.
    async fn catch_up(&self) -> Result<(), UsersError> {
        let known = self.known();
        let last = known.last().copied().unwrap_or(0);
        let added = self.ids("WHERE id > $1", last).await?;
        if !added.is_empty() {
            let mut all = Vec::with_capacity(known.len() + added.len());
            all.extend_from_slice(&known);
            all.extend(added);
            *self.known.write().expect("users lock") = Arc::new(all);
        }
        Ok(())
    }

    /// Loads every id again, so deleted users are forgotten too.
    pub async fn reload(&self) -> Result<usize, UsersError> {
        let all = self.ids("WHERE id > $1", 0).await?;
        let count = all.len();
        *self.known.write().expect("users lock") = Arc::new(all);
        Ok(count)
    }

    async fn ids(&self, filter: &str, after: i64) -> Result<Vec<i64>, UsersError> {
        let client = self.pg.get().await?;
        let rows = client
            .query(
                &format!("SELECT id FROM users {filter} ORDER BY id"),
                &[&after],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Reloads every `interval` until `token` is cancelled.
    pub async fn run(self: Arc<Self>, interval: Duration, token: CancellationToken) {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "reloading user ids failed");
            }
        }
    }
}
