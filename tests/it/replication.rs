//! `HERDGATE_REDIS_MIN_REPLICAS`: a hold, confirm or cancel is answered only
//! once a replica has it (group commit, `holds::replication`). Each test runs a
//! private master and replica of its own (`redis-server --replicaof`).

use std::time::Duration;

use fred::{
    interfaces::{HashesInterface, KeysInterface},
    prelude::Client,
};
use futures::future::join_all;
use herdgate::{config, holds::Keys};
use serde_json::Value;

use crate::{
    faults::{PrivateRedis, free_port},
    faults_redis::{end, hold},
    helpers::{Isolation, TestApp, eventually, json, spawn_app_on, user_ids},
};

/// `HERDGATE_REDIS_REPLICA_TIMEOUT` in these tests.
const REPLICA_TIMEOUT: Duration = Duration::from_millis(300);
/// The bound on an answer while the replica is frozen: the timeout plus a
/// margin for a slow, shared test machine.
const FROZEN_BOUND: Duration = Duration::from_millis(1_300);

/// A private master with one replica, in sync; the replica's copy of the
/// master's snapshot goes to a directory of its own, removed on drop.
struct Pair {
    master: PrivateRedis,
    replica: PrivateRedis,
    dir: std::path::PathBuf,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.replica.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pair {
    async fn start() -> Self {
        let master = PrivateRedis::start();
        let port = master.port.to_string();
        let dir = std::env::temp_dir().join(format!("herdgate-replica-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let replica = PrivateRedis::start_with(
            free_port(),
            &[
                "--replicaof",
                "127.0.0.1",
                port.as_str(),
                "--dir",
                dir.to_str().unwrap(),
            ],
        );
        let pair = Pair {
            master,
            replica,
            dir,
        };
        eventually(Duration::from_secs(10), || async {
            pair.replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
                && pair
                    .master
                    .cli(&["INFO", "replication"])
                    .contains("connected_slaves:1")
        })
        .await;
        pair
    }

    /// The gateway on this master, with one replica required.
    async fn app(
        &self,
        customize: impl FnOnce(&mut std::collections::HashMap<String, String>),
    ) -> TestApp {
        let url = self.master.url();
        spawn_app_on(Isolation::new().await, move |env| {
            env.insert(config::ENV_REDIS_URL.into(), url);
            env.insert(config::ENV_REDIS_MIN_REPLICAS.into(), "1".into());
            let timeout = format!("{}ms", REPLICA_TIMEOUT.as_millis());
            env.insert(config::ENV_REDIS_REPLICA_TIMEOUT.into(), timeout);
            customize(env);
        })
        .await
    }
}

async fn client_of(redis: &PrivateRedis) -> Client {
    use fred::{interfaces::ClientLike, prelude::Builder};
    let config = fred::types::config::Config::from_url(&redis.url()).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    client
}

/// The booking holding `seat` of event 1, and its status, as `redis` has them now.
async fn seat_on(redis: &Client, keys: &Keys, seat: i64) -> (Option<String>, Option<String>) {
    let k = keys.event(1);
    let booking: Option<String> = redis.get(k.lock(seat)).await.unwrap();
    let status = match &booking {
        Some(booking) => redis.hget(k.hold(booking), "status").await.unwrap(),
        None => None,
    };
    (booking, status)
}

/// Calls of `command` since the last `CONFIG RESETSTAT` (INFO commandstats).
fn calls(redis: &PrivateRedis, command: &str) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

async fn booking_status(redis: &Client, keys: &Keys, booking: &str) -> Option<String> {
    redis
        .hget(keys.event(1).hold(booking), "status")
        .await
        .unwrap()
}

#[tokio::test]
async fn with_a_replica_required_every_hold_is_on_the_replica_when_answered() {
    let pair = Pair::start().await;
    let app = pair.app(|_| {}).await;
    let users = user_ids(&app.iso.pg().await).await;
    let keys = Keys::new(app.iso.prefix.clone());
    let replica = client_of(&pair.replica).await;

    // One at a time, then sixty at once (the barriers coalesce): the replica
    // has each hold the moment its 201 arrives.
    for seat in 1..=10 {
        let user = users[seat as usize % users.len()];
        let a = hold(&app, user, seat, None).await;
        assert_eq!(a.status, 201, "{}", a.body);
        let booking = a.body["bookingId"].as_str().unwrap().to_string();
        let on_replica = seat_on(&replica, &keys, seat).await;
        assert_eq!(on_replica, (Some(booking), Some("PENDING".into())));
    }
    assert_eq!(pair.master.cli(&["CONFIG", "RESETSTAT"]), "OK");
    let burst = join_all((11..=70).map(|seat| {
        let (app, keys, replica) = (&app, &keys, &replica);
        let user = users[seat as usize % users.len()];
        async move {
            let a = hold(app, user, seat, Some(&format!("burst-{seat}"))).await;
            let on_replica = seat_on(replica, keys, seat).await;
            (seat, a, on_replica)
        }
    }))
    .await;
    for (seat, a, on_replica) in burst {
        assert_eq!(a.status, 201, "seat {seat}: {}", a.body);
        let booking = a.body["bookingId"].as_str().unwrap().to_string();
        assert_eq!(
            on_replica,
            (Some(booking), Some("PENDING".into())),
            "seat {seat}"
        );
    }

    // Fewer WAITs than holds: barriers covered several at once.
    let (scripts, waits) = (calls(&pair.master, "evalsha"), calls(&pair.master, "wait"));
    println!("60 holds at once: {scripts} EVALSHA, {waits} WAIT");
    assert_eq!(scripts, 60);
    assert!((1..60).contains(&waits), "{waits} WAITs for 60 holds");

    // A confirm and a cancel too.
    let first = seat_on(&replica, &keys, 1).await.0.unwrap();
    let a = end(&app, users[1], &first, true).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        booking_status(&replica, &keys, &first).await.as_deref(),
        Some("CONFIRMED")
    );
    let second = seat_on(&replica, &keys, 2).await.0.unwrap();
    let a = end(&app, users[2], &second, false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        booking_status(&replica, &keys, &second).await.as_deref(),
        Some("CANCELLED")
    );

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("herdgate_redis_replication_barriers_total{outcome=\"replicated\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("herdgate_redis_replication_wait_seconds_bucket"));
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn with_the_replica_frozen_changes_get_503_not_replicated_and_the_retry_after_it_thaws_gets_them()
 {
    let pair = Pair::start().await;
    let app = pair.app(|_| {}).await;
    let users = user_ids(&app.iso.pg().await).await;
    let keys = Keys::new(app.iso.prefix.clone());
    let master = client_of(&pair.master).await;
    let replica = client_of(&pair.replica).await;
    let first = json(app.post_hold(&app.token(users[0]), 1, 1, None).await, 201).await;
    let first = first["bookingId"].as_str().unwrap().to_string();

    // Frozen: its connection stays open, it acknowledges nothing.
    pair.replica.freeze();
    let key = |seat: i64| (seat % 2 == 0).then(|| format!("frozen-{seat}"));
    let holds = join_all((2..=7).map(|seat| {
        let (app, user) = (&app, users[seat as usize]);
        let key = key(seat);
        async move { (seat, hold(app, user, seat, key.as_deref()).await) }
    }));
    let (holds, confirmed) = tokio::join!(holds, end(&app, users[0], &first, true));
    for (seat, a) in holds.iter().map(|(s, a)| (*s, a)).chain([(1, &confirmed)]) {
        assert_eq!(a.status, 503, "seat {seat}: {}", a.body);
        assert_eq!(a.retry_after.as_deref(), Some("1"), "seat {seat}");
        assert_eq!(a.body["type"], "/problems/not-replicated", "seat {seat}");
        assert!(
            a.took >= REPLICA_TIMEOUT - Duration::from_millis(20) && a.took < FROZEN_BOUND,
            "seat {seat} took {:?}",
            a.took
        );
    }
    // The master has them all; the buyers were not told.
    for seat in 2..=7 {
        let (booking, status) = seat_on(&master, &keys, seat).await;
        assert!(booking.is_some(), "seat {seat} is held on the master");
        assert_eq!(status.as_deref(), Some("PENDING"));
    }
    assert_eq!(
        booking_status(&master, &keys, &first).await.as_deref(),
        Some("CONFIRMED")
    );

    // Thawed: each buyer's retry (same key, or none) gets the very hold the
    // master placed, and the replica has it when the answer comes.
    pair.replica.thaw();
    let mut retries = Vec::new();
    for seat in 2..=7 {
        let a = hold(&app, users[seat as usize], seat, key(seat).as_deref()).await;
        retries.push(a.took);
        let expected = if key(seat).is_some() { 201 } else { 200 };
        assert_eq!(a.status, expected, "seat {seat}: {}", a.body);
        let (on_master, _) = seat_on(&master, &keys, seat).await;
        assert_eq!(a.body["bookingId"].as_str(), on_master.as_deref());
        let on_replica = seat_on(&replica, &keys, seat).await;
        assert_eq!(
            on_replica,
            (on_master, Some("PENDING".into())),
            "seat {seat}"
        );
    }
    let a = end(&app, users[0], &first, true).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "CONFIRMED");
    let frozen: Vec<Duration> = holds.iter().map(|(_, a)| a.took).collect();
    eprintln!(
        "replica frozen: 6 holds and a confirm answered 503 not-replicated in {:?} to {:?} \
         (timeout {REPLICA_TIMEOUT:?}); after the thaw the retries answered in {:?} to {:?}",
        frozen.iter().chain([&confirmed.took]).min().unwrap(),
        frozen.iter().chain([&confirmed.took]).max().unwrap(),
        retries.iter().min().unwrap(),
        retries.iter().max().unwrap(),
    );
    assert_eq!(
        booking_status(&replica, &keys, &first).await.as_deref(),
        Some("CONFIRMED")
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("herdgate_redis_replication_barriers_total{outcome=\"short\"}"),
        "{metrics}"
    );
    app.assert_stores_agree().await;
}

#[tokio::test]
async fn with_replicas_required_buyers_racing_for_one_seat_get_exactly_one_201() {
    let pair = Pair::start().await;
    // Every request reaches Redis: no sharing of one call per seat.
    let app = pair
        .app(|env| {
            env.insert(config::ENV_COALESCE.into(), "false".into());
        })
        .await;
    let users = user_ids(&app.iso.pg().await).await;
    let keys = Keys::new(app.iso.prefix.clone());
    let replica = client_of(&pair.replica).await;

    let answers = join_all((0..60).map(|i| {
        let user = users[i % users.len()];
        let app = &app;
        async move { (user, hold(app, user, 42, None).await) }
    }))
    .await;
    let won: Vec<_> = answers.iter().filter(|(_, a)| a.status == 201).collect();
    assert_eq!(won.len(), 1, "exactly one 201");
    let (winner, first) = won[0];
    let booking = first.body["bookingId"].as_str().unwrap();
    for (user, a) in &answers {
        match a.status {
            201 => {}
            // The winner's own retries answer their hold.
            200 => {
                assert_eq!(user, winner);
                assert_eq!(a.body["bookingId"].as_str(), Some(booking));
            }
            409 => assert_problem_type(&a.body, "/problems/seat-taken"),
            _ => panic!("{}: {}", a.status, a.body),
        }
    }
    let on_replica = seat_on(&replica, &keys, 42).await;
    assert_eq!(
        on_replica,
        (Some(booking.to_string()), Some("PENDING".into()))
    );
    app.assert_stores_agree().await;
}

fn assert_problem_type(body: &Value, kind: &str) {
    assert_eq!(body["type"], kind, "{body}");
}

#[tokio::test]
async fn with_replication_off_no_barrier_is_run() {
    let pair = Pair::start().await;
    let url = pair.master.url();
    let app = spawn_app_on(Isolation::new().await, move |env| {
        env.insert(config::ENV_REDIS_URL.into(), url);
    })
    .await;
    let users = user_ids(&app.iso.pg().await).await;
    // Frozen replica, yet holds are answered at once: nothing waits for it.
    pair.replica.freeze();
    let a = hold(&app, users[0], 1, None).await;
    pair.replica.thaw();
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(a.took < REPLICA_TIMEOUT, "{:?}", a.took);
    let keys = Keys::new(app.iso.prefix.clone());
    let master = client_of(&pair.master).await;
    let barriers: i64 = master.exists(keys.event(1).barrier()).await.unwrap();
    assert_eq!(barriers, 0, "no barrier key written");
}
