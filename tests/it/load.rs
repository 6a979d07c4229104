//! `herdgate-load` (`herdgate load`) end to end: each scenario, small, against the real app. The
//! invariants must pass and the answers add up; speed is the benchmark's
//! business, not the tests'.

use std::time::Duration;

use clap::Parser;
use herdgate::seed::SeedOptions;
use herdgate_load::{LoadArgs, report::Summary};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{Isolation, TestApp, scalar, spawn_app, spawn_app_on};

/// Runs `herdgate-load <line>` in this process against `app`; checks what every
/// run must show and returns the summary.
async fn load(app: &TestApp, line: &str) -> Summary {
    let svg = std::env::temp_dir().join(format!("herdgate-load-{}.svg", Uuid::new_v4()));
    let argv = format!(
        "herdgate-load {line} --base {} --svg {}",
        app.base,
        svg.display()
    );
    let args = LoadArgs::parse_from(argv.split_whitespace());
    let summary = herdgate_load::run(&app.config, &args)
        .await
        .expect("the run completes");
    let picture = std::fs::read_to_string(&svg).expect("the run draws its latency");
    std::fs::remove_file(&svg).unwrap();
    assert!(picture.contains("<polyline"), "{picture}");

    assert_eq!(summary.invariants.len(), 3, "{summary:?}");
    for verdict in &summary.invariants {
        assert!(verdict.pass, "{verdict:?}");
    }
    assert!(summary.passed);
    assert_eq!(summary.errors, 0, "{summary:?}");
    let answered: u64 = summary.statuses.values().sum();
    assert_eq!(answered, summary.requests, "{summary:?}");
    summary
}

fn count(summary: &Summary, status: &str) -> u64 {
    summary.statuses.get(status).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_300_on_one_seat_gets_one_201() {
    let app = spawn_app().await;
    let summary = load(&app, "herd --users 300").await;
    assert_eq!(summary.connections, 300, "one connection per user");
    assert_eq!(summary.requests, 300);
    assert_eq!(count(&summary, "201"), 1, "{summary:?}");
    assert_eq!(count(&summary, "409"), 299, "{summary:?}");
    // The generator added the users the seed did not have.
    let pg = app.iso.pg().await;
    assert!(
        scalar(
            &pg,
            "SELECT count(*) FROM users WHERE email LIKE '%@load.test'"
        )
        .await
            >= 300
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_holds_every_seat_once() {
    let app = spawn_app().await;
    let summary = load(&app, "distinct --users 100 --seats 200 --connections 32").await;
    assert_eq!(count(&summary, "201"), 200, "{summary:?}");
    assert_eq!(summary.requests, 200);
    let pg = app.iso.pg().await;
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM bookings WHERE status = 'PENDING'"
        )
        .await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_load_keeps_to_its_rate() {
    let app = spawn_app().await;
    let summary = load(
        &app,
        "normal --users 50 --seats 40 --rate 200 --duration 1s --connections 16",
    )
    .await;
    // An open-loop schedule: 200 req/s for 1 s is 200 requests, all sent even
    // when the server (a debug build, sharing its cores with other tests) falls behind.
    assert_eq!(summary.requests, 200, "{summary:?}");
    assert!(count(&summary, "201") <= 40, "{summary:?}");
    // 200: a user asked again for a seat they hold, and was answered that hold.
    let expected: u64 = ["201", "200", "409", "429"]
        .iter()
        .map(|s| count(&summary, s))
        .sum();
    assert_eq!(expected, summary.requests, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sellout_sells_every_seat_once_and_times_it() {
    let iso = Isolation::with_seed(SeedOptions {
        demo_seats: 120,
        users: 400,
    })
    .await;
    let app = spawn_app_on(iso, |_| {}).await;
    let summary = load(&app, "sellout --users 400 --connections 64").await;
    assert_eq!(count(&summary, "201"), 120, "{summary:?}");
    let sellout = summary
        .sellout
        .as_ref()
        .expect("a sellout reports its times");
    let held = sellout.all_held_secs.expect("sold out");
    let in_pg = sellout.in_postgres_secs.expect("all in PostgreSQL");
    assert!(held > 0.0 && in_pg >= held, "{sellout:?}");
    let pg = app.iso.pg().await;
    assert_eq!(
        scalar(
            &pg,
            "SELECT count(*) FROM seats WHERE event_id = 1 AND status = 'HELD'"
        )
        .await,
        120
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_users_browse_hold_confirm_and_cancel() {
    let app = spawn_app().await;
    let summary = load(&app, "mixed --users 50 --requests 400 --connections 8").await;
    assert_eq!(summary.requests, 400);
    assert!(
        count(&summary, "200") > count(&summary, "201"),
        "{summary:?}"
    );
    let pg = app.iso.pg().await;
    eventually_some(&pg, "CONFIRMED").await;
    eventually_some(&pg, "CANCELLED").await;
}

async fn eventually_some(pg: &tokio_postgres::Client, status: &str) {
    let sql = format!("SELECT count(*) FROM bookings WHERE status = '{status}'");
    crate::helpers::eventually(Duration::from_secs(10), || async {
        scalar(pg, &sql).await > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_a_json_summary_last_and_exits_zero() {
    let app = spawn_app().await;
    let svg = std::env::temp_dir().join(format!("herdgate-load-{}.svg", Uuid::new_v4()));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herdgate"))
        .args([
            "load", "herd", "--users", "50", "--json", "--base", &app.base,
        ])
        .arg("--svg")
        .arg(&svg)
        .envs(app.iso.env())
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&svg);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("PASS  no seat has two live bookings"),
        "{stdout}"
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["scenario"], "herd");
    assert_eq!(summary["statuses"]["201"], 1);
    assert_eq!(summary["statuses"]["409"], 49);
    assert_eq!(summary["passed"], true);
    assert!(summary["latencyMs"]["p99"].as_f64().unwrap() > 0.0);
}

/// The latency picture is drawn only with `--svg`: a run leaves nothing in the
/// directory it was started from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_svg_the_command_writes_no_file() {
    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!("herdgate-load-cwd-{}", Uuid::new_v4()));
    std::fs::create_dir(&dir).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herdgate"))
        .args([
            "load", "herd", "--users", "20", "--json", "--base", &app.base,
        ])
        .current_dir(&dir)
        .envs(app.iso.env())
        .output()
        .await
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(left.is_empty(), "the run left {left:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(summary["histogram"].is_null(), "{summary}");
}

#[tokio::test]
async fn a_server_that_is_not_there_is_reported_not_waited_for() {
    let iso = Isolation::new().await;
    let config = herdgate::config::Config::from_env(&iso.env()).unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let argv = format!("herdgate-load herd --users 5 --base http://127.0.0.1:{port}");
    let args = LoadArgs::parse_from(argv.split_whitespace());
    let error = tokio::time::timeout(Duration::from_secs(30), herdgate_load::run(&config, &args))
        .await
        .expect("gives up by itself")
        .expect_err("nothing to connect to");
    assert!(
        format!("{error:#}").contains("could not connect"),
        "{error:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_invariant_is_a_fail_line_and_exit_1() {
    // A gateway with no writer: every 201 stays out of PostgreSQL.
    let iso = Isolation::new().await;
    let gateway = crate::processes::Herdgate::start(&iso.env(), "gateway")
        .ready()
        .await;
    let svg = std::env::temp_dir().join(format!("herdgate-load-{}.svg", Uuid::new_v4()));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herdgate"))
        .args(["load", "herd", "--users", "20", "--drain-timeout", "1s"])
        .args(["--base", &gateway.base, "--json", "--svg"])
        .arg(&svg)
        .envs(iso.env())
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&svg);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  every 201 has its booking in PostgreSQL exactly once: 1 missing"),
        "{stdout}"
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["passed"], false);
    assert_eq!(summary["statuses"]["201"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_room_buyers_are_drawn_fairly_admitted_at_the_rate_and_book() {
    // The seed's room on event 5, its draw moved to 3 s from now.
    let iso = Isolation::new().await;
    iso.pg()
        .await
        .execute(
            "UPDATE waiting_rooms SET starts_at = now() + interval '3 seconds' WHERE event_id = 5",
            &[],
        )
        .await
        .unwrap();
    let app = spawn_app_on(iso, |env| {
        env.insert(
            herdgate::config::ENV_OPERATOR_TOKEN.into(),
            "load-test-operator-secret-0123456789abcdef".into(),
        );
        // Every buyer comes from 127.0.0.1.
        env.insert(
            herdgate::config::ENV_ROOM_CLIENT_RATE.into(),
            "1000000".into(),
        );
    })
    .await;
    let summary = load(
        &app,
        "waiting-room --users 200 --duration 14s --ramp 1s --leave 0.2 \
         --admission-rate 20 --max-active 100",
    )
    .await;
    let room = summary.waiting_room.as_ref().expect("the room's figures");
    assert_eq!(room.target_rate, 20.0);
    assert_eq!(room.out_of_order, 0, "{room:?}");
    let draw = room.draw.as_ref().expect("a draw to check");
    assert!(draw.in_order && draw.commitment_kept, "{draw:?}");
    assert_eq!(draw.pre_queue, 200, "everyone joined before the start");
    assert!(draw.placed >= 150, "{draw:?}");
    let window = room
        .window
        .as_ref()
        .expect("admission ran with buyers waiting");
    // A short run on a busy debug build: within 20% here, 5% over a minute in the benchmark.
    assert!((0.8..=1.2).contains(&window.ratio), "{window:?}");
    let buyers = &room.buyers;
    assert_eq!(buyers.joined, 200);
    assert_eq!(buyers.lost, 0, "nobody who kept visiting lost the place");
    assert!(buyers.confirmed > 50, "{buyers:?}");
    assert!(buyers.walked_admitted > 0, "{buyers:?}");
    assert_eq!(count(&summary, "201"), buyers.booked);
    assert!(
        summary
            .render()
            .contains("fairness   0 admissions out of order")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_look_visit_the_room_once_a_request() {
    let app = spawn_app().await;
    let joins = load(&app, "join --users 50 --requests 100 --connections 8").await;
    assert_eq!(joins.event, 5, "the seed's room by default");
    assert_eq!(count(&joins, "200"), 100, "{joins:?}");
    let looks = load(&app, "look --users 50 --requests 100 --connections 8").await;
    assert_eq!(count(&looks, "200"), 100, "{looks:?}");
    let stats = crate::helpers::json(app.get("/waiting-room/5/stats").await, 200).await;
    assert_eq!(stats["queued"], 50);
}
