//! herdgate as separate processes: several gateways and writers at once, and
//! processes killed with SIGKILL mid-run. No acknowledged hold may be lost or
//! written twice.

use std::{
    collections::{HashMap, HashSet},
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use fred::interfaces::StreamsInterface;
use futures::{StreamExt, stream};
use herdgate::{auth::Auth, config::Config, seed::SeedOptions};
use tokio::sync::Barrier;

use crate::helpers::{Isolation, assert_stores_agree, eventually, scalar, user_ids};

/// A herdgate child process, killed with SIGKILL when dropped.
pub struct Herdgate {
    child: Child,
    pub base: String,
    /// Where a writer serves `/metrics` (HERDGATE_METRICS_ADDR).
    pub metrics_base: String,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Herdgate {
    pub fn start(env: &HashMap<String, String>, role: &str) -> Self {
        Self::start_on(env, role, free_port())
    }

    /// Starts `role` with its HTTP API (if any) on 127.0.0.1:`port`.
    pub fn start_on(env: &HashMap<String, String>, role: &str, port: u16) -> Self {
        let metrics_port = free_port();
        let log = std::env::var("TEST_LOG").is_ok();
        let mut command = Command::new(env!("CARGO_BIN_EXE_herdgate"));
        // Traces go where the test says, never to a collector of the developer's.
        for var in herdgate::telemetry::OTEL_VARS {
            command.env_remove(var);
        }
        let child = command
            .arg(role)
            .envs(env)
            .env("HERDGATE_ADDR", format!("127.0.0.1:{port}"))
            .env("HERDGATE_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .stdout(Stdio::null())
            .stderr(if log { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .unwrap();
        Herdgate {
            child,
            base: format!("http://127.0.0.1:{port}"),
            metrics_base: format!("http://127.0.0.1:{metrics_port}"),
        }
    }

    /// Waits until the HTTP API answers.
    pub async fn ready(self) -> Self {
        let client = reqwest::Client::new();
        eventually(Duration::from_secs(20), || async {
            client
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok()
        })
        .await;
        self
    }

    /// Sends SIGTERM and waits for the process to drain and exit (20 s at most).
    pub async fn terminate(self) -> std::process::ExitStatus {
        self.sigterm().await;
        self.exited().await
    }

    /// Sends SIGTERM, and returns at once.
    pub async fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
    }

    /// Waits for the process to exit (20 s at most).
    pub async fn exited(mut self) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Herdgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    iso: Isolation,
    env: HashMap<String, String>,
    tokens: Vec<String>,
    http: reqwest::Client,
}

async fn setup(seats: u32, users: u32) -> Setup {
    let iso = Isolation::with_seed(SeedOptions {
        demo_seats: seats,
        users,
    })
    .await;
    let mut env = iso.env();
    env.insert("HERDGATE_RELAY_CLAIM_IDLE".into(), "1s".into());
    let auth = Auth::new(&Config::from_env(&env).unwrap().auth).unwrap();
    let tokens = user_ids(&iso.pg().await)
        .await
        .iter()
        .map(|&u| auth.issue(u).unwrap().token)
        .collect();
    Setup {
        iso,
        env,
        tokens,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

impl Setup {
    /// Holds seat `seat` for the `n`th user through `base`: the status and booking id.
    async fn hold(&self, base: &str, n: usize, seat: i64) -> (u16, Option<String>) {
        let response = self
            .http
            .post(format!("{base}/api/bookings"))
            .bearer_auth(&self.tokens[n % self.tokens.len()])
            .json(&serde_json::json!({"eventId": 1, "seatId": seat}))
            .send()
            .await;
        match response {
            Ok(r) => {
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                (status, body["bookingId"].as_str().map(str::to_string))
            }
            // A killed gateway answers nothing: not an acknowledged hold.
            Err(_) => (0, None),
        }
    }

    /// Holds seats 1..=`seats` through `base`, 32 at a time, one user each;
    /// the answers in seat order.
    async fn hold_seats(self: Arc<Self>, base: String, seats: i64) -> Vec<(u16, Option<String>)> {
        stream::iter(1..=seats)
            .map(|seat| {
                let (s, base) = (self.clone(), base.clone());
                async move { s.hold(&base, seat as usize, seat).await }
            })
            .buffered(32)
            .collect()
            .await
    }

    /// Waits until PostgreSQL holds every acknowledged booking, each once. A
    /// request that got no answer (its gateway was killed) may or may not have
    /// become a hold: its seat may hold one booking the client never heard of.
    async fn assert_stored(&self, acknowledged: &HashSet<String>, unanswered: &HashSet<i64>) {
        let pg = self.iso.pg().await;
        let expected = acknowledged.len() as i64;
        let started = std::time::Instant::now();
        eventually(Duration::from_secs(60), || async {
            scalar(&pg, "SELECT count(*) FROM bookings").await >= expected
        })
        .await;
        println!(
            "{expected} acknowledged, {} unanswered when the process died; PostgreSQL held \
             every acknowledged hold {:?} after the restart",
            unanswered.len(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rows = pg
            .query("SELECT id::text, seat_id FROM bookings", &[])
            .await
            .unwrap();
        let stored: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let missing: Vec<_> = acknowledged
            .iter()
            .filter(|id| !stored.contains_key(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged holds missing, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        let unexplained: Vec<_> = stored
            .iter()
            .filter(|(id, seat)| !acknowledged.contains(*id) && !unanswered.contains(seat))
            .collect();
        assert!(
            unexplained.is_empty(),
            "{} bookings nobody asked for: {:?}",
            unexplained.len(),
            unexplained.first()
        );
        let seats: HashSet<i64> = stored.values().copied().collect();
        assert_eq!(seats.len(), stored.len(), "a seat has two bookings");
        assert_eq!(
            scalar(&pg, "SELECT count(*) FROM seats WHERE status = 'HELD'").await,
            stored.len() as i64
        );
        assert_stores_agree(&Config::from_env(&self.env).unwrap()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_and_two_writers_keep_every_guarantee() {
    let s = Arc::new(setup(2_000, 1_000).await);
    let gateways = [
        Herdgate::start(&s.env, "gateway").ready().await,
        Herdgate::start(&s.env, "gateway").ready().await,
    ];
    let _writers = [
        Herdgate::start(&s.env, "writer"),
        Herdgate::start(&s.env, "writer"),
    ];
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();

    // The herd: 1,000 users on seat 1, half through each gateway.
    let barrier = Arc::new(Barrier::new(1_000));
    let herd = (0..1_000).map(|n| {
        let (s, barrier, base) = (s.clone(), barrier.clone(), bases[n % 2].clone());
        tokio::spawn(async move {
            barrier.wait().await;
            s.hold(&base, n, 1).await
        })
    });
    let herd: Vec<(u16, Option<String>)> = futures::future::join_all(herd)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<_> = herd.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(herd.iter().filter(|(s, _)| *s == 409).count(), 999);

    // Distinct seats 2..=2000, alternating gateways.
    let distinct: Vec<(u16, Option<String>)> = stream::iter(2..=2_000i64)
        .map(|seat| {
            let (s, base) = (s.clone(), bases[seat as usize % 2].clone());
            async move { s.hold(&base, seat as usize, seat).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (status, _) in &distinct {
        *statuses.entry(*status).or_default() += 1;
    }
    assert_eq!(statuses.keys().collect::<Vec<_>>(), [&201], "{statuses:?}");
    let acknowledged: HashSet<String> = herd
        .into_iter()
        .chain(distinct)
        .filter_map(|(_, id)| id)
        .collect();
    assert_eq!(acknowledged.len(), 2_000);
    s.assert_stored(&acknowledged, &HashSet::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_acknowledged_by_a_gateway_killed_mid_run_all_reach_postgres() {
    // More seats than the run can hold before the kill, whatever the machine's speed.
    let mut s = setup(20_000, 600).await;
    s.env
        .insert("HERDGATE_MAX_HOLDS_PER_USER".into(), "1000".into());
    let s = Arc::new(s);
    let doomed = Herdgate::start(&s.env, "gateway").ready().await;
    let base = doomed.base.clone();
    // No writer yet: the killed gateway's relay dies with entries unrelayed or unconfirmed.
    let load = tokio::spawn(s.clone().hold_seats(base, 20_000));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    doomed.kill();
    let results = load.await.unwrap();
    let acknowledged: HashSet<String> = results
        .iter()
        .filter(|(status, _)| *status == 201)
        .filter_map(|(_, id)| id.clone())
        .collect();
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < 20_000,
        "{}",
        acknowledged.len()
    );
    let unanswered: HashSet<i64> = (1..=20_000i64)
        .zip(&results)
        .filter(|(_, (status, _))| *status == 0)
        .map(|(seat, _)| seat)
        .collect();

    let _gateway = Herdgate::start(&s.env, "gateway").ready().await;
    let _writer = Herdgate::start(&s.env, "writer");
    s.assert_stored(&acknowledged, &unanswered).await;
    // The killed relay's name leaves the group once its entries are claimed.
    let outbox = herdgate::holds::Keys::new(s.iso.prefix.clone())
        .event(1)
        .outbox();
    let redis = s.iso.redis().await;
    eventually(Duration::from_secs(10), || async {
        let consumers: Vec<HashMap<String, fred::types::Value>> =
            redis.xinfo_consumers(&outbox, "relay").await.unwrap();
        consumers.len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_batch_loses_and_doubles_nothing() {
    let s = Arc::new(setup(3_000, 600).await);
    let gateway = Herdgate::start(&s.env, "gateway").ready().await;
    let doomed = Herdgate::start(&s.env, "writer");
    let base = gateway.base.clone();
    let load = tokio::spawn(s.clone().hold_seats(base, 3_000));
    let pg = s.iso.pg().await;
    eventually(Duration::from_secs(30), || async {
        scalar(&pg, "SELECT count(*) FROM bookings").await > 0
    })
    .await;
    doomed.kill();
    let results = load.await.unwrap();
    assert!(results.iter().all(|(status, _)| *status == 201));
    let acknowledged: HashSet<String> = results.into_iter().filter_map(|(_, id)| id).collect();
    let _writer = Herdgate::start(&s.env, "writer");
    s.assert_stored(&acknowledged, &HashSet::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_holds_due_at_once_with_two_gateways_sweeping_expire_once_each() {
    let mut s = setup(1_000, 200).await;
    s.env.insert("HERDGATE_HOLD_TTL".into(), "2s".into());
    s.env
        .insert("HERDGATE_SWEEP_INTERVAL".into(), "50ms".into());
    let s = Arc::new(s);
    let gateways = [
        Herdgate::start(&s.env, "gateway").ready().await,
        Herdgate::start(&s.env, "gateway").ready().await,
    ];
    let _writer = Herdgate::start(&s.env, "writer");
    let held = s.clone().hold_seats(gateways[0].base.clone(), 1_000).await;
    assert!(held.iter().all(|(status, _)| *status == 201));

    let pg = s.iso.pg().await;
    eventually(Duration::from_secs(30), || async {
        scalar(
            &pg,
            "SELECT count(*) FROM bookings WHERE status = 'EXPIRED'",
        )
        .await
            == 1_000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Expired once: a second expiry would have raised the version to 3.
    assert_eq!(scalar(&pg, "SELECT max(version) FROM bookings").await, 2);
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM bookings WHERE status <> 'EXPIRED'"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM seats WHERE event_id = 1 AND status = 'AVAILABLE'"
        )
        .await,
        1_000
    );
    let event: serde_json::Value = s
        .http
        .get(format!("{}/api/events/1", gateways[1].base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(event["availableSeats"], 1_000);
    assert_stores_agree(&Config::from_env(&s.env).unwrap()).await;
}
