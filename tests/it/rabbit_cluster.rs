//! A RabbitMQ cluster of three nodes of the test's own (never the shared
//! broker): `AMQP_URL` lists all three, the relay and the writer connect to
//! the first, and that node is killed mid-run. The exchange and the quorum
//! queue live on in the other two, the relay and the writer reconnect to a
//! live node, and every acknowledged hold reaches PostgreSQL once.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use herdgate::broker::Topology;

use crate::{
    faults::{
        Answer, acknowledged, assert_no_seat_booked_twice, assert_own_holds_are_theirs,
        await_stored, hold_load,
    },
    faults_broker::{PrivateRabbit, watch_outbox},
    helpers::{Isolation, eventually, spawn_app_on, user_ids},
};

/// Three private RabbitMQ nodes joined in one cluster; each stops when dropped.
pub struct RabbitCluster {
    pub nodes: Vec<Arc<PrivateRabbit>>,
}

impl RabbitCluster {
    /// Starts three nodes at once, then joins the second and third to the
    /// first (they share the Erlang cookie of the user RabbitMQ runs as).
    pub fn start() -> Self {
        let started = Instant::now();
        let nodes: Vec<Arc<PrivateRabbit>> = (0..3)
            .map(|_| std::thread::spawn(PrivateRabbit::start))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| Arc::new(t.join().expect("a node starts")))
            .collect();
        let booted = started.elapsed();
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]);
            node.ctl(&["join_cluster", nodes[0].name()]);
            node.ctl(&["start_app"]);
        }
        let status = nodes[0].ctl(&["cluster_status", "--formatter", "json"]);
        let running: serde_json::Value = serde_json::from_str(&status).expect("json status");
        assert_eq!(
            running["running_nodes"].as_array().map(Vec::len),
            Some(3),
            "three nodes running: {status}"
        );
        println!(
            "3 nodes booted in {booted:?} (at once), clustered {:?} after the start",
            started.elapsed()
        );
        RabbitCluster { nodes }
    }

    /// `AMQP_URL` naming the nodes in the order of `order` (indexes).
    pub fn url(&self, order: &[usize]) -> String {
        let urls: Vec<String> = order.iter().map(|&i| self.nodes[i].url()).collect();
        urls.join(",")
    }
}

/// Resident memory (kB) and CPU seconds of a node's Erlang VM, from /proc.
fn node_usage(node: &PrivateRabbit) -> (u64, f64) {
    let pid = node.ctl(&["eval", "os:getpid()."]);
    let pid = pid.trim().trim_matches('"');
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0.0) };
    (rss, (ticks(11) + ticks(12)) / 100.0)
}

/// It failed in about one full-suite run in five until the relay published a
/// refused batch again on a new channel: a channel that first published during
/// the election stayed refused for good (`channels_opened_during_a_leader_election`),
/// and the relay, retrying on it, relayed nothing more. Should it stick again,
/// it prints the survivors' view of the queue (`describe_stuck`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_node_killed_under_load_loses_nothing_and_the_writer_catches_up() {
    node_killed_under_load(Victim::Connected).await
}

/// The relay's and writer's connections stay up: only the queue's leader
/// goes, and publishes in flight wait for a new one to be elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_queue_leader_killed_under_load_loses_nothing() {
    node_killed_under_load(Victim::LeaderOnly).await
}

/// The connected node frozen (SIGSTOP), as a hung VM or a network cut: its
/// sockets stay open and nothing answers, so a publisher confirm never comes.
/// The relay gives up on it after HERDGATE_AMQP_CONNECT_TIMEOUT, the writer
/// after the AMQP heartbeat (`?heartbeat=5` in its URLs), and both move on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_node_frozen_under_load_loses_nothing() {
    node_killed_under_load(Victim::Frozen).await
}

/// Which node dies.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Victim {
    /// The first in `AMQP_URL`: the relay's, the writer's and the queue
    /// leader's node.
    Connected,
    /// The queue leader's node (the topology declared there first), listed
    /// last in `AMQP_URL`, so no herdgate connection is on it.
    LeaderOnly,
    /// The first in `AMQP_URL`, as with `Connected`, frozen rather than killed.
    Frozen,
}

/// One private cluster at a time: three at once, beside the rest of the suite,
/// are nine Erlang VMs on two cores.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn node_killed_under_load(victim: Victim) {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    const SEATS: i64 = 3_000;
    let cluster = tokio::task::spawn_blocking(RabbitCluster::start)
        .await
        .unwrap();
    let order: &[usize] = match victim {
        Victim::Connected | Victim::Frozen => &[0, 1, 2],
        Victim::LeaderOnly => &[1, 2, 0],
    };
    let mut url = cluster.url(order);
    if victim == Victim::Frozen {
        url = url.replace("%2f", "%2f?heartbeat=5");
        // Until the others decide the frozen node is gone (Erlang's net_ticktime,
        // 60 s by default), declarations on them wait for it: 10 s here.
        for node in &cluster.nodes {
            let changed = node.ctl(&["eval", "net_kernel:set_net_ticktime(10, 0)."]);
            let now = node.ctl(&["eval", "net_kernel:get_net_ticktime()."]);
            println!("net_ticktime: {} then {}", changed.trim(), now.trim());
        }
    }
    let iso = Isolation::with_seed(herdgate::seed::SeedOptions {
        demo_seats: SEATS as u32,
        users: 8_000,
    })
    .await;
    if victim == Victim::LeaderOnly {
        // Declared on node 1 first: the quorum queue's leader is there.
        let prefix = iso.amqp_prefix.clone();
        let connection = lapin::Connection::connect(&cluster.nodes[0].url(), Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        Topology::new(&prefix).declare(&channel).await.unwrap();
        let _ = connection.close(200, "declared".into()).await;
    }
    let app = spawn_app_on(iso, move |env| {
        env.insert("AMQP_URL".into(), url);
        // Also the bound on a publisher confirm a dying node leaves unanswered.
        env.insert("HERDGATE_AMQP_CONNECT_TIMEOUT".into(), "3s".into());
    })
    .await;
    let pg = app.iso.pg().await;
    let users = user_ids(&pg).await;
    let prefix = app.iso.amqp_prefix.clone();
    // The relay and the writer have declared the topology on the first node.
    eventually(Duration::from_secs(20), || async {
        !cluster.nodes[1].queues(&prefix).is_empty()
    })
    .await;
    let queue = format!("{prefix}.writer");
    let members = cluster.nodes[1].ctl(&["list_queues", "name", "type", "leader", "members"]);
    let line = members
        .lines()
        .find(|l| l.starts_with(&queue))
        .unwrap_or("");
    println!("{victim:?}: writer queue before: {line}");
    assert!(line.contains("quorum"), "{members}");
    let leader = line.split_whitespace().nth(2).unwrap_or("");
    assert_eq!(
        leader,
        cluster.nodes[0].name(),
        "the leader is on node 1: {line}"
    );
    for node in &cluster.nodes {
        assert!(line.contains(node.name()), "a member on every node: {line}");
    }
    let usage: Vec<(u64, f64)> = cluster.nodes.iter().map(|n| node_usage(n)).collect();

    let start = Instant::now();
    let kill_at = start + Duration::from_secs(3);
    let until = start + Duration::from_secs(12);
    let first = cluster.nodes[0].clone();
    let crash = async move {
        tokio::time::sleep_until(kill_at.into()).await;
        match victim {
            Victim::Frozen => first.freeze(),
            _ => first.kill(),
        }
        Instant::now()
    };
    let max = 7 * users.len();
    let (answers, killed, depths) = tokio::join!(
        hold_load(&app, &users, SEATS, 8, until, max),
        crash,
        watch_outbox(&app, until + Duration::from_secs(5)),
    );

    let mut by_status = std::collections::BTreeMap::<(u16, String), usize>::new();
    for a in &answers {
        *by_status.entry((a.status, a.problem.clone())).or_default() += 1;
    }
    println!(
        "answers: {by_status:?}; node 1 {victim:?} {:?} in",
        killed - start
    );
    // The outbox absorbs the failover: buyers never see it.
    assert!(
        answers.iter().all(|a| matches!(a.status, 200 | 201 | 409)),
        "{by_status:?}"
    );
    let held_after = answers
        .iter()
        .filter(|a: &&Answer| a.started > killed && a.status == 201)
        .count();
    assert!(held_after > 0, "holds go on after the kill");
    let before = depths
        .iter()
        .filter(|(at, _)| *at < killed)
        .map(|(_, d)| *d)
        .max()
        .unwrap_or(0);
    let (peak_at, peak) = depths
        .iter()
        .filter(|(at, _)| *at >= killed)
        .max_by_key(|(_, d)| *d)
        .copied()
        .unwrap();
    let recovered = depths
        .iter()
        .find(|(at, d)| *at > peak_at && *d <= before.max(50))
        .map(|(at, _)| *at - killed);
    println!(
        "outbox depth: at most {before} before the kill, {peak} at its peak {:?} after it, \
         back to {} {recovered:?} after the kill",
        peak_at - killed,
        before.max(50)
    );

    let placed = acknowledged(&answers);
    let caught_up = Instant::now();
    // Should the holds not arrive, what the survivors and the outbox looked like.
    let dump = {
        let survivor = cluster.nodes[1].clone();
        let queue = queue.clone();
        let outbox = outbox_key(&app);
        let redis = app.iso.redis().await;
        tokio::spawn(async move {
            for wait in [20, 25] {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                println!(
                    "--- still waiting {:?} after the load ---",
                    caught_up.elapsed()
                );
                describe_stuck(&survivor, &queue, &redis, &outbox).await;
            }
        })
    };
    await_stored(&pg, &placed, Duration::from_secs(60)).await;
    dump.abort();
    println!(
        "{} holds acknowledged ({held_after} after the kill), all in PostgreSQL {:?} after \
         the load ended, {:?} after the kill",
        placed.len(),
        caught_up.elapsed(),
        Instant::now() - killed
    );
    assert_no_seat_booked_twice(&pg).await;
    assert_own_holds_are_theirs(&answers);
    app.assert_stores_agree().await;
    let survivor = cluster.nodes[1].clone();
    let settled = survivor
        .await_queues_empty(&prefix, Duration::from_secs(30))
        .await;
    println!("queues on the two survivors empty {settled:?} after that");
    let members = survivor.ctl(&["list_queues", "name", "leader", "online"]);
    println!(
        "writer queue after: {}",
        members
            .lines()
            .find(|l| l.starts_with(&queue))
            .unwrap_or("")
    );
    // Readiness reconnects to a live node too.
    eventually(Duration::from_secs(10), || async {
        app.get("/readyz").await.status() == 200
    })
    .await;
    let after: Vec<(u64, f64)> = cluster.nodes[1..].iter().map(|n| node_usage(n)).collect();
    println!(
        "node VMs before the run: {usage:?} (kB RSS, CPU s); survivors after: {after:?}; \
         {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

fn outbox_key(app: &crate::helpers::TestApp) -> String {
    herdgate::holds::Keys::new(app.iso.prefix.clone())
        .event(1)
        .outbox()
}

/// Prints the writer queue's state on a survivor (leader, members, Raft
/// state, consumers, channels) and the outbox's consumer group.
async fn describe_stuck(
    survivor: &PrivateRabbit,
    queue: &str,
    redis: &fred::prelude::Client,
    outbox: &str,
) {
    use fred::interfaces::StreamsInterface;
    let node = survivor.name().to_string();
    let queue = queue.to_string();
    let rabbit = tokio::task::spawn_blocking(move || {
        let run = |cmd: &str, args: &[&str]| {
            let out = std::process::Command::new(cmd)
                .args(["-q", "-n", &node])
                .args(args)
                .output()
                .expect("runs");
            format!(
                "$ {cmd} {args:?}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        [
            run(
                "rabbitmqctl",
                &[
                    "list_queues",
                    "name",
                    "leader",
                    "members",
                    "online",
                    "messages_ready",
                    "messages_unacknowledged",
                    "consumers",
                    "state",
                ],
            ),
            run("rabbitmq-queues", &["quorum_status", &queue]),
            run(
                "rabbitmqctl",
                &[
                    "list_channels",
                    "name",
                    "confirm",
                    "messages_unconfirmed",
                    "state",
                ],
            ),
            run("rabbitmqctl", &["list_consumers"]),
        ]
        .join("")
    })
    .await
    .unwrap_or_default();
    println!("{rabbit}");
    println!(
        "$ tail of {}'s log\n{}",
        survivor.name(),
        survivor.log_tail(60)
    );
    let depth: u64 = redis.xlen(outbox).await.unwrap_or(0);
    let groups: fred::types::Value = redis
        .xinfo_groups(outbox)
        .await
        .unwrap_or(fred::types::Value::Null);
    println!("outbox depth {depth}; groups {groups:?}");
}

/// What a publisher sees on a survivor while the writer queue's leader node
/// has just been killed: a channel opened and first used during the election
/// keeps being refused (nack) long after the queue has a new leader, while a
/// channel opened after it is confirmed at once. Measured on RabbitMQ 3.10.8
/// (2026-12-06): the first channel refused for all 8 s of the run (302
/// publishes), a new channel per refusal confirmed from 0.32 s after the kill.
/// Why the relay publishes a refused batch again on a new channel; an
/// experiment about the broker, not a guarantee of ours, so not in the suite.
#[ignore = "an experiment on RabbitMQ's behaviour: prints what channels opened during a quorum queue's election get"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_opened_during_a_leader_election() {
    use lapin::{
        BasicProperties, Confirmation,
        options::{BasicPublishOptions, ConfirmSelectOptions},
    };
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = tokio::task::spawn_blocking(RabbitCluster::start)
        .await
        .unwrap();
    let prefix = format!("experiment.{}", uuid::Uuid::new_v4().simple());
    let topology = Topology::new(&prefix);
    let leader = lapin::Connection::connect(&cluster.nodes[0].url(), Default::default())
        .await
        .unwrap();
    topology
        .declare(&leader.create_channel().await.unwrap())
        .await
        .unwrap();
    let survivor = lapin::Connection::connect(&cluster.nodes[1].url(), Default::default())
        .await
        .unwrap();
    let open = || async {
        let channel = survivor.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        channel
    };
    let publish = |channel: lapin::Channel| {
        let exchange = topology.exchange.clone();
        async move {
            let options = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let sent = channel.basic_publish(
                exchange.as_str().into(),
                "hold.placed".into(),
                options,
                b"{}",
                BasicProperties::default(),
            );
            let confirm = match tokio::time::timeout(Duration::from_secs(2), sent).await {
                Ok(Ok(confirm)) => confirm,
                _ => return "publish failed",
            };
            match tokio::time::timeout(Duration::from_secs(2), confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => "ack",
                Ok(Ok(Confirmation::Ack(Some(_)))) => "returned",
                Ok(Ok(_)) => "nack",
                Ok(Err(_)) => "error",
                Err(_) => "silent",
            }
        }
    };
    cluster.nodes[0].kill();
    let killed = Instant::now();
    let first = open().await;
    let mut fresh = first.clone();
    let mut tally = std::collections::BTreeMap::<(&str, &str), usize>::new();
    let mut first_fresh_ack = None;
    while killed.elapsed() < Duration::from_secs(8) {
        let answer = publish(first.clone()).await;
        *tally.entry(("first", answer)).or_default() += 1;
        let answer = publish(fresh.clone()).await;
        *tally.entry(("fresh", answer)).or_default() += 1;
        if answer == "ack" {
            first_fresh_ack.get_or_insert(killed.elapsed());
        } else {
            // As the relay does: each retry on a channel of its own.
            fresh = open().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "leader's node killed; answers over 8 s by channel: {tally:?}; a new channel first \
         confirmed {first_fresh_ack:?} after the kill"
    );
    let _ = leader;
    assert!(first_fresh_ack.is_some(), "{tally:?}");
}
