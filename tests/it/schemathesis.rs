//! schemathesis against the live gateway, with a real token: every answer to the
//! requests it generates from `GET /openapi.json` (valid and invalid ones) is no
//! 5xx, and has a documented status, content type, headers and body.
//!
//! The version is pinned in `scripts/schemathesis.txt`; `scripts/test` installs it
//! into `.venv-schemathesis`. Without it this test fails, unless
//! `HERDGATE_SKIP_SCHEMATHESIS` is set, when it says loudly that it skipped.

use std::{path::PathBuf, process::Stdio, time::Duration};

use herdgate::{
    auth::Auth,
    config::{self, Config},
};
use tokio::process::Command;

use crate::helpers::{Isolation, add_waiting_room, scalar, spawn_app_on};

/// Set (to anything) to skip this test when schemathesis is not installed.
const SKIP: &str = "HERDGATE_SKIP_SCHEMATHESIS";
/// Overrides the cases per operation (default [`MAX_EXAMPLES`]).
const EXAMPLES: &str = "HERDGATE_SCHEMATHESIS_EXAMPLES";
/// Overrides the seed (default [`SEED`]), to look further than CI does.
const SEED_VAR: &str = "HERDGATE_SCHEMATHESIS_SEED";

/// Cases per operation in each phase: about 2,300 requests, about 20 s on two cores.
const MAX_EXAMPLES: &str = "100";
/// A fixed seed: CI runs the same requests each time; a failure is reproducible.
const SEED: &str = "11";
/// The whole run is killed (and the test fails) past this.
const DEADLINE: Duration = Duration::from_secs(300);
/// What every answer must satisfy: every check of the pinned version but
/// `positive_data_acceptance`, which takes any 4xx but 401/403/404/409/429 to a
/// request valid by the schema as a failure, and so fails on two true answers:
/// 422 for an Idempotency-Key reused for another seat, and 400 for an id written
/// `7.0`, which JSON Schema counts as an integer (the document says it is refused).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,\
                      negative_data_rejection,missing_required_header,unsupported_method,\
                      allow_header_conformance,use_after_free,ensure_resource_availability,\
                      ignored_auth,object_level_authorization";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned version, from `scripts/schemathesis.txt`.
fn pinned() -> String {
    let pins = std::fs::read_to_string(repo().join("scripts/schemathesis.txt")).unwrap();
    pins.lines()
        .find_map(|l| l.trim().strip_prefix("schemathesis=="))
        .expect("scripts/schemathesis.txt pins schemathesis==VERSION")
        .to_string()
}

/// The installed CLI at the pinned version, or `None` when skipping is allowed.
fn cli() -> Option<PathBuf> {
    let path = repo().join(".venv-schemathesis/bin/schemathesis");
    let version = std::process::Command::new(&path).arg("--version").output();
    let want = pinned();
    match version {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout).trim()
                == format!("schemathesis, version {want}") =>
        {
            Some(path)
        }
        found => {
            let found = match found {
                Ok(out) => format!("{:?}", String::from_utf8_lossy(&out.stdout).trim()),
                Err(e) => e.to_string(),
            };
            let problem = format!(
                "schemathesis {want} is not installed at {} ({found}); scripts/test installs \
                 it (or: source scripts/schemathesis.sh && ensure_schemathesis)",
                path.display()
            );
            if std::env::var_os(SKIP).is_none() {
                panic!("{problem}; set {SKIP}=1 to skip this test");
            }
            eprintln!("\n!!!!!!!! SKIPPED: the schemathesis contract test did not run !!!!!!!!");
            eprintln!("!!!!!!!! {problem}; {SKIP} is set\n");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_only_documented_answers_and_no_server_errors() {
    let Some(cli) = cli() else { return };
    let iso = Isolation::new().await;
    // Event 3 behind a waiting room (the spec's example id), so its operations
    // reach their logic, and holds of event 3 meet the admission check.
    let pg = iso.pg().await;
    add_waiting_room(&pg, 3).await;
    let demo_user = scalar(&pg, "SELECT id FROM users WHERE email = 'test@example.com'").await;
    let auth = Auth::new(&Config::from_env(&iso.env()).unwrap().auth).unwrap();
    let token = auth.issue(demo_user).unwrap().token;
    let operator = token.clone();
    let app = spawn_app_on(iso, |env| {
        // schemathesis sends one Authorization header to every operation: the
        // operator's secret is that same token, so the operator's calls reach
        // their logic too (and change event 3's room as they go).
        env.insert(config::ENV_OPERATOR_TOKEN.into(), operator);
        // Generated holds must not all end at the per-user limit before reaching the script.
        env.insert(config::ENV_MAX_HOLDS_PER_USER.into(), "1000".into());
        // Nor every login at the per-client limit before its body is read.
        env.insert(config::ENV_LOGIN_CLIENT_RATE.into(), "1000000".into());
        env.insert(config::ENV_LOGIN_ACCOUNT_RATE.into(), "1000000".into());
        env.insert(config::ENV_ROOM_USER_RATE.into(), "1000000".into());
        env.insert(config::ENV_ROOM_CLIENT_RATE.into(), "1000000".into());
        // A Redis call slowed by the rest of the suite on two cores is no breach of contract.
        env.insert(config::ENV_REDIS_TIMEOUT.into(), "10s".into());
    })
    .await;
    let examples = std::env::var(EXAMPLES).unwrap_or_else(|_| MAX_EXAMPLES.to_string());
    let seed = std::env::var(SEED_VAR).unwrap_or_else(|_| SEED.to_string());
    let reports = tempdir();
    let run = Command::new(&cli)
        .arg("run")
        .arg(format!("{}/openapi.json", app.base))
        .args(["--url", &app.base, "--checks", CHECKS])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", &examples, "--seed", &seed])
        // One worker: hypothesis's lambda descriptions are not thread-safe on Python 3.11.
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&reports)
        .current_dir(&reports)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran past {DEADLINE:?}"))
        .expect("schemathesis starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "schemathesis {} (seed {seed}, {examples} examples per operation) took {:.1?}",
        pinned(),
        started.elapsed()
    );
    // The phases and the summary, for `--nocapture`.
    eprintln!("{}", tail(&stdout, 4_000));
    let log = reports.join("output.txt");
    std::fs::write(&log, format!("{stdout}\n{stderr}")).unwrap();
    assert!(
        out.status.success(),
        "schemathesis failed ({}), whole output in {}:\n{}\n{}",
        out.status,
        log.display(),
        tail(&stdout, 20_000),
        tail(&stderr, 5_000)
    );
    // Every operation ran (an empty run passes too), but `GET /openapi.json`,
    // which schemathesis leaves out as the document's own address.
    let operations = herdgate::http::router::ENDPOINTS.len() - 1;
    for line in [
        format!("Selected: {operations}/{operations}"),
        format!("Tested: {operations}"),
    ] {
        assert!(
            stdout.contains(&line),
            "no {line:?} in:\n{}",
            tail(&stdout, 5_000)
        );
    }
    app.assert_healthy().await;
    std::fs::remove_dir_all(&reports).unwrap();
}

/// The last `max` bytes of `text`, at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A fresh directory for the run's reports and any files it leaves.
fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdgate-schemathesis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
