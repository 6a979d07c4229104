//! The read API: events, available seats, waiting room, health.

use std::{collections::HashSet, time::Duration};

use fred::interfaces::SortedSetsInterface;
use herdgate::holds::Keys;
use serde_json::Value;

use crate::helpers::{DEMO_SEATS, assert_problem, json, spawn_app};

#[tokio::test]
async fn an_on_sale_event_is_described_with_its_live_seat_count() {
    let app = spawn_app().await;
    let event = json(app.get("/api/events/1").await, 200).await;
    assert_eq!(event["id"], 1);
    assert_eq!(event["name"], "The Herd Tour: Opening Night");
    assert_eq!(event["venue"], "Northgate Arena");
    assert_eq!(event["startsAt"], "2027-06-12T19:30:00Z");
    assert_eq!(event["totalSeats"], DEMO_SEATS);
    assert_eq!(event["availableSeats"], DEMO_SEATS);
    assert_eq!(event["status"], "ON_SALE");
}

#[tokio::test]
async fn an_event_not_on_sale_is_described_from_postgres() {
    let app = spawn_app().await;
    let event = json(app.get("/api/events/4").await, 200).await;
    assert_eq!(event["status"], "SCHEDULED");
    assert_eq!(event["totalSeats"], 2000);
    let problem = assert_problem(app.get("/api/events/999").await, 404).await;
    assert_eq!(problem["type"], "/problems/not-found");
}

#[tokio::test]
async fn available_seats_page_through_every_seat_exactly_once() {
    let app = spawn_app().await;
    let mut seen = HashSet::new();
    let mut after = 0;
    loop {
        let page = json(
            app.get(&format!(
                "/api/seats/available?eventId=1&limit=70&after={after}"
            ))
            .await,
            200,
        )
        .await;
        assert_eq!(page["eventId"], 1);
        assert_eq!(page["count"], DEMO_SEATS);
        for seat in page["seats"].as_array().unwrap() {
            for field in ["section", "row"] {
                assert!(seat[field].is_string(), "{seat}");
            }
            assert!(seat["number"].as_u64().unwrap() >= 1);
            assert!(
                seen.insert(seat["id"].as_i64().unwrap()),
                "seat twice: {seat}"
            );
        }
        match page["nextAfter"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen.len(), DEMO_SEATS as usize);
}

#[tokio::test]
async fn available_seats_come_from_redis() {
    let app = spawn_app().await;
    let keys = Keys::new(app.iso.prefix.clone()).event(1);
    let page = json(app.get("/api/seats/available?eventId=1&limit=1").await, 200).await;
    let first = page["seats"][0]["id"].as_i64().unwrap();
    // Take the seat away in Redis only: the answer follows once the cache is stale.
    let redis = app.iso.redis().await;
    redis
        .zrem::<(), _, _>(keys.available(), first)
        .await
        .unwrap();
    tokio::time::sleep(app.config.seats_cache_ttl + Duration::from_millis(50)).await;
    let page = json(app.get("/api/seats/available?eventId=1&limit=1").await, 200).await;
    assert_eq!(page["count"], DEMO_SEATS - 1);
    assert_ne!(page["seats"][0]["id"], first);
    let event = json(app.get("/api/events/1").await, 200).await;
    assert_eq!(event["availableSeats"], DEMO_SEATS - 1);
}

#[tokio::test]
async fn seats_of_an_event_not_on_sale_or_unknown_are_404() {
    let app = spawn_app().await;
    assert_problem(app.get("/api/seats/available?eventId=4").await, 404).await;
    assert_problem(app.get("/api/seats/available?eventId=12345").await, 404).await;
}

#[tokio::test]
async fn a_herd_of_identical_reads_all_get_the_same_answer() {
    let app = spawn_app().await;
    let requests = (0..300).map(|_| app.get("/api/seats/available?eventId=2&limit=500"));
    let bodies: Vec<Value> =
        futures::future::join_all(requests.map(|r| async { json(r.await, 200).await })).await;
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    assert_eq!(bodies[0]["count"], 900);
    assert_eq!(bodies[0]["seats"].as_array().unwrap().len(), 500);
}

#[tokio::test]
async fn the_waiting_room_lists_every_on_sale_event_with_its_admission() {
    let app = spawn_app().await;
    let room = json(app.get("/waiting-room").await, 200).await;
    let ids: Vec<i64> = room["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventId"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 5]);
    assert!(room["events"][0]["open"].as_bool().unwrap());
    assert!(room["load"]["capacity"].as_u64().unwrap() > 0);

    let one = json(app.get("/waiting-room?eventId=2").await, 200).await;
    assert_eq!(one["open"], true);
    assert_eq!(one["availableSeats"], 900);
    let scheduled = json(app.get("/waiting-room?eventId=4").await, 200).await;
    assert_eq!(scheduled["open"], false);
    assert_problem(app.get("/waiting-room?eventId=999").await, 404).await;
    assert_problem(app.get("/waiting-room?eventId=abc").await, 400).await;
}

#[tokio::test]
async fn health_and_readiness_report_each_backend() {
    let app = spawn_app().await;
    assert_eq!(json(app.get("/healthz").await, 200).await["status"], "up");
    let ready = json(app.get("/readyz").await, 200).await;
    assert_eq!(ready["checks"]["redis"], "ok");
    assert_eq!(ready["checks"]["postgres"], "ok");
    assert_eq!(ready["checks"]["rabbitmq"], "ok");
}

#[tokio::test]
async fn readiness_fails_honestly_when_a_backend_is_gone() {
    // RabbitMQ on a port where nothing listens.
    let app = crate::helpers::spawn_app_with(|env| {
        env.insert(
            "AMQP_URL".into(),
            "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        );
    })
    .await;
    let problem = assert_problem(app.get("/readyz").await, 503).await;
    assert_eq!(problem["checks"]["redis"], "ok");
    assert_ne!(problem["checks"]["rabbitmq"], "ok");
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text_format() {
    let app = spawn_app().await;
    let users = crate::helpers::user_ids(&app.iso.pg().await).await;
    json(app.post_hold(&app.token(users[0]), 1, 2, None).await, 201).await;
    assert_problem(app.post_hold(&app.token(users[1]), 1, 2, None).await, 409).await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = response.text().await.unwrap();
    for expected in [
        r#"herdgate_http_requests_total{route="/api/bookings",status="201"}"#,
        r#"herdgate_http_requests_total{route="/api/bookings",status="409"}"#,
        r#"herdgate_holds_total{outcome="placed"}"#,
        r#"herdgate_holds_total{outcome="taken"}"#,
        r#"herdgate_redis_script_duration_seconds_bucket{script="place_hold",le="0.001"}"#,
        r#"herdgate_http_request_duration_seconds_bucket{route="/api/bookings",le="+Inf"}"#,
        "herdgate_http_connections_open",
    ] {
        assert!(body.contains(expected), "no {expected} in:\n{body}");
    }
}
