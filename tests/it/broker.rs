//! The writer queue's topology on the real RabbitMQ, in queue names of each
//! test's own: its delivery limit is declared, so a long PostgreSQL outage
//! (every writer session handing its messages back) never dead-letters an
//! acknowledged hold, and a queue an older herdgate declared still works.

use futures::StreamExt;
use herdgate::broker::Topology;
use lapin::{
    BasicProperties, Channel, Connection,
    options::{
        BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

use crate::helpers::amqp_url;

/// A topology under a prefix of this test's own, deleted on `cleanup`.
struct Names {
    topology: Topology,
    connection: Connection,
}

impl Names {
    async fn new() -> Self {
        let prefix = format!("test.{}", uuid::Uuid::new_v4().simple());
        let connection = Connection::connect(&amqp_url(), Default::default())
            .await
            .unwrap();
        Names {
            topology: Topology::new(&prefix),
            connection,
        }
    }

    async fn channel(&self) -> Channel {
        self.connection.create_channel().await.unwrap()
    }

    async fn cleanup(self) {
        use lapin::options::ExchangeDeleteOptions;
        let channel = self.channel().await;
        for queue in [&self.topology.writer_queue, &self.topology.dead] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [&self.topology.exchange, &self.topology.dead] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "test done".into()).await;
    }
}

/// The writer queue's arguments as docs/data.md (RabbitMQ) documents them.
fn documented_args(topology: &Topology, delivery_limit: Option<i64>) -> FieldTable {
    let mut args = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert("x-dead-letter-exchange".into(), text(&topology.dead));
    args.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongLongInt(topology.writer_queue_max_bytes as i64),
    );
    args.insert("x-overflow".into(), text("reject-publish"));
    if let Some(limit) = delivery_limit {
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
    }
    args
}

async fn next(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
        .await
        .expect("the message is delivered again")
        .unwrap()
        .unwrap()
}

async fn message_count(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

#[tokio::test]
async fn a_message_handed_back_25_times_is_still_delivered_not_dead_lettered() {
    let names = Names::new().await;
    let topology = &names.topology;
    let channel = names.channel().await;
    topology.declare(&channel).await.unwrap();
    // Declared with an explicit limit: redeclaring with exactly these
    // arguments is accepted (RabbitMQ refuses any other arguments).
    names
        .channel()
        .await
        .queue_declare(
            topology.writer_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            documented_args(topology, Some(1_000_000)),
        )
        .await
        .expect("the writer queue declares x-delivery-limit 1000000");

    let confirm = publish_confirmed(&channel, topology, b"{\"schemaVersion\":1}").await;
    assert!(confirm.is_ack());

    // A writer whose every session fails hands the message back each time: 25
    // times, past RabbitMQ 4.x's default limit of 20.
    let mut consumer = channel
        .basic_consume(
            topology.writer_queue.as_str().into(),
            "redelivery-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..25 {
        let delivery = next(&mut consumer).await;
        delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .unwrap();
    }
    let delivery = next(&mut consumer).await;
    let count = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    println!("26th delivery, x-delivery-count = {count:?}");
    delivery.acker.ack(Default::default()).await.unwrap();
    assert_eq!(message_count(&channel, &topology.dead).await, 0);
    names.cleanup().await;
}

#[tokio::test]
async fn a_writer_queue_declared_without_the_delivery_limit_is_kept_and_used() {
    let names = Names::new().await;
    let topology = &names.topology;
    // As herdgate declared it before the limit was set.
    let old = names.channel().await;
    old.queue_declare(
        topology.writer_queue.as_str().into(),
        QueueDeclareOptions::durable(),
        documented_args(topology, None),
    )
    .await
    .unwrap();

    let channel = topology.declare_on(&names.connection).await.unwrap();
    // The returned channel works, and the queue is bound: a publish is routed to it.
    let confirm = publish_confirmed(&channel, topology, b"{}").await;
    assert!(confirm.is_ack() && confirm.take_message().is_none());
    assert_eq!(message_count(&channel, &topology.writer_queue).await, 1);
    names.cleanup().await;
}

/// Publishes `body` as a persistent, mandatory `hold.placed` on a confirm
/// channel, and waits for RabbitMQ's confirm.
async fn publish_confirmed(
    channel: &Channel,
    topology: &Topology,
    body: &[u8],
) -> lapin::Confirmation {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
        .basic_publish(
            topology.exchange.as_str().into(),
            "hold.placed".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap()
}
