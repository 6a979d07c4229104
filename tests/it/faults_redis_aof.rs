//! Redis restarted with AOF under load (issue 12, fault 4): the gateway
//! reconnects, its scripts are loaded again (EVALSHA answered NOSCRIPT after
//! the restart), every acknowledged hold survives, and answers during the
//! restart are 201, 409, 200 or 503 with Retry-After, never a 500. The test
//! restarts only a redis-server of its own.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use crate::{
    faults::{Answer, PrivateRedis, free_port, hold_load},
    helpers::{Isolation, eventually, spawn_app_on, user_ids},
};

/// How long Redis stays down between its SIGTERM and its start.
const DOWN: Duration = Duration::from_millis(2_500);
/// Every answer comes within this: the 2 s Redis timeout, and as much again
/// for a busy machine.
const ANSWER_BOUND: Duration = Duration::from_secs(4);
/// The first 201 after the restart comes within this of Redis answering again.
const RECOVER_BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn redis_restarted_with_aof_under_load_keeps_every_acknowledged_hold() {
    const SEATS: i64 = 6_000;
    const USERS: u32 = 3_000;
    const KEYED: usize = 20;
    let dir = TempDir::new();
    let dir_arg = dir.0.to_str().unwrap().to_string();
    let options = move |dir: &str| {
        let aof = ["--appendonly", "yes", "--appendfsync", "everysec", "--dir"];
        let mut options: Vec<String> = aof.iter().map(|s| s.to_string()).collect();
        options.push(dir.to_string());
        options
    };
    let start_redis = move |port: u16, dir: String| {
        let options = options(&dir);
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        PrivateRedis::start_with(port, &options)
    };
    let first = start_redis(free_port(), dir_arg.clone());
    let (port, url) = (first.port, first.url());
    let iso = Isolation::with_seed(herdgate::seed::SeedOptions {
        demo_seats: SEATS as u32,
        users: USERS,
    })
    .await;
    let mut app = spawn_app_on(iso, move |env| {
        env.insert("REDIS_URL".into(), url);
    })
    .await;
    let mut users = user_ids(&app.iso.pg().await).await;
    // Holds kept only by Redis's own data: an Idempotency-Key's booking is in
    // Redis alone (a Redis that lost its data would answer the same request
    // 200, the user's own hold rebuilt from PostgreSQL, not 201 replayed).
    let keyed_users = users.split_off(users.len() - KEYED);
    let mut keyed = Vec::new();
    for (i, &user) in keyed_users.iter().enumerate() {
        let (seat, key) = (SEATS - i as i64, format!("aof-{i}"));
        let response = app.post_hold(&app.token(user), 1, seat, Some(&key)).await;
        let body = crate::helpers::json(response, 201).await;
        let booking: uuid::Uuid = body["bookingId"].as_str().unwrap().parse().unwrap();
        keyed.push((user, seat, key, booking));
    }
    // The load keeps off their seats.
    let load_seats = SEATS - KEYED as i64;

    let start = Instant::now();
    let until = start + Duration::from_secs(8);
    let (answers, (stopping, restarted, second)) = tokio::join!(
        // At most 7 requests per user: below the per-user hold limit of 8.
        hold_load(&app, &users, load_seats, 6, until, 7 * users.len()),
        async {
            tokio::time::sleep_until((start + Duration::from_secs(2)).into()).await;
            let stopping = Instant::now();
            let mut first = first;
            tokio::task::spawn_blocking(move || first.terminate())
                .await
                .unwrap();
            tokio::time::sleep(DOWN).await;
            let dir = dir_arg.clone();
            let second = tokio::task::spawn_blocking(move || start_redis(port, dir))
                .await
                .unwrap();
            (stopping, Instant::now(), second)
        }
    );

    // Every answer is 201, 409, 200 (the user's own hold) or 503 with Retry-After.
    let mut by_status = BTreeMap::<(u16, String), usize>::new();
    for a in &answers {
        *by_status.entry((a.status, a.problem.clone())).or_default() += 1;
    }
    println!("hold answers: {by_status:?}");
    // A 503 says Redis did not answer: never `event-loading`, as a Redis
    // restarted with its AOF has every event still loaded.
    assert!(
        answers.iter().all(|a| match a.status {
            200 | 201 | 409 => true,
            503 => a.retry_after && a.problem == "/problems/unavailable",
            _ => false,
        }),
        "{by_status:?}"
    );
    // The same requests again: each replays its booking, as Redis kept it.
    for (user, seat, key, booking) in &keyed {
        let response = app.post_hold(&app.token(*user), 1, *seat, Some(key)).await;
        let body = crate::helpers::json(response, 201).await;
        assert_eq!(body["bookingId"], booking.to_string(), "{key} replayed");
    }
    // Answers to requests sent while Redis was away wait at most for the
    // Redis timeout (2 s), plus a margin (see ANSWER_BOUND).
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.done > stopping && a.started < restarted)
        .collect();
    let slowest = answers.iter().map(|a| a.done - a.started).max().unwrap();
    println!(
        "{} answers overlapped the restart, slowest answer {slowest:?}",
        during.len()
    );
    assert!(slowest < ANSWER_BOUND, "{slowest:?}");
    let placed: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    assert!(
        placed.iter().filter(|a| a.done < stopping).count() > 100,
        "load before the restart"
    );
    // The gateway reconnected and loaded its scripts again.
    let recovered = placed
        .iter()
        .filter(|a| a.started > restarted)
        .map(|a| a.done)
        .min()
        .expect("holds are placed after the restart");
    let recovered_in = recovered - restarted;
    assert!(recovered_in < RECOVER_BOUND, "{recovered_in:?}");

    // Acknowledged: every 201, and every 200 (a booking of the user's own).
    let mut acknowledged: HashMap<uuid::Uuid, i64> =
        keyed.iter().map(|(user, _, _, b)| (*b, *user)).collect();
    for a in answers.iter().filter(|a| matches!(a.status, 200 | 201)) {
        acknowledged.insert(a.booking.unwrap(), a.user);
    }
    assert_eq!(
        placed
            .iter()
            .map(|a| a.booking)
            .collect::<HashSet<_>>()
            .len(),
        placed.len(),
        "a booking id answered 201 twice"
    );
    // A 503 may come for a hold whose script ran as Redis went down: its
    // booking may be stored too, for that user and seat, and nothing else may.
    let unsure: HashSet<(i64, i64)> = answers
        .iter()
        .filter(|a| a.status == 503)
        .map(|a| (a.user, a.seat))
        .collect();

    let pg = app.iso.pg().await;
    let read = || async {
        pg.query(
            "SELECT id, user_id, seat_id, status FROM bookings WHERE event_id = 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect::<HashMap<uuid::Uuid, (i64, i64, String)>>()
    };
    eventually(Duration::from_secs(30), || async {
        let stored = read().await;
        acknowledged.keys().all(|id| stored.contains_key(id))
    })
    .await;
    let persisted_in = restarted.elapsed();
    let stored = read().await;
    for (id, (user, seat, status)) in &stored {
        assert_eq!(status, "PENDING", "{id}");
        match acknowledged.get(id) {
            Some(u) => assert_eq!(u, user, "{id} stored for another user"),
            None => assert!(
                unsure.contains(&(*user, *seat)),
                "{id} stored for user {user}, seat {seat}, never acknowledged nor answered 503"
            ),
        }
    }
    let double = crate::faults::assert_no_seat_booked_twice(&pg).await;
    app.assert_stores_agree().await;
    let (queued, dead) = app.shut_down_and_count_queued().await;
    println!(
        "acknowledged {} ({} answered 503 during the restart, {} of those stored), \
         persisted {}, lost 0, double-booked {double}, dead-lettered {dead}, \
         left queued {queued}; Redis down {:?}, first 201 {recovered_in:?} after it \
         answered again, PostgreSQL had every acknowledged hold {persisted_in:?} after",
        acknowledged.len(),
        answers.iter().filter(|a| a.status == 503).count(),
        stored.len() - acknowledged.len(),
        stored.len(),
        restarted - stopping,
    );
    assert_eq!(
        (queued, dead),
        (0, 0),
        "messages left (writer queue, dead letters)"
    );
    drop(second);
}

/// A directory for the AOF, removed when dropped (after the test's Redis:
/// declared before it).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("herdgate-aof-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
