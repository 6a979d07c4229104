//! The Redis inventory is rebuilt from PostgreSQL, and only when it is missing.

use fred::interfaces::{KeysInterface, SetsInterface, SortedSetsInterface};
use herdgate::holds::Keys;

use std::time::Duration;

use herdgate::{
    config::Config,
    serve::{self, Role},
};

use crate::helpers::{
    DEMO_SEATS, Isolation, assert_problem, eventually, json, scalar, spawn_app, spawn_app_on,
    user_ids,
};

#[tokio::test]
async fn the_inventory_is_rebuilt_after_redis_is_emptied() {
    let app = spawn_app().await;
    app.iso.flush_redis().await;
    app.wait_until(|| async {
        let response = app.get("/api/seats/available?eventId=1&limit=1").await;
        if response.status() != 200 {
            return false;
        }
        let page: serde_json::Value = response.json().await.unwrap();
        page["count"] == DEMO_SEATS
    })
    .await;
    let redis = app.iso.redis().await;
    let keys = Keys::new(app.iso.prefix.clone()).event(1);
    let available: u64 = redis.zcard(keys.available()).await.unwrap();
    assert_eq!(available, DEMO_SEATS as u64);
    // Loading ended: nobody holds the loading lock.
    assert_eq!(redis.exists::<u32, _>(keys.loading()).await.unwrap(), 0);
}

#[tokio::test]
async fn a_loaded_event_is_never_loaded_over() {
    let app = spawn_app().await;
    let redis = app.iso.redis().await;
    let keys = Keys::new(app.iso.prefix.clone()).event(3);
    // Stands in for a hold: the seat is gone from Redis but not from PostgreSQL.
    let taken: Vec<i64> = redis
        .zrange(keys.available(), 0, 0, None, false, None, false)
        .await
        .unwrap();
    redis
        .zrem::<(), _, _>(keys.available(), taken[0])
        .await
        .unwrap();
    let interval = app.config.inventory_interval;
    tokio::time::sleep(interval * 3).await;
    let still_gone: Option<f64> = redis.zscore(keys.available(), taken[0]).await.unwrap();
    assert_eq!(still_gone, None);
}

#[tokio::test]
async fn a_rebuilt_inventory_keeps_the_holds_postgres_knows() {
    let app = spawn_app().await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    json(app.post_hold(&app.token(users[0]), 1, 5, None).await, 201).await;
    eventually(Duration::from_secs(10), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == 1
    })
    .await;
    app.iso.flush_redis().await;
    // Available seats come from Redis only: answered again once it is rebuilt.
    app.wait_until(|| async {
        let response = app.get("/api/seats/available?eventId=1&limit=1").await;
        response.status() == 200
            && response.json::<serde_json::Value>().await.unwrap()["count"] == DEMO_SEATS - 1
    })
    .await;
    // The seat is still held: nobody else gets it.
    assert_problem(app.post_hold(&app.token(users[1]), 1, 5, None).await, 409).await;
    // New holds are ordered after the restored one.
    json(app.post_hold(&app.token(users[1]), 1, 6, None).await, 201).await;
    eventually(Duration::from_secs(10), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == 2
    })
    .await;
    assert_eq!(
        scalar(&pg, "SELECT count(DISTINCT seq) FROM bookings").await,
        2,
        "seq was reused after the rebuild"
    );
}

#[tokio::test]
async fn an_event_off_sale_with_nothing_left_is_no_longer_watched_until_it_is_back_on_sale() {
    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert("HERDGATE_INVENTORY_INTERVAL".into(), "50ms".into());
    })
    .await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let watched = || async {
        let outboxes = Keys::new(app.iso.prefix.clone()).outboxes();
        let events: Vec<i64> = app.iso.redis().await.smembers(outboxes).await.unwrap();
        events.contains(&3)
    };
    let seats: Vec<i64> = pg
        .query(
            "SELECT id FROM seats WHERE event_id = 3 ORDER BY id LIMIT 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let (first, second) = (seats[0], seats[1]);
    let held = json(
        app.post_hold(&app.token(users[0]), 3, first, None).await,
        201,
    )
    .await;
    let booking = held["bookingId"].as_str().unwrap().to_string();
    app.wait_until(|| async { scalar(&pg, "SELECT count(*) FROM bookings").await == 1 })
        .await;
    pg.execute("UPDATE events SET status = 'CLOSED' WHERE id = 3", &[])
        .await
        .unwrap();
    // A live hold is left to expire or end: the event stays watched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        watched().await,
        "a closed event with a live hold is still watched"
    );

    let cancelled = app
        .booking(&app.token(users[0]), reqwest::Method::DELETE, &booking)
        .await;
    json(cancelled, 200).await;
    // Nothing left to relay (once the writer has it) or expire: no longer watched.
    eventually(Duration::from_secs(10), || async { !watched().await }).await;
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM bookings WHERE status = 'CANCELLED'"
        )
        .await,
        1
    );

    // Back on sale: watched again, and its holds travel as before.
    pg.execute("UPDATE events SET status = 'ON_SALE' WHERE id = 3", &[])
        .await
        .unwrap();
    eventually(Duration::from_secs(5), || async { watched().await }).await;
    app.wait_until(|| async {
        app.post_hold(&app.token(users[1]), 3, second, None)
            .await
            .status()
            == 201
    })
    .await;
    app.wait_until(|| async { scalar(&pg, "SELECT count(*) FROM bookings").await == 2 })
        .await;
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn an_event_taken_off_sale_stops_taking_holds_and_its_outbox_is_still_relayed() {
    // RabbitMQ unreachable: the hold stays in the outbox.
    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert(
            "AMQP_URL".into(),
            "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        );
    })
    .await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let seat: i64 = pg
        .query_one("SELECT min(id) FROM seats WHERE event_id = 3", &[])
        .await
        .unwrap()
        .get(0);
    let held = json(
        app.post_hold(&app.token(users[0]), 3, seat, None).await,
        201,
    )
    .await;

    pg.execute("UPDATE events SET status = 'CLOSED' WHERE id = 3", &[])
        .await
        .unwrap();
    app.wait_until(|| async {
        json(app.get("/api/events/3").await, 200).await["status"] == "CLOSED"
    })
    .await;
    assert_problem(
        app.post_hold(&app.token(users[1]), 3, seat + 1, None).await,
        404,
    )
    .await;

    // A second gateway that reaches RabbitMQ drains the closed event's outbox.
    let config = Config::from_env(&app.iso.env()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(serve::run(
        config,
        Role::All,
        listener,
        std::future::pending(),
    ));
    let booking: uuid::Uuid = held["bookingId"].as_str().unwrap().parse().unwrap();
    eventually(Duration::from_secs(10), || async {
        pg.query_opt("SELECT 1 FROM bookings WHERE id = $1", &[&booking])
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert_eq!(scalar(&pg, "SELECT count(*) FROM bookings").await, 1);

    // Back on sale: holds are taken again.
    pg.execute("UPDATE events SET status = 'ON_SALE' WHERE id = 3", &[])
        .await
        .unwrap();
    app.wait_until(|| async {
        app.post_hold(&app.token(users[1]), 3, seat + 1, None)
            .await
            .status()
            == 201
    })
    .await;
}

#[tokio::test]
async fn an_on_sale_event_redis_lost_answers_503_and_is_reloaded_at_once_not_at_the_next_interval()
{
    // A loader interval far longer than the test: only the nudge can reload in time.
    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert("HERDGATE_INVENTORY_INTERVAL".into(), "10m".into());
    })
    .await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let held = json(app.post_hold(&app.token(users[0]), 1, 1, None).await, 201).await;
    eventually(Duration::from_secs(10), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await == 1
    })
    .await;
    app.iso.flush_redis().await;

    // Confirming the hold PostgreSQL knows: not "expired", but "try again".
    let confirm = app
        .http
        .post(format!(
            "{}/api/bookings/{}/confirm",
            app.base,
            held["bookingId"].as_str().unwrap()
        ))
        .bearer_auth(app.token(users[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.headers()["retry-after"], "1");
    let problem = assert_problem(confirm, 503).await;
    assert_eq!(problem["type"], "/problems/event-loading", "{problem}");

    let lost = std::time::Instant::now();
    let response = app.post_hold(&app.token(users[1]), 1, 2, None).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let problem = assert_problem(response, 503).await;
    assert_eq!(problem["type"], "/problems/event-loading", "{problem}");
    let page = assert_problem(app.get("/api/seats/available?eventId=2").await, 503).await;
    assert_eq!(page["type"], "/problems/event-loading", "{page}");
    // Not on sale in PostgreSQL (event 4 is SCHEDULED), or unknown: still 404.
    assert_problem(app.post_hold(&app.token(users[1]), 4, 1, None).await, 404).await;
    assert_problem(app.post_hold(&app.token(users[1]), 999, 1, None).await, 404).await;

    // Reloaded within a second or two of the first request that found it missing.
    eventually(Duration::from_secs(5), || async {
        app.post_hold(&app.token(users[1]), 1, 2, None)
            .await
            .status()
            == 201
    })
    .await;
    println!(
        "event 1 took holds again {:?} after the flush",
        lost.elapsed()
    );
    // The hold PostgreSQL knew was restored with it.
    assert_problem(app.post_hold(&app.token(users[2]), 1, 1, None).await, 409).await;
}

#[tokio::test]
async fn a_pending_booking_whose_expiry_died_with_redis_is_expired_after_the_rebuild() {
    let app = spawn_app().await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    // A hold PostgreSQL recorded whose hold.expired never came: Redis lost it
    // with its data before the event was relayed.
    let booking = herdgate::booking_id::new(1).unwrap();
    pg.execute(
        "INSERT INTO bookings (id, event_id, seat_id, user_id, status, expires_at, version, seq)
         VALUES ($1, 1, 9, $2, 'PENDING', now() - interval '1 minute', 1, 1)",
        &[&booking, &users[0]],
    )
    .await
    .unwrap();
    pg.execute("UPDATE seats SET status = 'HELD' WHERE id = 9", &[])
        .await
        .unwrap();
    app.iso.flush_redis().await;

    eventually(Duration::from_secs(15), || async {
        let row = pg
            .query_one(
                "SELECT b.status, b.version, s.status FROM bookings b JOIN seats s ON s.id = b.seat_id
                  WHERE b.id = $1",
                &[&booking],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, i64>(1), row.get::<_, String>(2))
            == ("EXPIRED".into(), 2, "AVAILABLE".into())
    })
    .await;
    // The seat is listed and holdable again, and the stores agree.
    let page = json(app.get("/api/seats/available?eventId=1&limit=1").await, 200).await;
    assert_eq!(page["count"], DEMO_SEATS, "{page}");
    json(app.post_hold(&app.token(users[1]), 1, 9, None).await, 201).await;
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn a_confirm_the_writer_stores_just_after_the_rebuild_keeps_its_seat_past_the_hold() {
    let app = spawn_app().await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    // A hold PostgreSQL has, due in 3 s; its confirm is on its way when Redis loses its data.
    let booking = herdgate::booking_id::new(1).unwrap();
    pg.execute(
        "INSERT INTO bookings (id, event_id, seat_id, user_id, status, expires_at, version, seq)
         VALUES ($1, 1, 12, $2, 'PENDING', now() + interval '3 seconds', 1, 1)",
        &[&booking, &users[0]],
    )
    .await
    .unwrap();
    pg.execute("UPDATE seats SET status = 'HELD' WHERE id = 12", &[])
        .await
        .unwrap();
    app.iso.flush_redis().await;
    // Rebuilt from PostgreSQL: the hold is back, PENDING.
    app.wait_until(|| async {
        app.post_hold(&app.token(users[1]), 1, 12, None)
            .await
            .status()
            == 409
    })
    .await;
    // The writer stores the confirm only now.
    pg.execute(
        "UPDATE bookings SET status = 'CONFIRMED', confirmed_at = now(), version = 2, seq = 2
          WHERE id = $1",
        &[&booking],
    )
    .await
    .unwrap();
    pg.execute("UPDATE seats SET status = 'BOOKED' WHERE id = 12", &[])
        .await
        .unwrap();

    // Past the hold's time (and the catch-ups at 1, 2 and 4 s) the seat is still sold.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    assert_problem(app.post_hold(&app.token(users[1]), 1, 12, None).await, 409).await;
    let view = json(
        app.booking(
            &app.token(users[0]),
            reqwest::Method::GET,
            &booking.to_string(),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(view["status"], "CONFIRMED");
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn a_hold_the_writer_stores_just_after_the_rebuild_still_keeps_its_seat() {
    let app = spawn_app().await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    app.iso.flush_redis().await;
    app.wait_until(|| async {
        app.get("/api/seats/available?eventId=1&limit=1")
            .await
            .status()
            == 200
    })
    .await;
    // Relayed before Redis lost its data, stored by the writer only now.
    let booking = herdgate::booking_id::new(1).unwrap();
    pg.execute(
        "INSERT INTO bookings (id, event_id, seat_id, user_id, status, expires_at, version, seq)
         VALUES ($1, 1, 11, $2, 'PENDING', now() + interval '10 minutes', 1, 1)",
        &[&booking, &users[0]],
    )
    .await
    .unwrap();
    pg.execute("UPDATE seats SET status = 'HELD' WHERE id = 11", &[])
        .await
        .unwrap();

    // Within the first catch-ups (1 s and 2 s after the rebuild) the seat is its buyer's again.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_problem(app.post_hold(&app.token(users[1]), 1, 11, None).await, 409).await;
    let view = json(
        app.booking(
            &app.token(users[0]),
            reqwest::Method::GET,
            &booking.to_string(),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(view["status"], "PENDING");
    app.assert_stores_agree().await;
}
