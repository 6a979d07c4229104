//! The HTTP ceiling for benchmarks: the same hyper-util server herdgate uses,
//! answering every request with a fixed 201 and a booking-sized JSON body, with
//! no Redis, no auth and no parsing. Whatever herdgate loses against it is the
//! cost of herdgate's own work.
//!
//! cargo run --release --example ceiling -- 127.0.0.1:18181

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

const BODY: &[u8] = br#"{"bookingId":"01a22ab3-1283-72d0-9dee-373a70dd8182","status":"PENDING","eventId":1,"seatId":5,"userId":2,"expiresAt":"2026-11-30T04:35:08.483Z"}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18181".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("ceiling listening on {addr}");
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            // Read the body as herdgate must, then answer.
            let _ = req.into_body().collect().await;
            let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
            *response.status_mut() = StatusCode::CREATED;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            Ok::<_, Infallible>(response)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
