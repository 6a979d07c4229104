//! Two gateways and two writers behind a private HAProxy running the shipped
//! deploy/haproxy/haproxy.cfg (its addresses replaced by free local ports),
//! restarted one gateway at a time under load, as an operator rolls out a
//! release: SIGTERM (the gateway answers /readyz 503 for HERDGATE_DRAIN_DELAY
//! while still serving, HAProxy's checks take it out, then it drains), start it
//! again, wait until HAProxy has it back, then the other. No acknowledged hold
//! may be lost, and nothing but 503 may be a 5xx.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use herdgate::{
    auth::Auth,
    config::{Config, ENV_LOGIN_CLIENT_RATE, ENV_TRUSTED_PROXIES},
    seed::SeedOptions,
};

use crate::{
    faults::{assert_no_seat_booked_twice, await_stored},
    helpers::{Isolation, assert_stores_agree, eventually, user_ids},
    processes::{Herdgate, free_port},
};

const SEATS: i64 = 5_000;
const USERS: u32 = 8_000;
/// Each gateway's HERDGATE_DRAIN_DELAY: longer than the checks take to mark it down.
const DRAIN_DELAY: &str = "3s";

/// A private HAProxy (foreground, `-db`), killed when dropped.
pub struct Haproxy {
    child: Child,
    pub base: String,
    /// Its Prometheus exporter (`frontend metrics`).
    pub metrics: String,
    dir: PathBuf,
}

impl Haproxy {
    /// Runs deploy/haproxy/haproxy.cfg listening on a free port, with the
    /// shipped servers pointed at `gateways` (host:port each).
    pub fn start(gateways: &[String]) -> Self {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg"),
        )
        .unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let config = rendered(&shipped, [port, metrics_port], gateways);
        let dir = std::env::temp_dir().join(format!("herdgate-haproxy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "haproxy is not installed: scripts/test installs it \
                 (source scripts/services.sh scripts/haproxy.sh; ensure_haproxy)",
            );
        let check = Command::new(haproxy)
            .args(["-c", "-q", "-f"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(check.status.success(), "haproxy -c: {check:?}");
        let log = std::env::var("TEST_LOG").is_ok();
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(if log { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .unwrap();
        Haproxy {
            child,
            base: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            dir,
        }
    }

    /// Whether HAProxy has server `server` (gateway-1, ...) UP, as its exporter says.
    pub async fn server_up(&self, http: &reqwest::Client, server: &str) -> Option<bool> {
        let text = http
            .get(&self.metrics)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let line = format!(
            "haproxy_server_status{{proxy=\"gateways\",server=\"{server}\",state=\"UP\"}} "
        );
        let value = text.lines().find_map(|l| l.strip_prefix(line.as_str()))?;
        Some(value.trim() == "1")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The shipped config with its two frontends (the API, then the metrics)
/// on 127.0.0.1:`ports` and one server line per gateway; every other line as
/// shipped.
fn rendered(shipped: &str, ports: [u16; 2], gateways: &[String]) -> String {
    let mut out = String::new();
    let (mut binds, mut servers) = (0, 0);
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("bind ") {
            let port = ports[binds.min(1)];
            binds += 1;
            out.push_str(&format!("    bind 127.0.0.1:{port}\n"));
        } else if trimmed.starts_with("server ") {
            servers += 1;
            if servers == 1 {
                for (i, addr) in gateways.iter().enumerate() {
                    out.push_str(&format!("    server gateway-{} {addr}\n", i + 1));
                }
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_eq!(
        binds, 2,
        "the API's and the metrics' binds in the shipped config"
    );
    assert!(servers >= 2, "the shipped config lists the gateways");
    assert!(
        shipped.contains("uri /readyz"),
        "checks ask the gateways' readiness"
    );
    out
}

/// One answer through the balancer: its status (0: no answer at all) and,
/// for a 201, the booking.
struct Answer {
    status: u16,
    booking: Option<uuid::Uuid>,
}

/// Holds on random seats of event 1 through `base`, each request for the
/// next user, from `workers` clients, until `done` is set.
async fn load(base: &str, tokens: &[String], workers: usize, done: &AtomicBool) -> Vec<Answer> {
    let next = AtomicUsize::new(0);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let worker = || async {
        let mut answers = Vec::new();
        while !done.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            // At most 7 holds a user: below the per-user limit of 8.
            if i >= 7 * tokens.len() {
                break;
            }
            let response = http
                .post(format!("{base}/api/bookings"))
                .bearer_auth(&tokens[i % tokens.len()])
                .json(&serde_json::json!({"eventId": 1, "seatId": fastrand::i64(1..=SEATS)}))
                .send()
                .await;
            let answer = match response {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    Answer {
                        status,
                        booking: body["bookingId"].as_str().and_then(|b| b.parse().ok()),
                    }
                }
                Err(_) => Answer {
                    status: 0,
                    booking: None,
                },
            };
            answers.push(answer);
        }
        answers
    };
    futures::future::join_all((0..workers).map(|_| worker()))
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn ready(http: &reqwest::Client, base: &str) -> bool {
    http.get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// What one gateway's restart took, from its SIGTERM.
#[derive(Debug)]
#[allow(dead_code)] // Printed.
struct Restart {
    /// `/readyz` answered 503 (None: it refused connections first).
    unready: Option<Duration>,
    /// HAProxy had it DOWN.
    taken_out: Duration,
    /// The process exited.
    exited: Duration,
    /// The new process was ready.
    ready: Duration,
    /// HAProxy had it UP again.
    back: Duration,
}

/// SIGTERMs gateway `n` (HAProxy's `gateway-<n>`), waits for it to exit,
/// starts it again on the same port and waits until HAProxy has it back.
async fn restart(
    gateway: Herdgate,
    n: usize,
    haproxy: &Haproxy,
    env: &HashMap<String, String>,
    port: u16,
) -> (Herdgate, Restart) {
    let server = format!("gateway-{n}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = gateway.base.clone();
    let started = Instant::now();
    gateway.sigterm().await;
    // 503 while it drains; without a drain delay it stops listening at once instead.
    let unready = loop {
        match http.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 503 => break Some(started.elapsed()),
            Ok(_) => {}
            Err(_) => break None,
        }
        assert!(started.elapsed() < Duration::from_secs(2), "still ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eventually(Duration::from_secs(10), || async {
        haproxy.server_up(&http, &server).await == Some(false)
    })
    .await;
    let taken_out = started.elapsed();
    let status = gateway.exited().await;
    assert!(status.success(), "a gateway drains and exits 0: {status:?}");
    let exited = started.elapsed();
    let again = Herdgate::start_on(env, "gateway", port);
    eventually(Duration::from_secs(30), || ready(&http, &base)).await;
    let ready = started.elapsed();
    eventually(Duration::from_secs(10), || async {
        haproxy.server_up(&http, &server).await == Some(true)
    })
    .await;
    let back = started.elapsed();
    let restart = Restart {
        unready,
        taken_out,
        exited,
        ready,
        back,
    };
    (again, restart)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_haproxy_under_load_loses_no_hold_and_answers_no_5xx_but_503() {
    let iso = Isolation::with_seed(SeedOptions {
        demo_seats: SEATS as u32,
        users: USERS,
    })
    .await;
    let mut env = iso.env();
    env.insert("HERDGATE_DRAIN_DELAY".into(), DRAIN_DELAY.into());
    env.insert("HERDGATE_RELAY_CLAIM_IDLE".into(), "1s".into());
    let config = Config::from_env(&env).unwrap();
    let auth = Auth::new(&config.auth).unwrap();
    let pg = iso.pg().await;
    let tokens: Vec<String> = user_ids(&pg)
        .await
        .iter()
        .map(|&u| auth.issue(u).unwrap().token)
        .collect();
    let ports = [free_port(), free_port()];
    let mut gateways: Vec<Option<Herdgate>> = ports
        .iter()
        .map(|&p| Some(Herdgate::start_on(&env, "gateway", p)))
        .collect();
    let _writers = [
        Herdgate::start(&env, "writer"),
        Herdgate::start(&env, "writer"),
    ];
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for g in gateways.iter().flatten() {
        eventually(Duration::from_secs(30), || ready(&http, &g.base)).await;
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let haproxy = Haproxy::start(&addrs);
    eventually(Duration::from_secs(10), || async {
        haproxy.server_up(&http, "gateway-1").await == Some(true)
            && haproxy.server_up(&http, "gateway-2").await == Some(true)
    })
    .await;

    let done = Arc::new(AtomicBool::new(false));
    let run_started = Instant::now();
    let rolling = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut figures = Vec::new();
        for (i, &port) in ports.iter().enumerate() {
            let gateway = gateways[i].take().unwrap();
            let (again, figure) = restart(gateway, i + 1, &haproxy, &env, port).await;
            gateways[i] = Some(again);
            figures.push(figure);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        done.store(true, Ordering::Relaxed);
        figures
    };
    let (answers, figures) = tokio::join!(load(&haproxy.base, &tokens, 16, &done), rolling);
    let took = run_started.elapsed();

    let mut by_status = BTreeMap::<u16, usize>::new();
    for a in &answers {
        *by_status.entry(a.status).or_default() += 1;
    }
    for (i, figure) in figures.iter().enumerate() {
        println!("gateway {}, from its SIGTERM: {figure:?}", i + 1);
        assert!(
            figure.unready.is_some(),
            "gateway {} drained without a 503 from /readyz",
            i + 1
        );
        assert!(
            figure.taken_out < figure.exited,
            "HAProxy took gateway {} out before it stopped: {figure:?}",
            i + 1
        );
    }
    println!(
        "{} answers in {took:?} through HAProxy: {by_status:?} (0: no answer)",
        answers.len()
    );
    assert!(
        answers
            .iter()
            .all(|a| matches!(a.status, 200 | 201 | 409 | 503)),
        "only answers a buyer can act on, 503 the only 5xx: {by_status:?}"
    );
    let placed: Vec<uuid::Uuid> = answers
        .iter()
        .filter(|a| a.status == 201)
        .map(|a| a.booking.expect("a 201 names its booking"))
        .collect();
    assert!(placed.len() > 1_000, "the load ran: {by_status:?}");
    let stored_at = Instant::now();
    await_stored(&pg, &placed, Duration::from_secs(60)).await;
    println!(
        "all {} acknowledged holds in PostgreSQL {:?} after the load",
        placed.len(),
        stored_at.elapsed()
    );
    let once = crate::helpers::scalar(
        &pg,
        "SELECT count(*) FROM bookings WHERE status = 'PENDING'",
    )
    .await;
    assert_eq!(once, placed.len() as i64, "every 201 once, nothing else");
    assert_no_seat_booked_twice(&pg).await;
    assert_stores_agree(&config).await;
}

/// Behind the shipped HAProxy (it appends X-Forwarded-For) and with
/// HERDGATE_TRUSTED_PROXIES naming it, the per-client login limit counts
/// each client, not the balancer: a bot flooding logins from 127.0.0.2 is
/// turned away while a buyer on 127.0.0.3 still logs in. Without the
/// setting every client would be the balancer, and the bot would lock
/// everyone out.
#[tokio::test]
async fn behind_haproxy_a_bot_flooding_logins_locks_out_only_itself() {
    let iso = Isolation::new().await;
    let mut env = iso.env();
    env.insert(ENV_LOGIN_CLIENT_RATE.into(), "3".into());
    env.insert(ENV_TRUSTED_PROXIES.into(), "127.0.0.1".into());
    let port = free_port();
    let _gateway = Herdgate::start_on(&env, "gateway", port).ready().await;
    let haproxy = Haproxy::start(&[format!("127.0.0.1:{port}")]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually(Duration::from_secs(10), || async {
        haproxy.server_up(&http, "gateway-1").await == Some(true)
    })
    .await;
    let from = |last: u8| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let login = |client: &reqwest::Client, password: &str| {
        client
            .post(format!("{}/api/users/login", haproxy.base))
            .json(&serde_json::json!({"email": "test@example.com", "password": password}))
            .send()
    };
    let (bot, buyer) = (from(2), from(3));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(login(&bot, "guess").await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429], "the bot is limited");
    let answer = login(&buyer, "password").await.unwrap();
    assert_eq!(
        answer.status(),
        200,
        "the buyer behind the same balancer logs in"
    );
}

#[test]
fn the_shipped_config_is_rendered_with_every_gateway_and_its_checks_kept() {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg"),
    )
    .unwrap();
    let gateways = ["127.0.0.1:1".into(), "127.0.0.1:2".into()];
    let out = rendered(&shipped, [9999, 9998], &gateways);
    assert!(out.contains("bind 127.0.0.1:9999"));
    assert!(out.contains("bind 127.0.0.1:9998"));
    assert!(out.contains("prometheus-exporter"));
    assert!(out.contains("server gateway-2 127.0.0.1:2"));
    assert!(out.contains("http-check expect status 200"));
}
