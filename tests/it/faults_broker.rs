//! RabbitMQ failing under the gateway: holds go on being answered from Redis
//! while the outbox has room, 503 with Retry-After once it is full, and the
//! relay and the writer catch up when the broker returns. The broker is a
//! RabbitMQ node of the test's own (load-testing/bench-lib.sh starts it), never
//! the shared one.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    faults::{
        Answer, acknowledged, assert_no_seat_booked_twice, assert_own_holds_are_theirs,
        await_stored, hold_load,
    },
    helpers::{Isolation, TestApp, scalar, spawn_app_on, user_ids},
};

/// A RabbitMQ node of this test's own: its own node name, AMQP port and data
/// directory. Resumed if frozen, stopped and removed when dropped.
pub struct PrivateRabbit {
    name: String,
    port: u16,
    dir: PathBuf,
    /// Its Erlang VM (beam.smp), as the node itself reports it.
    pid: u32,
}

impl PrivateRabbit {
    pub fn start() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("herdgate-test-{}@localhost", &id[..8]);
        // Its distribution port is this plus 20,000: both below the ephemeral range.
        let port = std::iter::repeat_with(|| fastrand::u16(10_000..12_000))
            .find(|&p| {
                std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                    && std::net::TcpListener::bind(("127.0.0.1", p + 20_000)).is_ok()
            })
            .unwrap();
        let dir = std::env::temp_dir().join(format!("herdgate-rabbit-{id}"));
        let out = Command::new("bash")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "-c",
                "source load-testing/bench-lib.sh && start_private_rabbitmq \"$0\" \"$1\" \"$2\"",
            ])
            .arg(dir.join("rabbitmq"))
            .arg(&name)
            .arg(port.to_string())
            .output()
            .expect("bash runs");
        let mut rabbit = PrivateRabbit {
            name,
            port,
            dir,
            pid: 0,
        };
        assert!(
            out.status.success(),
            "private RabbitMQ did not start: {out:?}"
        );
        // From the node, not from a process list: the shared broker runs a beam.smp too.
        rabbit.pid = rabbit
            .ctl(&["eval", "os:getpid()."])
            .trim()
            .trim_matches('"')
            .parse()
            .expect("the node names its pid");
        rabbit
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Its Erlang node name, e.g. `herdgate-test-1a2b3c4d@localhost`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills the node's VM (SIGKILL): its connections are reset, its peers
    /// see it vanish, nothing is flushed.
    pub fn kill(&self) {
        assert!(self.signal("KILL"), "kill -KILL {}", self.pid);
    }

    /// `rabbitmqctl -n <this node> <args>`; its output.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.name])
            .args(args)
            .output()
            .expect("rabbitmqctl is installed");
        assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Freezes the node's VM (SIGSTOP): its sockets stay open and the kernel
    /// still takes what is sent, but nothing is read or answered, as when the
    /// network between gateway and broker is cut.
    pub fn freeze(&self) {
        assert!(self.signal("STOP"), "kill -STOP {}", self.pid);
    }

    /// Resumes a frozen node (SIGCONT).
    pub fn thaw(&self) {
        assert!(self.signal("CONT"), "kill -CONT {}", self.pid);
    }

    /// Sends `signal` to this node's VM, if it still is this node's: its
    /// environment names the node (a pid of a VM that exited may be reused).
    fn signal(&self, signal: &str) -> bool {
        let ours = std::fs::read(format!("/proc/{}/environ", self.pid)).is_ok_and(|env| {
            env.split(|&b| b == 0)
                .any(|var| var == format!("RABBITMQ_NODENAME={}", self.name).as_bytes())
        });
        ours && Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The last `lines` lines of the node's own log.
    pub fn log_tail(&self, lines: usize) -> String {
        let file = self
            .dir
            .join("rabbitmq/log")
            .join(format!("{}.log", self.name));
        let log = std::fs::read_to_string(&file).unwrap_or_else(|e| format!("{file:?}: {e}"));
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Messages (ready and unacked) of each of `prefix`'s queues, as
    /// `rabbitmqctl list_queues` names them.
    pub fn queues(&self, prefix: &str) -> Vec<(String, u64, u64)> {
        self.ctl(&["list_queues", "name", "messages", "messages_unacknowledged"])
            .lines()
            .filter(|l| l.contains(prefix))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let name = words.next()?.to_string();
                Some((
                    name,
                    words.next()?.parse().ok()?,
                    words.next()?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// Waits until every queue of `prefix` is empty, nothing unacknowledged
    /// nor dead-lettered; how long that took. Fails after `within`.
    pub async fn await_queues_empty(&self, prefix: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let queues = self.queues(prefix);
            if !queues.is_empty() && queues.iter().all(|(_, m, u)| *m == 0 && *u == 0) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "messages stuck on the broker: {queues:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        // A frozen node answers no rabbitmqctl: resume it first.
        self.signal("CONT");
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.name, "stop"])
            .output();
        // Whatever `stop` left running goes too.
        self.signal("KILL");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Seats the broker fault runs hold at random.
pub const SEATS: i64 = 3_000;
/// Enough users that the load outlasts a fault without anyone's eighth hold.
const USERS: u32 = 8_000;

/// A private RabbitMQ node, and an app on a seeded isolation using it, with an
/// outbox of `outbox_max` per event and its environment adjusted by `customize`.
pub async fn app_on_private_broker(
    outbox_max: usize,
    customize: impl FnOnce(&mut std::collections::HashMap<String, String>),
) -> (std::sync::Arc<PrivateRabbit>, TestApp) {
    let rabbit = std::sync::Arc::new(PrivateRabbit::start());
    let url = rabbit.url();
    let iso = Isolation::with_seed(herdgate::seed::SeedOptions {
        demo_seats: SEATS as u32,
        users: USERS,
    })
    .await;
    let app = spawn_app_on(iso, move |env| {
        env.insert("AMQP_URL".into(), url);
        env.insert("HERDGATE_OUTBOX_MAX".into(), outbox_max.to_string());
        customize(env);
    })
    .await;
    (rabbit, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_stopped_under_load_holds_go_on_then_503_and_everything_lands_after() {
    // Small enough for the outage to fill it.
    const OUTBOX_MAX: usize = 300;
    let (rabbit, app) = app_on_private_broker(OUTBOX_MAX, |_| {}).await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;

    let start = Instant::now();
    let (stop_at, back_at) = (
        start + Duration::from_secs(2),
        start + Duration::from_secs(8),
    );
    // Long enough after the broker's return for the relay to reconnect (its
    // backoff reaches 5 s) and drain.
    let until = start + Duration::from_secs(20);
    let broker = rabbit.clone();
    let outage = async move {
        tokio::time::sleep_until(stop_at.into()).await;
        let b = broker.clone();
        tokio::task::spawn_blocking(move || b.ctl(&["stop_app"]))
            .await
            .unwrap();
        let stopped = Instant::now();
        tokio::time::sleep_until(back_at.into()).await;
        let b = broker.clone();
        tokio::task::spawn_blocking(move || b.ctl(&["start_app"]))
            .await
            .unwrap();
        (stopped, Instant::now())
    };
    // At most 7 requests per user: below the per-user hold limit of 8.
    let max = 7 * users.len();
    let (answers, (stopped, started_again)) =
        tokio::join!(hold_load(&app, &users, SEATS, 8, until, max), outage);

    let mut by_status = std::collections::BTreeMap::<(u16, String), usize>::new();
    for a in &answers {
        *by_status.entry((a.status, a.problem.clone())).or_default() += 1;
    }
    println!(
        "answers: {by_status:?}; broker down from {:?} to {:?}",
        stopped - start,
        started_again - start
    );
    // Nothing but the answers a buyer can act on.
    assert!(
        answers
            .iter()
            .all(|a| matches!(a.status, 200 | 201 | 409 | 503)),
        "{by_status:?}"
    );
    let during = |a: &&Answer| a.started > stopped && a.done < back_at;
    let held_during = answers
        .iter()
        .filter(during)
        .filter(|a| a.status == 201)
        .count();
    assert!(held_during > 0, "holds go on while the outbox has room");
    let full: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    assert!(
        full.iter()
            .all(|a| a.problem == "/problems/outbox-full" && a.retry_after),
        "the only 503 is a full outbox, with Retry-After: {by_status:?}"
    );
    assert!(!full.is_empty(), "the outbox fills: {by_status:?}");
    let again = answers
        .iter()
        .filter(|a| a.started > started_again && a.status == 201)
        .map(|a| a.done)
        .min()
        .unwrap_or_else(|| panic!("holds are taken again after the broker is back: {by_status:?}"));
    println!(
        "first 201 after the broker's return: {:?} after start_app returned",
        again - started_again
    );

    // Every 201 reaches PostgreSQL once the relay and the writer catch up.
    let placed = acknowledged(&answers);
    let caught_up = Instant::now();
    await_stored(&pg, &placed, Duration::from_secs(60)).await;
    println!(
        "{} holds acknowledged, {held_during} of them while the broker was down; all in \
         PostgreSQL {:?} after the load ended",
        placed.len(),
        caught_up.elapsed()
    );
    assert_no_seat_booked_twice(&pg).await;
    assert_own_holds_are_theirs(&answers);
    app.assert_stores_agree().await;
    // Nothing left unacknowledged or dead-lettered on the broker, once the
    // writer has acked what it just applied (duplicates of batches whose
    // confirms the outage lost included).
    let settled = rabbit
        .await_queues_empty(&app.iso.amqp_prefix, Duration::from_secs(20))
        .await;
    println!("broker queues empty {settled:?} after PostgreSQL caught up");
}

/// Samples the depth of event 1's outbox (events not yet confirmed by the
/// broker) every 100 ms until `until`: `(when, depth)`.
pub async fn watch_outbox(app: &TestApp, until: Instant) -> Vec<(Instant, u64)> {
    use fred::interfaces::StreamsInterface;
    let redis = app.iso.redis().await;
    let outbox = herdgate::holds::Keys::new(app.iso.prefix.clone())
        .event(1)
        .outbox();
    let mut samples = Vec::new();
    while Instant::now() < until {
        let depth: u64 = redis.xlen(&outbox).await.unwrap();
        samples.push((Instant::now(), depth));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
}

/// What a run did around a fault that lasted from `from` to `to`.
pub struct Window {
    /// Holds answered 201 while the fault lasted.
    pub held_during: usize,
    /// Answers 503 (a full outbox).
    pub busy: usize,
    /// The first 201 of a request sent after the fault.
    pub again: Instant,
    /// When the outbox was below a tenth of its bound again, after the fault.
    pub drained: Instant,
}

/// Asserts what every broker fault shows under load: holds answered while the
/// outbox had room, the outbox at its bound `outbox_max` during the fault (the
/// `kept` events stay there), 503s, and holds taken again after it.
pub fn fault_window(
    answers: &[Answer],
    depths: &[(Instant, u64)],
    (from, to): (Instant, Instant),
    outbox_max: usize,
    until: Instant,
    kept: &str,
) -> Window {
    let held_during = answers
        .iter()
        .filter(|a| a.started > from && a.done < to && a.status == 201)
        .count();
    assert!(held_during > 0, "holds go on while the outbox has room");
    let busy = answers.iter().filter(|a| a.status == 503).count();
    assert!(busy > 0, "the outbox fills: {:?}", tally(answers));
    assert!(
        depths
            .iter()
            .any(|&(at, d)| at > from && at < to && d >= outbox_max as u64),
        "{kept} events stay in the outbox"
    );
    let again = answers
        .iter()
        .filter(|a| a.started > to && a.status == 201)
        .map(|a| a.done)
        .min()
        .expect("holds are taken again after the fault");
    let drained = drained_at(depths, to, outbox_max as u64 / 10).unwrap_or(until);
    Window {
        held_during,
        busy,
        again,
        drained,
    }
}

/// The first sample at or after `from` with an outbox drained to at most
/// `depth`: when the relay had caught up.
pub fn drained_at(samples: &[(Instant, u64)], from: Instant, depth: u64) -> Option<Instant> {
    samples
        .iter()
        .find(|&&(at, d)| at >= from && d <= depth)
        .map(|&(at, _)| at)
}

/// The deepest outbox of each second since `start`, for the run's log.
pub fn depth_trace(samples: &[(Instant, u64)], start: Instant) -> String {
    let mut seconds: BTreeMap<u64, u64> = BTreeMap::new();
    for &(at, depth) in samples {
        let second = seconds.entry((at - start).as_secs()).or_default();
        *second = (*second).max(depth);
    }
    let trace: Vec<String> = seconds.iter().map(|(s, d)| format!("{s}s:{d}")).collect();
    trace.join(" ")
}

/// A Prometheus counter or gauge of the process's metrics (0 if not recorded yet).
pub async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Answers counted by status and problem type.
pub fn tally(answers: &[Answer]) -> BTreeMap<(u16, String), usize> {
    let mut by_status = BTreeMap::new();
    for a in answers {
        *by_status.entry((a.status, a.problem.clone())).or_default() += 1;
    }
    by_status
}

/// What a run ended with once everything settled.
pub struct Settled {
    pub acknowledged: usize,
    pub persisted: usize,
    pub double_booked: i64,
    /// From the end of the load to PostgreSQL holding every 201.
    pub stored_after: Duration,
    /// From then to the broker's queues being empty.
    pub queues_empty_after: Duration,
}

/// The checks every broker fault ends with, after the load: every answer one
/// a buyer can act on, every 503 a full outbox with Retry-After, every 200 the
/// buyer's own hold; then, once the relay and the writer caught up, every 201
/// in PostgreSQL exactly once and no other booking (a 503 placed nothing), no
/// seat booked twice, `herdgate check` clean, and the writer and dead-letter
/// queues empty: nothing unacknowledged, nothing dead-lettered.
pub async fn settle(app: &TestApp, rabbit: &PrivateRabbit, answers: &[Answer]) -> Settled {
    let by_status = tally(answers);
    assert!(
        answers
            .iter()
            .all(|a| matches!(a.status, 200 | 201 | 409 | 503)),
        "{by_status:?}"
    );
    assert!(
        answers
            .iter()
            .filter(|a| a.status == 503)
            .all(|a| a.problem == "/problems/outbox-full" && a.retry_after),
        "the only 503 is a full outbox, with Retry-After: {by_status:?}"
    );
    assert_own_holds_are_theirs(answers);
    let placed = acknowledged(answers);
    let pg = app.iso.pg().await;
    let load_ended = Instant::now();
    await_stored(&pg, &placed, Duration::from_secs(90)).await;
    let stored_after = load_ended.elapsed();
    let persisted = scalar(&pg, "SELECT count(*) FROM bookings").await as usize;
    assert_eq!(persisted, placed.len(), "bookings no 201 was given for");
    let double_booked = assert_no_seat_booked_twice(&pg).await;
    app.assert_stores_agree().await;
    let empty_after = rabbit
        .await_queues_empty(&app.iso.amqp_prefix, Duration::from_secs(30))
        .await;
    println!("queues: {:?}", rabbit.queues(&app.iso.amqp_prefix));
    Settled {
        acknowledged: placed.len(),
        persisted,
        double_booked,
        stored_after,
        queues_empty_after: empty_after,
    }
}
