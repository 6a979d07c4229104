//! Backends failing under the gateway: it answers fast and honestly (503 with
//! Retry-After), stays healthy, and recovers by itself. Each test stops only
//! servers of its own, started on a free port.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::{Isolation, assert_problem, eventually, json, spawn_app_on, user_ids};

/// A redis-server of this test's own, killed with SIGKILL when dropped.
pub struct PrivateRedis {
    child: Child,
    pub port: u16,
}

impl PrivateRedis {
    pub fn start_on(port: u16) -> Self {
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

    /// On a free port below Linux's ephemeral range (32768 and up), so that
    /// while this Redis is down no other test's `bind(0)` can take its port.
    pub fn start() -> Self {
        let port = std::iter::repeat_with(|| fastrand::u16(20_000..32_000))
            .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
            .unwrap();
        Self::start_on(port)
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
