//! Configuration from the environment, and nothing else.
//!
//! Every variable is a named `ENV_*` constant read through [`Strings`], so tests
//! feed a `HashMap` instead of the process environment. A bad value fails start-up
//! with one line naming the variable (see `main`, exit code 64).

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use crate::http::forwarded::TrustedProxies;

pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
pub const ENV_REDIS_URL: &str = "REDIS_URL";
pub const ENV_AMQP_URL: &str = "AMQP_URL";
pub const ENV_ADDR: &str = "HERDGATE_ADDR";
pub const ENV_TOKEN_SECRET: &str = "HERDGATE_TOKEN_SECRET";
pub const ENV_TOKEN_TTL: &str = "HERDGATE_TOKEN_TTL";
pub const ENV_REDIS_PREFIX: &str = "HERDGATE_REDIS_PREFIX";
pub const ENV_REDIS_POOL: &str = "HERDGATE_REDIS_POOL";
pub const ENV_REDIS_TIMEOUT: &str = "HERDGATE_REDIS_TIMEOUT";
pub const ENV_REDIS_MIN_REPLICAS: &str = "HERDGATE_REDIS_MIN_REPLICAS";
pub const ENV_REDIS_REPLICA_TIMEOUT: &str = "HERDGATE_REDIS_REPLICA_TIMEOUT";
pub const ENV_DB_POOL: &str = "HERDGATE_DB_POOL";
pub const ENV_HOLD_TTL: &str = "HERDGATE_HOLD_TTL";
pub const ENV_MAX_BODY: &str = "HERDGATE_MAX_BODY";
pub const ENV_BODY_TIMEOUT: &str = "HERDGATE_BODY_TIMEOUT";
pub const ENV_SEATS_CACHE_TTL: &str = "HERDGATE_SEATS_CACHE_TTL";
pub const ENV_SHUTDOWN_GRACE: &str = "HERDGATE_SHUTDOWN_GRACE";
pub const ENV_LOGIN_CONCURRENCY: &str = "HERDGATE_LOGIN_CONCURRENCY";
pub const ENV_MAX_IN_FLIGHT: &str = "HERDGATE_MAX_IN_FLIGHT";
pub const ENV_INVENTORY_INTERVAL: &str = "HERDGATE_INVENTORY_INTERVAL";
pub const ENV_MAX_HOLDS_PER_USER: &str = "HERDGATE_MAX_HOLDS_PER_USER";
pub const ENV_IDEMPOTENCY_TTL: &str = "HERDGATE_IDEMPOTENCY_TTL";
pub const ENV_OUTBOX_MAX: &str = "HERDGATE_OUTBOX_MAX";
pub const ENV_AMQP_PREFIX: &str = "HERDGATE_AMQP_PREFIX";
pub const ENV_AMQP_CONNECT_TIMEOUT: &str = "HERDGATE_AMQP_CONNECT_TIMEOUT";
pub const ENV_WRITER_QUEUE_MAX_BYTES: &str = "HERDGATE_WRITER_QUEUE_MAX_BYTES";
pub const ENV_RELAY_BATCH: &str = "HERDGATE_RELAY_BATCH";
pub const ENV_RELAY_CLAIM_IDLE: &str = "HERDGATE_RELAY_CLAIM_IDLE";
pub const ENV_RELAY_RESEND_AFTER: &str = "HERDGATE_RELAY_RESEND_AFTER";
pub const ENV_COALESCE: &str = "HERDGATE_COALESCE";
pub const ENV_SWEEP_INTERVAL: &str = "HERDGATE_SWEEP_INTERVAL";
pub const ENV_SCAN_INTERVAL: &str = "HERDGATE_SCAN_INTERVAL";
pub const ENV_WRITER_BATCH: &str = "HERDGATE_WRITER_BATCH";
pub const ENV_WRITER_LINGER: &str = "HERDGATE_WRITER_LINGER";
pub const ENV_WRITER_PREFETCH: &str = "HERDGATE_WRITER_PREFETCH";
pub const ENV_IDLE_TIMEOUT: &str = "HERDGATE_IDLE_TIMEOUT";
pub const ENV_HEADER_TIMEOUT: &str = "HERDGATE_HEADER_TIMEOUT";
pub const ENV_MAX_CONNECTIONS: &str = "HERDGATE_MAX_CONNECTIONS";
pub const ENV_READ_CACHE_BYTES: &str = "HERDGATE_READ_CACHE_BYTES";
pub const ENV_LOGIN_ACCOUNT_RATE: &str = "HERDGATE_LOGIN_ACCOUNT_RATE";
pub const ENV_LOGIN_CLIENT_RATE: &str = "HERDGATE_LOGIN_CLIENT_RATE";
pub const ENV_ROOM_USER_RATE: &str = "HERDGATE_ROOM_USER_RATE";
pub const ENV_ROOM_CLIENT_RATE: &str = "HERDGATE_ROOM_CLIENT_RATE";
pub const ENV_USERS_INTERVAL: &str = "HERDGATE_USERS_INTERVAL";
pub const ENV_OPERATOR_TOKEN: &str = "HERDGATE_OPERATOR_TOKEN";
pub const ENV_DRAIN_DELAY: &str = "HERDGATE_DRAIN_DELAY";
pub const ENV_TRUSTED_PROXIES: &str = "HERDGATE_TRUSTED_PROXIES";
pub const ENV_METRICS_ADDR: &str = "HERDGATE_METRICS_ADDR";

/// Every variable [`Config::from_env`] reads, so deployment files can be checked against
/// it (tests/it/compose.rs). Logging also honours `RUST_LOG`, and trace export the
/// standard OpenTelemetry variables (`telemetry::OTEL_VARS`).
pub const ENV_VARS: &[&str] = &[
    ENV_DATABASE_URL,
    ENV_REDIS_URL,
    ENV_AMQP_URL,
    ENV_ADDR,
    ENV_TOKEN_SECRET,
    ENV_TOKEN_TTL,
    ENV_REDIS_PREFIX,
    ENV_REDIS_POOL,
    ENV_REDIS_TIMEOUT,
    ENV_REDIS_MIN_REPLICAS,
    ENV_REDIS_REPLICA_TIMEOUT,
    ENV_DB_POOL,
    ENV_HOLD_TTL,
    ENV_MAX_BODY,
    ENV_BODY_TIMEOUT,
    ENV_SEATS_CACHE_TTL,
    ENV_SHUTDOWN_GRACE,
    ENV_LOGIN_CONCURRENCY,
    ENV_MAX_IN_FLIGHT,
    ENV_INVENTORY_INTERVAL,
    ENV_MAX_HOLDS_PER_USER,
    ENV_IDEMPOTENCY_TTL,
    ENV_OUTBOX_MAX,
    ENV_AMQP_PREFIX,
    ENV_AMQP_CONNECT_TIMEOUT,
    ENV_WRITER_QUEUE_MAX_BYTES,
    ENV_RELAY_BATCH,
    ENV_RELAY_CLAIM_IDLE,
    ENV_RELAY_RESEND_AFTER,
    ENV_COALESCE,
    ENV_SWEEP_INTERVAL,
    ENV_SCAN_INTERVAL,
    ENV_WRITER_BATCH,
    ENV_WRITER_LINGER,
    ENV_WRITER_PREFETCH,
    ENV_IDLE_TIMEOUT,
    ENV_HEADER_TIMEOUT,
    ENV_MAX_CONNECTIONS,
    ENV_READ_CACHE_BYTES,
    ENV_LOGIN_ACCOUNT_RATE,
    ENV_LOGIN_CLIENT_RATE,
    ENV_ROOM_USER_RATE,
    ENV_ROOM_CLIENT_RATE,
    ENV_USERS_INTERVAL,
    ENV_OPERATOR_TOKEN,
    ENV_DRAIN_DELAY,
    ENV_TRUSTED_PROXIES,
    ENV_METRICS_ADDR,
];

/// 64 MiB of hold event batches: about 200,000 holds waiting for the writer.
pub const DEFAULT_WRITER_QUEUE_MAX_BYTES: u64 = 64 << 20;

/// Signs development tokens only; `Config::from_env` warns whenever it is in use.
pub const DEV_TOKEN_SECRET: &str = "herdgate-development-secret-do-not-use-in-production";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// Where configuration strings come from: the process environment, or a map in tests.
pub trait Strings {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;

impl Strings for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Strings for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| v.to_string())
    }
}

impl Strings for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub pg: PgConfig,
    pub redis: RedisConfig,
    pub amqp: AmqpConfig,
    pub auth: AuthConfig,
    pub holds: HoldConfig,
    pub writer: WriterConfig,
    /// How long an answer of `GET /api/seats/available` may be reused.
    pub seats_cache_ttl: Duration,
    /// Bytes the read cache (events and seat pages) may hold; least used entries go first.
    pub read_cache_bytes: u64,
    /// How often the set of known user ids is refreshed from PostgreSQL.
    pub users_interval: Duration,
    /// How often on-sale events missing from Redis are looked for and loaded.
    pub inventory_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Largest request body accepted, enforced while reading.
    pub max_body: usize,
    /// A client that has not sent its whole body by then gets 408.
    pub body_timeout: Duration,
    /// In-flight requests are given this long to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Requests served at once before the gateway answers 503 (never an unbounded queue).
    pub max_in_flight: usize,
    /// A connection that sends and reads nothing for this long while none of its
    /// requests is being answered is closed: before its first byte, between
    /// requests (keep-alive), and mid-request.
    pub idle_timeout: Duration,
    /// The whole request header must arrive within this time, counted from the
    /// moment the gateway waits for it (the connection opened, or its last answer went).
    pub header_timeout: Duration,
    /// Open connections at most; past it a new one gets a 503 and is closed at once.
    pub max_connections: usize,
    /// After SIGTERM, `/readyz` answers 503 for this long while everything is
    /// still served, so a load balancer takes the gateway out first; then it drains.
    pub drain_delay: Duration,
    /// Balancers and proxies whose `X-Forwarded-For` names the client (see
    /// `http::forwarded`); none by default, so the TCP peer is the client.
    pub trusted_proxies: TrustedProxies,
}

#[derive(Debug, Clone)]
pub struct PgConfig {
    pub url: SecretString,
    pub pool_size: usize,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: SecretString,
    /// Every key starts with it, so tests and several deployments share one Redis.
    pub prefix: String,
    pub pool_size: usize,
    /// A Redis call that takes longer fails, and the request gets 503.
    pub timeout: Duration,
    /// Replicas that must have a hold (or a confirm or cancel) before the
    /// buyer is told: 0 answers as soon as the master has it (see
    /// `holds::replication`).
    pub min_replicas: u32,
    /// How long a change waits for `min_replicas` before its answer is 503.
    pub replica_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// One URL, or a comma-separated list of a cluster's nodes (see `broker`).
    pub url: SecretString,
    /// Names the exchange and queues (`<prefix>.holds`, `<prefix>.writer`, ...).
    pub prefix: String,
    /// The writer queue's bound; past it RabbitMQ refuses new batches (backpressure).
    pub writer_queue_max_bytes: u64,
    /// How long connecting and declaring the topology may take: a broker cut
    /// off still has its TCP connections accepted, and then never answers.
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct HoldConfig {
    /// How long a hold lasts before it is released.
    pub ttl: Duration,
    /// Live holds one user may have per event; more get 429.
    pub max_per_user: u32,
    /// How long an Idempotency-Key's answer is remembered.
    pub idempotency_ttl: Duration,
    /// Outbox entries per event not yet in PostgreSQL (relayed or not) before
    /// holds get 503: backpressure from the relay and the writer alike.
    pub outbox_max: u64,
    /// Outbox entries the relay publishes per round.
    pub relay_batch: usize,
    /// A relay's unconfirmed entries are taken over by others after this long.
    pub relay_claim_idle: Duration,
    /// Entries RabbitMQ confirmed this long ago and still not in PostgreSQL are
    /// published again once the writer queue is empty (the queue was deleted or
    /// purged under them); repeats are harmless to the writer.
    pub relay_resend_after: Duration,
    /// Concurrent requests for one seat share one Redis call (see `coalesce`).
    pub coalesce: bool,
    /// A due hold is released at most this late (due holds are released together).
    pub sweep_interval: Duration,
    /// How often the relay and the sweeper look at every loaded event, whatever
    /// the activity channel said: the bound on the delay a lost notice causes.
    pub scan_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Hold events applied in one PostgreSQL transaction: messages are taken
    /// until the batch has this many (a message is never split).
    pub batch: usize,
    /// How long a batch waits to fill before it is applied anyway.
    pub linger: Duration,
    /// Messages RabbitMQ delivers ahead of the writer's acks.
    pub prefetch: usize,
    /// Where a writer-only process serves `/metrics` (the others serve it on their API).
    pub metrics_addr: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub token_secret: SecretString,
    pub token_ttl: Duration,
    /// Password checks run at once; argon2 is built to be slow, so more would starve the runtime.
    pub login_concurrency: usize,
    /// Login attempts per minute for one account (email) before 429.
    pub login_account_rate: u32,
    /// Login attempts per minute from one client address before 429.
    pub login_client_rate: u32,
    /// Waiting-room visits (joins and looks) per minute by one user before 429:
    /// the server asks for one every 1 to 30 s.
    pub room_user_rate: u32,
    /// Waiting-room visits per minute from one client address before 429.
    pub room_client_rate: u32,
    /// The operator's bearer secret for the waiting rooms' settings; `None`:
    /// the operator API is off (see `operator`).
    pub operator_token: Option<SecretString>,
}

impl Config {
    pub fn from_env(env: &impl Strings) -> Result<Self, ConfigError> {
        let token_secret = env
            .get(ENV_TOKEN_SECRET)
            .unwrap_or_else(|| DEV_TOKEN_SECRET.to_string());
        if token_secret.len() < 32 {
            return Err(invalid(
                ENV_TOKEN_SECRET,
                "<hidden>",
                "must be at least 32 bytes long",
            ));
        }
        Ok(Config {
            http: HttpConfig {
                addr: parse(env, ENV_ADDR, "0.0.0.0:8080", parse_addr)?,
                max_body: parse(env, ENV_MAX_BODY, "16384", parse_positive)?,
                body_timeout: parse(env, ENV_BODY_TIMEOUT, "10s", parse_duration)?,
                shutdown_grace: parse(env, ENV_SHUTDOWN_GRACE, "10s", parse_duration)?,
                max_in_flight: parse(env, ENV_MAX_IN_FLIGHT, "8192", parse_positive)?,
                idle_timeout: parse(env, ENV_IDLE_TIMEOUT, "5s", parse_duration)?,
                header_timeout: parse(env, ENV_HEADER_TIMEOUT, "10s", parse_duration)?,
                max_connections: parse(env, ENV_MAX_CONNECTIONS, "16384", parse_positive)?,
                drain_delay: parse(env, ENV_DRAIN_DELAY, "0s", parse_delay)?,
                trusted_proxies: parse(env, ENV_TRUSTED_PROXIES, "", TrustedProxies::parse)?,
            },
            pg: PgConfig {
                url: parse(
                    env,
                    ENV_DATABASE_URL,
                    "postgres://postgres:postgres@127.0.0.1:5432/herdgate",
                    parse_url(&["postgres", "postgresql"], |s| {
                        s.parse::<tokio_postgres::Config>()
                            .map(drop)
                            .map_err(|e| e.to_string())
                    }),
                )?,
                pool_size: parse(env, ENV_DB_POOL, "16", parse_positive)?,
            },
            redis: RedisConfig {
                url: parse(
                    env,
                    ENV_REDIS_URL,
                    "redis://127.0.0.1:6379/0",
                    // A `*-cluster` URL (`?node=h:p&node=...` lists more seeds) selects Redis Cluster.
                    parse_url(&REDIS_SCHEMES, |s| {
                        fred::types::config::Config::from_url(s)
                            .map(drop)
                            .map_err(|e| e.to_string())
                    }),
                )?,
                prefix: parse(env, ENV_REDIS_PREFIX, "hg:", parse_prefix)?,
                pool_size: parse(env, ENV_REDIS_POOL, "4", parse_positive)?,
                timeout: parse(env, ENV_REDIS_TIMEOUT, "2s", parse_duration)?,
                min_replicas: parse(env, ENV_REDIS_MIN_REPLICAS, "0", parse_replicas)?,
                replica_timeout: parse(
                    env,
                    ENV_REDIS_REPLICA_TIMEOUT,
                    "250ms",
                    parse_replica_timeout,
                )?,
            },
            amqp: AmqpConfig {
                url: parse(
                    env,
                    ENV_AMQP_URL,
                    "amqp://guest:guest@127.0.0.1:5672/%2f",
                    parse_url_list(&["amqp", "amqps"], |s| {
                        s.parse::<lapin::uri::AMQPUri>().map(drop)
                    }),
                )?,
                prefix: parse(env, ENV_AMQP_PREFIX, "herdgate", parse_prefix)?,
                connect_timeout: parse(env, ENV_AMQP_CONNECT_TIMEOUT, "10s", parse_duration)?,
                writer_queue_max_bytes: parse(
                    env,
                    ENV_WRITER_QUEUE_MAX_BYTES,
                    &DEFAULT_WRITER_QUEUE_MAX_BYTES.to_string(),
                    parse_positive,
                )?,
            },
            auth: AuthConfig {
                token_secret: SecretString::from(token_secret),
                token_ttl: parse(env, ENV_TOKEN_TTL, "24h", parse_duration)?,
                login_concurrency: parse(env, ENV_LOGIN_CONCURRENCY, "2", parse_positive)?,
                login_account_rate: parse(env, ENV_LOGIN_ACCOUNT_RATE, "10", parse_positive)?,
                login_client_rate: parse(env, ENV_LOGIN_CLIENT_RATE, "60", parse_positive)?,
                room_user_rate: parse(env, ENV_ROOM_USER_RATE, "120", parse_positive)?,
                room_client_rate: parse(env, ENV_ROOM_CLIENT_RATE, "1200", parse_positive)?,
                operator_token: env
                    .get(ENV_OPERATOR_TOKEN)
                    .filter(|token| !token.is_empty())
                    .map(|token| match token.len() {
                        // Guessable secrets would let anyone pause an on-sale.
                        0..32 => Err(invalid(
                            ENV_OPERATOR_TOKEN,
                            "<hidden>",
                            "must be at least 32 bytes long",
                        )),
                        _ => Ok(SecretString::from(token)),
                    })
                    .transpose()?,
            },
            holds: HoldConfig {
                ttl: parse(env, ENV_HOLD_TTL, "600s", parse_duration)?,
                max_per_user: parse(env, ENV_MAX_HOLDS_PER_USER, "8", parse_positive)?,
                idempotency_ttl: parse(env, ENV_IDEMPOTENCY_TTL, "24h", parse_duration)?,
                outbox_max: parse(env, ENV_OUTBOX_MAX, "200000", parse_positive)?,
                relay_batch: parse(env, ENV_RELAY_BATCH, "500", parse_positive)?,
                relay_claim_idle: parse(env, ENV_RELAY_CLAIM_IDLE, "15s", parse_duration)?,
                relay_resend_after: parse(env, ENV_RELAY_RESEND_AFTER, "30s", parse_duration)?,
                coalesce: parse(env, ENV_COALESCE, "true", parse_bool)?,
                sweep_interval: parse(env, ENV_SWEEP_INTERVAL, "500ms", parse_duration)?,
                scan_interval: parse(env, ENV_SCAN_INTERVAL, "15s", parse_duration)?,
            },
            writer: WriterConfig {
                batch: parse(env, ENV_WRITER_BATCH, "500", parse_positive)?,
                linger: parse(env, ENV_WRITER_LINGER, "20ms", parse_duration)?,
                prefetch: parse(env, ENV_WRITER_PREFETCH, "64", parse_positive)?,
                metrics_addr: parse(env, ENV_METRICS_ADDR, "0.0.0.0:8081", parse_addr)?,
            },
            seats_cache_ttl: parse(env, ENV_SEATS_CACHE_TTL, "250ms", parse_duration)?,
            read_cache_bytes: parse(env, ENV_READ_CACHE_BYTES, "67108864", parse_positive)?,
            users_interval: parse(env, ENV_USERS_INTERVAL, "30s", parse_duration)?,
            inventory_interval: parse(env, ENV_INVENTORY_INTERVAL, "5s", parse_duration)?,
        })
    }

    /// True when tokens are signed with the published development secret.
    pub fn uses_dev_secret(&self) -> bool {
        self.auth.token_secret.expose_secret() == DEV_TOKEN_SECRET
    }
}

impl PgConfig {
    pub fn pg_config(&self) -> tokio_postgres::Config {
        // Checked in `Config::from_env`.
        self.url
            .expose_secret()
            .parse()
            .expect("DATABASE_URL was validated")
    }

    /// A lazy pool: connections open on first use, so start-up never waits on it.
    pub fn pool(&self) -> anyhow::Result<deadpool_postgres::Pool> {
        let manager = deadpool_postgres::Manager::from_config(
            self.pg_config(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        Ok(deadpool_postgres::Pool::builder(manager)
            .max_size(self.pool_size)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?)
    }
}

impl RedisConfig {
    /// Whether `REDIS_URL` names a Redis Cluster (`redis-cluster://`, `rediss-cluster://`).
    pub fn is_cluster(&self) -> bool {
        self.url.expose_secret().starts_with("redis-cluster://")
            || self.url.expose_secret().starts_with("rediss-cluster://")
    }

    /// Connects a pool; commands from many tasks are pipelined on its connections.
    pub async fn connect(&self) -> anyhow::Result<fred::prelude::Pool> {
        let pool = self.pool()?;
        fred::interfaces::ClientLike::init(&pool).await?;
        Ok(pool)
    }

    /// A pool that connects (and reconnects) in the background, for a process
    /// Redis is not essential to: commands fail until it is connected.
    pub fn connect_in_background(&self) -> anyhow::Result<fred::prelude::Pool> {
        let pool = self.pool()?;
        pool.connect_pool();
        Ok(pool)
    }

    /// A pool of plain (not cluster) connections to one node of the cluster
    /// `REDIS_URL` names, with its credentials and settings; not connected
    /// yet. See `holds::masters`.
    pub fn node_pool(
        &self,
        node: &fred::types::config::Server,
    ) -> anyhow::Result<fred::prelude::Pool> {
        let mut config = fred::types::config::Config::from_url(self.url.expose_secret())?;
        config.server = fred::types::config::ServerConfig::Centralized {
            server: node.clone(),
        };
        Ok(self
            .builder(config, self.timeout)
            .build_pool(self.pool_size)?)
    }

    fn pool(&self) -> anyhow::Result<fred::prelude::Pool> {
        let config = fred::types::config::Config::from_url(self.url.expose_secret())?;
        Ok(self
            .builder(config, self.timeout)
            .build_pool(self.pool_size)?)
    }

    /// A client of its own for the replication barriers (`holds::replication`),
    /// connected now: its `WAIT`s block its connections, never the pool's.
    /// Its commands may take the replica timeout on top of the Redis timeout.
    pub async fn connect_barriers(&self) -> anyhow::Result<fred::prelude::Client> {
        let config = fred::types::config::Config::from_url(self.url.expose_secret())?;
        let client = self
            .builder(config, self.timeout + self.replica_timeout)
            .build()?;
        fred::interfaces::ClientLike::init(&client).await?;
        Ok(client)
    }

    /// A client of plain connections to one master of the cluster, for its
    /// replication barriers (`holds::replication`); connecting in the background.
    pub fn node_barrier_client(
        &self,
        node: &fred::types::config::Server,
    ) -> anyhow::Result<fred::prelude::Client> {
        let mut config = fred::types::config::Config::from_url(self.url.expose_secret())?;
        config.server = fred::types::config::ServerConfig::Centralized {
            server: node.clone(),
        };
        let client = self
            .builder(config, self.timeout + self.replica_timeout)
            .build()?;
        fred::interfaces::ClientLike::connect(&client);
        Ok(client)
    }

    fn builder(
        &self,
        config: fred::types::config::Config,
        command_timeout: Duration,
    ) -> fred::prelude::Builder {
        use fred::prelude::*;
        let timeout = self.timeout;
        let mut builder = Builder::from_config(config);
        builder
            .with_performance_config(|perf| perf.default_command_timeout = command_timeout)
            .with_connection_config(|conn| {
                conn.connection_timeout = timeout;
                conn.tcp = fred::types::config::TcpConfig {
                    nodelay: Some(true),
                    ..Default::default()
                };
            })
            // On a cluster, a master's death stops the whole client until its
            // replica takes over (docs/redis-cluster.md): try again sooner.
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                50,
                if self.is_cluster() { 500 } else { 2_000 },
                2,
            ));
        builder
    }
}

fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Reads `name` (or its default) and parses it, naming the variable on failure.
fn parse<T>(
    env: &impl Strings,
    name: &'static str,
    default: &str,
    parse_fn: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let value = env.get(name).unwrap_or_else(|| default.to_string());
    parse_fn(value.trim()).map_err(|reason| {
        // URLs may carry passwords: never echo them back.
        let shown = if name.ends_with("_URL") {
            "<hidden>"
        } else {
            &value
        };
        invalid(name, shown, reason)
    })
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|e| format!("{e}; expected host:port such as 0.0.0.0:8080"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// A count greater than zero, in the field's own integer type: a value too large
/// for it is refused, never truncated.
fn parse_positive<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr<Err = std::num::ParseIntError> + Default + PartialEq,
{
    match s.parse::<T>() {
        Ok(n) if n == T::default() => Err("must be greater than zero".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; expected a positive integer")),
    }
}

/// A number of replicas, zero included (off); more than any deployment has
/// is a typo: every change would wait its timeout and fail.
fn parse_replicas(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_REPLICAS => Ok(n),
        Ok(_) => Err(format!("at most {MAX_REPLICAS} replicas")),
        Err(e) => Err(format!(
            "{e}; expected a number of replicas, 0 (off) to {MAX_REPLICAS}"
        )),
    }
}

/// The most replicas `HERDGATE_REDIS_MIN_REPLICAS` may ask for.
const MAX_REPLICAS: u32 = 16;

/// A duration of whole milliseconds, at least one and at most a minute:
/// `WAIT` counts in milliseconds, and `WAIT n 0` would wait forever.
fn parse_replica_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms (WAIT counts in milliseconds)".into());
    }
    if d > Duration::from_secs(60) {
        return Err("must be at most 60s: buyers wait this long for an answer".into());
    }
    Ok(d)
}

/// Durations read as `600s`, `250ms`, `10m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("{e}; expected a duration such as 600s, 250ms or 10m"))?,
    };
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

/// A duration as [`parse_duration`] reads it, or zero (`0`, `0s`): none.
fn parse_delay(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Ok(d),
        _ if s == "0" => Ok(Duration::ZERO),
        _ => parse_duration(s),
    }
}

/// `REDIS_URL` schemes: one Redis, or with `-cluster` a Redis Cluster (fred's forms).
const REDIS_SCHEMES: [&str; 4] = ["redis", "rediss", "redis-cluster", "rediss-cluster"];

/// A URL with one of `schemes`, which the client library itself must accept.
fn parse_url(
    schemes: &'static [&'static str],
    check: impl Fn(&str) -> Result<(), String>,
) -> impl Fn(&str) -> Result<SecretString, String> {
    move |s| {
        let scheme = s.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some(scheme) if schemes.contains(&scheme) => {
                check(s)?;
                Ok(SecretString::from(s.to_string()))
            }
            _ => Err(format!(
                "expected a URL starting with {}://",
                schemes.join("://, ")
            )),
        }
    }
}

/// One URL, or several separated by commas (the nodes of a cluster), each
/// with one of `schemes` and accepted by the client library.
fn parse_url_list(
    schemes: &'static [&'static str],
    check: impl Fn(&str) -> Result<(), String>,
) -> impl Fn(&str) -> Result<SecretString, String> {
    let one = parse_url(schemes, check);
    move |s| {
        for url in s.split(',') {
            one(url.trim())?;
        }
        Ok(SecretString::from(s.to_string()))
    }
}

fn parse_prefix(s: &str) -> Result<String, String> {
    // Braces would break the per-event hash tag that keeps an event in one cluster slot.
    if s.contains(['{', '}']) || s.contains(char::is_whitespace) {
        return Err("must not contain braces or spaces".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::from_env(&pairs.iter().copied().collect::<HashMap<_, _>>())
    }

    #[test]
    fn defaults_are_local_and_valid() {
        let c = config(&[]).unwrap();
        assert_eq!(c.http.addr.port(), 8080);
        assert_eq!(c.holds.ttl, Duration::from_secs(600));
        assert_eq!(c.holds.max_per_user, 8);
        assert_eq!(c.redis.prefix, "hg:");
        assert!(c.uses_dev_secret());
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        let c = config(&[(ENV_HOLD_TTL, "2"), (ENV_SEATS_CACHE_TTL, "100ms")]).unwrap();
        assert_eq!(c.holds.ttl, Duration::from_secs(2));
        assert_eq!(c.seats_cache_ttl, Duration::from_millis(100));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = config(&[(ENV_HOLD_TTL, "soon")]).unwrap_err().to_string();
        assert!(err.starts_with("HERDGATE_HOLD_TTL=\"soon\""), "{err}");
        let err = config(&[(ENV_DB_POOL, "0")]).unwrap_err().to_string();
        assert!(err.contains(ENV_DB_POOL), "{err}");
    }

    /// 2^32 + 1 once became a limit of 1 (`as u32`): it is refused instead.
    #[test]
    fn a_count_too_large_for_its_field_is_refused_not_truncated() {
        let err = config(&[(ENV_MAX_HOLDS_PER_USER, "4294967297")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_MAX_HOLDS_PER_USER), "{err}");
        assert!(err.contains("too large"), "{err}");
        let ok = config(&[(ENV_MAX_HOLDS_PER_USER, "4294967295")]).unwrap();
        assert_eq!(ok.holds.max_per_user, u32::MAX);
    }

    #[test]
    fn no_proxy_is_trusted_by_default_and_a_bad_one_is_named() {
        assert!(config(&[]).unwrap().http.trusted_proxies.is_empty());
        let c = config(&[(ENV_TRUSTED_PROXIES, "10.0.0.5,10.1.0.0/16")]).unwrap();
        assert!(!c.http.trusted_proxies.is_empty());
        let err = config(&[(ENV_TRUSTED_PROXIES, "10.0.0.5,haproxy")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_TRUSTED_PROXIES), "{err}");
        assert!(err.contains("`haproxy`"), "{err}");
    }

    #[test]
    fn the_drain_delay_may_be_zero_and_is_by_default() {
        assert_eq!(config(&[]).unwrap().http.drain_delay, Duration::ZERO);
        let c = config(&[(ENV_DRAIN_DELAY, "0")]).unwrap();
        assert_eq!(c.http.drain_delay, Duration::ZERO);
        let c = config(&[(ENV_DRAIN_DELAY, "3s")]).unwrap();
        assert_eq!(c.http.drain_delay, Duration::from_secs(3));
        assert!(config(&[(ENV_DRAIN_DELAY, "-1s")]).is_err());
    }

    #[test]
    fn the_amqp_url_may_list_a_cluster_of_nodes() {
        let three = "amqp://u:p@a:5672/%2f, amqp://u:p@b:5673/%2f,amqp://u:p@c:5674/%2f";
        let c = config(&[(ENV_AMQP_URL, three)]).unwrap();
        assert_eq!(c.amqp.url.expose_secret(), three);
        let err = config(&[(ENV_AMQP_URL, "amqp://u:hunter2@a/%2f,http://b")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_AMQP_URL), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(config(&[(ENV_AMQP_URL, "amqp://a/%2f,")]).is_err());
    }

    #[test]
    fn urls_are_checked_but_never_echoed() {
        let err = config(&[(ENV_DATABASE_URL, "mysql://root:hunter2@db")])
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_DATABASE_URL), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    /// Remembers every name asked for.
    #[derive(Default)]
    struct Recorder(std::cell::RefCell<Vec<String>>);

    impl Strings for Recorder {
        fn get(&self, name: &str) -> Option<String> {
            self.0.borrow_mut().push(name.to_string());
            None
        }
    }

    #[test]
    fn env_vars_lists_exactly_what_from_env_reads() {
        let recorder = Recorder::default();
        Config::from_env(&recorder).unwrap();
        let mut read = recorder.0.into_inner();
        read.sort();
        let mut listed: Vec<String> = ENV_VARS.iter().map(|s| s.to_string()).collect();
        listed.sort();
        let unique = listed
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        assert_eq!(unique, listed.len(), "ENV_VARS names a variable twice");
        assert_eq!(
            read, listed,
            "Config::from_env reads these, ENV_VARS lists those"
        );
    }

    #[test]
    fn every_listed_variable_is_checked() {
        // Invalid for every kind of value: not a URL, number, duration, bool or address,
        // too short for a secret, and braces are refused in prefixes.
        for &name in ENV_VARS {
            let err = config(&[(name, "{bad}")]).expect_err(name).to_string();
            assert!(err.starts_with(&format!("{name}=")), "{name}: {err}");
        }
    }

    #[test]
    fn short_secrets_and_braced_prefixes_are_refused() {
        assert!(config(&[(ENV_TOKEN_SECRET, "short")]).is_err());
        let err = config(&[(ENV_OPERATOR_TOKEN, "hunter2hunter2")])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(config(&[]).unwrap().auth.operator_token.is_none());
        let long = "o".repeat(32);
        let on = Config::from_env(&HashMap::from([(ENV_OPERATOR_TOKEN, long.as_str())])).unwrap();
        assert!(on.auth.operator_token.is_some());
        assert!(config(&[(ENV_REDIS_PREFIX, "a{b}")]).is_err());
    }

    #[test]
    fn replication_is_off_by_default_and_its_bounds_are_checked() {
        let c = config(&[]).unwrap();
        assert_eq!(c.redis.min_replicas, 0);
        assert_eq!(c.redis.replica_timeout, Duration::from_millis(250));
        let c = config(&[
            (ENV_REDIS_MIN_REPLICAS, "2"),
            (ENV_REDIS_REPLICA_TIMEOUT, "1s"),
        ])
        .unwrap();
        assert_eq!(c.redis.min_replicas, 2);
        assert_eq!(c.redis.replica_timeout, Duration::from_secs(1));
        for (value, says) in [
            ("-1", "expected a number of replicas"),
            ("one", "expected a number of replicas"),
            ("1.5", "expected a number of replicas"),
            ("17", "at most 16"),
            ("4294967296", "expected a number of replicas"),
        ] {
            let err = config(&[(ENV_REDIS_MIN_REPLICAS, value)])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("{ENV_REDIS_MIN_REPLICAS}={value:?} is invalid")),
                "{err}"
            );
            assert!(err.contains(says), "{value}: {err}");
        }
        for (value, says) in [
            ("0", "longer than zero"),
            ("0ms", "longer than zero"),
            ("500us", "at least 1ms"),
            ("2m", "at most 60s"),
            ("soon", "expected a duration"),
        ] {
            let err = config(&[(ENV_REDIS_REPLICA_TIMEOUT, value)])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("{ENV_REDIS_REPLICA_TIMEOUT}={value:?} is invalid")),
                "{err}"
            );
            assert!(err.contains(says), "{value}: {err}");
        }
    }

    #[test]
    fn a_cluster_url_selects_redis_cluster() {
        let url = "redis-cluster://127.0.0.1:7001?node=127.0.0.1:7002&node=127.0.0.1:7003";
        let c = config(&[(ENV_REDIS_URL, url)]).unwrap();
        let fred = fred::types::config::Config::from_url(c.redis.url.expose_secret()).unwrap();
        assert!(fred.server.is_clustered());
        assert!(!config(&[]).unwrap().redis.is_cluster());
        assert!(c.redis.is_cluster());
        assert!(config(&[(ENV_REDIS_URL, "redis-sentinel://127.0.0.1:26379")]).is_err());
    }
}
