//! What running several processes needs beside the balancer test: a
//! writer-only process serving its own `/metrics`, every process's CPU and
//! memory, the drain delay after SIGTERM, and the Grafana dashboard asking
//! only for metrics herdgate exposes.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use herdgate::{auth::Auth, config::Config};

use crate::{
    helpers::{Isolation, eventually, user_ids},
    processes::Herdgate,
};

/// The value of the unlabelled sample `name` in a Prometheus text page.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let response = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    response.text().await.unwrap()
}

async fn hold(http: &reqwest::Client, base: &str, token: &str, seat: i64) -> u16 {
    http.post(format!("{base}/api/bookings"))
        .bearer_auth(token)
        .json(&serde_json::json!({"eventId": 1, "seatId": seat}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_writer_process_serves_its_own_metrics_and_every_process_its_cpu_and_memory() {
    let iso = Isolation::new().await;
    let env = iso.env();
    let auth = Auth::new(&Config::from_env(&env).unwrap().auth).unwrap();
    let users = user_ids(&iso.pg().await).await;
    let gateway = Herdgate::start(&env, "gateway").ready().await;
    let writer = Herdgate::start(&env, "writer");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually(Duration::from_secs(20), || async {
        http.get(format!("{}/healthz", writer.metrics_base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    for (i, &user) in users.iter().take(5).enumerate() {
        let token = auth.issue(user).unwrap().token;
        assert_eq!(hold(&http, &gateway.base, &token, i as i64 + 1).await, 201);
    }
    // The writer counts what it settled; the gateway has no writer metrics.
    let mut text = String::new();
    let mut settled = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        text = scrape(&http, &writer.metrics_base).await;
        settled = sample(&text, "herdgate_writer_events_total");
        if settled == Some(5.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(settled, Some(5.0), "{text}");
    assert!(
        text.contains("herdgate_writer_lag_seconds_bucket"),
        "{text}"
    );
    for base in [&writer.metrics_base, &gateway.base] {
        let text = scrape(&http, base).await;
        let rss = sample(&text, "process_resident_memory_bytes").expect("rss");
        let cpu = sample(&text, "process_cpu_seconds_total").expect("cpu");
        println!("{base}: {rss} bytes resident, {cpu} s of CPU");
        assert!(rss > 1e6 && cpu > 0.0, "{base}: {rss} {cpu}");
    }
    let other = http
        .get(format!("{}/api/events/1", writer.metrics_base))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    assert!(writer.terminate().await.success());
}

#[tokio::test]
async fn after_sigterm_the_gateway_is_unready_for_the_drain_delay_while_still_serving() {
    let iso = Isolation::new().await;
    let mut env = iso.env();
    env.insert("HERDGATE_DRAIN_DELAY".into(), "2s".into());
    let auth = Auth::new(&Config::from_env(&env).unwrap().auth).unwrap();
    let users = user_ids(&iso.pg().await).await;
    let gateway = Herdgate::start(&env, "serve").ready().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = gateway.base.clone();
    eventually(Duration::from_secs(20), || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    let signalled = Instant::now();
    gateway.sigterm().await;
    let mut unready = None;
    while signalled.elapsed() < Duration::from_secs(1) {
        let response = http.get(format!("{base}/readyz")).send().await.unwrap();
        if response.status() == 503 {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["draining"], true, "{body}");
            unready = Some(signalled.elapsed());
            break;
        }
    }
    let unready = unready.expect("/readyz answers 503 at once after SIGTERM");
    // Still serving, a new connection included, a second into the delay.
    tokio::time::sleep_until((signalled + Duration::from_secs(1)).into()).await;
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(
        fresh
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let token = auth.issue(users[0]).unwrap().token;
    assert_eq!(hold(&fresh, &base, &token, 1).await, 201);
    let served_until = signalled.elapsed();
    let status = gateway.exited().await;
    let exited = signalled.elapsed();
    println!(
        "readyz 503 {unready:?} after SIGTERM, a hold answered 201 {served_until:?} after it, \
         exited {exited:?} after it"
    );
    assert!(status.success(), "{status:?}");
    assert!(
        exited >= Duration::from_secs(2),
        "not before the delay: {exited:?}"
    );
    // Once the delay is over, nothing listens.
    assert!(http.get(format!("{base}/healthz")).send().await.is_err());
}

/// Every metric name a panel of the Grafana dashboard asks for.
fn dashboard_metrics() -> BTreeSet<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards/herdgate.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let mut word = String::new();
            for c in expr.chars().chain([' ']) {
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    word.push(c);
                    continue;
                }
                if word.starts_with("herdgate_") || word.starts_with("process_") {
                    names.insert(word.clone());
                }
                word.clear();
            }
        }
    }
    names
}

#[tokio::test]
async fn every_metric_on_the_dashboard_is_one_herdgate_exposes() {
    use crate::helpers::spawn_app;
    let names = dashboard_metrics();
    assert!(names.len() >= 6, "{names:?}");
    // One hold, so the hold, writer and outbox series exist.
    let app = spawn_app().await;
    let users = user_ids(&app.iso.pg().await).await;
    let response = app.post_hold(&app.token(users[0]), 1, 1, None).await;
    assert_eq!(response.status(), 201);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    let exposed: BTreeSet<String> = loop {
        let text = scrape(&http, &app.base).await;
        let exposed: BTreeSet<String> = text
            .lines()
            .filter(|l| l.starts_with("# TYPE "))
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
            .collect();
        let writer_seen = exposed.contains("herdgate_writer_lag_seconds");
        if writer_seen && exposed.contains("herdgate_outbox_depth") {
            break exposed;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{exposed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A histogram is queried by its series: name_bucket, name_sum, name_count.
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            !exposed.contains(*n) && !exposed.contains(base)
        })
        .collect();
    // Recorded only when they happen, which in this run they never do.
    let rare = [
        herdgate::metric::DEAD_LETTERED,
        herdgate::metric::RELAY_REFUSED,
    ];
    let missing: Vec<&&String> = missing
        .iter()
        .filter(|n| !rare.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "on the dashboard, not exposed: {missing:?}"
    );
    for rare in rare {
        assert!(names.contains(rare), "the dashboard shows {rare}");
    }
}
