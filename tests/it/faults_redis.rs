//! Redis stalled and Redis refusing connections, under a stream of holds
//! (issue 12, fault 6): every answer within a stated bound, every 503 with
//! Retry-After, and no phantom hold: a buyer whose request got a 503 while its
//! script still ran finds that hold as their own when they retry. Each test
//! stalls or stops only a redis-server of its own.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use fred::{
    interfaces::{ClientLike, KeysInterface},
    prelude::{Builder, Client},
};
use futures::future::join_all;
use herdgate::holds::Keys;
use serde_json::Value;

use crate::{
    faults::PrivateRedis,
    helpers::{Isolation, TestApp, eventually, spawn_app_on, user_ids},
};

/// The gateway's Redis timeout in the stall test: a 503 comes after it.
const STALL_TIMEOUT: Duration = Duration::from_millis(500);
/// The bound on every answer while Redis stalls: the timeout plus a margin
/// for a slow, shared test machine.
const STALL_BOUND: Duration = Duration::from_millis(1_500);
/// The bound on every answer while Redis refuses connections: well under the
/// 2 s timeout the gateway would otherwise wait.
const DOWN_BOUND: Duration = Duration::from_millis(500);

/// One answer the client got.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub took: Duration,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Answer {
    fn booking(&self) -> Option<String> {
        self.body["bookingId"].as_str().map(str::to_string)
    }

    fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or("")
    }
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let response = request.send().await.unwrap();
    let took = started.elapsed();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        took,
        retry_after,
        body,
    }
}

/// A hold of `seat` of event 1, with `key` as its Idempotency-Key if given.
pub async fn hold(app: &TestApp, user: i64, seat: i64, key: Option<&str>) -> Answer {
    let mut request = app
        .http
        .post(format!("{}/api/bookings", app.base))
        .bearer_auth(app.token(user))
        .json(&serde_json::json!({"eventId": 1, "seatId": seat}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    answer(request).await
}

/// Confirms (or with `confirm` false cancels) `booking`.
pub async fn end(app: &TestApp, user: i64, booking: &str, confirm: bool) -> Answer {
    let url = format!("{}/api/bookings/{booking}", app.base);
    let request = match confirm {
        true => app.http.post(format!("{url}/confirm")),
        false => app.http.delete(url),
    };
    answer(request.bearer_auth(app.token(user))).await
}

async fn private_client(redis: &PrivateRedis) -> Client {
    let config = fred::types::config::Config::from_url(&redis.url()).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    client
}

/// Waits until PostgreSQL has exactly the bookings in `statuses` (id ->
/// status) for event 1, and no other; then checks that no seat has two live
/// bookings and that `herdgate check` finds Redis and PostgreSQL agree.
/// Returns how long PostgreSQL took to match.
async fn assert_persisted_exactly(app: &TestApp, statuses: &HashMap<String, String>) -> Duration {
    let started = Instant::now();
    let pg = app.iso.pg().await;
    let read = || async {
        pg.query(
            "SELECT id::text, status FROM bookings WHERE event_id = 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, String>(1)))
        .collect::<HashMap<_, _>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let took = loop {
        let stored = read().await;
        if &stored == statuses {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL never matched the answers: {} stored, {} acknowledged, \
             stored but never acknowledged: {:?}, acknowledged but not stored: {:?}",
            stored.len(),
            statuses.len(),
            stored
                .keys()
                .filter(|id| !statuses.contains_key(*id))
                .collect::<Vec<_>>(),
            statuses
                .keys()
                .filter(|id| !stored.contains_key(*id))
                .collect::<Vec<_>>(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    crate::faults::assert_no_seat_booked_twice(&pg).await;
    app.assert_stores_agree().await;
    took
}

#[tokio::test]
async fn with_redis_stalled_answers_are_bounded_and_every_buyer_who_got_503_finds_their_own_hold() {
    let redis = PrivateRedis::start();
    let url = redis.url();
    let app = spawn_app_on(Isolation::new().await, move |env| {
        env.insert("REDIS_URL".into(), url);
        let timeout = format!("{}ms", STALL_TIMEOUT.as_millis());
        env.insert("HERDGATE_REDIS_TIMEOUT".into(), timeout);
        env.insert("HERDGATE_MAX_HOLDS_PER_USER".into(), "20".into());
    })
    .await;
    let users = user_ids(&app.iso.pg().await).await;
    let user_of = |seat: i64| users[(seat as usize - 1) % users.len()];
    // Booking id -> the status the client was last told: what PostgreSQL must end with.
    let mut told: HashMap<String, String> = HashMap::new();

    // Four holds to confirm (two) and cancel (two) while Redis stalls.
    const ENDING: std::ops::RangeInclusive<i64> = 201..=204;
    let mut ending = Vec::new();
    for seat in ENDING {
        let a = hold(&app, user_of(seat), seat, None).await;
        assert_eq!(a.status, 201, "{a:?}");
        ending.push((seat, a.booking().unwrap()));
    }

    // A stream of holds, one every 25 ms for 4.5 s, each for a seat of its own;
    // a third without an Idempotency-Key, two thirds with one. Redis stalls
    // for writes (every script) from 0.6 s to 3.6 s: the confirms and cancels'
    // lookups still run, their scripts wait with the holds'.
    const HOLDS: i64 = 180;
    let key = |seat: i64| (seat % 3 != 0).then(|| format!("stall-{seat}"));
    let started = Instant::now();
    let stream = join_all((1..=HOLDS).map(|seat| {
        let app = &app;
        let key = key(seat);
        async move {
            tokio::time::sleep(Duration::from_millis(25) * seat as u32).await;
            let sent = Instant::now();
            (
                seat,
                sent,
                hold(app, user_of(seat), seat, key.as_deref()).await,
            )
        }
    }));
    let stall = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(redis.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]), "OK");
        let paused = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ends = join_all(
            ending
                .iter()
                .enumerate()
                .map(|(i, (seat, booking))| end(&app, user_of(*seat), booking, i < 2)),
        )
        .await;
        (paused, ends)
    };
    let (sent, (paused, ends)) = tokio::join!(stream, stall);
    let run = started.elapsed();
    // The first hold placed after the pause ended, counted from its end.
    let resumed = paused + Duration::from_secs(3);
    let recovery = sent
        .iter()
        .filter(|(_, at, a)| *at + a.took > resumed && a.status == 201)
        .map(|(_, at, a)| (*at + a.took).duration_since(resumed))
        .min()
        .unwrap();
    let answers: Vec<(i64, Answer)> = sent.into_iter().map(|(s, _, a)| (s, a)).collect();

    // Every answer bounded; each a 201 or an honest 503 with Retry-After.
    let mut unavailable = Vec::new();
    for (seat, a) in &answers {
        assert!(a.took < STALL_BOUND, "seat {seat} took {:?}", a.took);
        match a.status {
            201 => {
                told.insert(a.booking().unwrap(), "PENDING".into());
            }
            503 => {
                assert_eq!(a.retry_after.as_deref(), Some("1"), "{a:?}");
                unavailable.push(*seat);
            }
            _ => panic!("seat {seat}: {a:?}"),
        }
    }
    for a in &ends {
        assert!(a.took < STALL_BOUND, "{a:?}");
        assert_eq!(a.status, 503, "{a:?}");
        assert_eq!(a.retry_after.as_deref(), Some("1"), "{a:?}");
    }
    let max = answers.iter().map(|(_, a)| a.took).max().unwrap();
    assert!(
        unavailable.len() >= 20,
        "the stall must hit the stream: {} answers were 503",
        unavailable.len()
    );

    // Once Redis answers again, the scripts that timed out have run: their
    // holds are there though the buyers were told 503.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(paused.elapsed())).await;
    let client = private_client(&redis).await;
    let keys = Keys::new(app.iso.prefix.clone()).event(1);
    // Seat -> the booking its lock names: placed though its buyer got 503.
    let mut phantoms = HashMap::new();
    for &seat in &unavailable {
        let lock: Option<String> = client.get(keys.lock(seat)).await.unwrap();
        if let Some(booking) = lock {
            phantoms.insert(seat, booking);
        }
    }
    assert!(
        !phantoms.is_empty(),
        "no 503 hid a hold: the stall did not bite"
    );

    // Each of those buyers retries: the same Idempotency-Key (a replay, 201),
    // another one or none (their own hold, 200). Each finds the very booking
    // the lock names, never "taken"; a 503 that hid nothing places it now.
    let recovered = Instant::now();
    for &seat in &unavailable {
        let same_key = seat % 6 == 1 || seat % 6 == 4;
        let retry_key = match seat % 3 {
            _ if same_key => key(seat),
            0 => None,
            _ => Some(format!("again-{seat}")),
        };
        let a = hold(&app, user_of(seat), seat, retry_key.as_deref()).await;
        let expected = match phantoms.get(&seat) {
            Some(_) if same_key => 201,
            Some(_) => 200,
            None => 201,
        };
        assert_eq!(
            a.status, expected,
            "seat {seat} retried with {retry_key:?}: {a:?}"
        );
        if let Some(booking) = phantoms.get(&seat) {
            assert_eq!(a.booking().as_ref(), Some(booking), "{a:?}");
        }
        assert_eq!(a.body["status"], "PENDING", "{a:?}");
        assert_eq!(a.body["userId"], user_of(seat));
        told.insert(a.booking().unwrap(), "PENDING".into());
    }
    // A confirm or cancel that got 503 answers the booking as it stands.
    for (i, (seat, booking)) in ending.iter().enumerate() {
        let confirm = i < 2;
        let a = end(&app, user_of(*seat), booking, confirm).await;
        assert_eq!(a.status, 200, "{a:?}");
        let status = if confirm { "CONFIRMED" } else { "CANCELLED" };
        assert_eq!(a.body["status"], status, "{a:?}");
        told.insert(booking.clone(), status.into());
    }
    let retried = recovered.elapsed();

    let placed = answers.iter().filter(|(_, a)| a.status == 201).count();
    let persisted = assert_persisted_exactly(&app, &told).await;
    eprintln!(
        "stall: {HOLDS} holds in {run:?}, {placed} answered 201, {} answered 503 \
         (slowest answer {max:?}), {} of those placed anyway; first 201 \
         {recovery:?} after the pause; all retried in {retried:?}: none taken; {} bookings \
         acknowledged, all in PostgreSQL {persisted:?} after the retries",
        unavailable.len(),
        phantoms.len(),
        told.len()
    );
    // A 503 after a timeout does not say nothing happened: it says it may have.
    for a in answers.iter().map(|(_, a)| a).chain(&ends) {
        if a.status == 503 {
            assert!(a.detail().contains("may or may not"), "{a:?}");
        }
    }
}

#[tokio::test]
async fn with_redis_refusing_connections_answers_are_503_at_once_and_holds_return_with_it() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let app = spawn_app_on(Isolation::new().await, move |env| {
        env.insert("REDIS_URL".into(), url);
        env.insert("HERDGATE_REDIS_TIMEOUT".into(), "2s".into());
    })
    .await;
    let users = user_ids(&app.iso.pg().await).await;
    eventually(Duration::from_secs(10), || async {
        app.get("/api/seats/available?eventId=1").await.status() == 200
    })
    .await;

    redis.kill();
    // The client sees its connections close (or refused) at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    let mut count = 0;
    for round in 0..10 {
        let seat = 1 + round;
        let mut answers = vec![hold(&app, users[round as usize], seat, None).await];
        for path in ["/api/events/1", "/api/seats/available?eventId=1"] {
            answers.push(answer(app.http.get(format!("{}{path}", app.base))).await);
        }
        for a in answers {
            assert!(a.took < DOWN_BOUND, "round {round}: took {:?}", a.took);
            assert_eq!(a.status, 503, "{a:?}");
            assert_eq!(a.retry_after.as_deref(), Some("1"), "{a:?}");
            slowest = slowest.max(a.took);
            count += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hold_down = hold(&app, users[0], 1, None).await;
    assert!(
        hold_down.detail().contains("nothing was done"),
        "{hold_down:?}"
    );

    // Started again, empty (no AOF): the inventory is loaded again and holds succeed.
    let _redis = PrivateRedis::start_on(redis.port);
    let restarted = Instant::now();
    let first = loop {
        let a = hold(&app, users[0], 1, None).await;
        if a.status == 201 {
            break a.booking().unwrap();
        }
        assert!(restarted.elapsed() < Duration::from_secs(20), "{a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let recovery = restarted.elapsed();
    let mut told = HashMap::from([(first, "PENDING".to_string())]);
    for (i, &user) in users.iter().enumerate().skip(1) {
        let a = hold(&app, user, 1 + i as i64, None).await;
        assert_eq!(a.status, 201, "{a:?}");
        told.insert(a.booking().unwrap(), "PENDING".to_string());
    }
    let persisted = assert_persisted_exactly(&app, &told).await;
    eprintln!(
        "refused: {count} answers while down, all 503 with Retry-After, slowest {slowest:?}; \
         holds again {recovery:?} after Redis was back; {} holds acknowledged after, all in \
         PostgreSQL {persisted:?} later",
        told.len()
    );
}
