//! Backends failing under the gateway: it answers fast and honestly (503 with
//! Retry-After), stays healthy, and recovers by itself. Each test stops only
//! servers of its own, started on a free port.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::{Isolation, assert_problem, eventually, json, scalar, spawn_app_on, user_ids};

/// A redis-server of this test's own, killed with SIGKILL when dropped.
pub struct PrivateRedis {
    child: Child,
    pub port: u16,
}

impl PrivateRedis {
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// With `options` after the defaults (no persistence), which they
    /// override: `["--appendonly", "yes", "--dir", ...]` for an AOF.
    pub fn start_with(port: u16, options: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(options)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let mut redis = PrivateRedis { child, port };
        let started = Instant::now();
        // A PONG from our own child: a bare TCP connect could reach whoever else holds the port.
        while !redis.answers_ping() {
            assert!(
                redis.child.try_wait().unwrap().is_none(),
                "redis-server exited: port {port} taken?"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// On a free port (see [`free_port`]).
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs one command on this server with redis-cli; its reply, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGSTOP: the process freezes, its connections stay open (a replica
    /// that stops acknowledging, a master that stops answering).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`PrivateRedis::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// SIGTERM, as a service manager stops it: Redis shuts down as on
    /// `SHUTDOWN` (an AOF is flushed and fsynced first). Waits for the exit.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid}");
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "redis-server exited with {exit}");
    }
}

/// A free port below Linux's ephemeral range (32768 and up), so that while
/// the server on it is down no other test's `bind(0)` can take it.
pub fn free_port() -> u16 {
    std::iter::repeat_with(|| fastrand::u16(20_000..32_000))
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .unwrap()
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn with_redis_gone_holds_and_reads_get_503_fast_and_recover_when_it_returns() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let app = spawn_app_on(Isolation::new().await, move |env| {
        env.insert("REDIS_URL".into(), url);
        env.insert("HERDGATE_REDIS_TIMEOUT".into(), "300ms".into());
    })
    .await;
    let users = user_ids(&app.iso.pg().await).await;
    json(app.post_hold(&app.token(users[0]), 1, 1, None).await, 201).await;

    redis.kill();
    let started = Instant::now();
    let response = app.post_hold(&app.token(users[1]), 1, 2, None).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.headers()["retry-after"], "1");
    assert_problem(response, 503).await;
    assert_problem(app.get("/api/seats/available?eventId=3").await, 503).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready = assert_problem(app.get("/readyz").await, 503).await;
    assert_ne!(ready["checks"]["redis"], "ok");

    // An empty Redis comes back (no AOF here): the inventory is rebuilt, the
    // scripts are loaded again, and holds work.
    let _redis = PrivateRedis::start_on(redis.port);
    eventually(Duration::from_secs(20), || async {
        app.post_hold(&app.token(users[1]), 1, 2, None)
            .await
            .status()
            == 201
    })
    .await;
    // Every pooled connection reconnects in its own time; readiness follows.
    eventually(Duration::from_secs(20), || async {
        app.get("/readyz").await.status() == 200
    })
    .await;
}

#[tokio::test]
async fn past_its_in_flight_limit_the_gateway_answers_503_at_once() {
    use tokio::io::AsyncWriteExt;

    let app = spawn_app_on(Isolation::new().await, |env| {
        env.insert("HERDGATE_MAX_IN_FLIGHT".into(), "1".into());
    })
    .await;
    // One request in flight: its body is still on the way.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(
        b"POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 60\r\n\r\n{",
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(5), || async {
        app.get("/waiting-room").await.status() == 503
    })
    .await;
    let response = app.get("/api/events/1").await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_problem(response, 503).await;
    // Health checks are never turned away.
    assert_eq!(app.get("/healthz").await.status(), 200);
    drop(slow);
    eventually(Duration::from_secs(5), || async {
        app.get("/api/events/1").await.status() == 200
    })
    .await;
}

/// One answer of the load run below.
pub struct Answer {
    pub started: Instant,
    pub done: Instant,
    pub status: u16,
    pub problem: String,
    pub user: i64,
    pub booking: Option<uuid::Uuid>,
    pub seat: i64,
    pub retry_after: bool,
}

/// Holds on random seats of event 1, each request for the next user in turn
/// (so nobody reaches the per-user limit), from `workers` clients at once,
/// until `until` or `max` requests.
pub async fn hold_load(
    app: &crate::helpers::TestApp,
    users: &[i64],
    seats: i64,
    workers: usize,
    until: Instant,
    max: usize,
) -> Vec<Answer> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let tokens: Vec<String> = users.iter().map(|&u| app.token(u)).collect();
    let worker = || async {
        let mut answers = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= max || Instant::now() >= until {
                return answers;
            }
            let (user, token) = (users[i % users.len()], &tokens[i % users.len()]);
            let started = Instant::now();
            let seat = fastrand::i64(1..=seats);
            let response = app.post_hold(token, 1, seat, None).await;
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            answers.push(Answer {
                started,
                done: Instant::now(),
                status,
                problem: body["type"].as_str().unwrap_or("").to_string(),
                user,
                booking: body["bookingId"].as_str().and_then(|b| b.parse().ok()),
                seat,
                retry_after,
            });
        }
    };
    futures::future::join_all((0..workers).map(|_| worker()))
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test]
async fn redis_losing_its_data_under_load_answers_honestly_and_is_rebuilt_from_postgres() {
    use fred::interfaces::ClientLike;
    const SEATS: i64 = 3_000;
    const USERS: u32 = 1_000;
    let redis = PrivateRedis::start();
    let url = redis.url();
    let iso = Isolation::with_seed(herdgate::seed::SeedOptions {
        demo_seats: SEATS as u32,
        users: USERS,
    })
    .await;
    // The default loader interval: what a 404 window used to last.
    let app = spawn_app_on(iso, move |env| {
        env.insert("REDIS_URL".into(), url);
        env.insert("HERDGATE_INVENTORY_INTERVAL".into(), "5s".into());
    })
    .await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let flusher = fred::prelude::Builder::from_config(
        fred::types::config::Config::from_url(&redis.url()).unwrap(),
    )
    .build()
    .unwrap();
    flusher.init().await.unwrap();

    let start = Instant::now();
    let flush_at = start + Duration::from_secs(2);
    let until = start + Duration::from_secs(7);
    let (answers, flushed) = tokio::join!(
        // At most 7 requests per user: below the per-user hold limit of 8.
        hold_load(&app, &users, SEATS, 16, until, 7 * USERS as usize),
        async {
            tokio::time::sleep_until(flush_at.into()).await;
            // A fresh, empty Redis: every seat, lock, hold and outbox entry is gone.
            flusher.flushall::<()>(false).await.unwrap();
            Instant::now()
        }
    );

    // Every answer is 201, 409 or 503, or 200 for a seat the user holds already:
    // never a 404 for the on-sale event, no other 5xx.
    let mut by_status = std::collections::BTreeMap::<(u16, String), usize>::new();
    for a in &answers {
        *by_status.entry((a.status, a.problem.clone())).or_default() += 1;
    }
    println!("answers: {by_status:?}");
    assert!(
        answers
            .iter()
            .all(|a| matches!(a.status, 200 | 201 | 409 | 503)),
        "{by_status:?}"
    );
    let placed: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    assert_own_holds_are_theirs(&answers);
    let recovered = placed
        .iter()
        .filter(|a| a.started > flushed)
        .map(|a| a.done)
        .min()
        .expect("holds are placed again after the flush");
    assert!(
        placed.iter().filter(|a| a.done < flushed).count() > 100,
        "load before the flush"
    );

    // The writer drains; then what PostgreSQL has of each acknowledged hold.
    let after: Vec<uuid::Uuid> = placed
        .iter()
        .filter(|a| a.started > flushed)
        .map(|a| a.booking.unwrap())
        .collect();
    await_stored(&pg, &after, Duration::from_secs(30)).await;
    // Holds relayed before the flush and stored after the rebuild are restored
    // by the loader's catch-ups, 1 s and 2 s after it (and later ones).
    tokio::time::sleep_until((recovered + Duration::from_millis(2_500)).into()).await;
    app.assert_stores_agree().await;
    let rows = pg
        .query("SELECT id, status, user_id FROM bookings", &[])
        .await
        .unwrap();
    let stored: std::collections::HashMap<uuid::Uuid, (String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let (mut lost, mut superseded, mut newest_loss) = (0, 0, Duration::ZERO);
    for a in &placed {
        let booking = a.booking.unwrap();
        match stored.get(&booking) {
            Some((status, user)) if status == "PENDING" => assert_eq!(*user, a.user),
            other => {
                // Only a hold acknowledged before Redis lost its data may be lost:
                // never relayed (None), or relayed but not yet stored when the
                // rebuild gave its seat to someone else (EXPIRED by the writer).
                assert!(
                    a.started < flushed,
                    "{booking} placed after the flush: {other:?}"
                );
                newest_loss = newest_loss.max(flushed.saturating_duration_since(a.done));
                match other {
                    None => lost += 1,
                    Some(_) => superseded += 1,
                }
            }
        }
    }
    let live: i64 = scalar(
        &pg,
        "SELECT count(*) FROM bookings WHERE status = 'PENDING'",
    )
    .await;
    let double = assert_no_seat_booked_twice(&pg).await;
    println!(
        "acknowledged {}, persisted live {live}, lost {lost}, superseded {superseded} \
         (acknowledged at most {newest_loss:?} before the flush), double-booked {double}, \
         first hold after the flush {:?} after it, 503s {}",
        placed.len(),
        recovered - flushed,
        answers.iter().filter(|a| a.status == 503).count()
    );
    // Loss is bounded by the relay's latency: holds acknowledged a second
    // before the flush had long reached RabbitMQ.
    assert!(newest_loss < Duration::from_secs(1), "{newest_loss:?}");
    assert!(
        recovered - flushed < Duration::from_secs(3),
        "{:?}",
        recovered - flushed
    );

    // No seat PostgreSQL has a live booking for can be held by anyone else.
    let outsider = app.token(users[users.len() - 1]);
    let seats = pg
        .query(
            "SELECT seat_id, user_id FROM bookings WHERE status = 'PENDING'",
            &[],
        )
        .await
        .unwrap();
    for row in seats {
        let (seat, user): (i64, i64) = (row.get(0), row.get(1));
        let token = if user == users[users.len() - 1] {
            app.token(users[0])
        } else {
            outsider.clone()
        };
        let response = app.post_hold(&token, 1, seat, None).await;
        assert_eq!(response.status(), 409, "seat {seat} of a live booking");
    }
}

/// Asserts that no seat has two live bookings in PostgreSQL; the count (0), for
/// the run's figures.
pub async fn assert_no_seat_booked_twice(pg: &tokio_postgres::Client) -> i64 {
    let double = scalar(
        pg,
        "SELECT count(*) FROM (SELECT seat_id FROM bookings
          WHERE status IN ('PENDING', 'CONFIRMED') GROUP BY event_id, seat_id
         HAVING count(*) > 1) d",
    )
    .await;
    assert_eq!(double, 0, "seats with two live bookings");
    double
}

/// Asserts that every 200 is the user's own hold: one this user was answered 201 for.
pub fn assert_own_holds_are_theirs(answers: &[Answer]) {
    let placed: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    for own in answers.iter().filter(|a| a.status == 200) {
        assert!(
            placed
                .iter()
                .any(|a| a.user == own.user && a.booking == own.booking),
            "200 for user {} names booking {:?}, not one of theirs",
            own.user,
            own.booking
        );
    }
}

/// The booking of every 201 among `answers`: the holds that were acknowledged.
pub fn acknowledged(answers: &[Answer]) -> Vec<uuid::Uuid> {
    answers
        .iter()
        .filter(|a| a.status == 201)
        .map(|a| a.booking.expect("a 201 names its booking"))
        .collect()
}

/// Waits until PostgreSQL holds every booking of `ids`; fails after `within`.
pub async fn await_stored(pg: &tokio_postgres::Client, ids: &[uuid::Uuid], within: Duration) {
    eventually(within, || async {
        let stored: i64 = pg
            .query_one("SELECT count(*) FROM bookings WHERE id = ANY($1)", &[&ids])
            .await
            .unwrap()
            .get(0);
        stored == ids.len() as i64
    })
    .await;
}
