//! Process lifecycle: configuration errors, and SIGTERM draining in-flight requests.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::Isolation;

fn herdgate(iso: &Isolation) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herdgate"));
    command.envs(iso.env());
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_with_exit_64_naming_the_variable() {
    let iso = Isolation::new().await;
    let output = herdgate(&iso)
        .arg("serve")
        .env("HERDGATE_HOLD_TTL", "ten minutes")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HERDGATE_HOLD_TTL"), "{stderr}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let iso = Isolation::new().await;
    let port = free_port();
    let mut child = herdgate(&iso)
        .arg("serve")
        .env("HERDGATE_ADDR", format!("127.0.0.1:{port}"))
        // Long enough that only the drain, never the body timeout, ends the request.
        .env("HERDGATE_BODY_TIMEOUT", "30s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "herdgate did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Half a request: headers and the start of the body.
    let body = r#"{"email":"test@example.com","password":"password"}"#;
    let (head, tail) = body.split_at(10);
    write!(
        stream,
        "POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // New connections are refused while the old one drains.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stream.write_all(tail.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"token\""), "{response}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
