//! The writer on its own: hold events published straight to the exchange,
//! repeated, reordered and malformed.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use herdgate::{
    broker::Topology,
    hold_event::{HoldEvent, SCHEMA_VERSION},
    status::BookingStatus,
};
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
};
use uuid::Uuid;

use crate::helpers::{Isolation, TestApp, amqp_url, eventually, scalar, spawn_app_on, user_ids};

fn event(
    booking: Uuid,
    seat: i64,
    user: i64,
    status: BookingStatus,
    version: i64,
    seq: i64,
) -> HoldEvent {
    let at = Utc
        .timestamp_millis_opt(1_800_000_000_000 + seq * 1000)
        .unwrap();
    HoldEvent {
        schema_version: SCHEMA_VERSION,
        kind: status.event_type().to_string(),
        booking_id: booking,
        event_id: 1,
        seat_id: seat,
        user_id: user,
        status,
        version,
        seq,
        expires_at: at + chrono::Duration::minutes(10),
        confirmed_at: (status == BookingStatus::Confirmed).then_some(at),
        occurred_at: at,
        traceparent: None,
        outbox_id: None,
    }
}

/// Publishes raw bodies to the app's exchange, with confirms, in order.
async fn publish(app: &TestApp, bodies: &[(String, Vec<u8>)]) {
    let topology = Topology::new(&app.config.amqp.prefix);
    let connection = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology.declare(&channel).await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (routing_key, body) in bodies {
        // RabbitMQ may nack a publish to a quorum queue on a loaded machine (seen
        // twice in full runs): the message was not taken, and like the relay the
        // test publishes it again.
        let mut attempts = 0;
        loop {
            let confirm = channel
                .basic_publish(
                    topology.exchange.as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            attempts += 1;
            if confirm.is_ack() {
                break;
            }
            assert!(attempts < 5, "RabbitMQ nacked the publish {attempts} times");
            eprintln!("publish nacked (attempt {attempts}); publishing again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let _ = connection.close(200, "done".into()).await;
}

fn encoded(events: &[&HoldEvent]) -> Vec<(String, Vec<u8>)> {
    events
        .iter()
        .map(|e| (e.kind.clone(), serde_json::to_vec(e).unwrap()))
        .collect()
}

async fn booking(pg: &tokio_postgres::Client, id: Uuid) -> (String, i64) {
    let row = pg
        .query_one("SELECT status, version FROM bookings WHERE id = $1", &[&id])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn seat_status(pg: &tokio_postgres::Client, seat: i64) -> String {
    pg.query_one("SELECT status FROM seats WHERE id = $1", &[&seat])
        .await
        .unwrap()
        .get(0)
}

/// A held seat 5 (A), released (A expired), held again (B); and seat 6 held (C).
/// Every event is delivered twice, newest first.
async fn repeated_and_reordered_events_leave_the_newest_state(batch: &str) {
    let batch = batch.to_string();
    let app = spawn_app_on(Isolation::new().await, move |env| {
        env.insert("HERDGATE_WRITER_BATCH".into(), batch);
    })
    .await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let a_placed = event(a, 5, users[0], BookingStatus::Pending, 1, 1);
    let a_expired = event(a, 5, users[0], BookingStatus::Expired, 2, 2);
    let b_placed = event(b, 5, users[1], BookingStatus::Pending, 1, 3);
    let c_placed = event(c, 6, users[2], BookingStatus::Pending, 1, 4);
    let newest_first = [&c_placed, &b_placed, &a_expired, &a_placed];
    let mut twice = encoded(&newest_first);
    twice.extend(encoded(&newest_first));
    publish(&app, &twice).await;

    eventually(Duration::from_secs(10), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == 3
    })
    .await;
    // Give the repeats time to arrive and be ignored.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(booking(&pg, a).await, ("EXPIRED".to_string(), 2));
    assert_eq!(booking(&pg, b).await, ("PENDING".to_string(), 1));
    assert_eq!(booking(&pg, c).await, ("PENDING".to_string(), 1));
    assert_eq!(seat_status(&pg, 5).await, "HELD");
    assert_eq!(seat_status(&pg, 6).await, "HELD");
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM seats WHERE status <> 'AVAILABLE'"
        )
        .await,
        2
    );

    // The old hold.placed of A, once more, much later: A stays expired, B keeps the seat.
    publish(&app, &encoded(&[&a_placed])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(booking(&pg, a).await, ("EXPIRED".to_string(), 2));
    assert_eq!(booking(&pg, b).await, ("PENDING".to_string(), 1));
}

#[tokio::test]
async fn repeated_and_reordered_events_in_one_batch_leave_the_newest_state() {
    repeated_and_reordered_events_leave_the_newest_state("500").await;
}

#[tokio::test]
async fn repeated_and_reordered_events_one_per_batch_leave_the_newest_state() {
    repeated_and_reordered_events_leave_the_newest_state("1").await;
}

#[tokio::test]
async fn a_later_hold_on_a_seat_supersedes_one_whose_release_is_still_on_the_way() {
    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert("HERDGATE_WRITER_BATCH".into(), "1".into());
    })
    .await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let a_placed = event(a, 8, users[0], BookingStatus::Pending, 1, 1);
    let a_cancelled = event(a, 8, users[0], BookingStatus::Cancelled, 2, 2);
    let b_placed = event(b, 8, users[1], BookingStatus::Pending, 1, 3);
    // A's release arrives last: until then A is provisionally expired, never two live.
    publish(&app, &encoded(&[&a_placed, &b_placed])).await;
    eventually(Duration::from_secs(10), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == 2
    })
    .await;
    assert_eq!(booking(&pg, a).await, ("EXPIRED".to_string(), 1));
    assert_eq!(booking(&pg, b).await, ("PENDING".to_string(), 1));
    publish(&app, &encoded(&[&a_cancelled])).await;
    eventually(Duration::from_secs(10), || async {
        booking(&pg, a).await.1 == 2
    })
    .await;
    assert_eq!(booking(&pg, a).await, ("CANCELLED".to_string(), 2));
    assert_eq!(seat_status(&pg, 8).await, "HELD");
}

#[tokio::test]
async fn a_confirmed_booking_keeps_its_seat_against_a_later_hold_in_either_order() {
    // A Redis that lost its data before PostgreSQL stored a confirm can take a
    // new hold on the sold seat: the buyer who paid keeps it, the hold ends
    // EXPIRED, and nothing is dead-lettered.
    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert("HERDGATE_WRITER_BATCH".into(), "1".into());
    })
    .await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let until = |id: Uuid, want: (&'static str, i64)| {
        let pg = &pg;
        async move {
            eventually(Duration::from_secs(10), || async {
                let row = pg
                    .query_opt("SELECT status, version FROM bookings WHERE id = $1", &[&id])
                    .await
                    .unwrap();
                row.is_some_and(|r| {
                    (r.get::<_, String>(0), r.get::<_, i64>(1)) == (want.0.into(), want.1)
                })
            })
            .await
        }
    };
    // Seat 31: the confirmed booking is stored first, the later hold after.
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let a_placed = event(a, 31, users[0], BookingStatus::Pending, 1, 1);
    let a_confirmed = event(a, 31, users[0], BookingStatus::Confirmed, 2, 2);
    let b_placed = event(b, 31, users[1], BookingStatus::Pending, 1, 5);
    publish(&app, &encoded(&[&a_placed, &a_confirmed])).await;
    until(a, ("CONFIRMED", 2)).await;
    publish(&app, &encoded(&[&b_placed])).await;
    until(b, ("EXPIRED", 1)).await;
    assert_eq!(booking(&pg, a).await, ("CONFIRMED".to_string(), 2));
    assert_eq!(seat_status(&pg, 31).await, "BOOKED");

    // Seat 32: the later hold is stored first, the confirm arrives after.
    let (c, d) = (Uuid::now_v7(), Uuid::now_v7());
    let c_placed = event(c, 32, users[2], BookingStatus::Pending, 1, 1);
    let c_confirmed = event(c, 32, users[2], BookingStatus::Confirmed, 2, 2);
    let d_placed = event(d, 32, users[3], BookingStatus::Pending, 1, 5);
    publish(&app, &encoded(&[&c_placed, &d_placed])).await;
    until(d, ("PENDING", 1)).await;
    publish(&app, &encoded(&[&c_confirmed])).await;
    until(c, ("CONFIRMED", 2)).await;
    assert_eq!(booking(&pg, d).await, ("EXPIRED".to_string(), 1));
    assert_eq!(seat_status(&pg, 32).await, "BOOKED");

    let (queued, dead) = app_queues(app).await;
    assert_eq!(
        (queued, dead),
        (0, 0),
        "nothing unacked, nothing dead-lettered"
    );
}

/// Stops the app and counts what its writer and dead-letter queues still hold.
async fn app_queues(mut app: TestApp) -> (u32, u32) {
    app.shut_down_and_count_queued().await
}

#[tokio::test]
async fn messages_that_can_never_apply_are_dead_lettered_and_the_queue_moves_on() {
    let app = spawn_app_on(Isolation::new().await, |_| {}).await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let good = event(Uuid::now_v7(), 11, users[0], BookingStatus::Pending, 1, 1);
    // Seat 11 belongs to event 1; event 2 is refused by the foreign key.
    let mut wrong_event = event(Uuid::now_v7(), 12, users[1], BookingStatus::Pending, 1, 2);
    wrong_event.event_id = 2;
    let mut unknown_user = event(Uuid::now_v7(), 13, 999_999, BookingStatus::Pending, 1, 3);
    unknown_user.user_id = 999_999;
    let mut bodies = vec![
        ("hold.placed".to_string(), b"not json at all".to_vec()),
        (
            "hold.placed".to_string(),
            br#"{"type":"hold.placed","bookingId":"x"}"#.to_vec(),
        ),
    ];
    bodies.extend(encoded(&[&wrong_event, &unknown_user, &good]));
    publish(&app, &bodies).await;

    eventually(Duration::from_secs(10), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == 1
    })
    .await;
    assert_eq!(booking(&pg, good.booking_id).await.0, "PENDING");
    let topology = Topology::new(&app.config.amqp.prefix);
    let connection = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    eventually(Duration::from_secs(10), || async {
        let dead = channel
            .queue_declare(
                topology.dead.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        dead.message_count() == 4
    })
    .await;
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn an_event_that_can_never_apply_goes_to_the_dead_letters_alone_and_its_batch_lands() {
    use herdgate::hold_event::HoldBatch;
    use lapin::options::BasicGetOptions;

    let app = spawn_app_on(Isolation::new().await, |_| {}).await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let first = event(Uuid::now_v7(), 21, users[0], BookingStatus::Pending, 1, 1);
    let mut unknown_user = event(Uuid::now_v7(), 22, 999_999, BookingStatus::Pending, 1, 2);
    unknown_user.user_id = 999_999;
    let last = event(Uuid::now_v7(), 23, users[1], BookingStatus::Pending, 1, 3);
    let batch = HoldBatch::new(
        "hold.placed",
        1,
        vec![first.clone(), unknown_user.clone(), last.clone()],
    );
    publish(
        &app,
        &[(
            "hold.placed".to_string(),
            serde_json::to_vec(&batch).unwrap(),
        )],
    )
    .await;

    eventually(Duration::from_secs(10), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == 2
    })
    .await;
    assert_eq!(booking(&pg, first.booking_id).await.0, "PENDING");
    assert_eq!(booking(&pg, last.booking_id).await.0, "PENDING");
    let topology = Topology::new(&app.config.amqp.prefix);
    let connection = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut dead = None;
    for _ in 0..100 {
        dead = channel
            .basic_get(
                topology.dead.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = dead.expect("a dead letter within 10 s");
    // Only the bad event, as a message of its own, with the reason.
    let events = herdgate::hold_event::parse_message(&dead.delivery.data).unwrap();
    assert_eq!(events, vec![unknown_user]);
    let headers = dead.delivery.properties.headers().clone().unwrap();
    let reason = match headers.inner().get("x-herdgate-reason") {
        Some(lapin::types::AMQPValue::LongString(reason)) => {
            String::from_utf8_lossy(reason.as_bytes()).into_owned()
        }
        other => panic!("no reason header: {other:?}"),
    };
    assert!(reason.contains("23503"), "{reason}");
    let _ = connection.close(200, "done".into()).await;
}
