//! RabbitMQ refusing the relay's publishes (nacks) under load: the relay
//! publishes a refused batch again until it is confirmed, holds are answered
//! while the outbox has room, 503 with Retry-After once it is full, the relay
//! counts the refusals, and every acknowledged hold lands once the broker takes
//! messages again. The broker is a private node (see `faults_broker`); a queue
//! refuses under a policy (`max-length` 0, `overflow: reject-publish`), and
//! RabbitMQ nacks a publish any of its queues refused.
//!
//! Two queues refuse: the writer queue, under a policy set before the load
//! that bites once a stalled writer leaves messages ready in it; and another
//! service's queue, full under the same policy, while the writer keeps up.

use std::time::{Duration, Instant};

use crate::{
    faults::hold_load,
    faults_broker::{
        SEATS, Window, app_on_private_broker, depth_trace, fault_window, metric, settle, tally,
        watch_outbox,
    },
    helpers::user_ids,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_nacks_under_load_gets_503_from_a_full_outbox_and_loses_nothing() {
    // An entry stays in the outbox until the writer commits it: from the stall
    // on the outbox fills whether the broker refuses or not, so it must have
    // room left when the refusals begin (once the writer's prefetch is full).
    const OUTBOX_MAX: usize = 1_000;
    let (rabbit, app) = app_on_private_broker(OUTBOX_MAX, |_| {}).await;
    let users = user_ids(&app.iso.pg().await).await;
    let pattern = format!("^{}\\.writer$", app.iso.amqp_prefix.replace('.', "\\."));
    let refused_before = metric(&app, herdgate::metric::RELAY_REFUSED).await;
    // The policy is in place before the load (rabbitmqctl takes seconds): while
    // the writer keeps up no message waits ready, so nothing is refused yet.
    let policy = rabbit.ctl(&[
        "set_policy",
        "herdgate-nack",
        &pattern,
        r#"{"max-length":0,"overflow":"reject-publish"}"#,
        "--apply-to",
        "queues",
        "--priority",
        "10",
    ]);
    println!("policy set: {}", policy.trim());

    let start = Instant::now();
    let (nack_at, accept_at) = (
        start + Duration::from_secs(2),
        start + Duration::from_secs(10),
    );
    // Long enough after the policy is cleared for the relay to drain the outbox.
    let until = start + Duration::from_secs(20);
    let stall = app.iso.pg().await;
    let refusals = async move {
        tokio::time::sleep_until(nack_at.into()).await;
        // The writer stalls (its inserts wait for the lock): once its prefetch
        // is full, messages wait ready in its queue and the broker refuses more.
        stall
            .batch_execute("BEGIN; LOCK TABLE bookings IN SHARE MODE")
            .await
            .unwrap();
        let set = Instant::now();
        tokio::time::sleep_until(accept_at.into()).await;
        stall.batch_execute("COMMIT").await.unwrap();
        (set, Instant::now())
    };
    // At most 7 requests per user: below the per-user hold limit of 8.
    let max = 7 * users.len();
    let (answers, (set, cleared), depths) = tokio::join!(
        hold_load(&app, &users, SEATS, 8, until, max),
        refusals,
        watch_outbox(&app, until),
    );
    let refused = metric(&app, herdgate::metric::RELAY_REFUSED).await - refused_before;
    println!(
        "answers: {:?}; writer stalled at {:?}, going again at {:?}; deepest outbox {}",
        tally(&answers),
        set - start,
        cleared - start,
        depths.iter().map(|(_, d)| *d).max().unwrap_or(0)
    );
    println!("outbox depth: {}", depth_trace(&depths, start));

    // The relay saw the refusals: counted (a metric shared by the tests of this
    // process, hence at least) and kept in the outbox.
    assert!(refused > 0.0, "the relay counts refused events: {refused}");
    let Window {
        held_during,
        busy,
        again,
        drained,
    } = fault_window(
        &answers,
        &depths,
        (set, cleared),
        OUTBOX_MAX,
        until,
        "refused",
    );

    rabbit.ctl(&["clear_policy", "herdgate-nack"]);
    let settled = settle(&app, &rabbit, &answers).await;
    println!(
        "figures: acknowledged {} ({held_during} while the broker refused), persisted {}, \
         lost {}, double-booked {}; {busy} answers 503 outbox-full; {refused} events refused \
         by the broker; first 201 {:?} after the writer went again, outbox below a tenth of its \
         bound {:?} after it; PostgreSQL had every 201 {:?} after the load ended, queues empty {:?} after that",
        settled.acknowledged,
        settled.persisted,
        settled.acknowledged - settled.persisted.min(settled.acknowledged),
        settled.double_booked,
        again.saturating_duration_since(cleared),
        drained.saturating_duration_since(cleared),
        settled.stored_after,
        settled.queues_empty_after,
    );
}

/// Another service's queue bound to the hold exchange (as analytics would)
/// at its limit, `max-length` 0 with `overflow: reject-publish`: RabbitMQ
/// nacks every publish that queue refuses, though the writer queue took it.
/// The relay keeps and publishes again what was nacked, so the writer sees
/// each such batch many times and applies it once; the outbox fills, holds
/// get 503, and once the queue is gone everything lands, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_of_another_service_makes_the_broker_nack_and_nothing_is_lost_or_doubled() {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    const OUTBOX_MAX: usize = 300;
    let (rabbit, app) = app_on_private_broker(OUTBOX_MAX, |_| {}).await;
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
    let refused_before = metric(&app, herdgate::metric::RELAY_REFUSED).await;
    let settled_before = metric(&app, herdgate::metric::WRITER_EVENTS).await;

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
    let refused = metric(&app, herdgate::metric::RELAY_REFUSED).await - refused_before;
    println!(
        "answers: {:?}; full queue bound at {:?}, deleted at {:?}; deepest outbox {}",
        tally(&answers),
        bound - start,
        deleted - start,
        depths.iter().map(|(_, d)| *d).max().unwrap_or(0)
    );
    println!("outbox depth: {}", depth_trace(&depths, start));

    assert!(refused > 0.0, "the relay counts refused events: {refused}");
    let Window {
        held_during,
        busy,
        again,
        drained,
    } = fault_window(
        &answers,
        &depths,
        (bound, deleted),
        OUTBOX_MAX,
        until,
        "nacked",
    );

    // Every nacked batch the writer queue took anyway is applied once.
    let settled = settle(&app, &rabbit, &answers).await;
    // Shared by the tests of this process: exact when it runs alone.
    println!(
        "the writer settled {} hold events for {} holds",
        metric(&app, herdgate::metric::WRITER_EVENTS).await - settled_before,
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
