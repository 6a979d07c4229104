//! The network between gateway and broker cut under load: the private
//! RabbitMQ node's VM is frozen with SIGSTOP (its sockets stay open, nothing is
//! read or answered, as across a cut link) and resumed with SIGCONT. Publishes
//! in flight get no confirm while it lasts; the outbox keeps them, holds are
//! answered while it has room, 503 with Retry-After once it is full, and
//! everything lands once the link is back.

use std::time::{Duration, Instant};

use crate::{
    faults::hold_load,
    faults_broker::{
        PrivateRabbit, SEATS, Window, app_on_private_broker, depth_trace, fault_window, settle,
        tally, watch_outbox,
    },
    helpers::user_ids,
};

/// A cut shorter than the heartbeat timeout (RabbitMQ proposes 60 s, and
/// lapin gives up after two of them without a frame): the relay's connection
/// survives, its confirms arrive once the broker answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_off_under_load_gets_503_from_a_full_outbox_and_loses_nothing() {
    cut_off_under_load(None).await
}

/// A cut longer than the heartbeat timeout (a 2 s heartbeat: lapin drops the
/// connection after 4 s without a frame): the relay's unconfirmed publishes
/// fail, its entries stay pending in the outbox, and the relay and the writer
/// reconnect once the broker answers, publishing them again (the broker may
/// have taken some already: the writer applies each once). Their reconnects
/// during the cut give up after a connect timeout of 2 s and are tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_off_past_the_heartbeat_timeout_is_reconnected_and_loses_nothing() {
    cut_off_under_load(Some(2)).await
}

/// Holds for 26 s, the broker frozen for 10 s of them from 2 s on; with
/// `heartbeat` (seconds) asked for in the AMQP URL.
async fn cut_off_under_load(heartbeat: Option<u16>) {
    const OUTBOX_MAX: usize = 300;
    const CUT: Duration = Duration::from_secs(10);
    let (rabbit, app) = app_on_private_broker(OUTBOX_MAX, |env| {
        if let Some(seconds) = heartbeat {
            let url = &env["AMQP_URL"];
            env.insert("AMQP_URL".into(), format!("{url}?heartbeat={seconds}"));
            // Reconnects during the cut give up and are tried again.
            env.insert("HERDGATE_AMQP_CONNECT_TIMEOUT".into(), "2s".into());
        }
    })
    .await;
    let users = user_ids(&app.iso.pg().await).await;

    let start = Instant::now();
    let cut_at = start + Duration::from_secs(2);
    let until = cut_at + CUT + Duration::from_secs(14);
    let broker = rabbit.clone();
    let cut = async move {
        tokio::time::sleep_until(cut_at.into()).await;
        broker.freeze();
        let frozen = Instant::now();
        tokio::time::sleep(CUT).await;
        broker.thaw();
        (frozen, Instant::now())
    };
    let max = 7 * users.len();
    let (answers, (frozen, thawed), depths) = tokio::join!(
        hold_load(&app, &users, SEATS, 8, until, max),
        cut,
        watch_outbox(&app, until),
    );
    println!(
        "answers: {:?}; frozen at {:?}, resumed at {:?}; deepest outbox {}",
        tally(&answers),
        frozen - start,
        thawed - start,
        depths.iter().map(|(_, d)| *d).max().unwrap_or(0)
    );
    println!("outbox depth: {}", depth_trace(&depths, start));

    // Nothing is confirmed while the broker is cut off: the outbox only grows.
    let Window {
        held_during,
        busy,
        again,
        drained,
    } = fault_window(
        &answers,
        &depths,
        (frozen, thawed),
        OUTBOX_MAX,
        until,
        "unconfirmed",
    );

    let settled = settle(&app, &rabbit, &answers).await;
    // The relay's and the writer's: none left over by attempts given up.
    let connections = rabbit.ctl(&["list_connections", "name"]);
    let open = connections
        .lines()
        .filter(|l| l.contains("127.0.0.1"))
        .count();
    assert_eq!(open, 2, "{connections}");
    println!(
        "figures: acknowledged {} ({held_during} while cut off), persisted {}, lost {}, \
         double-booked {}; {busy} answers 503 outbox-full; first 201 {:?} after SIGCONT, \
         outbox below a tenth of its bound {:?} after it; PostgreSQL had every 201 {:?} after the load ended, \
         queues empty {:?} after that",
        settled.acknowledged,
        settled.persisted,
        settled.acknowledged - settled.persisted.min(settled.acknowledged),
        settled.double_booked,
        again.saturating_duration_since(thawed),
        drained.saturating_duration_since(thawed),
        settled.stored_after,
        settled.queues_empty_after,
    );
}

/// A relay or writer connecting while the broker is cut off gives up after
/// `HERDGATE_AMQP_CONNECT_TIMEOUT` and tries again (its session's backoff),
/// instead of waiting in the AMQP handshake for as long as the cut lasts: the
/// kernel of a frozen node still accepts the TCP connection, so only a timeout
/// ends the wait. The attempt given up leaves no connection on the broker.
#[tokio::test]
async fn a_connect_to_a_cut_off_broker_gives_up_after_the_connect_timeout() {
    let rabbit = PrivateRabbit::start();
    let env: std::collections::HashMap<String, String> = [
        ("AMQP_URL", rabbit.url()),
        ("HERDGATE_AMQP_CONNECT_TIMEOUT", "1s".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = herdgate::config::Config::from_env(&env).unwrap();
    let broker = herdgate::broker::Broker::new(&config.amqp);

    rabbit.freeze();
    let started = Instant::now();
    let attempt = tokio::time::timeout(Duration::from_secs(20), broker.open_channel()).await;
    let waited = started.elapsed();
    rabbit.thaw();
    println!(
        "connect to a frozen broker: {:?} after {waited:?}",
        attempt
            .as_ref()
            .map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
    );
    let refused = attempt.expect("the connect gives up by itself, it does not wait for the broker");
    assert!(refused.is_err(), "no connection while frozen");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    let (connection, _channel) = broker.open_channel().await.expect("connects once resumed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connections = rabbit.ctl(&["list_connections", "name"]);
    assert_eq!(
        connections
            .lines()
            .filter(|l| l.contains("127.0.0.1"))
            .count(),
        1,
        "{connections}"
    );
    let _ = connection.close(200, "done".into()).await;
}
