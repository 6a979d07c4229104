//! The durable path between Redis and PostgreSQL: holds travel in batches, a
//! batch RabbitMQ could not route or refused stays in the outbox, a writer that
//! falls behind turns holds away instead of queueing without bound, and a
//! quiet catalogue is relayed and swept through the activity channel, not by
//! visiting every event.

use std::{collections::HashMap, time::Duration};

use fred::interfaces::StreamsInterface;
use futures::StreamExt;
use herdgate::{
    broker::Topology,
    hold_event,
    holds::Keys,
    serve::{self, Role},
    status::BookingStatus,
};
use lapin::{
    Connection,
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use tokio::net::TcpListener;

use crate::helpers::{
    Isolation, TestApp, amqp_url, assert_problem, eventually, json, scalar, spawn_app_on, user_ids,
};

/// A RabbitMQ address nothing listens on: the relay cannot publish.
const NO_BROKER: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

async fn outbox_len(app: &TestApp, event_id: i64) -> u64 {
    outbox_len_of(&app.iso, event_id).await
}

async fn outbox_len_of(iso: &Isolation, event_id: i64) -> u64 {
    let outbox = Keys::new(iso.prefix.clone()).event(event_id).outbox();
    iso.redis().await.xlen(outbox).await.unwrap()
}

/// Waits until PostgreSQL holds `bookings` bookings and event 1's outbox is empty.
async fn all_landed(app: &TestApp, bookings: i64) {
    let pg = app.iso.pg().await;
    eventually(Duration::from_secs(15), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == bookings
    })
    .await;
    eventually(Duration::from_secs(10), || async {
        outbox_len(app, 1).await == 0
    })
    .await;
}

/// Holds seats 1..=n of event 1, one user each; every answer must be 201.
async fn hold_seats(app: &TestApp, n: usize) {
    let users = user_ids(&app.iso.pg().await).await;
    for (seat, &user) in (1..=n as i64).zip(&users) {
        json(app.post_hold(&app.token(user), 1, seat, None).await, 201).await;
    }
}

/// Serves `iso` in the background with its environment adjusted, as a second process would.
async fn another_process(
    iso: &Isolation,
    role: Role,
    customize: impl FnOnce(&mut std::collections::HashMap<String, String>),
) {
    let mut env = iso.env();
    customize(&mut env);
    let config = herdgate::config::Config::from_env(&env).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(async move {
        match role {
            Role::Writer => serve::run_writer(config, std::future::pending()).await,
            role => serve::run(config, role, listener, std::future::pending()).await,
        }
    });
}

#[tokio::test]
async fn holds_waiting_in_the_outbox_travel_as_one_batch_per_type_in_outbox_order() {
    // This gateway cannot reach RabbitMQ: its holds wait in the outbox.
    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert("AMQP_URL".into(), NO_BROKER.into());
    })
    .await;
    hold_seats(&app, 12).await;
    assert_eq!(outbox_len(&app, 1).await, 12);

    // A queue of our own on the exchange sees what other services would.
    let topology = Topology::new(&app.iso.amqp_prefix);
    let connection = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology.declare(&channel).await.unwrap();
    let observer = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            observer.name().clone(),
            topology.exchange.as_str().into(),
            "hold.placed".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut deliveries = channel
        .basic_consume(
            observer.name().clone(),
            "observer".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    // A gateway that reaches RabbitMQ drains the outbox in one round.
    another_process(&app.iso, Role::All, |_| {}).await;
    let delivery = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
        .await
        .expect("a batch within 10 s")
        .unwrap()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(body["schemaVersion"], hold_event::BATCH_SCHEMA_VERSION);
    assert_eq!(body["type"], "hold.placed");
    assert_eq!(delivery.routing_key.as_str(), "hold.placed");
    let events = hold_event::parse_message(&delivery.data).unwrap();
    assert_eq!(events.len(), 12, "one message for the whole outbox");
    assert!(events.iter().all(|e| e.status == BookingStatus::Pending));
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "outbox order: {seqs:?}"
    );

    all_landed(&app, 12).await;
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn holds_no_queue_would_take_stay_in_the_outbox_until_one_is_bound_again() {
    let app = spawn_app_on(Isolation::new().await, |_| {}).await;
    let topology = Topology::new(&app.iso.amqp_prefix);
    let pg = app.iso.pg().await;
    // The app has declared its topology once its relay runs.
    hold_seats(&app, 1).await;
    eventually(Duration::from_secs(10), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == 1
    })
    .await;

    // An operator's mistake: the writer queue loses its binding.
    let connection = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_unbind(
            topology.writer_queue.as_str().into(),
            topology.exchange.as_str().into(),
            "hold.#".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let users = user_ids(&pg).await;
    // Every other user holds one seat: 19 holds.
    for (seat, &user) in (101..=119i64).zip(&users[1..]) {
        json(app.post_hold(&app.token(user), 1, seat, None).await, 201).await;
    }
    // RabbitMQ confirms what it cannot route: were that trusted, these would be gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(scalar(&pg, "SELECT count(*) FROM bookings").await, 1);
    assert_eq!(
        outbox_len(&app, 1).await,
        19,
        "every unroutable hold is kept"
    );

    channel
        .queue_bind(
            topology.writer_queue.as_str().into(),
            topology.exchange.as_str().into(),
            "hold.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    all_landed(&app, 20).await;
    let _ = connection.close(200, "done".into()).await;
}

/// A gateway (HTTP, relay, sweeper) with no writer beside it, ready.
struct LoneGateway {
    base: String,
    env: std::collections::HashMap<String, String>,
    auth: herdgate::auth::Auth,
    http: reqwest::Client,
}

impl LoneGateway {
    async fn start(
        iso: &Isolation,
        customize: impl FnOnce(&mut std::collections::HashMap<String, String>),
    ) -> Self {
        let mut env = iso.env();
        customize(&mut env);
        let config = herdgate::config::Config::from_env(&env).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let auth = herdgate::auth::Auth::new(&config.auth).unwrap();
        tokio::spawn(serve::run(
            config,
            Role::Gateway,
            listener,
            std::future::pending(),
        ));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        eventually(Duration::from_secs(10), || async {
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        LoneGateway {
            base,
            env,
            auth,
            http,
        }
    }

    async fn hold(&self, user: i64, seat: i64) -> reqwest::Response {
        self.http
            .post(format!("{}/api/bookings", self.base))
            .bearer_auth(self.auth.issue(user).unwrap().token)
            .json(&serde_json::json!({"eventId": 1, "seatId": seat}))
            .send()
            .await
            .unwrap()
    }

    /// A writer joins, as `herdgate writer` would.
    fn start_writer(&self) {
        let config = herdgate::config::Config::from_env(&self.env).unwrap();
        tokio::spawn(serve::run_writer(config, std::future::pending()));
    }
}

/// Messages ready in the isolation's writer queue (`None`: no such queue).
async fn writer_queue_ready(iso: &Isolation) -> Option<u32> {
    let connection = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ready = Topology::new(&iso.amqp_prefix)
        .writer_queue_ready(&connection)
        .await
        .unwrap();
    let _ = connection.close(200, "counted".into()).await;
    ready
}

/// Entries of event 1's outbox the relays have read; `None` before they read any.
async fn outbox_read(iso: &Isolation) -> Option<i64> {
    let outbox = Keys::new(iso.prefix.clone()).event(1).outbox();
    let groups: Result<Vec<HashMap<String, fred::types::Value>>, _> =
        iso.redis().await.xinfo_groups(outbox).await;
    groups.ok()?.first()?.get("entries-read")?.as_i64()
}

/// Entries of event 1's outbox that a relay read and RabbitMQ has not confirmed
/// yet; `None` before a relay has read any.
async fn outbox_unconfirmed(iso: &Isolation) -> Option<i64> {
    let outbox = Keys::new(iso.prefix.clone()).event(1).outbox();
    let summary: Result<fred::types::Value, _> =
        iso.redis().await.xpending(outbox, "relay", ()).await;
    match summary {
        Ok(fred::types::Value::Array(parts)) => parts[0].as_i64(),
        Ok(other) => panic!("XPENDING answered {other:?}"),
        Err(e) if e.details().starts_with("NOGROUP") => None,
        Err(e) => panic!("XPENDING failed: {e}"),
    }
}

#[tokio::test]
async fn a_writer_that_falls_behind_turns_holds_away_with_503_and_every_201_still_lands() {
    // No writer, a writer queue of a few hundred bytes and an outbox of 5 per event.
    let iso = Isolation::new().await;
    let gateway = LoneGateway::start(&iso, |env| {
        env.insert("HERDGATE_WRITER_QUEUE_MAX_BYTES".into(), "400".into());
        env.insert("HERDGATE_OUTBOX_MAX".into(), "5".into());
    })
    .await;
    let pg = iso.pg().await;
    let users = user_ids(&pg).await;

    let mut held = 0;
    let mut refused = None;
    for seat in 1..=200i64 {
        let user = users[seat as usize % users.len()];
        let response = gateway.hold(user, seat).await;
        match response.status().as_u16() {
            201 => held += 1,
            429 => continue,
            503 => {
                refused = Some(response);
                break;
            }
            other => panic!("unexpected {other}"),
        }
        // Give the relay time to fill the queue and be refused.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("backpressure reached the gateway");
    assert!(refused.headers().contains_key("retry-after"));
    let problem = assert_problem(refused, 503).await;
    assert_eq!(problem["type"], "/problems/outbox-full");
    assert!(held >= 5, "{held}");
    assert_eq!(scalar(&pg, "SELECT count(*) FROM bookings").await, 0);

    // The writer comes: every acknowledged hold lands, none twice.
    gateway.start_writer();
    eventually(Duration::from_secs(20), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == held
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(scalar(&pg, "SELECT count(*) FROM bookings").await, held);
}

#[tokio::test]
async fn holds_whose_writer_queue_was_deleted_under_them_are_sent_again_and_land() {
    let iso = Isolation::new().await;
    let gateway = LoneGateway::start(&iso, |env| {
        env.insert("HERDGATE_RELAY_RESEND_AFTER".into(), "1s".into());
        env.insert("HERDGATE_SCAN_INTERVAL".into(), "300ms".into());
    })
    .await;
    let pg = iso.pg().await;
    let users = user_ids(&pg).await;
    for (seat, &user) in (1..=15i64).zip(&users) {
        json(gateway.hold(user, seat).await, 201).await;
    }
    // RabbitMQ confirmed all 15; they wait in the writer queue, and in the outbox.
    eventually(Duration::from_secs(10), || async {
        outbox_read(&iso).await == Some(15) && outbox_unconfirmed(&iso).await == Some(0)
    })
    .await;
    assert!(writer_queue_ready(&iso).await > Some(0));
    assert_eq!(outbox_len_of(&iso, 1).await, 15);

    // An operator deletes the queue, and its messages with it.
    let connection = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let topology = Topology::new(&iso.amqp_prefix);
    channel
        .queue_delete(
            topology.writer_queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "deleted".into()).await;
    // Holds go on meanwhile; with no queue to take them they wait in the outbox.
    for (seat, &user) in (16..=20i64).zip(&users[15..]) {
        json(gateway.hold(user, seat).await, 201).await;
    }
    assert_eq!(writer_queue_ready(&iso).await, None);

    // A writer declares the queue again: the unroutable holds go at once, the
    // 15 lost with the queue once they are overdue, and every one lands once.
    let writer_started = std::time::Instant::now();
    gateway.start_writer();
    eventually(Duration::from_secs(20), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == 20
    })
    .await;
    println!(
        "queue deleted: 20 holds acknowledged (15 lost with the queue), all 20 in PostgreSQL \
         {:?} after the writer started",
        writer_started.elapsed()
    );
    eventually(Duration::from_secs(10), || async {
        outbox_len_of(&iso, 1).await == 0
    })
    .await;
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM bookings WHERE status = 'PENDING'"
        )
        .await,
        20
    );
    let config = herdgate::config::Config::from_env(&gateway.env).unwrap();
    crate::helpers::assert_stores_agree(&config).await;
}

#[tokio::test]
async fn a_hold_behind_entries_awaiting_the_writer_is_relayed_at_once_with_no_scan_due() {
    // No writer: relayed entries stay in the outbox, so it is never empty again.
    let iso = Isolation::new().await;
    let gateway = LoneGateway::start(&iso, |env| {
        env.insert("HERDGATE_SCAN_INTERVAL".into(), "1h".into());
    })
    .await;
    let users = user_ids(&iso.pg().await).await;
    for (n, (seat, &user)) in (1..=3i64).zip(&users).enumerate() {
        json(gateway.hold(user, seat).await, 201).await;
        // Each hold is announced and relayed on its own, as one message.
        eventually(Duration::from_secs(3), || async {
            writer_queue_ready(&iso).await == Some(n as u32 + 1)
        })
        .await;
    }
    assert_eq!(outbox_len_of(&iso, 1).await, 3);
}

#[tokio::test]
async fn a_quiet_event_is_relayed_and_swept_at_once_with_no_scan_due_for_an_hour() {
    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert("HERDGATE_SCAN_INTERVAL".into(), "1h".into());
        env.insert("HERDGATE_HOLD_TTL".into(), "1s".into());
        env.insert("HERDGATE_SWEEP_INTERVAL".into(), "100ms".into());
    })
    .await;
    // The scan at start-up has passed: from now on only notices wake the relay and sweeper.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    for (n, event) in [1i64, 3].into_iter().enumerate() {
        let seat: i64 = pg
            .query_one("SELECT min(id) FROM seats WHERE event_id = $1", &[&event])
            .await
            .unwrap()
            .get(0);
        let hold = json(
            app.post_hold(&app.token(users[n]), event, seat, None).await,
            201,
        )
        .await;
        let booking: uuid::Uuid = hold["bookingId"].as_str().unwrap().parse().unwrap();
        let status = || async {
            pg.query_opt("SELECT status FROM bookings WHERE id = $1", &[&booking])
                .await
                .unwrap()
                .map(|row| row.get::<_, String>(0))
        };
        eventually(Duration::from_secs(3), || async {
            status().await.is_some()
        })
        .await;
        // Due after 1 s: released in Redis and recorded EXPIRED well before any scan.
        eventually(Duration::from_secs(5), || async {
            status().await.as_deref() == Some("EXPIRED")
        })
        .await;
    }
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn an_outbox_entry_written_by_an_older_gateway_a_field_per_value_still_lands() {
    let app = spawn_app_on(Isolation::new().await, |_| {}).await;
    let users = user_ids(&app.iso.pg().await).await;
    let booking = uuid::Uuid::now_v7();
    let now = chrono::Utc::now().timestamp_millis();
    let fields = [
        ("type", "hold.placed".to_string()),
        ("bookingId", booking.to_string()),
        ("seatId", "1".into()),
        ("userId", users[0].to_string()),
        ("status", "PENDING".into()),
        ("version", "1".into()),
        ("seq", "1".into()),
        ("expiresAt", (now + 600_000).to_string()),
        ("occurredAt", now.to_string()),
        ("traceparent", String::new()),
    ];
    let outbox = Keys::new(app.iso.prefix.clone()).event(1).outbox();
    let _: String = app
        .iso
        .redis()
        .await
        .xadd(outbox, false, None, "*", fields.to_vec())
        .await
        .unwrap();
    // A hold of today's gateway behind it announces the outbox: the relay reads both.
    json(app.post_hold(&app.token(users[1]), 1, 2, None).await, 201).await;
    all_landed(&app, 2).await;
    let pg = app.iso.pg().await;
    let row = pg
        .query_one(
            "SELECT seat_id, status FROM bookings WHERE id = $1",
            &[&booking],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, String>(1), "PENDING");
}
