//! The rest of a hold's life: status, confirm, cancel, consistent in both stores.

use std::time::Duration;

use fred::interfaces::KeysInterface;
use herdgate::holds::Keys;
use serde_json::Value;

use crate::helpers::{
    Isolation, TestApp, assert_problem, eventually, json, scalar, spawn_app, spawn_app_on, user_ids,
};

async fn stored_status(app: &TestApp, id: &str) -> Option<(String, String)> {
    let pg = app.iso.pg().await;
    pg.query_opt(
        "SELECT b.status, s.status FROM bookings b JOIN seats s ON s.id = b.seat_id
          WHERE b.id = $1::text::uuid",
        &[&id],
    )
    .await
    .unwrap()
    .map(|row| (row.get(0), row.get(1)))
}

async fn wait_stored(app: &TestApp, id: &str, booking: &str, seat: &str) {
    let expected = Some((booking.to_string(), seat.to_string()));
    eventually(Duration::from_secs(10), || async {
        stored_status(app, id).await == expected
    })
    .await;
}

#[tokio::test]
async fn a_booking_is_shown_to_its_owner_only() {
    let app = spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    let (owner, stranger) = (app.token(users[0]), app.token(users[1]));
    let placed = json(app.post_hold(&owner, 1, 3, None).await, 201).await;
    let id = placed["bookingId"].as_str().unwrap();
    let shown = json(app.booking(&owner, reqwest::Method::GET, id).await, 200).await;
    assert_eq!(shown, placed);
    assert_problem(app.booking(&stranger, reqwest::Method::GET, id).await, 404).await;
    let unknown = "01a22ab3-1283-72d0-9dee-373a70dd8182";
    assert_problem(
        app.booking(&owner, reqwest::Method::GET, unknown).await,
        404,
    )
    .await;
    assert_problem(app.booking(&owner, reqwest::Method::GET, "nope").await, 400).await;
    assert_problem(app.booking("bad", reqwest::Method::GET, id).await, 401).await;
}

#[tokio::test]
async fn a_confirmed_booking_keeps_its_seat_for_good_in_both_stores() {
    let app = spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    let token = app.token(users[0]);
    let placed = json(app.post_hold(&token, 1, 4, None).await, 201).await;
    let id = placed["bookingId"].as_str().unwrap();
    let path = format!("{id}/confirm");
    let confirmed = json(app.booking(&token, reqwest::Method::POST, &path).await, 200).await;
    assert_eq!(confirmed["status"], "CONFIRMED");
    assert!(confirmed["confirmedAt"].is_string());
    // Idempotent: the same answer again.
    let again = json(app.booking(&token, reqwest::Method::POST, &path).await, 200).await;
    assert_eq!(again, confirmed);
    // The lock no longer expires; nobody else gets the seat; it cannot be cancelled.
    let redis = app.iso.redis().await;
    let ttl: i64 = redis
        .pttl(Keys::new(app.iso.prefix.clone()).event(1).lock(4))
        .await
        .unwrap();
    assert_eq!(ttl, -1);
    assert_problem(app.post_hold(&app.token(users[1]), 1, 4, None).await, 409).await;
    let p = assert_problem(app.booking(&token, reqwest::Method::DELETE, id).await, 409).await;
    assert_eq!(p["type"], "/problems/booking-confirmed");
    // Someone else's booking cannot be confirmed.
    let stranger = app.token(users[1]);
    assert_problem(
        app.booking(&stranger, reqwest::Method::POST, &path).await,
        404,
    )
    .await;
    wait_stored(&app, id, "CONFIRMED", "BOOKED").await;
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn a_cancelled_hold_frees_its_seat_at_once_and_cannot_be_confirmed() {
    let app = spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    let token = app.token(users[0]);
    let placed = json(app.post_hold(&token, 1, 6, None).await, 201).await;
    let id = placed["bookingId"].as_str().unwrap();
    let cancelled = json(app.booking(&token, reqwest::Method::DELETE, id).await, 200).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(
        json(app.booking(&token, reqwest::Method::DELETE, id).await, 200).await,
        cancelled
    );
    let p = assert_problem(
        app.booking(&token, reqwest::Method::POST, &format!("{id}/confirm"))
            .await,
        409,
    )
    .await;
    assert_eq!(p["type"], "/problems/hold-expired");
    // Another user books the seat straight away.
    let next = json(app.post_hold(&app.token(users[1]), 1, 6, None).await, 201).await;
    wait_stored(&app, id, "CANCELLED", "HELD").await;
    wait_stored(&app, next["bookingId"].as_str().unwrap(), "PENDING", "HELD").await;
    assert_eq!(
        json(app.get("/api/events/1").await, 200).await["availableSeats"],
        299
    );
    app.assert_stores_agree().await;
}

/// Confirms racing their own expiry, many at once: each has exactly one
/// winner, and PostgreSQL agrees with what the client was told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_racing_its_expiry_has_exactly_one_winner_in_both_stores() {
    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert("HERDGATE_HOLD_TTL".into(), "1s".into());
        env.insert("HERDGATE_SWEEP_INTERVAL".into(), "20ms".into());
        env.insert("HERDGATE_MAX_HOLDS_PER_USER".into(), "100".into());
    })
    .await;
    let token = app.token(user_ids(&app.iso.pg().await).await[0]);
    let mut placed = Vec::new();
    for seat in 1..=60 {
        let body: Value = json(app.post_hold(&token, 1, seat, None).await, 201).await;
        let expires: chrono::DateTime<chrono::Utc> =
            body["expiresAt"].as_str().unwrap().parse().unwrap();
        placed.push((body["bookingId"].as_str().unwrap().to_string(), expires));
    }
    // Confirm each around its own deadline, from 300 ms before to 290 ms after.
    let confirms = placed.iter().enumerate().map(|(i, (id, expires))| {
        let (app, token) = (&app, &token);
        let at = *expires + chrono::Duration::milliseconds(10 * i as i64 - 300);
        async move {
            let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            let path = format!("{id}/confirm");
            app.booking(token, reqwest::Method::POST, &path)
                .await
                .status()
                .as_u16()
        }
    });
    let answers = futures::future::join_all(confirms).await;
    assert!(
        answers.iter().all(|s| *s == 200 || *s == 409),
        "{answers:?}"
    );
    let won = answers.iter().filter(|s| **s == 200).count();
    assert!(
        won > 0 && won < placed.len(),
        "no race happened: {won} confirmed"
    );

    let pg = app.iso.pg().await;
    eventually(Duration::from_secs(10), || async {
        scalar(
            &pg,
            "SELECT count(*) FROM bookings WHERE status IN ('CONFIRMED', 'EXPIRED')",
        )
        .await
            == placed.len() as i64
    })
    .await;
    for ((id, _), answer) in placed.iter().zip(&answers) {
        let expected = if *answer == 200 {
            ("CONFIRMED", "BOOKED")
        } else {
            ("EXPIRED", "AVAILABLE")
        };
        assert_eq!(
            stored_status(&app, id).await,
            Some((expected.0.to_string(), expected.1.to_string())),
            "booking {id} answered {answer}"
        );
    }
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn herdgate_check_finds_a_seat_the_stores_disagree_on() {
    let app = spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    json(app.post_hold(&app.token(users[0]), 1, 8, None).await, 201).await;
    // The app runs on this test's runtime: wait for the command without blocking it.
    let check = |wait: &'static str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_herdgate"))
            .args(["check", "--wait", wait])
            .envs(app.iso.env())
            .output()
    };
    let agreed = check("10s").await.unwrap();
    assert!(
        agreed.status.success(),
        "{}",
        String::from_utf8_lossy(&agreed.stdout)
    );
    assert!(String::from_utf8_lossy(&agreed.stdout).contains("0 differences"));
    // The seat's lock vanishes from Redis only.
    let redis = app.iso.redis().await;
    redis
        .del::<(), _>(Keys::new(app.iso.prefix.clone()).event(1).lock(8))
        .await
        .unwrap();
    let output = check("1s").await.unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("event 1 seat 8:"), "{stdout}");
    assert!(stdout.contains("1 differences"), "{stdout}");
}
