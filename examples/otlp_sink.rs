//! A local OTLP/HTTP sink for benchmarks: takes `POST /v1/traces` as a collector
//! would, counts the spans and drops them. The receiver is the one the tests
//! use (tests/it/otlp.rs). On SIGTERM or Ctrl-C it prints the number of spans
//! received on standard output and exits.
//!
//! cargo run --release --example otlp_sink -- 127.0.0.1:4318

// The tests' receiver, in count-only mode: what it keeps for tests is unused here.
#[allow(dead_code)]
#[path = "../tests/it/otlp.rs"]
mod otlp;

use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4318".into());
    let receiver = otlp::OtlpReceiver::start(&addr, false).await?;
    eprintln!("otlp sink listening on {}", receiver.addr);
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("{}", receiver.count());
    Ok(())
}
