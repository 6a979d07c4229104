//! RabbitMQ failing under the gateway: holds go on being answered from Redis
//! while the outbox has room, 503 with Retry-After once it is full, and the
//! relay and the writer catch up when the broker returns. The broker is a
//! RabbitMQ node of the test's own (load-testing/bench-lib.sh starts it), never
//! the shared one.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    faults::{
        Answer, assert_no_seat_booked_twice, assert_own_holds_are_theirs, await_stored, hold_load,
    },
    helpers::{Isolation, spawn_app_on, user_ids},
};

/// A RabbitMQ node of this test's own: its own node name, AMQP port and data
/// directory. Stopped and removed when dropped.
struct PrivateRabbit {
    name: String,
    port: u16,
    dir: PathBuf,
}

impl PrivateRabbit {
    fn start() -> Self {
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
        let rabbit = PrivateRabbit { name, port, dir };
        assert!(
            out.status.success(),
            "private RabbitMQ did not start: {out:?}"
        );
        rabbit
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmqctl -n <this node> <args>`; its output.
    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.name])
            .args(args)
            .output()
            .expect("rabbitmqctl is installed");
        assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.name, "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_stopped_under_load_holds_go_on_then_503_and_everything_lands_after() {
    const SEATS: i64 = 3_000;
    // Enough that the load outlasts the outage without anyone's eighth hold.
    const USERS: u32 = 8_000;
    // Small enough for the outage to fill it.
    const OUTBOX_MAX: usize = 300;
    let rabbit = std::sync::Arc::new(PrivateRabbit::start());
    let url = rabbit.url();
    let iso = Isolation::with_seed(herdgate::seed::SeedOptions {
        demo_seats: SEATS as u32,
        users: USERS,
    })
    .await;
    let app = spawn_app_on(iso, move |env| {
        env.insert("AMQP_URL".into(), url);
        env.insert("HERDGATE_OUTBOX_MAX".into(), OUTBOX_MAX.to_string());
    })
    .await;
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
    let placed: Vec<uuid::Uuid> = answers
        .iter()
        .filter(|a| a.status == 201)
        .map(|a| a.booking.unwrap())
        .collect();
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
    let settled = Instant::now();
    let queues = || rabbit.ctl(&["list_queues", "name", "messages", "messages_unacknowledged"]);
    let empty = |listing: &str| {
        listing
            .lines()
            .filter(|l| l.contains(&app.iso.amqp_prefix))
            .all(|l| l.split_whitespace().skip(1).all(|n| n == "0"))
    };
    while !empty(&queues()) {
        assert!(
            settled.elapsed() < Duration::from_secs(20),
            "messages stuck on the broker:\n{}",
            queues()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "broker queues empty {:?} after PostgreSQL caught up",
        settled.elapsed()
    );
}
