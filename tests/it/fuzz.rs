//! Arbitrary client bytes against the live gateway (proptest): bodies, query
//! strings, Idempotency-Keys and bearer tokens. Whatever arrives, the answer is
//! no 5xx, every error is a problem document with its status, and the gateway
//! stays healthy. The pure parsers have finer properties next to their code.

use std::future::Future;

use herdgate::config;
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app_with};

/// Cases per property: each is one request, a few milliseconds.
const CASES: u32 = 256;

/// What any answer must be: a success, or a 4xx problem document of that status.
async fn assert_answer(response: reqwest::Response) -> Result<u16, TestCaseError> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let unauthorized = response.headers().contains_key(WWW_AUTHENTICATE);
    let retry_after = response.headers().contains_key(RETRY_AFTER);
    let body = response.bytes().await.unwrap();
    prop_assert!(status < 500, "{status}: {body:?}");
    if status >= 400 {
        prop_assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        let doc: Value = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(&doc["status"], &Value::from(status), "{}", doc);
        prop_assert!(doc["type"].as_str().unwrap().starts_with("/problems/"));
        prop_assert!(doc["title"].is_string() && doc["detail"].is_string());
        prop_assert_eq!(status == 401, unauthorized);
        prop_assert!(status != 429 || retry_after);
    } else {
        prop_assert_eq!(content_type.as_deref(), Some("application/json"));
        serde_json::from_slice::<Value>(&body).unwrap();
    }
    Ok(status)
}

/// Runs `property` on `CASES` values of `strategy`, each on the test's runtime.
fn check<S, F, Fut>(rt: &tokio::runtime::Runtime, strategy: S, property: F)
where
    S: Strategy,
    S::Value: Clone,
    F: Fn(S::Value) -> Fut,
    Fut: Future<Output = Result<(), TestCaseError>>,
{
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, |value| rt.block_on(property(value))) {
        panic!("{e}");
    }
}

/// Bodies a client may send: any bytes, near-JSON, objects of the wrong shape.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        "[{}\\[\\]\":,0-9a-zA-Z@. \\\\-]{0,64}".prop_map(String::into_bytes),
        (any::<i64>(), "[0-9eE.+-]{1,12}")
            .prop_map(|(e, s)| format!(r#"{{"eventId":{e},"seatId":{s}}}"#).into_bytes()),
        (
            prop_oneof![
                any::<String>(),
                "[a-z\\x00-\\x1f\\x7f]{0,6}@[a-z\\x00]{0,4}"
            ],
            prop_oneof![any::<String>(), "[a\\x00]{0,4}"],
        )
            .prop_map(|(e, p)| {
                serde_json::json!({"email": e, "password": p})
                    .to_string()
                    .into_bytes()
            }),
    ]
}

fn spawn(rt: &tokio::runtime::Runtime) -> TestApp {
    rt.block_on(spawn_app_with(|env| {
        // Each case is a login attempt: the per-client limit would answer them all.
        env.insert(config::ENV_LOGIN_CLIENT_RATE.into(), "1000000".into());
        env.insert(config::ENV_LOGIN_ACCOUNT_RATE.into(), "1000000".into());
        env.insert(config::ENV_MAX_HOLDS_PER_USER.into(), "1000000".into());
    }))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn arbitrary_bodies_get_an_answer_or_a_problem_and_never_a_5xx() {
    let rt = runtime();
    let app = spawn(&rt);
    let token = app.token(1);
    check(&rt, body(), |body| {
        let (app, token) = (&app, &token);
        async move {
            let hold = app
                .http
                .post(format!("{}/api/bookings", app.base))
                .bearer_auth(token)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = assert_answer(hold).await?;
            let json = serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.is_object());
            prop_assert!(json || status == 400, "{status} for {body:?}");
            let login = app
                .post("/api/users/login", Some("application/json"), body.clone())
                .await;
            let status = assert_answer(login).await?;
            prop_assert!(json || status == 400, "{status} for {body:?}");
            Ok(())
        }
    });
    rt.block_on(app.assert_healthy());
}

#[test]
fn arbitrary_query_strings_keys_and_tokens_get_a_problem_and_never_a_5xx() {
    let rt = runtime();
    let app = spawn(&rt);
    let token = app.token(1);
    let query = "[A-Za-z0-9=&%+._~-]{0,48}";
    check(&rt, query, |query| {
        let app = &app;
        async move {
            for path in ["/api/seats/available", "/waiting-room"] {
                let response = app.get(&format!("{path}?{query}")).await;
                let status = assert_answer(response).await?;
                prop_assert!([200, 400, 404].contains(&status), "{status} {path}?{query}");
            }
            Ok(())
        }
    });
    let key = prop_oneof!["[!-~]{0,140}", "[A-Za-z0-9._:-]{1,130}"];
    check(&rt, (key, 1..=400i64), |(key, seat)| {
        let (app, token) = (&app, &token);
        async move {
            let response = app.post_hold(token, 1, seat, Some(&key)).await;
            let status = assert_answer(response).await?;
            let valid = key.len() <= 128
                && !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
            prop_assert_eq!(status == 400, !valid, "{} for {:?}", status, key);
            Ok(())
        }
    });
    let original = token.clone();
    let mutated = (any::<prop::sample::Index>(), "[!-~]{0,3}").prop_map(move |(at, junk)| {
        let mut t = original.clone().into_bytes();
        let at = at.index(t.len());
        t.splice(at..=at, junk.into_bytes());
        String::from_utf8(t).unwrap()
    });
    check(&rt, mutated, |mutated| {
        let (app, token) = (&app, &token);
        async move {
            prop_assume!(mutated != *token);
            let token = mutated;
            let response = app.post_hold(&token, 1, 1, None).await;
            prop_assert_eq!(assert_answer(response).await?, 401, "{}", token);
            Ok(())
        }
    });
    rt.block_on(app.assert_healthy());
}
