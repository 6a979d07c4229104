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

use std::time::Duration;

use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::config::{AmqpConfig, DEFAULT_WRITER_QUEUE_MAX_BYTES};

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
        let mut writer_args = quorum(Some(&self.dead));
        writer_args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(self.writer_queue_max_bytes as i64),
        );
        writer_args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        channel
            .queue_declare(
                self.writer_queue.as_str().into(),
                QueueDeclareOptions::durable(),
                writer_args,
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
pub struct Broker {
    url: SecretString,
    pub topology: Topology,
    connection: Mutex<Option<Connection>>,
}

impl Broker {
    pub fn new(config: &AmqpConfig) -> Self {
        Broker {
            url: config.url.clone(),
            topology: Topology::of(config),
            connection: Mutex::new(None),
        }
    }

    /// A new connection, for a component that owns it (relay, writer).
    pub async fn connect(&self) -> lapin::Result<Connection> {
        Connection::connect(self.url.expose_secret(), ConnectionProperties::default()).await
    }

    /// A connection of its own and a channel on it, with the topology declared.
    pub async fn open_channel(&self) -> anyhow::Result<(Connection, Channel)> {
        use anyhow::Context;
        let connection = self
            .connect()
            .await
            .context("failed to connect to RabbitMQ")?;
        let channel = connection.create_channel().await?;
        self.topology
            .declare(&channel)
            .await
            .context("failed to declare topology")?;
        Ok((connection, channel))
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
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}
