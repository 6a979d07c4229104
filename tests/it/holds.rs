//! The hot path: POST /api/bookings decided in Redis, relayed to RabbitMQ and
//! written to PostgreSQL by the writer.

use std::{collections::HashSet, sync::Arc, time::Duration};

use fred::interfaces::{KeysInterface, LuaInterface};
use futures::{StreamExt, stream};
use herdgate::{holds::Keys, seed::SeedOptions};
use serde_json::Value;
use tokio::sync::Barrier;

use crate::helpers::{
    Isolation, TestApp, assert_problem, eventually, json, scalar, spawn_app, spawn_app_on, user_ids,
};

/// Waits until PostgreSQL holds `expected` bookings of event 1.
async fn drained(app: &TestApp, expected: i64) {
    let pg = app.iso.pg().await;
    eventually(Duration::from_secs(60), || async {
        scalar(&pg, "SELECT count(*) FROM bookings WHERE event_id = 1").await >= expected
    })
    .await;
    assert_eq!(
        scalar(&pg, "SELECT count(*) FROM bookings WHERE event_id = 1").await,
        expected
    );
}

async fn big_app(seats: u32, users: u32) -> TestApp {
    let iso = Isolation::with_seed(SeedOptions {
        demo_seats: seats,
        users,
    })
    .await;
    spawn_app_on(iso, |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thundering_herd_on_one_seat_gets_exactly_one_hold() {
    let app = Arc::new(big_app(50, 2_000).await);
    let users = user_ids(&app.iso.pg().await).await;
    assert_eq!(users.len(), 2_000);
    let barrier = Arc::new(Barrier::new(users.len()));
    let tasks = users.iter().map(|&user| {
        let (app, barrier, token) = (app.clone(), barrier.clone(), app.token(user));
        tokio::spawn(async move {
            barrier.wait().await;
            app.post_hold(&token, 1, 7, None).await.status().as_u16()
        })
    });
    let statuses: Vec<u16> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let created = statuses.iter().filter(|s| **s == 201).count();
    let taken = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, taken), (1, 1_999), "{statuses:?}");
    drained(&app, 1).await;
    let pg = app.iso.pg().await;
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM bookings WHERE seat_id = 7 AND status = 'PENDING'"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(&pg, "SELECT count(*) FROM seats WHERE status = 'HELD'").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_holds_on_distinct_seats_all_reach_postgres_matching_redis() {
    const SEATS: usize = 10_000;
    let app = Arc::new(big_app(SEATS as u32, 1_500).await);
    let users = user_ids(&app.iso.pg().await).await;
    let tokens: Vec<String> = users.iter().map(|&u| app.token(u)).collect();
    // Seat s goes to user s % users: 10,000 / 1,500 stays under the limit of 8.
    let statuses: Vec<(i64, u16, Value)> = stream::iter(1..=SEATS as i64)
        .map(|seat| {
            let (app, token) = (app.clone(), tokens[seat as usize % tokens.len()].clone());
            async move {
                let response = app.post_hold(&token, 1, seat, None).await;
                let status = response.status().as_u16();
                (seat, status, response.json().await.unwrap())
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let failed: Vec<_> = statuses.iter().filter(|(_, s, _)| *s != 201).collect();
    assert!(
        failed.is_empty(),
        "{} not 201, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    drained(&app, SEATS as i64).await;

    let pg = app.iso.pg().await;
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM bookings WHERE status = 'PENDING'"
        )
        .await,
        SEATS as i64
    );
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM seats WHERE event_id = 1 AND status = 'HELD'"
        )
        .await,
        SEATS as i64
    );
    // One for one: every 201's booking is the one PostgreSQL and the Redis lock name.
    let rows = pg
        .query("SELECT id::text, seat_id FROM bookings", &[])
        .await
        .unwrap();
    let stored: HashSet<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let answered: HashSet<(String, i64)> = statuses
        .iter()
        .map(|(seat, _, body)| (body["bookingId"].as_str().unwrap().to_string(), *seat))
        .collect();
    assert_eq!(stored, answered);
    let redis = app.iso.redis().await;
    let keys = Keys::new(app.iso.prefix.clone()).event(1);
    for (booking, seat) in stored.iter().take(500) {
        let lock: Option<String> = redis.get(keys.lock(*seat)).await.unwrap();
        assert_eq!(lock.as_deref(), Some(booking.as_str()));
    }
    let available = json(app.get("/api/events/1").await, 200).await["availableSeats"].clone();
    assert_eq!(available, 0);
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn a_hold_answers_201_with_location_and_the_booking() {
    let app = spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    let response = app.post_hold(&app.token(users[0]), 1, 3, None).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/bookings/{}", body["bookingId"].as_str().unwrap())
    );
    assert_eq!(body["status"], "PENDING");
    assert_eq!(
        (body["eventId"].as_i64(), body["seatId"].as_i64()),
        (Some(1), Some(3))
    );
    assert_eq!(body["userId"], users[0]);
    let expires: chrono::DateTime<chrono::Utc> =
        body["expiresAt"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(
        ttl > chrono::Duration::seconds(590) && ttl <= chrono::Duration::seconds(600),
        "{ttl}"
    );
    // The seat is gone from the available list.
    app.wait_until(|| async {
        let page = json(app.get("/api/seats/available?eventId=1&limit=5").await, 200).await;
        page["seats"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["id"] != 3)
    })
    .await;
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_same_booking() {
    let app = spawn_app().await;
    let user = user_ids(&app.iso.pg().await).await[0];
    let token = app.token(user);
    let first = json(app.post_hold(&token, 1, 9, Some("order-42")).await, 201).await;
    let again = json(app.post_hold(&token, 1, 9, Some("order-42")).await, 201).await;
    assert_eq!(first["bookingId"], again["bookingId"]);
    assert_eq!(first["expiresAt"], again["expiresAt"]);
    // The same key for another seat is refused, and holds nothing.
    let other = assert_problem(app.post_hold(&token, 1, 10, Some("order-42")).await, 422).await;
    assert_eq!(other["type"], "/problems/idempotency-key-reused");
    // Without the key, or with another, asking again for your own seat finds
    // your hold (a retry after a lost answer): 200, the same booking, nothing new.
    for key in [None, Some("order-43"), Some("order-43")] {
        let response = app.post_hold(&token, 1, 9, key).await;
        assert_eq!(
            response.headers()["location"],
            format!("/api/bookings/{}", first["bookingId"].as_str().unwrap())
        );
        let own = json(response, 200).await;
        assert_eq!(own["bookingId"], first["bookingId"]);
        assert_eq!(own["status"], "PENDING");
    }
    drained(&app, 1).await;
    let pg = app.iso.pg().await;
    assert_eq!(
        scalar(&pg, "SELECT count(*) FROM bookings WHERE seat_id = 10").await,
        0
    );
    assert_eq!(
        scalar(&pg, "SELECT count(*) FROM bookings WHERE seat_id = 9").await,
        1
    );
    // Another user's identical key is theirs alone.
    let stranger = app.token(user + 1);
    assert_problem(app.post_hold(&stranger, 1, 9, Some("order-42")).await, 409).await;
}

#[tokio::test]
async fn concurrent_requests_of_one_user_for_one_seat_all_get_that_users_hold() {
    let app = spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    let token = app.token(users[0]);
    // Coalesced: the leader's hold is no "taken" for its own user's other
    // requests: one 201 placed it, the others find it as that user's (200).
    let answers = futures::future::join_all((0..20).map(|_| app.post_hold(&token, 1, 11, None)));
    let mut ids = HashSet::new();
    let mut statuses = Vec::new();
    for response in answers.await {
        statuses.push(response.status().as_u16());
        let body: Value = response.json().await.unwrap();
        ids.insert(body["bookingId"].to_string());
    }
    statuses.sort();
    assert_eq!(statuses, [vec![200; 19], vec![201]].concat());
    assert_eq!(ids.len(), 1, "{ids:?}");
    // Anyone else still finds the seat taken.
    assert_problem(app.post_hold(&app.token(users[1]), 1, 11, None).await, 409).await;
}

#[tokio::test]
async fn a_user_at_the_hold_limit_gets_429_with_retry_after() {
    let iso = Isolation::new().await;
    let app = spawn_app_on(iso, |env| {
        env.insert("HERDGATE_MAX_HOLDS_PER_USER".into(), "3".into());
    })
    .await;
    let users = user_ids(&app.iso.pg().await).await;
    let token = app.token(users[0]);
    for seat in 1..=3 {
        json(app.post_hold(&token, 1, seat, None).await, 201).await;
    }
    let response = app.post_hold(&token, 1, 4, None).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((590..=600).contains(&retry_after), "{retry_after}");
    let problem = assert_problem(response, 429).await;
    assert_eq!(problem["type"], "/problems/hold-limit");
    // The limit is per event, and per user.
    json(
        app.post_hold(&token, 2, first_seat(&app, 2).await, None)
            .await,
        201,
    )
    .await;
    json(app.post_hold(&app.token(users[1]), 1, 4, None).await, 201).await;
}

async fn first_seat(app: &TestApp, event: i64) -> i64 {
    let page = json(
        app.get(&format!("/api/seats/available?eventId={event}&limit=1"))
            .await,
        200,
    )
    .await;
    page["seats"][0]["id"].as_i64().unwrap()
}

#[tokio::test]
async fn holds_survive_a_script_flush() {
    let app = spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    json(app.post_hold(&app.token(users[0]), 1, 1, None).await, 201).await;
    // As after a Redis restart: every script is gone, EVALSHA answers NOSCRIPT.
    app.iso.redis().await.script_flush(false).await.unwrap();
    json(app.post_hold(&app.token(users[1]), 1, 2, None).await, 201).await;
    assert_problem(app.post_hold(&app.token(users[2]), 1, 2, None).await, 409).await;
}

#[tokio::test]
async fn bad_hold_requests_get_4xx_problems() {
    let app = spawn_app().await;
    let token = app.token(user_ids(&app.iso.pg().await).await[0]);
    let url = format!("{}/api/bookings", app.base);
    let post = |body: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Authentication comes first.
    let anonymous = app
        .http
        .post(&url)
        .json(&serde_json::json!({"eventId": 1, "seatId": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"herdgate\""
    );
    assert_problem(anonymous, 401).await;
    let forged = app
        .http
        .post(&url)
        .bearer_auth("e30.e30.e30")
        .json(&serde_json::json!({"eventId": 1, "seatId": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(forged, 401).await;
    for body in [
        "",
        "{",
        r#"{"eventId":1}"#,
        r#"{"eventId":"1","seatId":1}"#,
        r#"{"eventId":1,"seatId":1.5}"#,
        r#"{"eventId":1,"seatId":0}"#,
        r#"{"eventId":-1,"seatId":1}"#,
        r#"{"eventId":1,"seatId":99999999999999999999}"#,
        r#"[1,1]"#,
    ] {
        assert_problem(post(body).await.unwrap(), 400).await;
    }
    let unknown_event =
        assert_problem(post(r#"{"eventId":999,"seatId":1}"#).await.unwrap(), 404).await;
    assert!(unknown_event["detail"].as_str().unwrap().contains("999"));
    let not_on_sale = post(r#"{"eventId":4,"seatId":1}"#).await.unwrap();
    assert_problem(not_on_sale, 404).await;
    // Seat 1 belongs to event 1, not event 2.
    assert_problem(post(r#"{"eventId":2,"seatId":1}"#).await.unwrap(), 404).await;
    let text = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .body(r#"{"eventId":1,"seatId":1}"#)
        .send()
        .await
        .unwrap();
    assert_problem(text, 415).await;
    let huge = format!(
        r#"{{"eventId":1,"seatId":1,"pad":"{}"}}"#,
        "x".repeat(100_000)
    );
    let huge = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_problem(huge, 413).await;
    let bad_key = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("Idempotency-Key", "has spaces")
        .json(&serde_json::json!({"eventId": 1, "seatId": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(bad_key, 400).await;
    // Nothing above held anything.
    assert_eq!(
        json(app.get("/api/events/1").await, 200).await["availableSeats"],
        300
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_full_outbox_turns_holds_away_with_503() {
    // RabbitMQ unreachable: nothing leaves the outbox.
    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert(
            "AMQP_URL".into(),
            "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        );
        env.insert("HERDGATE_OUTBOX_MAX".into(), "3".into());
    })
    .await;
    let users = user_ids(&app.iso.pg().await).await;
    for (i, seat) in (1..=3).enumerate() {
        json(
            app.post_hold(&app.token(users[i]), 1, seat, None).await,
            201,
        )
        .await;
    }
    let response = app.post_hold(&app.token(users[3]), 1, 4, None).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let problem = assert_problem(response, 503).await;
    assert_eq!(problem["type"], "/problems/outbox-full");
    // Not a hold: the seat is still free.
    let redis = app.iso.redis().await;
    let lock: Option<String> = redis
        .get(Keys::new(app.iso.prefix.clone()).event(1).lock(4))
        .await
        .unwrap();
    assert_eq!(lock, None);
}

#[tokio::test]
async fn a_booking_id_already_in_use_is_refused_not_overwritten() {
    use herdgate::holds::{HoldOutcome, PlaceHold, Store};

    let app = spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    let redis = app.config.redis.connect().await.unwrap();
    let store = Store::new(redis, Keys::new(app.iso.prefix.clone()));
    let id = herdgate::booking_id::new(1).unwrap().to_string();
    let hold = |seat_id, user_id| PlaceHold {
        event_id: 1,
        seat_id,
        user_id,
        booking_id: &id,
        ttl_ms: 60_000,
        max_per_user: 8,
        idempotency_key: None,
        idempotency_ttl_ms: 60_000,
        outbox_max: 1_000,
        traceparent: "",
    };
    assert!(matches!(
        store.place_hold(&hold(20, users[0])).await.unwrap(),
        HoldOutcome::Placed { .. }
    ));
    assert_eq!(
        store.place_hold(&hold(21, users[1])).await.unwrap(),
        HoldOutcome::IdCollision
    );
    // The first hold is untouched, and seat 21 was not taken.
    let first = store.read_hold(1, &id).await.unwrap().unwrap();
    assert_eq!((first.seat_id, first.user_id), (20, users[0]));
    json(app.post_hold(&app.token(users[1]), 1, 21, None).await, 201).await;
}
