//! Holds expire: released in Redis by the sweeper, EXPIRED in PostgreSQL.

use std::time::Duration;

use crate::helpers::{Isolation, assert_problem, eventually, json, scalar, spawn_app_on, user_ids};

#[tokio::test]
async fn a_hold_past_its_ttl_is_released_in_redis_and_expired_in_postgres() {
    let app = spawn_app_on(Isolation::new().await, |env| {
        // Long enough for the checks before it expires, even on a busy machine.
        env.insert("HERDGATE_HOLD_TTL".into(), "3s".into());
        env.insert("HERDGATE_SWEEP_INTERVAL".into(), "100ms".into());
        env.insert("HERDGATE_MAX_HOLDS_PER_USER".into(), "1".into());
    })
    .await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let first = json(app.post_hold(&app.token(users[0]), 1, 5, None).await, 201).await;
    assert_problem(app.post_hold(&app.token(users[1]), 1, 5, None).await, 409).await;
    // At its limit of one hold until the first expires.
    assert_problem(app.post_hold(&app.token(users[0]), 1, 6, None).await, 429).await;

    // Released: the seat is listed again and counted as available.
    app.wait_until(|| async {
        let event = json(app.get("/api/events/1").await, 200).await;
        event["availableSeats"] == 300
    })
    .await;
    let page = json(
        app.get("/api/seats/available?eventId=1&limit=10").await,
        200,
    )
    .await;
    assert!(
        page["seats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == 5)
    );

    // Someone else gets it, and the first user may hold again.
    let second = json(app.post_hold(&app.token(users[1]), 1, 5, None).await, 201).await;
    json(app.post_hold(&app.token(users[0]), 1, 6, None).await, 201).await;

    eventually(Duration::from_secs(10), || async {
        scalar(
            &pg,
            "SELECT count(*) FROM bookings WHERE status = 'EXPIRED'",
        )
        .await
            == 1
            && scalar(
                &pg,
                "SELECT count(*) FROM bookings WHERE status = 'PENDING'",
            )
            .await
                == 2
    })
    .await;
    let row = pg
        .query_one(
            "SELECT status, version FROM bookings WHERE id = $1::text::uuid",
            &[&first["bookingId"].as_str().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        ("EXPIRED".into(), 2)
    );
    let row = pg
        .query_one(
            "SELECT b.status, s.status FROM bookings b JOIN seats s ON s.id = b.seat_id
              WHERE b.id = $1::text::uuid",
            &[&second["bookingId"].as_str().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("PENDING".into(), "HELD".into())
    );
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn an_expired_hold_ends_as_available_in_both_stores() {
    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert("HERDGATE_HOLD_TTL".into(), "1s".into());
        env.insert("HERDGATE_SWEEP_INTERVAL".into(), "100ms".into());
    })
    .await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    for seat in 1..=20 {
        json(
            app.post_hold(
                &app.token(users[seat as usize % users.len()]),
                1,
                seat,
                None,
            )
            .await,
            201,
        )
        .await;
    }
    eventually(Duration::from_secs(10), || async {
        scalar(
            &pg,
            "SELECT count(*) FROM bookings WHERE status = 'EXPIRED'",
        )
        .await
            == 20
    })
    .await;
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM seats WHERE status <> 'AVAILABLE'"
        )
        .await,
        0
    );
    assert_eq!(
        json(app.get("/api/events/1").await, 200).await["availableSeats"],
        300
    );
    app.assert_stores_agree().await;
}
