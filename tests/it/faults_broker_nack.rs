//! RabbitMQ refusing the relay's publishes (nacks) under load: the relay
//! publishes a refused batch again until it is confirmed, holds are answered
//! while the outbox has room, 503 with Retry-After once it is full, the relay
//! counts the refusals, and every acknowledged hold lands once the broker takes
//! messages again. The broker is a private node (see `faults_broker`); the
//! queue refusing is another service's, full under a policy (`max-length` 0,
//! `overflow: reject-publish`): RabbitMQ nacks a publish any queue refused.
//!
//! (A refusing writer queue needs a stalled writer to hold messages ready, and
//! since an outbox entry stays until the writer commits it, the stall alone
//! fills the outbox: that case is the stalled writer's, in `durable`.)

use std::time::{Duration, Instant};

use crate::{
    faults::hold_load,
    faults_broker::{PrivateRabbit, depth_trace, drained_at, metric, settle, tally, watch_outbox},
    helpers::{Isolation, spawn_app_on, user_ids},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_of_another_service_makes_the_broker_nack_and_nothing_is_lost_or_doubled() {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    const SEATS: i64 = 3_000;
    const USERS: u32 = 8_000;
    const OUTBOX_MAX: usize = 300;
    let rabbit = PrivateRabbit::start();
    let url = rabbit.url();
    let iso = Isolation::with_seed(herdgate::seed::SeedOptions {
        demo_seats: SEATS as u32,
        users: USERS,
    })
    .await;
    let app = spawn_app_on(iso, move |env| {
        env.insert("AMQP_URL".into(), url);
        env.insert("HERDGATE_OUTBOX_MAX".into(), OUTBOX_MAX.to_string());
    })
    .await;
    let users = user_ids(&app.iso.pg().await).await;
    let topology = herdgate::broker::Topology::new(&app.iso.amqp_prefix);
    let side = format!("{}.analytics", app.iso.amqp_prefix);
    // Applies to the queue from its declaration on.
    rabbit.ctl(&[
        "set_policy",
        "herdgate-full",
        &format!("^{}$", side.replace('.', "\\.")),
        r#"{"max-length":0,"overflow":"reject-publish"}"#,
        "--apply-to",
        "queues",
    ]);
    let connection = lapin::Connection::connect(&rabbit.url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let refused_before = metric(&app, herdgate::prometheus::RELAY_REFUSED).await;
    let settled_before = metric(&app, herdgate::prometheus::WRITER_EVENTS).await;

    let start = Instant::now();
    let (bind_at, delete_at) = (
        start + Duration::from_secs(2),
        start + Duration::from_secs(8),
    );
    let until = start + Duration::from_secs(16);
    let analytics = async {
        tokio::time::sleep_until(bind_at.into()).await;
        channel
            .queue_declare(
                side.as_str().into(),
                QueueDeclareOptions::durable(),
                Default::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                side.as_str().into(),
                topology.exchange.as_str().into(),
                "hold.#".into(),
                QueueBindOptions::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let bound = Instant::now();
        tokio::time::sleep_until(delete_at.into()).await;
        channel
            .queue_delete(side.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        (bound, Instant::now())
    };
    let max = 7 * users.len();
    let (answers, (bound, deleted), depths) = tokio::join!(
        hold_load(&app, &users, SEATS, 8, until, max),
        analytics,
        watch_outbox(&app, until),
    );
    rabbit.ctl(&["clear_policy", "herdgate-full"]);
    let _ = connection.close(200, "done".into()).await;
    let refused = metric(&app, herdgate::prometheus::RELAY_REFUSED).await - refused_before;
    println!(
        "answers: {:?}; full queue bound at {:?}, deleted at {:?}; deepest outbox {}",
        tally(&answers),
        bound - start,
        deleted - start,
        depths.iter().map(|(_, d)| *d).max().unwrap_or(0)
    );
    println!("outbox depth: {}", depth_trace(&depths, start));

    let held_during = answers
        .iter()
        .filter(|a| a.started > bound && a.done < deleted && a.status == 201)
        .count();
    assert!(held_during > 0, "holds go on while the outbox has room");
    let busy = answers.iter().filter(|a| a.status == 503).count();
    assert!(busy > 0, "the outbox fills: {:?}", tally(&answers));
    assert!(refused > 0.0, "the relay counts refused events: {refused}");
    assert!(
        depths
            .iter()
            .any(|&(at, d)| at > bound && at < deleted && d >= OUTBOX_MAX as u64),
        "nacked events stay in the outbox"
    );
    let again = answers
        .iter()
        .filter(|a| a.started > deleted && a.status == 201)
        .map(|a| a.done)
        .min()
        .expect("holds are taken again once the broker accepts");
    let drained = drained_at(&depths, deleted, OUTBOX_MAX as u64 / 10).unwrap_or(until);

    // Every nacked batch the writer queue took anyway is applied once.
    let settled = settle(&app, &rabbit, &answers).await;
    // Shared by the tests of this process: exact when it runs alone.
    println!(
        "the writer settled {} hold events for {} holds",
        metric(&app, herdgate::prometheus::WRITER_EVENTS).await - settled_before,
        settled.acknowledged
    );
    println!(
        "figures: acknowledged {} ({held_during} while the full queue was bound), persisted {}, \
         lost {}, double-booked {}; {busy} answers 503 outbox-full; {refused} events refused \
         by the broker; first 201 {:?} after the queue was deleted, outbox below a tenth of \
         its bound {:?} after it; PostgreSQL had every 201 {:?} after the load ended, queues \
         empty {:?} after that",
        settled.acknowledged,
        settled.persisted,
        settled.acknowledged - settled.persisted.min(settled.acknowledged),
        settled.double_booked,
        again.saturating_duration_since(deleted),
        drained.saturating_duration_since(deleted),
        settled.stored_after,
        settled.queues_empty_after,
    );
}
