//! Every bad request gets a 4xx problem document, and the process stays healthy.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_404_and_405() {
    let app = spawn_app().await;
    let p = assert_problem(app.get("/api/nothing").await, 404).await;
    assert_eq!(p["type"], "/problems/not-found");
    let response = app
        .http
        .delete(format!("{}/api/events/1", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    assert_problem(response, 405).await;
    assert_problem(app.get("/api/users/login").await, 405).await;
    app.assert_healthy().await;
}

#[tokio::test]
async fn ids_that_are_not_positive_integers_are_400() {
    let app = spawn_app().await;
    for path in [
        "/api/events/abc",
        "/api/events/0",
        "/api/events/-1",
        "/api/events/1.5",
        "/api/events/99999999999999999999999",
        "/api/seats/available",
        "/api/seats/available?eventId=",
        "/api/seats/available?eventId=x",
        "/api/seats/available?eventId=1&limit=0",
        "/api/seats/available?eventId=1&limit=5001",
        "/api/seats/available?eventId=1&after=-1",
        "/waiting-room?eventId=0",
    ] {
        let p = assert_problem(app.get(path).await, 400).await;
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{path}");
    }
    app.assert_healthy().await;
}

#[tokio::test]
async fn malformed_or_mistyped_login_bodies_are_400() {
    let app = spawn_app().await;
    for body in [
        "",
        "{",
        "not json",
        "[]",
        "null",
        r#"{"email":"test@example.com"}"#,
        r#"{"email":5,"password":"password"}"#,
        r#"{"email":"test@example.com","password":["password"]}"#,
        r#"{"email":"","password":"password"}"#,
        r#"{"email":"test@example.com","password":""}"#,
    ] {
        app.assert_invalid_login_body(body).await;
    }
    app.assert_healthy().await;
}

#[tokio::test]
async fn a_body_without_json_content_type_is_415() {
    let app = spawn_app().await;
    let body = r#"{"email":"test@example.com","password":"password"}"#;
    assert_problem(app.post("/api/users/login", None, body).await, 415).await;
    assert_problem(
        app.post("/api/users/login", Some("text/plain"), body).await,
        415,
    )
    .await;
    assert_problem(
        app.post(
            "/api/users/login",
            Some("application/x-www-form-urlencoded"),
            body,
        )
        .await,
        415,
    )
    .await;
}

#[tokio::test]
async fn an_oversize_body_is_413_whether_announced_or_streamed() {
    let app = spawn_app().await;
    let huge = format!(
        r#"{{"email":"{}","password":"x"}}"#,
        "a".repeat(10 * 1024 * 1024)
    );
    let announced = app
        .post("/api/users/login", Some("application/json"), huge.clone())
        .await;
    assert_problem(announced, 413).await;
    // Chunked, no Content-Length: the limit is enforced while reading.
    let chunks = futures::stream::iter(
        huge.into_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let streamed = app
        .post(
            "/api/users/login",
            Some("application/json"),
            reqwest::Body::wrap_stream(chunks),
        )
        .await;
    assert_problem(streamed, 413).await;
    app.assert_healthy().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_408() {
    let app = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"email\":",
        )
        .await
        .unwrap();
    let mut response = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut response))
        .await
        .expect("answered before the test gave up")
        .unwrap();
    let response = String::from_utf8_lossy(&response[..read]);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    app.assert_healthy().await;
}
