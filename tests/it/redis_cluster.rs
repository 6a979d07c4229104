//! Redis Cluster (issue 15): the same binary on a private 3-master cluster with
//! a replica per master, selected by `REDIS_URL=redis-cluster://...` alone. Two
//! gateways and two writers serve events whose slots sit on different masters;
//! then a master is killed (SIGKILL) mid-run and its replica takes over.
//!
//! Each test starts its own six redis-server processes on free ports, in a
//! directory of its own, and kills them when dropped (a panic included).

use std::{
    collections::{HashMap, HashSet},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::join_all;
use herdgate::{config::Config, seed::SeedOptions, serve, serve::Role};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::helpers::{Isolation, assert_stores_agree, eventually, user_ids};

/// How long a master may be unreachable before the cluster fails it over.
const NODE_TIMEOUT_MS: u64 = 1_000;

/// One redis-server of the cluster.
struct Node {
    child: Option<Child>,
    port: u16,
}

/// One line of `CLUSTER NODES`.
struct NodeView {
    port: u16,
    master: bool,
    /// Flagged `fail` (or `fail?`): unreachable.
    failed: bool,
    /// The slot ranges it serves, inclusive.
    ranges: Vec<(u16, u16)>,
}

/// A private Redis Cluster: `masters` masters, each with `replicas` replicas.
pub struct PrivateCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

/// A port free for a node and for its cluster bus (the port + 10,000).
fn free_node_port(taken: &[u16]) -> u16 {
    std::iter::repeat_with(|| fastrand::u16(20_000..30_000))
        .find(|&port| {
            !taken.contains(&port)
                && TcpListener::bind(("127.0.0.1", port)).is_ok()
                && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        })
        .unwrap()
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The hash slot of a key (CRC16 of its hash tag, mod 16384), as Redis computes it.
pub fn slot(tag: &str) -> u16 {
    let mut crc: u16 = 0;
    for &byte in tag.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// `CLUSTER NODES` as node `port` sees it.
fn topology(port: u16) -> Vec<NodeView> {
    cli(port, &["CLUSTER", "NODES"])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let node_port = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            let flags = fields[2];
            let ranges = fields[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (r.parse().unwrap(), r.parse().unwrap()),
                })
                .collect();
            NodeView {
                port: node_port,
                master: flags.contains("master"),
                failed: flags.contains("fail"),
                ranges,
            }
        })
        .collect()
}

/// The port of the live master serving `slot`, as node `port` says.
fn master_of(port: u16, slot: u16) -> Option<u16> {
    topology(port)
        .into_iter()
        .find(|n| n.master && !n.failed && n.ranges.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .map(|n| n.port)
}

impl PrivateCluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("herdgate-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = PrivateCluster {
            nodes: Vec::new(),
            dir,
        };
        let mut ports = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = free_node_port(&ports);
            ports.push(port);
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                // A failed master's slots alone refuse commands, not the whole
                // cluster (docs/redis-cluster.md, Configuration).
                .args(["--cluster-require-full-coverage", "no"])
                .args(["--dir", cluster.dir.to_str().unwrap()])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test installs it)");
            cluster.nodes.push(Node {
                child: Some(child),
                port,
            });
        }
        let started = Instant::now();
        for &port in &ports {
            while cli(port, &["PING"]) != "PONG" {
                assert!(started.elapsed() < Duration::from_secs(10), "node {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap();
        assert!(out.status.success(), "cluster create: {out:?}");
        // Every node sees every other, all slots are served, every replica is in sync.
        for &port in &ports {
            loop {
                let info = cli(port, &["CLUSTER", "INFO"]);
                let replication = cli(port, &["INFO", "replication"]);
                let synced = replication.contains("role:master")
                    || replication.contains("master_link_status:up");
                if info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", ports.len()))
                    && synced
                {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "node {port}: {info}\n{replication}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// `redis-cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let mut ports = self.live_ports().into_iter();
        let first = ports.next().unwrap();
        let rest: Vec<String> = ports.map(|p| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `CLUSTER NODES` as a live node sees it.
    fn topology(&self) -> Vec<NodeView> {
        topology(self.live_ports()[0])
    }

    /// The port of the live master serving `slot`, as the cluster says.
    pub fn master_of(&self, slot: u16) -> Option<u16> {
        master_of(self.live_ports()[0], slot)
    }

    /// The ports of the live masters.
    pub fn masters(&self) -> Vec<u16> {
        self.topology()
            .into_iter()
            .filter(|n| n.master && !n.failed)
            .map(|n| n.port)
            .collect()
    }

    /// Every live node forgets its command statistics.
    pub fn reset_stats(&self) {
        for port in self.live_ports() {
            assert_eq!(cli(port, &["CONFIG", "RESETSTAT"]), "OK");
        }
    }

    /// `INFO commandstats` of one node: command -> calls (scripts' commands included).
    pub fn command_calls(&self, port: u16) -> HashMap<String, u64> {
        cli(port, &["INFO", "commandstats"])
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
                Some((name.to_string(), rest.split(',').next()?.parse().ok()?))
            })
            .collect()
    }
}

/// Moves `slot` with its keys from master `from` to master `to`, as
/// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING (clients get ASK,
/// or TRYAGAIN for a script whose keys are split), MIGRATE in batches of
/// `batch` keys, then the slot's new owner announced to every master (clients
/// get MOVED). Returns how many keys moved.
fn move_slot(slot: u16, from: u16, to: u16, masters: &[u16], batch: usize) -> usize {
    let id = |port: u16| cli(port, &["CLUSTER", "MYID"]);
    let (from_id, to_id, slot_text) = (id(from), id(to), slot.to_string());
    let setslot = |port: u16, args: &[&str]| {
        let mut full = vec!["CLUSTER", "SETSLOT", &slot_text];
        full.extend_from_slice(args);
        assert_eq!(cli(port, &full), "OK", "{port}: {full:?}");
    };
    setslot(to, &["IMPORTING", &from_id]);
    setslot(from, &["MIGRATING", &to_id]);
    let mut moved = 0;
    loop {
        let keys = cli(
            from,
            &["CLUSTER", "GETKEYSINSLOT", &slot_text, &batch.to_string()],
        );
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let to_port = to.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
        args.extend(&keys);
        let reply = cli(from, &args);
        assert!(reply == "OK" || reply == "NOKEY", "MIGRATE: {reply}");
        moved += keys.len();
    }
    for &port in masters {
        setslot(port, &["NODE", &to_id]);
    }
    moved
}

impl PrivateCluster {
    /// The port of a replica of the master on `port` (its `INFO replication`).
    pub fn replica_of(&self, port: u16) -> u16 {
        cli(port, &["INFO", "replication"])
            .lines()
            .find_map(|line| {
                let rest = line.strip_prefix("slave0:")?;
                let port = rest.split(',').find_map(|f| f.strip_prefix("port="))?;
                port.parse().ok()
            })
            .unwrap_or_else(|| panic!("master {port} has no replica"))
    }

    /// SIGKILL to one node's process.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        if let Some(mut child) = node.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Gateways and two writers on one isolation, stopped (aborted) on drop.
struct Deployment {
    gateways: Vec<String>,
    redis_url: String,
    config: Config,
    auth: herdgate::auth::Auth,
    http: reqwest::Client,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    iso: Isolation,
}

impl Deployment {
    async fn start(iso: Isolation, redis_url: &str, gateways: usize) -> Self {
        Self::start_with(iso, redis_url, gateways, &[]).await
    }

    /// With `extra` variables set on top of the tests' own.
    async fn start_with(
        iso: Isolation,
        redis_url: &str,
        gateways: usize,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut env = iso.env();
        env.insert("REDIS_URL".into(), redis_url.to_string());
        env.insert("HERDGATE_REDIS_TIMEOUT".into(), "1s".into());
        for (name, value) in extra {
            env.insert(name.to_string(), value.to_string());
        }
        let config = Config::from_env(&env).expect("test config is valid");
        assert!(config.redis.is_cluster());
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut tasks = Vec::new();
        let mut bases = Vec::new();
        for _ in 0..gateways {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            bases.push(format!("http://{}", listener.local_addr().unwrap()));
            tasks.push(tokio::spawn(serve::run(
                config.clone(),
                Role::Gateway,
                listener,
                std::future::pending(),
            )));
        }
        for _ in 0..2 {
            tasks.push(tokio::spawn(serve::run_writer(
                config.clone(),
                std::future::pending(),
            )));
        }
        for base in &bases {
            eventually(Duration::from_secs(20), || async {
                let ready = http.get(format!("{base}/readyz")).send().await;
                ready.is_ok_and(|r| r.status() == 200)
            })
            .await;
            for event in EVENTS {
                let url = format!("{base}/api/seats/available?eventId={event}");
                eventually(Duration::from_secs(20), || async {
                    let page = http.get(&url).send().await;
                    page.is_ok_and(|r| r.status() == 200)
                })
                .await;
            }
        }
        Deployment {
            gateways: bases,
            redis_url: redis_url.to_string(),
            auth: herdgate::auth::Auth::new(&config.auth).unwrap(),
            config,
            http,
            tasks,
            iso,
        }
    }

    /// A hold through gateway `via` (modulo their number).
    async fn hold(&self, via: usize, user: i64, event: i64, seat: i64, key: &str) -> Answer {
        let base = &self.gateways[via % self.gateways.len()];
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{base}/api/bookings"))
            .bearer_auth(self.auth.issue(user).unwrap().token)
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({"eventId": event, "seatId": seat}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            at: started,
            took: started.elapsed(),
            retry_after,
            booking: body["bookingId"].as_str().map(str::to_string),
            detail: body["detail"].as_str().map(str::to_string),
        }
    }

    /// The seats of each of [`EVENTS`].
    async fn seats_of_events(&self) -> HashMap<i64, Vec<i64>> {
        join_all(EVENTS.map(|e| async move { (e, self.seats(e).await) }))
            .await
            .into_iter()
            .collect()
    }

    /// The seat ids of `event`, in order.
    async fn seats(&self, event: i64) -> Vec<i64> {
        let pg = self.iso.pg().await;
        pg.query(
            "SELECT id FROM seats WHERE event_id = $1 ORDER BY id",
            &[&event],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    /// Waits until PostgreSQL has exactly the `acknowledged` bookings, each
    /// PENDING; returns how long it took.
    async fn assert_in_postgres(&self, acknowledged: &HashSet<String>) -> Duration {
        let pg = self.iso.pg().await;
        let started = Instant::now();
        loop {
            let stored: HashMap<String, String> = pg
                .query("SELECT id::text, status FROM bookings", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let same = stored.len() == acknowledged.len()
                && acknowledged
                    .iter()
                    .all(|b| stored.get(b).map(String::as_str) == Some("PENDING"));
            if same {
                crate::faults::assert_no_seat_booked_twice(&pg).await;
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "PostgreSQL never matched: {} stored, {} acknowledged, acknowledged but \
                 missing: {:?}, stored but never acknowledged: {:?}",
                stored.len(),
                acknowledged.len(),
                acknowledged
                    .iter()
                    .filter(|b| !stored.contains_key(*b))
                    .collect::<Vec<_>>(),
                stored
                    .keys()
                    .filter(|b| !acknowledged.contains(*b))
                    .collect::<Vec<_>>(),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `herdgate check`, the binary, against this deployment: whether it
    /// passed, and what it printed.
    async fn check_cli(&self, wait: &str) -> (bool, String) {
        let mut env = self.iso.env();
        env.insert("REDIS_URL".into(), self.redis_url.clone());
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herdgate"))
            .args(["check", "--wait", wait])
            .env_clear()
            .envs(env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            eprintln!("herdgate check: {}", String::from_utf8_lossy(&out.stderr));
        }
        (out.status.success(), stdout)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The events the tests use: their slots are on all three masters (1 and 5
/// share one).
const EVENTS: [i64; 4] = [1, 2, 3, 5];

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    at: Instant,
    took: Duration,
    retry_after: Option<String>,
    booking: Option<String>,
    /// A problem's detail.
    detail: Option<String>,
}

/// Asserts that every answer is a 201 or a 409, and that each of `seats`
/// seats got exactly one 201. Returns the acknowledged booking ids, and the
/// count of each status.
fn one_201_per_seat<'a>(
    answers: impl IntoIterator<Item = &'a (i64, Answer)>,
    seats: usize,
) -> (HashSet<String>, HashMap<u16, usize>) {
    let mut placed: HashMap<i64, Vec<String>> = HashMap::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for (seat, a) in answers {
        *statuses.entry(a.status).or_default() += 1;
        match a.status {
            201 => placed
                .entry(*seat)
                .or_default()
                .push(a.booking.clone().unwrap()),
            409 => {}
            _ => panic!("seat {seat}: {a:?}"),
        }
    }
    assert!(placed.values().all(|b| b.len() == 1), "two 201s for a seat");
    assert_eq!(placed.len(), seats, "{statuses:?}");
    (placed.into_values().flatten().collect(), statuses)
}

/// An isolation with enough users, and event 5 without its waiting room (a
/// hold there needs no admission).
async fn isolation() -> Isolation {
    let iso = Isolation::with_seed(SeedOptions {
        demo_seats: 300,
        users: 200,
    })
    .await;
    iso.pg()
        .await
        .execute("DELETE FROM waiting_rooms", &[])
        .await
        .unwrap();
    iso
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_herd_distinct_and_sellout_give_one_201_per_seat_all_in_postgres() {
    let cluster = PrivateCluster::start(3, 1);
    let masters: HashSet<u16> = EVENTS
        .iter()
        .map(|e| cluster.master_of(slot(&format!("e:{e}"))).unwrap())
        .collect();
    assert_eq!(masters.len(), 3, "the events spread over the three masters");
    let iso = isolation().await;
    let users = user_ids(&iso.pg().await).await;
    let app = Deployment::start(iso, &cluster.url(), 2).await;
    let (one, two, five, three) = (
        app.seats(1).await,
        app.seats(2).await,
        app.seats(5).await,
        app.seats(3).await,
    );
    cluster.reset_stats();
    let started = Instant::now();

    // Herd: 60 buyers at once on the first seat of events 1, 2 and 5.
    let herd = join_all(
        [(1, one[0]), (2, two[0]), (5, five[0])]
            .into_iter()
            .flat_map(|(event, seat)| {
                let (app, users) = (&app, &users);
                (0..60).map(move |i| async move {
                    let key = format!("herd-{event}-{i}");
                    (seat, app.hold(i, users[i], event, seat, &key).await)
                })
            }),
    );
    // Distinct: 50 buyers each on a seat of their own, on events 1, 2 and 5.
    let distinct = join_all([(1, &one), (2, &two), (5, &five)].into_iter().flat_map(
        |(event, seats)| {
            let (app, users) = (&app, &users);
            (1..=50).map(move |i| async move {
                let key = format!("distinct-{event}-{i}");
                let user = users[(i + 60) % users.len()];
                (seats[i], app.hold(i, user, event, seats[i], &key).await)
            })
        },
    ));
    // Sellout: event 3's 120 seats asked three times each, all at once.
    let sellout = join_all((0..360).map(|i| {
        let (app, users, seat) = (&app, &users, three[i % three.len()]);
        async move {
            let key = format!("sellout-{i}");
            (
                seat,
                app.hold(i, users[i % users.len()], 3, seat, &key).await,
            )
        }
    }));
    let (herd, distinct, sellout) = tokio::join!(herd, distinct, sellout);
    let run = started.elapsed();

    let (acknowledged, statuses) =
        one_201_per_seat(herd.iter().chain(&distinct).chain(&sellout), 3 + 150 + 120);
    let persisted = app.assert_in_postgres(&acknowledged).await;
    assert_stores_agree(&app.config).await;
    let (clean, printed) = app.check_cli("30s").await;
    let summary = printed.lines().last().unwrap_or_default().to_string();
    assert!(clean && summary.contains(" 0 differences"), "{printed}");
    // The check does read the cluster: a lock removed behind its back is a difference.
    let lock = herdgate::holds::Keys::new(app.iso.prefix.clone())
        .event(3)
        .lock(three[0]);
    let any_node = cluster.live_ports()[0].to_string();
    let deleted = Command::new("redis-cli")
        .args(["-c", "-p", &any_node, "DEL", &lock])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&deleted.stdout).trim(), "1");
    let (clean, printed) = app.check_cli("1s").await;
    assert!(!clean, "{printed}");
    assert!(
        printed.contains(&format!("event 3 seat {}:", three[0])),
        "{printed}"
    );
    // What each master did: the events spread the scripts; the one global key
    // (`outboxes`) and the activity channel cost little.
    for port in cluster.masters() {
        let calls = cluster.command_calls(port);
        let get = |name: &str| calls.get(name).copied().unwrap_or(0);
        let events: Vec<i64> = EVENTS
            .into_iter()
            .filter(|e| cluster.master_of(slot(&format!("e:{e}"))) == Some(port))
            .collect();
        eprintln!(
            "master {port}: events {events:?}, {} commands: evalsha {}, publish {}, \
             smembers {}, sadd {}, scard {}",
            calls.values().sum::<u64>(),
            get("evalsha"),
            get("publish"),
            get("smembers"),
            get("sadd"),
            get("scard"),
        );
    }
    eprintln!(
        "cluster: {} holds through 2 gateways in {run:?} ({statuses:?}); {} acknowledged, \
         all in PostgreSQL {persisted:?} later; herdgate check: {summary}",
        herd.len() + distinct.len() + sellout.len(),
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_master_dies_its_replica_takes_over_and_no_acknowledged_hold_is_lost() {
    failover(1, &[]).await
}

/// The same with every change waiting for a replica (HERDGATE_REDIS_MIN_REPLICAS=1),
/// two replicas a master so that the promoted one still has one: the barriers
/// of the live masters go on while one master is dead, as their holds do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_replica_required_a_master_dying_stops_only_its_own_events() {
    failover(2, &[("HERDGATE_REDIS_MIN_REPLICAS", "1")]).await
}

/// Kills event 1's master 2 s into a stream of holds over events 1, 2 and 5,
/// on a cluster of three masters with `replicas` replicas each.
async fn failover(replicas: usize, extra: &[(&str, &str)]) {
    let mut cluster = PrivateCluster::start(3, replicas);
    let victim = cluster.master_of(slot("e:1")).unwrap();
    let iso = isolation().await;
    let users = user_ids(&iso.pg().await).await;
    let app = Deployment::start_with(iso, &cluster.url(), 2, extra).await;
    let seats = app.seats_of_events().await;

    // A stream of holds, one every 10 ms for 9 s, each for a seat of its own on
    // events 1, 2 and 5 in turn; each buyer retries a 503 with its key until it
    // has an answer. The master of event 1 (and 5) dies 2 s in.
    const HOLDS: usize = 900;
    let answers: Arc<Mutex<Vec<(usize, i64, Answer)>>> = Arc::default();
    let started = Instant::now();
    let stream = join_all((0..HOLDS).map(|k| {
        let (app, users, seats, answers) = (&app, &users, &seats, answers.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(10) * k as u32).await;
            let event = [1, 2, 5][k % 3];
            let seat = seats[&event][k / 3];
            let user = users[k % users.len()];
            let key = format!("stream-{k}");
            loop {
                let a = app.hold(k, user, event, seat, &key).await;
                answers.lock().unwrap().push((k, event, a.clone()));
                if a.status != 503 {
                    return (k, event, a);
                }
                assert!(started.elapsed() < Duration::from_secs(60), "{a:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }));
    let kill = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.kill(victim);
        let killed = Instant::now();
        // The replica is master once the cluster serves event 1's slot again.
        // Asked off the runtime: this future shares its task with the buyers,
        // whose answers would otherwise wait for each redis-cli.
        let node = cluster.live_ports()[0];
        // The gateways stay ready: a load balancer must not take them out.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let http = &app.http;
        let ready = join_all(app.gateways.iter().map(|base| async move {
            let ready = http.get(format!("{base}/readyz")).send().await;
            ready.map(|r| r.status().as_u16()).ok()
        }))
        .await;
        let takeover = loop {
            let asked = tokio::task::spawn_blocking(move || master_of(node, slot("e:1")));
            if let Some(port) = asked.await.unwrap()
                && port != victim
            {
                break killed.elapsed();
            }
            assert!(killed.elapsed() < Duration::from_secs(30), "no failover");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        (killed, takeover, ready)
    };
    let (finals, (killed, takeover, ready)) = tokio::join!(stream, kill);
    let answers = answers.lock().unwrap().clone();

    // Every answer a 201, a replay's 200 or an honest 503 with Retry-After.
    let mut acknowledged = HashSet::new();
    for (k, event, a) in &finals {
        match a.status {
            200 | 201 => {
                acknowledged.insert(a.booking.clone().unwrap());
            }
            _ => panic!("hold {k} on event {event}: {a:?}"),
        }
    }
    let unavailable: Vec<&(usize, i64, Answer)> =
        answers.iter().filter(|(_, _, a)| a.status == 503).collect();
    for (_, _, a) in &unavailable {
        assert_eq!(a.retry_after.as_deref(), Some("1"), "{a:?}");
    }
    assert_eq!(acknowledged.len(), HOLDS, "one booking per hold");
    let since = |a: &Answer| (a.at + a.took).saturating_duration_since(killed);
    let window = |event: Option<i64>| {
        let ends: Vec<Duration> = unavailable
            .iter()
            .filter(|(_, e, _)| event.is_none_or(|x| x == *e))
            .map(|(_, _, a)| since(a))
            .collect();
        (
            ends.len(),
            ends.iter().min().copied(),
            ends.iter().max().copied(),
        )
    };
    let slowest = answers.iter().map(|(_, _, a)| a.took).max().unwrap();
    let slowest_503 = unavailable
        .iter()
        .filter(|(_, _, a)| a.at > killed)
        .map(|(_, _, a)| a.took)
        .max()
        .unwrap_or_default();
    // The dead master's 503s said "nothing was done" (refused at once, as its
    // connections were known down) but for requests that met the kill on
    // their way: sent before it, or in the moment fred takes to see the
    // connection closed; those waited for the Redis timeout.
    let unreachable = herdgate::http::problem::UNREACHABLE;
    // A hold its master ran just before dying and could not replicate is a
    // 503 not-replicated: as honest, and no timeout's.
    let unreplicated = |a: &Answer| {
        a.detail
            .as_deref()
            .is_some_and(|d| d.contains("no replica confirmed"))
    };
    let timed_out: Vec<Duration> = unavailable
        .iter()
        .filter(|(_, _, a)| a.detail.as_deref() != Some(unreachable) && !unreplicated(a))
        .map(|(_, _, a)| a.at.saturating_duration_since(killed))
        .collect();
    // From the promotion (as one node's CLUSTER NODES showed it) to the last 503.
    let recovered = window(None).2.unwrap_or_default().saturating_sub(takeover);
    let live = answers
        .iter()
        .filter(|(_, e, _)| *e == 2)
        .map(|(_, _, a)| a.took)
        .max();
    let persisted = app.assert_in_postgres(&acknowledged).await;
    assert_stores_agree(&app.config).await;
    eprintln!(
        "failover: master {victim} killed; replica master after {takeover:?}; 503s (count, \
         first, last answer after the kill): event 1 {:?}, event 5 {:?}, event 2 (other \
         master) {:?}; last 503 {recovered:?} after the promotion; {} 503s after the Redis \
         timeout (sent {:?} after the kill), the others at once; slowest 503 sent after the \
         kill {slowest_503:?}; slowest answer {slowest:?}, on event 2 {live:?}; {} holds \
         acknowledged, all in PostgreSQL {persisted:?} later, check clean",
        window(Some(1)),
        window(Some(5)),
        window(Some(2)),
        timed_out.len(),
        timed_out.iter().max(),
        acknowledged.len()
    );
    assert!(
        window(Some(1)).0 > 0,
        "the kill must hit the stream on event 1"
    );
    assert_eq!(
        ready,
        [Some(200), Some(200)],
        "/readyz 0.5 s after the kill"
    );
    // Only the dead master's events were refused, at once, and not for long.
    assert_eq!(window(Some(2)).0, 0, "event 2's master lived: no 503");
    let seen = Duration::from_millis(100);
    assert!(timed_out.iter().all(|&sent| sent < seen), "{timed_out:?}");
    assert!(recovered < Duration::from_secs(2), "{recovered:?}");
    // The promoted replica had no script: the gateways loaded them after NOSCRIPT.
    let promoted = cluster.master_of(slot("e:1")).unwrap();
    let loads = cluster.command_calls(promoted);
    assert!(
        loads.get("script|load").copied().unwrap_or(0) > 0,
        "{loads:?}"
    );
}

/// GET `key` on a replica of the cluster (READONLY first, on the same connection).
async fn get_on_replica(port: u16, key: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli is installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("READONLY\nGET {key}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().nth(1).unwrap_or("").trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_each_hold_is_on_its_masters_replica_when_answered() {
    let cluster = PrivateCluster::start(3, 1);
    let iso = isolation().await;
    let prefix = iso.prefix.clone();
    let users = user_ids(&iso.pg().await).await;
    let required = [
        (herdgate::config::ENV_REDIS_MIN_REPLICAS, "1"),
        (herdgate::config::ENV_REDIS_REPLICA_TIMEOUT, "1s"),
    ];
    let app = Deployment::start_with(iso, &cluster.url(), 1, &required).await;
    // The replica of the master of each event's slot.
    let replicas: HashMap<i64, u16> = EVENTS
        .iter()
        .map(|&e| {
            let master = cluster.master_of(slot(&format!("e:{e}"))).unwrap();
            (e, cluster.replica_of(master))
        })
        .collect();
    let seats = app.seats_of_events().await;
    cluster.reset_stats();

    // 40 holds on each event at once, over the three masters: each is on its
    // master's replica when its 201 arrives.
    let keys = herdgate::holds::Keys::new(prefix);
    let answers = join_all(
        EVENTS
            .iter()
            .flat_map(|&event| (0..40).map(move |k| (event, k)))
            .map(|(event, k)| {
                let (app, users, seats, keys, replicas) = (&app, &users, &seats, &keys, &replicas);
                async move {
                    let seat = seats[&event][k];
                    let user = users[(event as usize * 40 + k) % users.len()];
                    let a = app
                        .hold(k, user, event, seat, &format!("replicated-{event}-{k}"))
                        .await;
                    let lock = keys.event(event).lock(seat);
                    let on_replica = get_on_replica(replicas[&event], &lock).await;
                    (event, seat, a, on_replica)
                }
            }),
    )
    .await;
    for (event, seat, a, on_replica) in &answers {
        assert_eq!(a.status, 201, "event {event} seat {seat}: {a:?}");
        assert_eq!(
            a.booking.as_deref(),
            Some(on_replica.as_str()),
            "event {event} seat {seat}: not on the replica when answered"
        );
    }
    // Each master ran barriers of its own (the WAIT went to the master of
    // the holds it covers), fewer than its holds.
    let mut waits = Vec::new();
    for port in cluster.masters() {
        let calls = cluster.command_calls(port);
        let scripts = calls.get("evalsha").copied().unwrap_or(0);
        let wait = calls.get("wait").copied().unwrap_or(0);
        assert!(
            scripts == 0 || (1..=scripts).contains(&wait),
            "{port}: {calls:?}"
        );
        waits.push((port, scripts, wait));
    }
    assert!(
        waits.iter().filter(|(_, _, w)| *w > 0).count() >= 3,
        "{waits:?}"
    );
    eprintln!("replicated holds: (master, EVALSHA, WAIT) {waits:?}");
    let acknowledged = answers
        .iter()
        .map(|(_, _, a, _)| a.booking.clone().unwrap())
        .collect();
    app.assert_in_postgres(&acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_slot_moved_between_two_bursts_keeps_one_201_per_seat() {
    slot_moves(false).await
}

/// With holds in flight while the slot migrates, scripts get TRYAGAIN or ASK
/// (503s saying nothing was done). It used to fail 8 runs of 9 (holds still
/// 503 after 60 s, or the relay no longer draining event 2): fred 10.1's
/// cluster client follows ASK by reading the next reply on the new master's
/// connection as ASKING's, another command's when that connection has some in
/// flight, and every later reply there went to the wrong command. Each event's
/// commands now go to its master's own connections, where ASK is not followed
/// (`holds::masters`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_slot_moves_under_load_keeps_one_201_per_seat() {
    slot_moves(true).await
}

/// Two buyers for each of 300 seats of event 2, one every 5 ms; event 2's slot
/// moves to another master, a few keys at a time (ASK while it migrates, MOVED
/// after), 0.5 s in with `under_load`, otherwise between the first and the
/// second 150 seats, with no hold in flight.
async fn slot_moves(under_load: bool) {
    let cluster = PrivateCluster::start(3, 0);
    let iso = isolation().await;
    let users = user_ids(&iso.pg().await).await;
    let app = Deployment::start(iso, &cluster.url(), 2).await;
    let seats = app.seats(2).await;
    let from = cluster.master_of(slot("e:2")).unwrap();
    let to = *cluster.masters().iter().find(|&&p| p != from).unwrap();

    const SEATS: usize = 300;
    let started = Instant::now();
    let (moving_tx, moving_rx) = tokio::sync::watch::channel(false);
    let refused: Mutex<HashMap<String, usize>> = Mutex::default();
    let stream = join_all((0..SEATS * 2).map(|k| {
        let (app, users, seat, refused) = (&app, &users, seats[k / 2], &refused);
        let mut moved = moving_rx.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5) * k as u32).await;
            if !under_load && k >= SEATS {
                moved.wait_for(|&done| done).await.unwrap();
            }
            let key = format!("move-{k}");
            let user = users[k % users.len()];
            loop {
                let a = app.hold(k, user, 2, seat, &key).await;
                if a.status != 503 {
                    return (seat, a);
                }
                assert_eq!(a.retry_after.as_deref(), Some("1"), "{a:?}");
                assert!(started.elapsed() < Duration::from_secs(60), "{a:?}");
                let detail = a.detail.unwrap_or_default();
                *refused.lock().unwrap().entry(detail).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }));
    let moving = async {
        match under_load {
            true => tokio::time::sleep(Duration::from_millis(500)).await,
            // The first half answered, nothing in flight.
            false => {
                tokio::time::sleep(Duration::from_millis(5) * SEATS as u32 + Duration::from_secs(2))
                    .await
            }
        }
        let began = Instant::now();
        let (from, masters) = (from, cluster.masters());
        let moved =
            tokio::task::spawn_blocking(move || move_slot(slot("e:2"), from, to, &masters, 20))
                .await
                .unwrap();
        moving_tx.send(true).unwrap();
        (moved, began.elapsed())
    };
    let (answers, (moved, took)) = tokio::join!(stream, moving);
    assert_eq!(cluster.master_of(slot("e:2")), Some(to));

    let (acknowledged, statuses) = one_201_per_seat(&answers, SEATS);
    let persisted = app.assert_in_postgres(&acknowledged).await;
    assert_stores_agree(&app.config).await;
    eprintln!(
        "slot move (under load: {under_load}): event 2's {moved} keys moved from {from} to {to} in {took:?} under \
         {} holds ({statuses:?}, after 503s {:?}); {} acknowledged, all in PostgreSQL \
         {persisted:?} later, check clean",
        answers.len(),
        refused.into_inner().unwrap(),
        acknowledged.len()
    );
}
