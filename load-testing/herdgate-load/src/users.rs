//! Who books what: the load-test users (added when missing) and their tokens,
//! and the seats of the event under load.
//!
//! Tokens are signed here with the gateway's own secret instead of logging in:
//! argon2 makes a login cost tens of milliseconds by design, and 200,000 of them
//! would take longer than the run. Each is signed on first use and kept.

use std::sync::OnceLock;

use anyhow::Context;
use http::HeaderValue;

use herdgate::{auth::Auth, seed};

/// The ids of load-test users, adding the missing ones first.
pub async fn load_users(client: &tokio_postgres::Client, count: u32) -> anyhow::Result<Vec<i64>> {
    let mut ids = user_ids(client, count).await?;
    if ids.len() < count as usize {
        seed::ensure_load_users(client, count)
            .await
            .context("failed to add load-test users")?;
        ids = user_ids(client, count).await?;
    }
    anyhow::ensure!(
        ids.len() == count as usize,
        "only {} of {count} load-test users exist",
        ids.len()
    );
    Ok(ids)
}

async fn user_ids(client: &tokio_postgres::Client, count: u32) -> anyhow::Result<Vec<i64>> {
    let domain = seed::load_user_email(0);
    let domain = &domain[domain.find('@').unwrap_or(0)..];
    let rows = client
        .query(
            "SELECT id FROM users WHERE email LIKE 'user%' || $1 ORDER BY id LIMIT $2",
            &[&domain, &i64::from(count)],
        )
        .await
        .context("failed to look up load-test users")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The event's seats that are free in PostgreSQL, in id order; `limit` caps them.
pub async fn free_seats(
    client: &tokio_postgres::Client,
    event: i64,
    limit: Option<usize>,
) -> anyhow::Result<Vec<i64>> {
    let limit = limit.map_or(i64::MAX, |l| l as i64);
    let rows = client
        .query(
            "SELECT id FROM seats WHERE event_id = $1 AND status = 'AVAILABLE'
              ORDER BY id LIMIT $2",
            &[&event, &limit],
        )
        .await
        .context("failed to list the event's seats")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `Authorization` values for the run's users, signed when first needed.
pub struct Tokens {
    auth: Auth,
    users: Vec<i64>,
    signed: Vec<OnceLock<HeaderValue>>,
}

impl Tokens {
    pub fn new(auth: Auth, users: Vec<i64>) -> Self {
        let signed = users.iter().map(|_| OnceLock::new()).collect();
        Tokens {
            auth,
            users,
            signed,
        }
    }

    /// The user id of the run's `index`-th user.
    pub fn user_id(&self, index: usize) -> i64 {
        self.users[index]
    }

    /// The bearer value of the run's `index`-th user.
    pub fn bearer(&self, index: usize) -> HeaderValue {
        self.signed[index]
            .get_or_init(|| {
                let token = self
                    .auth
                    .issue(self.users[index])
                    .expect("signing a token with a valid key cannot fail");
                HeaderValue::try_from(format!("Bearer {}", token.token))
                    .expect("a JWT is a valid header value")
            })
            .clone()
    }
}
