//! Spawns the real app against the real services, isolated per test: its own
//! PostgreSQL database, its own Redis key prefix. Everything is removed on drop.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::LazyLock,
    time::{Duration, Instant},
};

use fred::{
    interfaces::{ClientLike, KeysInterface},
    prelude::{Builder, Client},
    types::scan::Scanner,
};
use futures::TryStreamExt;
use herdgate::{
    broker::Topology,
    config::{self, Config},
    migrate,
    seed::{self, SeedOptions},
};
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use uuid::Uuid;

/// Seats of event 1 in tests: enough to page, small enough to load at once.
pub const DEMO_SEATS: u32 = 300;
pub const USERS: u32 = 20;

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        herdgate::telemetry::init();
    }
});

/// The maintenance database URL; each test creates its own database next to it.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_string())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_string())
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// A database, a Redis prefix and RabbitMQ names of one test's own, migrated and seeded.
pub struct Isolation {
    /// The maintenance database of the server `database` lives on.
    pub admin_url: String,
    pub database: String,
    pub database_url: String,
    pub prefix: String,
    pub amqp_prefix: String,
}

impl Isolation {
    pub async fn new() -> Self {
        Self::with_seed(SeedOptions {
            demo_seats: DEMO_SEATS,
            users: USERS,
        })
        .await
    }

    pub async fn with_seed(options: SeedOptions) -> Self {
        Self::with_seed_on(&admin_url(), options).await
    }

    /// A database on the server whose maintenance database is `admin` (a
    /// private cluster of the test's own, say), migrated and seeded.
    pub async fn with_seed_on(admin: &str, options: SeedOptions) -> Self {
        LazyLock::force(&TRACING);
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("herdgate_test_{id}");
        let mut pg: tokio_postgres::Config = admin.parse().unwrap();
        pg.dbname(&database);
        migrate::run(&pg).await.expect("migrations apply");
        let (client, connection) = pg.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        seed::run(&client, options).await.expect("seed applies");
        let (base, _) = admin
            .rsplit_once('/')
            .map(|(b, d)| (b.to_string(), d.to_string()))
            .unwrap();
        Isolation {
            admin_url: admin.to_string(),
            database_url: format!("{base}/{database}"),
            database,
            prefix: format!("test:{id}:"),
            amqp_prefix: format!("test.{id}"),
        }
    }

    /// The environment the app reads, pointing at this test's resources.
    pub fn env(&self) -> HashMap<String, String> {
        [
            (config::ENV_DATABASE_URL, self.database_url.clone()),
            (config::ENV_REDIS_URL, redis_url()),
            (config::ENV_AMQP_URL, amqp_url()),
            (config::ENV_REDIS_PREFIX, self.prefix.clone()),
            (config::ENV_AMQP_PREFIX, self.amqp_prefix.clone()),
            (config::ENV_ADDR, "127.0.0.1:0".to_string()),
            (config::ENV_INVENTORY_INTERVAL, "200ms".to_string()),
            (config::ENV_SEATS_CACHE_TTL, "100ms".to_string()),
            (config::ENV_BODY_TIMEOUT, "1s".to_string()),
            (config::ENV_SHUTDOWN_GRACE, "5s".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub async fn pg(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
    }

    pub async fn redis(&self) -> Client {
        redis_client().await
    }

    /// Deletes every key under this test's prefix (FLUSHDB, for this test only).
    pub async fn flush_redis(&self) {
        flush_prefix(&self.prefix).await;
    }

    /// The database goes first: a sync still running in the app then fails
    /// instead of loading the inventory again after the flush.
    async fn cleanup(admin: String, database: String, prefix: String, amqp_prefix: String) {
        let (admin, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
            ))
            .await
            .unwrap();
        flush_prefix(&prefix).await;
        delete_topology(&amqp_prefix).await;
    }
}

/// Removes a test's exchanges and queues.
async fn delete_topology(amqp_prefix: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let topology = Topology::new(amqp_prefix);
    let connection = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for queue in [&topology.writer_queue, &topology.dead] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    for exchange in [&topology.exchange, &topology.dead] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
    let _ = connection.close(200, "test done".into()).await;
}

pub async fn redis_client() -> Client {
    let config = fred::types::config::Config::from_url(&redis_url()).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    client
}

async fn flush_prefix(prefix: &str) {
    let redis = redis_client().await;
    let keys: Vec<String> = redis
        .scan(format!("{prefix}*"), Some(1000), None)
        .map_ok(|mut page| page.take_results().unwrap_or_default())
        .try_concat()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|k| k.into_string())
        .collect();
    for chunk in keys.chunks(500) {
        redis.del::<(), _>(chunk.to_vec()).await.unwrap();
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        let (database, prefix) = (self.database.clone(), std::mem::take(&mut self.prefix));
        let (admin, amqp_prefix) = (self.admin_url.clone(), self.amqp_prefix.clone());
        if prefix.is_empty() {
            return;
        }
        // Drop cannot await: clean up on a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(Isolation::cleanup(admin, database, prefix, amqp_prefix))
        })
        .join();
        // A test failing while its private PostgreSQL is down cannot clean up
        // there: a second panic would abort every test in the binary.
        if !std::thread::panicking() {
            cleanup.expect("cleanup succeeds");
        }
    }
}

/// The real app serving on a random port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub config: Config,
    /// Mints and checks tokens as the app does.
    pub auth: herdgate::auth::Auth,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    // Last: dropped after the server is stopped.
    pub iso: Isolation,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the app with its environment adjusted by `customize`.
pub async fn spawn_app_with(customize: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
    spawn_app_on(Isolation::new().await, customize).await
}

/// Spawns the app on resources prepared by the caller.
pub async fn spawn_app_on(
    iso: Isolation,
    customize: impl FnOnce(&mut HashMap<String, String>),
) -> TestApp {
    let mut env = iso.env();
    customize(&mut env);
    let config = Config::from_env(&env).expect("test config is valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(herdgate::serve::run(
        config.clone(),
        herdgate::serve::Role::All,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let app = TestApp {
        addr,
        base: format!("http://{addr}"),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        auth: herdgate::auth::Auth::new(&config.auth).unwrap(),
        config,
        stop: Some(stop),
        server: Some(server),
        iso,
    };
    app.wait_until(|| async { app.get("/healthz").await.status() == 200 })
        .await;
    app
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        request.send().await.unwrap()
    }

    /// The process still answers its liveness probe.
    pub async fn assert_healthy(&self) {
        assert_eq!(self.get("/healthz").await.status(), 200);
    }

    /// `body` sent to the login endpoint is a 400 `invalid-body` problem.
    pub async fn assert_invalid_login_body(&self, body: &str) {
        let response = self
            .post(
                "/api/users/login",
                Some("application/json"),
                body.to_string(),
            )
            .await;
        let p = assert_problem(response, 400).await;
        assert_eq!(p["type"], "/problems/invalid-body", "{body}");
    }

    /// A bearer token for `user_id`, minted with the app's secret.
    pub fn token(&self, user_id: i64) -> String {
        self.auth.issue(user_id).unwrap().token
    }

    pub async fn post_hold(
        &self,
        token: &str,
        event_id: i64,
        seat_id: i64,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/api/bookings", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({"eventId": event_id, "seatId": seat_id}));
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    /// `method /api/bookings/<path>` as the user `token` names (a booking's
    /// status, `<id>/confirm`, or its cancel with DELETE).
    pub async fn booking(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::Response {
        self.http
            .request(method, format!("{}/api/bookings/{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_login(&self, email: &str, password: &str) -> reqwest::Response {
        let body = serde_json::json!({"email": email, "password": password}).to_string();
        self.post("/api/users/login", Some("application/json"), body)
            .await
    }

    /// `herdgate check`: once the writer has drained, Redis and PostgreSQL
    /// agree on every seat and live hold.
    pub async fn assert_stores_agree(&self) {
        assert_stores_agree(&self.config).await
    }

    /// Stops the app as SIGTERM would (HTTP drained, the writer settles its
    /// batch and closes its connection, handing back anything unacked), then
    /// counts what RabbitMQ still has: (messages in the writer queue, in the
    /// dead-letter queue). (0, 0) means nothing was left unacked or unread.
    pub async fn shut_down_and_count_queued(&mut self) -> (u32, u32) {
        use lapin::{options::QueueDeclareOptions, types::FieldTable};
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(15), server)
                .await
                .expect("the app stops within 15 s")
                .unwrap()
                .expect("the app stops cleanly");
        }
        let topology = Topology::of(&self.config.amqp);
        let connection = lapin::Connection::connect(&amqp_url(), Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut counts = Vec::new();
        for queue in [&topology.writer_queue, &topology.dead] {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let queue = channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .unwrap();
            assert_eq!(queue.consumer_count(), 0, "a consumer is left");
            counts.push(queue.message_count());
        }
        let _ = connection.close(200, "counted".into()).await;
        (counts[0], counts[1])
    }

    /// Polls `check` until it holds, failing the test after 10 s.
    pub async fn wait_until<F, Fut>(&self, check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        eventually(Duration::from_secs(10), check).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// `herdgate check` for the deployment `config` describes: once the writer has
/// drained, Redis and PostgreSQL agree on every seat and live hold.
pub async fn assert_stores_agree(config: &Config) {
    let redis = config.redis.connect().await.unwrap();
    let keys = herdgate::holds::Keys::new(config.redis.prefix.clone());
    let store = herdgate::holds::Store::new(redis, keys);
    let pg = config.pg.pool().unwrap();
    let report = herdgate::check::reconcile(&store, &pg, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        report.differences.is_empty(),
        "{} differences, e.g. {:?}",
        report.differences.len(),
        &report.differences[..report.differences.len().min(5)]
    );
    assert!(report.seats > 0);
}

/// Polls `check` until it holds, failing the test after `within`.
pub async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first value of a one-row, one-column query.
pub async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Ids of the load-test users, in order.
pub async fn user_ids(client: &tokio_postgres::Client) -> Vec<i64> {
    client
        .query(
            "SELECT id FROM users WHERE email LIKE '%@load.test' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Asserts `response` is a problem document with `status`, and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem without {field}: {body}");
    }
    body
}

pub async fn json(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    response.json().await.unwrap()
}

/// Puts `event_id` behind a waiting room that started a second ago and admits
/// 1,000 buyers a second (before the app loads it: the loader reads it then).
pub async fn add_waiting_room(pg: &tokio_postgres::Client, event_id: i64) {
    pg.execute(
        "INSERT INTO waiting_rooms (event_id, opens_at, starts_at, admit_per_sec, max_active,
                                    idle_ms, session_cap_ms, grace_ms, seed)
         VALUES ($1, now() - interval '1 hour', now() - interval '1 second', 1000, 1000,
                 60000, 600000, 60000, repeat('s', 32))",
        &[&event_id],
    )
    .await
    .unwrap();
}

/// The `Retry-After` seconds of an answer, asserted to be within a minute.
pub fn retry_after(response: &reqwest::Response) -> u64 {
    let secs: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "Retry-After: {secs}");
    secs
}
