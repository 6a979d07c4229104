//! RabbitMQ: the connection, and the topology hold events travel through.
//!
//! ```text
//! <prefix>.holds (topic) --hold.#--> <prefix>.writer (quorum) --rejected--> <prefix>.dead (fanout)
//!                                                                              --> <prefix>.dead (quorum)
//! ```
//! Every process declares the whole topology before it publishes or consumes
//! (declaring is idempotent), so no message is dropped for want of a queue.
//!
//! The writer queue is bounded (`x-max-length-bytes`, overflow `reject-publish`):
//! when the writer falls behind, RabbitMQ refuses the relay's batches, they stay
//! in the outbox, the outbox fills, and the gateway answers 503 with
//! Retry-After. Backpressure reaches the buyer instead of an unbounded queue.
//!
//! Its delivery limit is declared explicitly ([`WRITER_DELIVERY_LIMIT`]): on
//! RabbitMQ 4.x a quorum queue's default is 20, after which a message is
//! dead-lettered, and every writer session PostgreSQL drops hands its unacked
//! messages back, so a long PostgreSQL outage would dead-letter acknowledged
//! holds. A queue declared by an older herdgate, without the limit, cannot be
//! redeclared with it (RabbitMQ refuses to change a queue's arguments):
//! [`Topology::declare_on`] then keeps it as it is and says so in the log.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::config::{AmqpConfig, DEFAULT_WRITER_QUEUE_MAX_BYTES};

/// Deliveries of one message the writer queue allows before dead-lettering it.
/// A delivery that ends without an ack (the writer's session dropped because
/// PostgreSQL is away) counts, and the writer reconnects at most every 5 s, so
/// this outlasts about two months of outage. A finite number, not 4.x's `-1`
/// (unlimited): RabbitMQ 3.x accepts only non-negative limits, and one value
/// on every version keeps redeclaring the queue equivalent across upgrades.
pub const WRITER_DELIVERY_LIMIT: i64 = 1_000_000;

/// Names of the exchanges and queues, all under one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Topic exchange every hold event is published to, routed by its type.
    pub exchange: String,
    /// The writer's durable quorum queue.
    pub writer_queue: String,
    /// Where messages the writer can never apply end up (exchange and queue).
    pub dead: String,
    /// The most the writer queue holds, in bytes of message bodies.
    pub writer_queue_max_bytes: u64,
}

impl Topology {
    /// The names under `prefix`, with the default bound on the writer queue.
    pub fn new(prefix: &str) -> Self {
        Topology {
            exchange: format!("{prefix}.holds"),
            writer_queue: format!("{prefix}.writer"),
            dead: format!("{prefix}.dead"),
            writer_queue_max_bytes: DEFAULT_WRITER_QUEUE_MAX_BYTES,
        }
    }

    /// The topology `config` describes.
    pub fn of(config: &AmqpConfig) -> Self {
        Topology {
            writer_queue_max_bytes: config.writer_queue_max_bytes,
            ..Topology::new(&config.prefix)
        }
    }

    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.dead.as_str().into(),
                QueueDeclareOptions::durable(),
                quorum(None),
            )
            .await?;
        channel
            .queue_bind(
                self.dead.as_str().into(),
                self.dead.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.declare_writer_queue(channel, true).await
    }

    /// Declares the whole topology on a channel of `connection`, and returns
    /// the channel. A writer queue declared by an older herdgate without the
    /// delivery limit is kept as it is (a warning says what to do about it):
    /// refusing to start would stop a running deployment at its upgrade.
    pub async fn declare_on(&self, connection: &Connection) -> lapin::Result<Channel> {
        let channel = connection.create_channel().await?;
        match self.declare(&channel).await {
            Err(e) if precondition_failed(&e) => {
                // The broker closed that channel; the rest was declared before the writer queue.
                let channel = connection.create_channel().await?;
                self.declare_writer_queue(&channel, false).await?;
                tracing::warn!(
                    queue = self.writer_queue,
                    error = %e,
                    "the writer queue was declared without x-delivery-limit (by an older herdgate): \
                     on RabbitMQ 4.x it dead-letters a message after 20 deliveries; \
                     apply a delivery-limit policy, or drain and delete the queue once"
                );
                Ok(channel)
            }
            result => result.map(|()| channel),
        }
    }

    /// The writer queue with its bound, its dead-letter exchange and (unless
    /// `with_limit`) its delivery limit, bound to the exchange.
    async fn declare_writer_queue(&self, channel: &Channel, with_limit: bool) -> lapin::Result<()> {
        channel
            .queue_declare(
                self.writer_queue.as_str().into(),
                QueueDeclareOptions::durable(),
                self.writer_queue_args(with_limit),
            )
            .await?;
        channel
            .queue_bind(
                self.writer_queue.as_str().into(),
                self.exchange.as_str().into(),
                "hold.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

impl Topology {
    /// Messages ready in the writer queue, on a channel of its own (a missing
    /// queue closes the channel that asked): `None` when there is no such queue.
    pub async fn writer_queue_ready(&self, connection: &Connection) -> lapin::Result<Option<u32>> {
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                self.writer_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(queue) => {
                let _ = channel.close(200, "asked".into()).await;
                Ok(Some(queue.message_count()))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The writer queue's arguments, exactly as every process declares them.
    pub fn writer_queue_args(&self, with_limit: bool) -> FieldTable {
        let mut args = quorum(Some(&self.dead));
        args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(self.writer_queue_max_bytes as i64),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        if with_limit {
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(WRITER_DELIVERY_LIMIT),
            );
        }
        args
    }
}

/// RabbitMQ refused a declaration that differs from what exists (406).
fn not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

fn precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406)
}

fn quorum(dead_letter_exchange: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(dlx) = dead_letter_exchange {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.into()),
        );
    }
    args
}

/// Opens connections to RabbitMQ; readiness keeps one open and reopens it when it drops.
///
/// `AMQP_URL` may list several nodes of a cluster, separated by commas: every
/// connection goes to the first that answers, starting with the node the last
/// one reached, so when a node dies the relay and the writer move to another
/// on their next session. The cluster keeps the exchange and the quorum queue
/// on the nodes that remain (a majority of them).
pub struct Broker {
    /// One URL per node, in the order `AMQP_URL` lists them.
    urls: Vec<SecretString>,
    /// The node the last connection reached: tried first next time.
    preferred: AtomicUsize,
    pub topology: Topology,
    connection: Mutex<Option<Connection>>,
    /// The most [`Broker::open_channel`] waits for one node (`HERDGATE_AMQP_CONNECT_TIMEOUT`).
    connect_timeout: Duration,
}

impl Broker {
    pub fn new(config: &AmqpConfig) -> Self {
        Broker {
            urls: config
                .url
                .expose_secret()
                .split(',')
                .map(|url| SecretString::from(url.trim().to_string()))
                .collect(),
            preferred: AtomicUsize::new(0),
            topology: Topology::of(config),
            connection: Mutex::new(None),
            connect_timeout: config.connect_timeout,
        }
    }

    /// `HERDGATE_AMQP_CONNECT_TIMEOUT`: also the bound on a publish and its
    /// confirm (see `relay`), which a node dying mid-way can leave unanswered.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// A new connection to the first node that accepts one, for a component
    /// that owns it (relay, writer).
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        self.first_live(|url| async move {
            Ok(Connection::connect(&url, ConnectionProperties::default()).await?)
        })
        .await
    }

    /// A connection of its own and a channel on it, with the topology declared,
    /// within the connect timeout for each node. Without one, a relay or writer
    /// reconnecting to a broker cut off (the network, or a frozen node whose
    /// kernel still accepts connections) waits in the handshake for as long as
    /// the cut lasts, and never tries again: the heartbeat only starts once connected.
    pub async fn open_channel(&self) -> anyhow::Result<(Connection, Channel)> {
        let timeout = self.connect_timeout;
        self.first_live(|url| async move {
            tokio::time::timeout(timeout, self.open_channel_on(&url))
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no answer from RabbitMQ within {timeout:?} (HERDGATE_AMQP_CONNECT_TIMEOUT)"
                    )
                })?
        })
        .await
    }

    async fn open_channel_on(&self, url: &str) -> anyhow::Result<(Connection, Channel)> {
        use anyhow::Context;
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .context("failed to connect to RabbitMQ")?;
        let channel = self
            .topology
            .declare_on(&connection)
            .await
            .context("failed to declare topology")?;
        Ok((connection, channel))
    }

    /// The node connected last accepted a connection but then left a publish
    /// or its confirm unanswered for the bound: the next connection tries the
    /// node after it first. A node cut off from the majority of its cluster
    /// (or with a stale view of a quorum queue's leader) accepts connections
    /// and channels and never confirms; going back to it first would repeat
    /// the silence on every session.
    pub fn pass_over_preferred(&self) {
        if self.urls.len() < 2 {
            return;
        }
        let silent = self.preferred.load(Ordering::Relaxed) % self.urls.len();
        let next = (silent + 1) % self.urls.len();
        if self
            .preferred
            .compare_exchange(silent, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                silent = node_name(self.urls[silent].expose_secret()),
                next = node_name(self.urls[next].expose_secret()),
                "RabbitMQ node left a publish unanswered: trying another node first"
            );
        }
    }

    /// `attempt` on each node in turn, from the preferred one, until one succeeds.
    async fn first_live<T, F, Fut>(&self, attempt: F) -> anyhow::Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let first = self.preferred.load(Ordering::Relaxed) % self.urls.len();
        let mut failures = Vec::new();
        for i in (first..self.urls.len()).chain(0..first) {
            let url = self.urls[i].expose_secret();
            match attempt(url.to_string()).await {
                Ok(done) => {
                    if i != first || !failures.is_empty() {
                        tracing::info!(node = node_name(url), "connected to RabbitMQ node");
                    }
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(done);
                }
                Err(e) if self.urls.len() == 1 => return Err(e),
                Err(e) => failures.push(format!("{}: {e:#}", node_name(url))),
            }
        }
        anyhow::bail!("no RabbitMQ node answered: {}", failures.join("; "))
    }

    /// Ok when a connection to RabbitMQ is open, connecting first if needed.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        let mut connection = self.connection.lock().await;
        if connection.as_ref().is_some_and(|c| c.status().connected()) {
            return Ok(());
        }
        match tokio::time::timeout(timeout, self.connect()).await {
            Ok(Ok(c)) => {
                *connection = Some(c);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// `host:port` of an AMQP URL, for logs: never its credentials.
fn node_name(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!("{}:{}", uri.authority.host, uri.authority.port),
        Err(_) => "?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_leave_credentials_out() {
        assert_eq!(
            node_name("amqp://guest:hunter2@rabbit-2:5673/%2f"),
            "rabbit-2:5673"
        );
    }

    #[tokio::test]
    async fn a_dead_node_is_passed_over_for_the_next_and_remembered() {
        // Nothing listens on either port; the attempt below fails on the first.
        let closed = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let (a, b) = (closed(), closed());
        let config = crate::config::Config::from_env(&std::collections::HashMap::from([(
            crate::config::ENV_AMQP_URL,
            format!("amqp://127.0.0.1:{a}/%2f,amqp://127.0.0.1:{b}/%2f").as_str(),
        )]))
        .unwrap();
        let broker = Broker::new(&config.amqp);
        assert_eq!(broker.urls.len(), 2);
        let tried = std::sync::Mutex::new(Vec::new());
        let result = broker
            .first_live(|url| {
                tried.lock().unwrap().push(url.clone());
                async move {
                    if url.ends_with(&format!("{b}/%2f")) {
                        Ok(())
                    } else {
                        anyhow::bail!("refused")
                    }
                }
            })
            .await;
        assert!(result.is_ok());
        assert_eq!(broker.preferred.load(Ordering::Relaxed), 1);
        // The node that answered is tried first next time.
        tried.lock().unwrap().clear();
        broker
            .first_live(|url| {
                tried.lock().unwrap().push(url);
                async { Ok(()) }
            })
            .await
            .unwrap();
        assert_eq!(tried.lock().unwrap().len(), 1);
        assert!(tried.lock().unwrap()[0].ends_with(&format!("{b}/%2f")));
        // A silent node is passed over: the next connection starts at the one after it.
        broker.pass_over_preferred();
        assert_eq!(broker.preferred.load(Ordering::Relaxed), 0);
        broker.pass_over_preferred();
        assert_eq!(broker.preferred.load(Ordering::Relaxed), 1);
        let err = broker.connect().await.unwrap_err().to_string();
        assert!(err.contains("no RabbitMQ node answered"), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{a}")), "{err}");
    }
}
