//! The waiting room: a queue in Redis in front of an event's seats, admission
//! at a set rate, and the admission checked by `place_hold.lua` in the step
//! that takes the seat.

use std::{collections::HashSet, time::Duration};

use fred::interfaces::{LuaInterface, SortedSetsInterface};
use herdgate::{config, holds::Keys};
use serde_json::Value;

use crate::helpers::{
    Isolation, TestApp, assert_problem, json, retry_after, spawn_app_on, user_ids,
};

/// Event 3 of the seed (120 seats) gets a waiting room before the app loads it.
pub const EVENT: i64 = 3;
pub const SEED: &str = "0123456789abcdef0123456789abcdef";

/// How the test's waiting room runs; times relative to when it is created.
pub struct Room {
    pub opens_in_ms: i64,
    pub starts_in_ms: i64,
    pub rate: f64,
    pub max_active: i32,
    pub idle_ms: i32,
    pub grace_ms: i32,
    pub proof_bits: i16,
}

impl Default for Room {
    fn default() -> Self {
        Room {
            opens_in_ms: -3_600_000,
            starts_in_ms: -1_000,
            rate: 1_000.0,
            max_active: 1_000,
            idle_ms: 60_000,
            grace_ms: 60_000,
            proof_bits: 0,
        }
    }
}

/// The app, with `users` load-test users beside the seed's, and event 3
/// behind a waiting room.
pub async fn app_with_room(room: Room, users: u32) -> (TestApp, Vec<i64>) {
    app_with_room_and(room, users, []).await
}

pub async fn app_with_room_and(
    room: Room,
    users: u32,
    limits: impl IntoIterator<Item = (String, String)>,
) -> (TestApp, Vec<i64>) {
    let iso = Isolation::new().await;
    let pg = iso.pg().await;
    herdgate::seed::ensure_load_users(&pg, users).await.unwrap();
    insert_room(&pg, &room).await;
    let users = user_ids(&pg).await;
    // Every test buyer visits from 127.0.0.1: the per-address limit has its own test.
    let app = spawn_app_on(iso, |env| {
        env.insert(config::ENV_ROOM_CLIENT_RATE.into(), "1000000".into());
        env.extend(limits);
    })
    .await;
    (app, users)
}

/// Puts event 3 behind `room` (before the app loads it: the loader reads it then).
pub async fn insert_room(pg: &tokio_postgres::Client, room: &Room) {
    pg.execute(
        "INSERT INTO waiting_rooms (event_id, opens_at, starts_at, admit_per_sec, max_active,
                                    idle_ms, session_cap_ms, grace_ms, seed, proof_bits)
         VALUES ($1, now() + make_interval(secs => $2), now() + make_interval(secs => $3),
                 $4, $5, $6, 600000, $7, $8, $9)",
        &[
            &EVENT,
            &(room.opens_in_ms as f64 / 1_000.0),
            &(room.starts_in_ms as f64 / 1_000.0),
            &room.rate,
            &room.max_active,
            &room.idle_ms,
            &room.grace_ms,
            &SEED,
            &room.proof_bits,
        ],
    )
    .await
    .unwrap();
}

/// The first `n` seat ids of `event`.
pub async fn seats(app: &TestApp, event: i64, n: i64) -> Vec<i64> {
    app.iso
        .pg()
        .await
        .query(
            "SELECT id FROM seats WHERE event_id = $1 ORDER BY id LIMIT $2",
            &[&event, &n],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

pub async fn visit(app: &TestApp, user: i64, join: bool) -> reqwest::Response {
    let path = match join {
        true => format!("{}/waiting-room/{EVENT}/join", app.base),
        false => format!("{}/waiting-room/{EVENT}", app.base),
    };
    let request = match join {
        true => app.http.post(path),
        false => app.http.get(path),
    };
    request.bearer_auth(app.token(user)).send().await.unwrap()
}

pub async fn place(app: &TestApp, user: i64) -> Value {
    json(visit(app, user, false).await, 200).await
}

/// Visits until admitted (the queue moves at each visit).
pub async fn admitted(app: &TestApp, user: i64) -> Value {
    for _ in 0..200 {
        let view = place(app, user).await;
        if view["status"] == "admitted" {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("user {user} was never admitted");
}

#[tokio::test]
async fn only_a_buyer_admitted_to_this_event_holds_its_seats_and_a_confirm_ends_the_admission() {
    let (app, users) = app_with_room(Room::default(), 0).await;
    let (buyer, other) = (users[0], users[1]);
    let token = app.token(buyer);
    let seat = seats(&app, EVENT, 3).await;
    let elsewhere = seats(&app, 2, 1).await[0];

    // No admission: 403, saying how to queue; the seat stays free.
    let refused = assert_problem(app.post_hold(&token, EVENT, seat[0], None).await, 403).await;
    assert_eq!(refused["type"], "/problems/admission-required");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("/waiting-room/3/join")
    );
    // Not queued yet: looking is 404.
    assert_problem(visit(&app, buyer, false).await, 404).await;
    // Joining twice keeps the place.
    let first = json(visit(&app, buyer, true).await, 200).await;
    assert_eq!(first["status"], "queued", "{first}");
    assert_eq!(first["position"], 1);
    assert!(first["pollAfterSeconds"].as_f64().unwrap() >= 1.0);
    assert_eq!(first["order"]["seed"], SEED, "revealed after the start");
    let admission = admitted(&app, buyer).await;
    assert!(admission["admittedUntil"].is_string(), "{admission}");

    let held = json(app.post_hold(&token, EVENT, seat[0], None).await, 201).await;
    // Another user, unadmitted, is refused even a free seat; an event without
    // a waiting room takes anyone's hold.
    let other_token = app.token(other);
    assert_problem(app.post_hold(&other_token, EVENT, seat[1], None).await, 403).await;
    assert_eq!(
        app.post_hold(&other_token, 2, elsewhere, None)
            .await
            .status(),
        201
    );

    // The confirm ends the admission: the next hold needs a new one.
    let booking = held["bookingId"].as_str().unwrap();
    let confirmed = app
        .booking(&token, reqwest::Method::POST, &format!("{booking}/confirm"))
        .await;
    assert_eq!(confirmed.status(), 200);
    assert_problem(app.post_hold(&token, EVENT, seat[2], None).await, 403).await;
    assert_problem(visit(&app, buyer, false).await, 404).await;

    // So does a cancel.
    visit(&app, other, true).await;
    admitted(&app, other).await;
    let held = json(app.post_hold(&other_token, EVENT, seat[1], None).await, 201).await;
    let booking = held["bookingId"].as_str().unwrap();
    let cancelled = app
        .booking(&other_token, reqwest::Method::DELETE, booking)
        .await;
    assert_eq!(cancelled.status(), 200);
    assert_problem(app.post_hold(&other_token, EVENT, seat[2], None).await, 403).await;
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn buyers_are_admitted_at_the_set_rate_in_queue_order() {
    let room = Room {
        rate: 20.0,
        ..Room::default()
    };
    let (app, users) = app_with_room(room, 200).await;
    let users: Vec<i64> = users.into_iter().take(200).collect();
    for &user in &users {
        assert_eq!(visit(&app, user, true).await.status(), 200);
    }
    let redis = app.iso.redis().await;
    let admitted_key = Keys::new(app.iso.prefix.clone())
        .event(EVENT)
        .room_admitted();
    // One buyer visits all along; every visit moves the queue for everyone.
    let started = tokio::time::Instant::now();
    let before: u64 = redis.zcard(&admitted_key).await.unwrap();
    while started.elapsed() < Duration::from_secs(3) {
        let _ = place(&app, users[users.len() - 1]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after: u64 = redis.zcard(&admitted_key).await.unwrap();
    let during = (after - before) as f64;
    // The bucket holds at most one second's worth; visits come every 50 ms.
    assert!(
        during <= 20.0 * elapsed + 20.0 + 1.0,
        "{during} in {elapsed:.2} s"
    );
    assert!(
        during >= 20.0 * (elapsed - 0.5),
        "{during} in {elapsed:.2} s"
    );
    // In order: everyone admitted joined before everyone still waiting.
    let admitted: Vec<String> = redis
        .zrange(&admitted_key, 0, -1, None, false, None, false)
        .await
        .unwrap();
    let admitted: HashSet<i64> = admitted.iter().map(|u| u.parse().unwrap()).collect();
    let first_waiting = users.iter().position(|u| !admitted.contains(u)).unwrap();
    assert!(
        users[first_waiting..].iter().all(|u| !admitted.contains(u)),
        "admitted out of order"
    );
    assert_eq!(first_waiting, admitted.len());
}

#[tokio::test]
async fn a_buyer_who_stops_visiting_loses_the_place_and_an_idle_admission_ends() {
    let room = Room {
        rate: 0.001,
        grace_ms: 1_000,
        ..Room::default()
    };
    let (app, users) = app_with_room(room, 0).await;
    let (away, staying) = (users[0], users[1]);
    assert_eq!(place_after_join(&app, away).await, 1);
    assert_eq!(place_after_join(&app, staying).await, 2);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        place(&app, staying).await;
    }
    assert_eq!(
        place(&app, staying).await["position"],
        1,
        "the one away is gone"
    );
    assert_problem(visit(&app, away, false).await, 404).await;

    // An admission idle past its timeout is over.
    let room = Room {
        idle_ms: 500,
        ..Room::default()
    };
    let (app, users) = app_with_room(room, 0).await;
    let buyer = users[0];
    visit(&app, buyer, true).await;
    admitted(&app, buyer).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let token = app.token(buyer);
    let seat = seats(&app, EVENT, 1).await[0];
    assert_problem(app.post_hold(&token, EVENT, seat, None).await, 403).await;
}

pub async fn place_after_join(app: &TestApp, user: i64) -> u64 {
    json(visit(app, user, true).await, 200).await["position"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn the_pre_queue_is_ordered_by_the_committed_seed_revealed_at_the_start() {
    let room = Room {
        starts_in_ms: 2_000,
        rate: 0.001,
        ..Room::default()
    };
    let (app, users) = app_with_room(room, 40).await;
    let mut commitment = None;
    for &user in &users {
        let view = json(visit(&app, user, true).await, 200).await;
        assert_eq!(view["status"], "pre_queue", "{view}");
        assert!(view["position"].is_null(), "no position before the draw");
        assert!(view["order"]["seed"].is_null(), "the seed stays secret");
        commitment = Some(view["order"]["commitment"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let redis = app.iso.redis().await;
    let mut drawn = Vec::new();
    for &user in &users {
        let view = place(&app, user).await;
        assert_eq!(view["order"]["seed"], SEED);
        assert_eq!(view["order"]["commitment"].as_str(), commitment.as_deref());
        // Anyone can recompute the order: ascending SHA-1 of "seed:userId".
        let hash: String = redis
            .eval(
                "return redis.sha1hex(ARGV[1])",
                Vec::<String>::new(),
                vec![format!("{SEED}:{user}")],
            )
            .await
            .unwrap();
        drawn.push((hash, user, view["position"].as_u64().unwrap()));
    }
    drawn.sort();
    let positions: Vec<u64> = drawn.iter().map(|(_, _, p)| *p).collect();
    assert_eq!(positions, (1..=users.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn joining_before_the_room_opens_is_409_and_an_event_without_a_room_is_404() {
    let room = Room {
        opens_in_ms: 60_000,
        starts_in_ms: 120_000,
        ..Room::default()
    };
    let (app, users) = app_with_room(room, 0).await;
    let early = assert_problem(visit(&app, users[0], true).await, 409).await;
    assert_eq!(early["type"], "/problems/waiting-room-not-open");
    assert!(early["opensAt"].is_string(), "{early}");
    let token = app.token(users[0]);
    for path in ["/waiting-room/2/join", "/waiting-room/99/join"] {
        let response = app
            .http
            .post(format!("{}{path}", app.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_problem(response, 404).await;
    }
    let anonymous = app
        .http
        .post(format!("{}/waiting-room/{EVENT}/join", app.base))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401).await;
    let bad_id = app
        .http
        .get(format!("{}/waiting-room/abc", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(bad_id, 400).await;
    app.assert_healthy().await;
}

#[tokio::test]
async fn settings_change_at_run_time_pausing_keeps_every_place_and_a_removed_room_admits_all() {
    let room = Room {
        rate: 1_000.0,
        ..Room::default()
    };
    let (app, users) = app_with_room(room, 0).await;
    let pg = app.iso.pg().await;
    let set = |sql: &'static str| {
        let pg = &pg;
        async move { pg.execute(sql, &[&EVENT]).await.unwrap() }
    };
    set("UPDATE waiting_rooms SET paused = true WHERE event_id = $1").await;
    // Settings reach Redis at the loader's next sync (200 ms in tests).
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (i, &user) in users.iter().take(5).enumerate() {
        assert_eq!(place_after_join(&app, user).await, i as u64 + 1);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, &user) in users.iter().take(5).enumerate() {
        let view = place(&app, user).await;
        assert_eq!(view["status"], "queued", "paused: nobody is admitted");
        assert_eq!(view["position"].as_u64(), Some(i as u64 + 1));
    }
    set("UPDATE waiting_rooms SET paused = false WHERE event_id = $1").await;
    let first = admitted(&app, users[0]).await;
    assert_eq!(first["status"], "admitted");
    for &user in users.iter().take(5) {
        admitted(&app, user).await;
    }

    // Without its room, the event takes anyone's hold.
    set("DELETE FROM waiting_rooms WHERE event_id = $1").await;
    let token = app.token(users[10]);
    let seat = seats(&app, EVENT, 1).await[0];
    let mut status = 0;
    for _ in 0..50 {
        status = app
            .post_hold(&token, EVENT, seat, None)
            .await
            .status()
            .as_u16();
        if status == 201 {
            break;
        }
        assert_eq!(status, 403);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 201);
    assert_problem(visit(&app, users[10], true).await, 404).await;
}

#[tokio::test]
async fn a_user_or_an_address_visiting_too_often_gets_429_with_retry_after() {
    let per_user = [(config::ENV_ROOM_USER_RATE.to_string(), "3".to_string())];
    let (app, users) = app_with_room_and(Room::default(), 0, per_user).await;
    for _ in 0..3 {
        assert_eq!(visit(&app, users[0], true).await.status(), 200);
    }
    let limited = visit(&app, users[0], false).await;
    retry_after(&limited);
    let problem = assert_problem(limited, 429).await;
    assert_eq!(problem["type"], "/problems/waiting-room-rate-limited");
    assert_eq!(problem["scope"], "user");
    // Another user is not held back by the first one's visits.
    assert_eq!(visit(&app, users[1], true).await.status(), 200);

    let per_client = [(config::ENV_ROOM_CLIENT_RATE.to_string(), "4".to_string())];
    let (app, users) = app_with_room_and(Room::default(), 0, per_client).await;
    for &user in &users[..4] {
        assert_eq!(visit(&app, user, true).await.status(), 200);
    }
    let problem = assert_problem(visit(&app, users[4], true).await, 429).await;
    assert_eq!(problem["scope"], "client");
    app.assert_healthy().await;
}

/// Behind a trusted balancer (HERDGATE_TRUSTED_PROXIES), each client it names
/// in X-Forwarded-For has its own allowance of visits.
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_visits() {
    let env = [
        (config::ENV_ROOM_CLIENT_RATE.to_string(), "4".to_string()),
        (
            config::ENV_TRUSTED_PROXIES.to_string(),
            "127.0.0.1".to_string(),
        ),
    ];
    let (app, users) = app_with_room_and(Room::default(), 0, env).await;
    let join = |user: i64, client: &'static str| {
        app.http
            .post(format!("{}/waiting-room/{EVENT}/join", app.base))
            .bearer_auth(app.token(user))
            .header("X-Forwarded-For", client)
            .send()
    };
    for &user in &users[..4] {
        assert_eq!(join(user, "198.51.100.1").await.unwrap().status(), 200);
    }
    let problem = assert_problem(join(users[4], "198.51.100.1").await.unwrap(), 429).await;
    assert_eq!(problem["scope"], "client");
    assert_eq!(join(users[4], "198.51.100.2").await.unwrap().status(), 200);
    app.assert_healthy().await;
}

#[tokio::test]
async fn the_stats_count_the_room_publicly_with_waits_and_no_admission_out_of_order() {
    let (app, users) = app_with_room(Room::default(), 0).await;
    let stats = json(app.get(&format!("/waiting-room/{EVENT}/stats")).await, 200).await;
    assert_eq!(stats["queued"], 0);
    assert_eq!(stats["admitted"], 0);
    assert!(stats["waitSeconds"].is_null());
    assert_eq!(
        stats["order"]["seed"], SEED,
        "revealed: the room has started"
    );
    for &user in &users[..5] {
        visit(&app, user, true).await;
    }
    for &user in &users[..5] {
        admitted(&app, user).await;
    }
    let stats = json(app.get(&format!("/waiting-room/{EVENT}/stats")).await, 200).await;
    assert_eq!(stats["queued"], 0, "{stats}");
    assert_eq!(stats["active"], 5);
    assert_eq!(stats["admitted"], 5);
    assert_eq!(stats["outOfOrder"], 0);
    assert!(stats["waitSeconds"]["p90"].as_f64().unwrap() >= 0.0);
    assert_eq!(stats["admissionRate"], 1_000.0);
    // The recorder is the process's: other tests' visits count too.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let joins: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("herdgate_waiting_room_visits_total{")
                && l.contains(r#"kind="join""#)
                && l.contains(r#"outcome="queued""#)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no join count in {metrics}"));
    assert!(joins >= 5.0, "{joins}");
    // An event without a room has no stats; a bad id is 400.
    assert_problem(app.get("/waiting-room/2/stats").await, 404).await;
    assert_problem(app.get("/waiting-room/x/stats").await, 400).await;
}

#[tokio::test]
async fn a_room_that_asks_for_proof_of_work_lets_in_only_joins_that_carry_one() {
    let room = Room {
        proof_bits: 10,
        ..Room::default()
    };
    let (app, users) = app_with_room(room, 0).await;
    let user = users[0];
    let join = |proof: Option<String>| {
        let mut request = app
            .http
            .post(format!("{}/waiting-room/{EVENT}/join", app.base))
            .bearer_auth(app.token(user));
        if let Some(proof) = proof {
            request = request.header("Proof-Of-Work", proof);
        }
        request.send()
    };
    let asked = assert_problem(join(None).await.unwrap(), 403).await;
    assert_eq!(asked["type"], "/problems/proof-of-work-required");
    assert_eq!(asked["difficulty"], 10);
    let challenge = asked["challenge"].as_str().unwrap().to_string();
    assert_eq!(challenge, format!("herdgate:{EVENT}:{user}:"));
    if !herdgate::waiting_room::proof::verify(EVENT, user, "0", 10) {
        assert_problem(join(Some("0".into())).await.unwrap(), 403).await;
    }
    // A nonce of the wrong shape is a bad request, whatever the room asks.
    assert_problem(join(Some("not valid!".into())).await.unwrap(), 400).await;
    assert_problem(join(Some("".into())).await.unwrap(), 400).await;
    // About a thousand hashes, as a browser would do them.
    let nonce = (0u64..)
        .map(|n| n.to_string())
        .find(|n| herdgate::waiting_room::proof::verify(EVENT, user, n, 10))
        .unwrap();
    let joined = json(join(Some(nonce)).await.unwrap(), 200).await;
    assert_eq!(joined["position"], 1);
    // Looking needs no proof; another user's proof is not this one's.
    assert_eq!(place(&app, user).await["status"], "admitted");
    let other = app
        .http
        .post(format!("{}/waiting-room/{EVENT}/join", app.base))
        .bearer_auth(app.token(users[1]))
        .header("Proof-Of-Work", "0")
        .send()
        .await
        .unwrap();
    if !herdgate::waiting_room::proof::verify(EVENT, users[1], "0", 10) {
        assert_problem(other, 403).await;
    }
}

#[tokio::test]
async fn the_seeded_demo_room_puts_event_5_behind_a_pre_queue_and_leaves_event_1_open() {
    let app = crate::helpers::spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    let token = app.token(users[0]);
    let joined = app
        .http
        .post(format!("{}/waiting-room/5/join", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let view = json(joined, 200).await;
    // Drawn a minute after the seed ran: the commitment now, the seed then.
    assert_eq!(view["status"], "pre_queue", "{view}");
    assert!(view["order"]["seed"].is_null());
    assert_eq!(view["order"]["commitment"].as_str().unwrap().len(), 64);
    let seat: i64 = crate::helpers::scalar(
        &app.iso.pg().await,
        "SELECT min(id) FROM seats WHERE event_id = 5",
    )
    .await;
    let refused = assert_problem(app.post_hold(&token, 5, seat, None).await, 403).await;
    assert_eq!(refused["type"], "/problems/admission-required");
    // The README's curl demo and the benchmarks' event: no room.
    assert_eq!(app.post_hold(&token, 1, 1, None).await.status(), 201);
    let stats = json(app.get("/waiting-room/5/stats").await, 200).await;
    assert_eq!(stats["admissionRate"], 5.0);
    assert_eq!(stats["maxActive"], 200);
}
