//! The waiting room's page in a real browser: Debian's headless Chromium
//! (`scripts/test` installs it) loads `GET /waiting-room/:id` as a browser
//! does, runs the page's script against the live gateway, and the DOM it
//! leaves is read with `--dump-dom`. `--virtual-time-budget` lets the page's
//! timers run ahead of the clock (its requests still take real time), so a
//! page that polls every second does many polls in a few real seconds.
//!
//! Set `HERDGATE_PAGE_SCREENSHOT=<file.png>` to also write a screenshot of the
//! page showing a place in line (how `docs/waiting-room.png` was made). Without
//! Chromium the browser test fails, unless `HERDGATE_SKIP_CHROMIUM` is set, when
//! it says loudly that it skipped.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use fred::interfaces::SortedSetsInterface;
use herdgate::{config, holds::Keys};
use serde_json::json;
use tokio::process::Command;

use crate::{
    helpers::{TestApp, eventually, json},
    waiting_room::{EVENT, Room, app_with_room_and, place_after_join},
};

const OPERATOR: &str = "operator-secret-for-the-page-test-0123456789";
/// Buyers ahead of the page's.
const AHEAD: usize = 40;

fn chromium_path() -> PathBuf {
    std::env::var_os("HERDGATE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Whether Chromium is there; without it the test fails, unless skipping is allowed.
fn have_chromium() -> bool {
    let path = chromium_path();
    if path.exists() {
        return true;
    }
    let problem = format!(
        "no Chromium at {} (scripts/test installs Debian's: apt-get install chromium)",
        path.display()
    );
    if std::env::var_os("HERDGATE_SKIP_CHROMIUM").is_none() {
        panic!("{problem}; set HERDGATE_SKIP_CHROMIUM=1 to skip this test");
    }
    eprintln!("\n!!!!!!!! SKIPPED: the waiting room's page was not tested in a browser !!!!!!!!");
    eprintln!("!!!!!!!! {problem}; HERDGATE_SKIP_CHROMIUM is set\n");
    false
}

/// Headless Chromium on a profile of the test's own, with nothing of its
/// own talking to the network.
fn chromium(profile: &Path) -> Command {
    let path = chromium_path();
    let mut command = Command::new(path);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=900,760",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The page's DOM after `virtual_ms` of its own time.
async fn dump_dom(profile: &Path, url: &str, virtual_ms: u64) -> String {
    let out = chromium(profile)
        .arg("--dump-dom")
        .arg(format!("--virtual-time-budget={virtual_ms}"))
        .arg(url)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("chromium ends within a minute")
        .unwrap();
    assert!(out.status.success(), "chromium: {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// The `data-state` of the page's `<main>`.
fn state(dom: &str) -> &str {
    let at = dom
        .find("id=\"app\" data-state=\"")
        .expect("the page's main element")
        + 21;
    &dom[at..at + dom[at..].find('"').unwrap()]
}

/// The text of the element with `id` (no markup inside it).
fn text<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let at = dom.find(&open).unwrap_or_else(|| panic!("no #{id}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    &dom[start..start + dom[start..].find('<').unwrap()]
}

async fn operate(app: &TestApp, body: serde_json::Value) {
    let response = app
        .http
        .patch(format!("{}/waiting-room/{EVENT}/settings", app.base))
        .bearer_auth(OPERATOR)
        .json(&body)
        .send()
        .await
        .unwrap();
    json(response, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_place_in_line_then_moves_on_to_booking_once_admitted() {
    if !have_chromium() {
        return;
    }
    let (app, users) = app_with_room_and(
        Room::default(),
        AHEAD as u32 + 1,
        [
            (config::ENV_OPERATOR_TOKEN.into(), OPERATOR.into()),
            // The page polls every second of its own, faster than the clock.
            (config::ENV_ROOM_USER_RATE.into(), "1000000".into()),
        ],
    )
    .await;
    operate(&app, json!({"paused": true})).await;
    for &user in &users[..AHEAD] {
        place_after_join(&app, user).await;
    }
    let buyer = users[AHEAD];
    let profile = tempdir();
    let page = format!("{}/waiting-room/{EVENT}", app.base);

    // The token in the fragment: the page keeps it, joins, and shows the place.
    let with_token = format!("{page}#token={}", app.token(buyer));
    let dom = dump_dom(&profile, &with_token, 5_000).await;
    assert_eq!(state(&dom), "queued", "{dom}");
    assert_eq!(text(&dom, "position"), (AHEAD + 1).to_string());
    assert_eq!(text(&dom, "queued"), (AHEAD + 1).to_string());
    // Paused: the page says so, and gives no estimate nobody can know.
    assert_eq!(text(&dom, "estimate"), "paused");
    assert!(dom.contains("<p class=\"note\" id=\"paused\">"), "{dom}");
    assert_eq!(text(&dom, "event-name"), "Late Show at the Cellar");
    if let Some(png) = std::env::var_os("HERDGATE_PAGE_SCREENSHOT") {
        // Moving, slowly: a place and an estimate.
        operate(&app, json!({"paused": false, "admissionRate": 0.05})).await;
        let shot = chromium(&tempdir())
            .arg(format!("--screenshot={}", PathBuf::from(png).display()))
            .arg("--virtual-time-budget=5000")
            .arg(&with_token)
            .status()
            .await
            .unwrap();
        assert!(shot.success());
        operate(&app, json!({"paused": true})).await;
    }

    // Again without the fragment: the token comes from the first visit. The
    // page polls while the room is paused; resumed, it lets everyone in, and
    // the page moves on to booking by itself.
    let seen = Keys::new(app.iso.prefix.clone()).event(EVENT).room_seen();
    let redis = app.iso.redis().await;
    let last_seen = || async {
        let score: Option<f64> = redis.zscore(&seen, buyer.to_string()).await.unwrap();
        score.unwrap()
    };
    let before = last_seen().await;
    let browser = chromium(&profile)
        .arg("--dump-dom")
        .arg("--virtual-time-budget=3600000")
        .arg(&page)
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), || async {
        last_seen().await > before
    })
    .await;
    let queued_visits = last_seen().await;
    operate(&app, json!({"paused": false, "admissionRate": 1000})).await;
    let out = tokio::time::timeout(Duration::from_secs(120), browser.wait_with_output())
        .await
        .expect("chromium ends")
        .unwrap();
    let dom = String::from_utf8(out.stdout).unwrap();
    assert_eq!(state(&dom), "admitted", "{dom}");
    assert!(
        queued_visits > before,
        "the page visited while still in line"
    );
    let seats = dom.matches("data-seat=\"").count();
    assert_eq!(seats, 12, "a page of seats to choose from: {dom}");
    assert!(!text(&dom, "admitted-until").is_empty());
    // The admission is the buyer's, and the page's visits keep it open.
    let admitted: Option<f64> = redis
        .zscore(
            Keys::new(app.iso.prefix.clone())
                .event(EVENT)
                .room_admitted(),
            buyer.to_string(),
        )
        .await
        .unwrap();
    assert!(admitted.is_some(), "admitted in Redis");
    std::fs::remove_dir_all(&profile).unwrap();
}

#[tokio::test]
async fn the_room_answers_json_to_api_clients_and_the_page_to_browsers() {
    let (app, users) = app_with_room_and(Room::default(), 0, []).await;
    let page = app
        .http
        .get(format!("{}/waiting-room/{EVENT}", app.base))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["vary"], "Accept");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.starts_with("default-src 'none'; script-src 'sha256-"),
        "{policy}"
    );
    assert!(policy.contains("frame-ancestors 'none'"));
    let body = page.text().await.unwrap();
    assert_eq!(body, herdgate::waiting_room::page::HTML);
    // No token needed for the page; the API still wants one.
    let api = app
        .http
        .get(format!("{}/waiting-room/{EVENT}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    let token = app.token(users[0]);
    place_after_join(&app, users[0]).await;
    let look = app
        .http
        .get(format!("{}/waiting-room/{EVENT}", app.base))
        .header("accept", "application/json")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(look.headers()["vary"], "Accept");
    assert_eq!(json(look, 200).await["eventId"], EVENT);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdgate-chromium-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
