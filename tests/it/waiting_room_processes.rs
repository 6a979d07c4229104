//! The waiting room across gateway processes: two `herdgate gateway` binaries
//! on one Redis prefix and one database keep one queue, whichever a buyer
//! visits, for 10,000 buyers joining at once as for the operator's pause.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use herdgate::{auth::Auth, config::Config};
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::{
    helpers::{Isolation, json, user_ids},
    processes::Herdgate,
    waiting_room::{EVENT, Room, insert_room},
};

const OPERATOR: &str = "operator-secret-for-two-gateways-0123456789";

/// Two gateways on the same stores, with event 3 behind `room`, and a token
/// for each load-test user (at least `users` of them).
async fn two_gateways(room: Room, users: u32) -> (Isolation, [Herdgate; 2], Vec<(i64, String)>) {
    let iso = Isolation::new().await;
    let pg = iso.pg().await;
    herdgate::seed::ensure_load_users(&pg, users).await.unwrap();
    insert_room(&pg, &room).await;
    let mut env = iso.env();
    // Every buyer visits from 127.0.0.1.
    env.insert("HERDGATE_ROOM_CLIENT_RATE".into(), "100000000".into());
    env.insert("HERDGATE_OPERATOR_TOKEN".into(), OPERATOR.into());
    env.insert("HERDGATE_INVENTORY_INTERVAL".into(), "1h".into());
    // 10,000 connections opened at once by one client on two shared cores: some
    // wait seconds to send their request; the 5 s default would close them first.
    env.insert("HERDGATE_IDLE_TIMEOUT".into(), "60s".into());
    let auth = Auth::new(&Config::from_env(&env).unwrap().auth).unwrap();
    let tokens = user_ids(&pg)
        .await
        .into_iter()
        .map(|u| (u, auth.issue(u).unwrap().token))
        .collect();
    let a = Herdgate::start(&env, "gateway");
    let b = Herdgate::start(&env, "gateway");
    (iso, [a.ready().await, b.ready().await], tokens)
}

async fn visit(http: &reqwest::Client, base: &str, token: &str, join: bool) -> reqwest::Response {
    let request = match join {
        true => http.post(format!("{base}/waiting-room/{EVENT}/join")),
        false => http.get(format!("{base}/waiting-room/{EVENT}")),
    };
    request.bearer_auth(token).send().await.unwrap()
}

async fn operate(http: &reqwest::Client, base: &str, settings: Value) {
    let response = http
        .patch(format!("{base}/waiting-room/{EVENT}/settings"))
        .bearer_auth(OPERATOR)
        .json(&settings)
        .send()
        .await
        .unwrap();
    json(response, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_simultaneous_joins_through_two_gateways_get_ten_thousand_places() {
    const JOINS: usize = 10_000;
    // Started a moment ago at a rate too slow to admit anyone during the test.
    let room = Room {
        rate: 0.001,
        ..Room::default()
    };
    let (_iso, gateways, mut tokens) = two_gateways(room, JOINS as u32).await;
    tokens.truncate(JOINS);
    assert_eq!(tokens.len(), JOINS);
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
    // One connection per buyer, all open before any join is sent.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(JOINS)
        .build()
        .unwrap();
    let start = Arc::new(Barrier::new(JOINS));
    let started = Instant::now();
    let joins = tokens.iter().enumerate().map(|(i, (user, token))| {
        let (http, start) = (http.clone(), start.clone());
        let (base, token, user) = (bases[i % 2].clone(), token.clone(), *user);
        tokio::spawn(async move {
            start.wait().await;
            // A join is idempotent: a buyer told 503, or whose connection broke
            // (the machine is busy), joins again after a second, as a client does.
            for _ in 0..5 {
                let request = http
                    .post(format!("{base}/waiting-room/{EVENT}/join"))
                    .bearer_auth(&token);
                match request.send().await {
                    Ok(response) if response.status() != 503 => {
                        return (user, json(response, 200).await);
                    }
                    _ => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
            panic!("user {user}: 503 or no answer five times");
        })
    });
    let mut places = HashMap::new();
    for join in futures::future::join_all(joins).await {
        let (user, view) = join.unwrap();
        assert_eq!(view["status"], "queued", "{view}");
        places.insert(user, view["position"].as_u64().unwrap());
    }
    println!(
        "{JOINS} joins through two gateways in {:?}",
        started.elapsed()
    );
    let distinct: HashSet<u64> = places.values().copied().collect();
    assert_eq!(distinct, (1..=JOINS as u64).collect::<HashSet<_>>());
    // Joining again, through the other gateway, keeps the place; looking there shows it.
    for (i, (user, token)) in tokens.iter().enumerate().step_by(97) {
        let other = &bases[(i + 1) % 2];
        let again = json(visit(&http, other, token, true).await, 200).await;
        assert_eq!(again["position"].as_u64(), Some(places[user]), "{user}");
        assert_eq!(again["queued"].as_u64(), Some(JOINS as u64));
        let look = json(visit(&http, other, token, false).await, 200).await;
        assert_eq!(look["position"].as_u64(), Some(places[user]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_keep_one_queue_one_pause_and_one_admission_per_buyer() {
    let (iso, gateways, tokens) = two_gateways(Room::default(), 0).await;
    let (a, b) = (&gateways[0].base, &gateways[1].base);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // Paused through one gateway: the other admits nobody either.
    operate(&http, a, json!({"paused": true})).await;
    let buyers = &tokens[..8];
    for (i, (_, token)) in buyers.iter().enumerate() {
        let base = [a, b][i % 2];
        let view = json(visit(&http, base, token, true).await, 200).await;
        assert_eq!(view["position"].as_u64(), Some(i as u64 + 1), "{view}");
        assert_eq!(view["paused"], true);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, (_, token)) in buyers.iter().enumerate() {
        let view = json(visit(&http, [b, a][i % 2], token, false).await, 200).await;
        assert_eq!(view["status"], "queued");
        assert_eq!(view["position"].as_u64(), Some(i as u64 + 1));
    }
    // Resumed through the other, two at a time at most: admitted in queue order,
    // whichever gateway each buyer visits.
    operate(&http, b, json!({"paused": false, "maxActive": 2})).await;
    let mut admitted = Vec::new();
    for _ in 0..100 {
        for (i, (user, token)) in buyers.iter().enumerate() {
            let view = json(visit(&http, [a, b][i % 2], token, false).await, 200).await;
            if view["status"] == "admitted" && !admitted.contains(user) {
                admitted.push(*user);
            }
        }
        if admitted.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_two: Vec<i64> = buyers[..2].iter().map(|(u, _)| *u).collect();
    assert_eq!(admitted, first_two);
    // An admission made through one gateway holds a seat through the other.
    let seat: i64 = iso
        .pg()
        .await
        .query_one("SELECT min(id) FROM seats WHERE event_id = $1", &[&EVENT])
        .await
        .unwrap()
        .get(0);
    let hold = |base: &str, token: &str| {
        http.post(format!("{base}/api/bookings"))
            .bearer_auth(token)
            .json(&json!({"eventId": EVENT, "seatId": seat}))
            .send()
    };
    assert_eq!(hold(b, &buyers[0].1).await.unwrap().status(), 201);
    // Not admitted: refused by either.
    assert_eq!(hold(a, &buyers[5].1).await.unwrap().status(), 403);
    let stats_a = json(
        http.get(format!("{a}/waiting-room/{EVENT}/stats"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let stats_b = json(
        http.get(format!("{b}/waiting-room/{EVENT}/stats"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    for field in ["admitted", "queued", "maxActive", "paused", "outOfOrder"] {
        assert_eq!(stats_a[field], stats_b[field], "{field}");
    }
    assert_eq!(stats_a["admitted"], 2);
    assert_eq!(stats_a["outOfOrder"], 0);
}
