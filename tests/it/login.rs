//! Login with argon2 passwords, and tokens minted from the command line.

use std::{collections::HashMap, process::Command};

use crate::helpers::{assert_problem, json, spawn_app};

#[tokio::test]
async fn the_right_password_gets_a_token_for_that_user() {
    let app = spawn_app().await;
    let body = json(app.post_login("test@example.com", "password").await, 200).await;
    let user_id = body["userId"].as_i64().unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(app.auth.verify(token).unwrap(), user_id);
    let expires_at: chrono::DateTime<chrono::Utc> =
        body["expiresAt"].as_str().unwrap().parse().unwrap();
    assert!(expires_at > chrono::Utc::now());
    // Emails are matched without regard to case.
    json(app.post_login("Test@Example.com", "password").await, 200).await;
    // Load-test users log in too.
    json(app.post_login("user7@load.test", "password").await, 200).await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_401() {
    let app = spawn_app().await;
    let wrong = assert_problem(app.post_login("test@example.com", "Password").await, 401).await;
    let unknown = assert_problem(app.post_login("nobody@example.com", "password").await, 401).await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["type"], "/problems/bad-credentials");
}

#[tokio::test]
async fn herdgate_token_prints_a_valid_token_alone_on_stdout() {
    let app = spawn_app().await;
    let env: HashMap<String, String> = app.iso.env();
    let output = Command::new(env!("CARGO_BIN_EXE_herdgate"))
        .args(["token", "--user", "2"])
        .envs(&env)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.strip_suffix('\n').unwrap();
    assert!(!token.contains('\n'));
    assert_eq!(app.auth.verify(token).unwrap(), 2);

    let three = Command::new(env!("CARGO_BIN_EXE_herdgate"))
        .args(["token", "--user", "2", "--count", "3"])
        .envs(&env)
        .output()
        .unwrap();
    let lines: Vec<i64> = String::from_utf8(three.stdout)
        .unwrap()
        .lines()
        .map(|token| app.auth.verify(token).unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3, 4]);

    let unknown = Command::new(env!("CARGO_BIN_EXE_herdgate"))
        .args(["token", "--user", "999999"])
        .envs(&env)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(unknown.stdout.is_empty());
}
