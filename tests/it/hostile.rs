//! Hostile clients (issue 11): each attack that once worked, and what it gets now.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use herdgate::config;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{
    TestApp, assert_problem, json, retry_after, spawn_app, spawn_app_with, user_ids,
};

/// Reads until the server closes the connection (or `within` passes, which fails
/// the test); what it sent, and how long that took.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection was still open after {within:?}"
    );
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

fn with(
    pairs: &'static [(&'static str, &'static str)],
) -> impl FnOnce(&mut std::collections::HashMap<String, String>) {
    move |env| {
        for (k, v) in pairs {
            env.insert(k.to_string(), v.to_string());
        }
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_idle_timeout() {
    let app = spawn_app_with(with(&[(config::ENV_IDLE_TIMEOUT, "300ms")])).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let (sent, took) = read_until_closed(&mut silent, Duration::from_secs(3)).await;
    assert!(sent.is_empty(), "{sent}");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    app.assert_healthy().await;
}

/// Before its first byte a connection waits out the idle timeout, not hyper's
/// header timeout: it has no hyper connection (and no buffers) yet.
#[tokio::test]
async fn a_connection_that_sends_nothing_waits_without_a_header_deadline() {
    let app = spawn_app_with(with(&[
        (config::ENV_IDLE_TIMEOUT, "2s"),
        (config::ENV_HEADER_TIMEOUT, "300ms"),
    ]))
    .await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let (sent, took) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(sent.is_empty(), "{sent}");
    assert!(took >= Duration::from_millis(1800), "closed after {took:?}");
    app.assert_healthy().await;
}

#[tokio::test]
async fn a_header_sent_a_byte_at_a_time_is_cut_at_the_header_timeout() {
    let app = spawn_app_with(with(&[
        (config::ENV_IDLE_TIMEOUT, "500ms"),
        (config::ENV_HEADER_TIMEOUT, "1s"),
    ]))
    .await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    // Never idle for the idle timeout, never done: only the header deadline ends it.
    let closed = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if slow.write_all(b"x").await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the slow header was cut off");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    app.assert_healthy().await;
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_idle() {
    let app = spawn_app_with(with(&[(config::ENV_IDLE_TIMEOUT, "400ms")])).await;
    let mut client = TcpStream::connect(app.addr).await.unwrap();
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = read_until_closed(&mut client, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took >= Duration::from_millis(350), "{took:?}");
}

#[tokio::test]
async fn an_http2_preface_gets_no_connection_of_its_own() {
    // HTTP/1.1 only: h2c would run without the header and idle deadlines.
    let app = spawn_app_with(with(&[(config::ENV_IDLE_TIMEOUT, "30s")])).await;
    let mut h2 = TcpStream::connect(app.addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let (_, took) = read_until_closed(&mut h2, Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    app.assert_healthy().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_a_503_problem_and_the_gateway_recovers() {
    let app = spawn_app_with(with(&[
        (config::ENV_MAX_CONNECTIONS, "3"),
        (config::ENV_IDLE_TIMEOUT, "500ms"),
    ]))
    .await;
    // The client's own kept-alive connection goes first.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut over = TcpStream::connect(app.addr).await.unwrap();
    over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = read_until_closed(&mut over, Duration::from_secs(2)).await;
    assert!(
        took < Duration::from_millis(150),
        "refused at once, not idled out: {took:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["type"], "/problems/too-many-connections");
    // The held ones idle out, and the slots are free again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    app.assert_healthy().await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("herdgate_http_connections_refused_total 1"),
        "{metrics}"
    );
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn many_distinct_seat_pages_keep_the_read_cache_within_its_bytes() {
    const BOUND: f64 = 100_000.0;
    let app = spawn_app_with(with(&[
        (config::ENV_READ_CACHE_BYTES, "100000"),
        (config::ENV_SEATS_CACHE_TTL, "60s"),
    ]))
    .await;
    // Every `after` is a key of its own: about 2 MB of pages in all.
    let mut asked = 0usize;
    for after in 0..300 {
        let page = app
            .get(&format!(
                "/api/seats/available?eventId=1&limit=300&after={after}"
            ))
            .await;
        assert_eq!(page.status(), 200);
        asked += page.bytes().await.unwrap().len();
    }
    assert!(asked as f64 > 10.0 * BOUND, "{asked}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let held = metric(&metrics, "herdgate_read_cache_bytes");
    assert!(held > 0.0 && held <= BOUND, "the cache holds {held} bytes");
}

#[tokio::test]
async fn a_signed_token_for_an_unknown_user_gets_no_hold() {
    let app = spawn_app().await;
    let ghost = app.token(999_999);
    let p = assert_problem(app.post_hold(&ghost, 1, 7, None).await, 401).await;
    assert_eq!(p["type"], "/problems/unknown-user");
    // The seat stays free for a real user; one added after start is known at once.
    let pg = app.iso.pg().await;
    let added: i64 = pg
        .query_one(
            "INSERT INTO users (email, name, password_hash) VALUES ('late@example.com', 'Late', 'x')
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    json(app.post_hold(&app.token(added), 1, 7, None).await, 201).await;
    app.wait_until(|| async {
        pg.query_opt("SELECT 1 FROM bookings WHERE user_id = $1", &[&added])
            .await
            .unwrap()
            .is_some()
    })
    .await;
}

async fn login_from(app: &TestApp, from: IpAddr, email: &str, password: &str) -> reqwest::Response {
    login_forwarded(app, from, None, email, password).await
}

/// A login from `from`, saying `X-Forwarded-For: forwarded` when given.
async fn login_forwarded(
    app: &TestApp,
    from: IpAddr,
    forwarded: Option<&str>,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let mut request = reqwest::Client::builder()
        .no_proxy()
        .local_address(from)
        .build()
        .unwrap()
        .post(format!("{}/api/users/login", app.base))
        .json(&serde_json::json!({"email": email, "password": password}));
    if let Some(forwarded) = forwarded {
        request = request.header("X-Forwarded-For", forwarded);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn guessing_one_accounts_password_is_stopped_and_other_accounts_log_in() {
    let app = spawn_app_with(with(&[(config::ENV_LOGIN_ACCOUNT_RATE, "3")])).await;
    for _ in 0..3 {
        assert_problem(app.post_login("test@example.com", "guess").await, 401).await;
    }
    let limited = app.post_login("Test@Example.com", "password").await;
    retry_after(&limited);
    let p = assert_problem(limited, 429).await;
    assert_eq!(p["type"], "/problems/login-rate-limited");
    assert_eq!(p["scope"], "account");
    json(app.post_login("user1@load.test", "password").await, 200).await;
}

#[tokio::test]
async fn one_client_flooding_logins_cannot_starve_another() {
    let app = spawn_app_with(with(&[(config::ENV_LOGIN_CLIENT_RATE, "5")])).await;
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let genuine = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    for n in 0..5 {
        let response = login_from(&app, attacker, &format!("nobody{n}@example.com"), "x").await;
        assert_problem(response, 401).await;
    }
    let p = assert_problem(
        login_from(&app, attacker, "test@example.com", "password").await,
        429,
    )
    .await;
    assert_eq!(p["scope"], "client");
    json(
        login_from(&app, genuine, "test@example.com", "password").await,
        200,
    )
    .await;
}

/// Without HERDGATE_TRUSTED_PROXIES, a bot naming a new address in every
/// request's X-Forwarded-For is still one client: its own.
#[tokio::test]
async fn a_forged_x_forwarded_for_does_not_escape_the_client_limit() {
    let app = spawn_app_with(with(&[(config::ENV_LOGIN_CLIENT_RATE, "5")])).await;
    let bot = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    for n in 0..5 {
        let forged = format!("198.51.100.{n}");
        let response = login_forwarded(&app, bot, Some(&forged), "nobody@example.com", "x").await;
        assert_problem(response, 401).await;
    }
    let limited = login_forwarded(
        &app,
        bot,
        Some("198.51.100.99"),
        "test@example.com",
        "password",
    )
    .await;
    let p = assert_problem(limited, 429).await;
    assert_eq!(p["scope"], "client");
}

/// Behind a trusted balancer (127.0.0.1 here) each client it names has its
/// own limit, and what a client wrote itself to the left of the balancer's
/// entry does not count; a peer that is not trusted is counted as itself.
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = spawn_app_with(with(&[
        (config::ENV_LOGIN_CLIENT_RATE, "5"),
        (config::ENV_TRUSTED_PROXIES, "127.0.0.1"),
    ]))
    .await;
    let balancer = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    for n in 0..5 {
        // The bot forges a new left entry each time; the balancer appends its real address.
        let chain = format!("10.9.9.{n}, 198.51.100.7");
        let response =
            login_forwarded(&app, balancer, Some(&chain), "nobody@example.com", "x").await;
        assert_problem(response, 401).await;
    }
    let p = assert_problem(
        login_forwarded(
            &app,
            balancer,
            Some("198.51.100.7"),
            "test@example.com",
            "password",
        )
        .await,
        429,
    )
    .await;
    assert_eq!(p["scope"], "client");
    // Another buyer behind the same balancer logs in.
    json(
        login_forwarded(
            &app,
            balancer,
            Some("198.51.100.8"),
            "test@example.com",
            "password",
        )
        .await,
        200,
    )
    .await;
    // An untrusted peer naming the bot's address is not the bot.
    let elsewhere = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    json(
        login_forwarded(
            &app,
            elsewhere,
            Some("198.51.100.7"),
            "test@example.com",
            "password",
        )
        .await,
        200,
    )
    .await;
    // The balancer itself, naming nobody, is one more client of its own.
    json(
        login_forwarded(&app, balancer, None, "test@example.com", "password").await,
        200,
    )
    .await;
    app.assert_healthy().await;
}

#[tokio::test]
async fn a_nul_byte_in_a_login_is_a_400_not_a_500() {
    let app = spawn_app().await;
    for body in [
        r#"{"email":"test@example.com\u0000","password":"x"}"#,
        r#"{"email":"test@example.com","password":"pass\u0000word"}"#,
    ] {
        app.assert_invalid_login_body(body).await;
    }
    app.assert_healthy().await;
}

#[tokio::test]
async fn an_idempotent_replay_tells_how_the_booking_stands_now() {
    let app = spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    let (mine, other) = (app.token(users[0]), app.token(users[1]));
    let placed = json(app.post_hold(&mine, 1, 9, Some("k4")).await, 201).await;
    let id = placed["bookingId"].as_str().unwrap().to_string();
    // While the hold lives, the replay is the same 201.
    let again = json(app.post_hold(&mine, 1, 9, Some("k4")).await, 201).await;
    assert_eq!(again["bookingId"], id.as_str());
    assert_eq!(again["status"], "PENDING");
    let cancelled = app
        .http
        .delete(format!("{}/api/bookings/{id}", app.base))
        .bearer_auth(&mine)
        .send()
        .await
        .unwrap();
    json(cancelled, 200).await;
    json(app.post_hold(&other, 1, 9, None).await, 201).await;
    let replay = json(app.post_hold(&mine, 1, 9, Some("k4")).await, 200).await;
    assert_eq!(replay["bookingId"], id.as_str());
    assert_eq!(replay["status"], "CANCELLED");
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let app = spawn_app().await;
    for path in [
        "/healthz",
        "/api/events/1",
        "/api/seats/available?eventId=1",
    ] {
        let response = app
            .http
            .head(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(response.bytes().await.unwrap().is_empty(), "{path}");
    }
    let login = app
        .http
        .head(format!("{}/api/users/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 405);
    assert_eq!(login.headers()["allow"], "POST");
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "sub": "1", "iss": "herdgate", "iat": now, "exp": now + 3600, "nbf": now + 600,
    });
    let secret = herdgate::config::DEV_TOKEN_SECRET.as_bytes();
    let early = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap();
    let p = assert_problem(app.post_hold(&early, 1, 3, None).await, 401).await;
    assert_eq!(p["type"], "/problems/bad-token");
}

/// Errors hyper answers before any handler runs: the status is right, the
/// connection is closed, and the gateway stays healthy. hyper writes these
/// answers itself, with an empty body (see docs/security.md).
#[tokio::test]
async fn malformed_request_heads_are_refused_and_the_gateway_stays_up() {
    let app = spawn_app().await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (b"POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        (
            b"POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            b"POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        // The header limit (16 KiB, request line included) comes before hyper's 64 KiB URI limit.
        (long_uri.into_bytes(), "HTTP/1.1 431"),
        (huge_header.into_bytes(), "HTTP/1.1 431"),
    ];
    for (request, status) in cases {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let _ = stream.write_all(&request).await;
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        assert!(answer.starts_with(status), "{status}: {answer}");
    }
    app.assert_healthy().await;
}

/// The issue's repro: with few open files, idle sockets used to take the last
/// descriptors, so `/healthz` timed out and the accept loop spun on EMFILE.
/// Now the connection cap stays below the open-files limit: extra sockets get a
/// 503 at once, and the gateway answers again as soon as the idle ones are closed.
#[tokio::test]
async fn idle_sockets_past_the_open_files_limit_get_503s_and_the_gateway_recovers() {
    let iso = crate::helpers::Isolation::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    /// Killed when dropped, so a failed assertion leaves no gateway running.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Killed(
        std::process::Command::new("prlimit")
            .args([
                "--nofile=400:400",
                "--",
                env!("CARGO_BIN_EXE_herdgate"),
                "serve",
            ])
            .envs(iso.env())
            .env(config::ENV_ADDR, &addr)
            .env(config::ENV_IDLE_TIMEOUT, "2s")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let healthz = || client.get(format!("http://{addr}/healthz")).send();
    crate::helpers::eventually(Duration::from_secs(20), || async {
        healthz().await.is_ok()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..450 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Past the cap (400 less the spare descriptors) a client fails at once: a 503,
    // or a closed connection while 64 refusals are already waiting on silent sockets.
    let asked = Instant::now();
    // (A 200 when a slot has just been freed by an idle socket closing.)
    match healthz().await {
        Ok(during) => assert!([200, 503].contains(&during.status().as_u16())),
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = healthz()
        .await
        .expect("answered after the idle sockets were closed");
    assert_eq!(after.status(), 200);
    drop(idle);
}
