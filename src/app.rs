//! The state every request shares: clients of the three backends and the parts
//! built on them. Built once per process by [`App::connect`].

use std::sync::Arc;

use anyhow::Context;

use crate::{
    auth::Auth, broker::Broker, catalog::Catalog, coalesce::Coalescer, config::Config,
    holds::Store, inventory::Inventory, operator::OperatorKey, rate_limit::RateLimit, users::Users,
    waiting_room::InFlight,
};

/// Login and waiting-room rate limits count attempts in windows of this length.
const LOGIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// A backend that does not answer a readiness check within this is not ready.
const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub struct App {
    pub config: Config,
    pub store: Store,
    pub pg: deadpool_postgres::Pool,
    pub broker: Arc<Broker>,
    pub auth: Auth,
    /// The operator's secret, for the waiting rooms' settings.
    pub operator: OperatorKey,
    pub catalog: Catalog,
    pub inventory: Arc<Inventory>,
    /// Requests in flight, bounded: the rest are shed with 503.
    pub in_flight: InFlight,
    /// The user ids PostgreSQL knows: holds for others are refused.
    pub users: Arc<Users>,
    /// Failed logins per account (lower-cased email).
    pub login_accounts: RateLimit<String>,
    /// Login attempts per client address.
    pub login_clients: RateLimit<std::net::IpAddr>,
    /// Waiting-room visits per user, and per client address.
    pub room_users: RateLimit<i64>,
    pub room_clients: RateLimit<std::net::IpAddr>,
    /// Shares one Redis call among concurrent holds of one seat.
    pub coalescer: Coalescer,
    /// Renders `GET /metrics`.
    pub metrics: &'static metrics_exporter_prometheus::PrometheusHandle,
    /// Set once the stop signal came: `/readyz` answers 503 while the gateway
    /// still serves, for `HERDGATE_DRAIN_DELAY`, before it drains.
    pub draining: std::sync::atomic::AtomicBool,
}

impl App {
    /// Connects Redis (must answer now) and prepares lazy PostgreSQL and RabbitMQ clients.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let store = Store::connect(&config.redis)
            .await?
            .with_replication(&config.redis)
            .await?;
        let pg = config
            .pg
            .pool()
            .context("failed to set up PostgreSQL pool")?;
        Ok(App {
            broker: Arc::new(Broker::new(&config.amqp)),
            auth: Auth::new(&config.auth)?,
            operator: OperatorKey::new(config.auth.operator_token.as_ref()),
            catalog: Catalog::new(
                store.clone(),
                pg.clone(),
                config.seats_cache_ttl,
                config.read_cache_bytes,
            ),
            inventory: Arc::new(Inventory::new(store.clone(), pg.clone())),
            users: Arc::new(Users::new(pg.clone(), config.users_interval)),
            login_accounts: RateLimit::new(config.auth.login_account_rate, LOGIN_WINDOW),
            login_clients: RateLimit::new(config.auth.login_client_rate, LOGIN_WINDOW),
            room_users: RateLimit::new(config.auth.room_user_rate, LOGIN_WINDOW),
            room_clients: RateLimit::new(config.auth.room_client_rate, LOGIN_WINDOW),
            in_flight: InFlight::new(config.http.max_in_flight),
            coalescer: Coalescer::default(),
            metrics: crate::metric::install(),
            draining: Default::default(),
            store,
            pg,
            config,
        })
    }
}

/// Whether each backend answered a readiness check (`GET /readyz`); each
/// failure says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub redis: Result<(), String>,
    pub postgres: Result<(), String>,
    pub rabbitmq: Result<(), String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.redis.is_ok() && self.postgres.is_ok() && self.rabbitmq.is_ok()
    }
}

impl App {
    /// Asks Redis, PostgreSQL and RabbitMQ at once, each within [`READY_CHECK_TIMEOUT`].
    pub async fn readiness(&self) -> Readiness {
        let late = || format!("no answer within {}s", READY_CHECK_TIMEOUT.as_secs());
        let redis = async {
            match tokio::time::timeout(READY_CHECK_TIMEOUT, self.store.ping()).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(late()),
            }
        };
        let postgres = async {
            let check = async {
                let client = self.pg.get().await.map_err(|e| e.to_string())?;
                client
                    .simple_query("SELECT 1")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            };
            tokio::time::timeout(READY_CHECK_TIMEOUT, check)
                .await
                .unwrap_or_else(|_| Err(late()))
        };
        let rabbitmq = self.broker.check(READY_CHECK_TIMEOUT);
        let (redis, postgres, rabbitmq) = tokio::join!(redis, postgres, rabbitmq);
        Readiness {
            redis,
            postgres,
            rabbitmq,
        }
    }
}
