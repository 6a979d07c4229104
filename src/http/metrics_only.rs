//! The metrics listener of a process that serves no API (`herdgate writer`,
//! on `HERDGATE_METRICS_ADDR`), so a Prometheus scraping N gateways and M
//! writers sees every one:
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | the Prometheus text format, as the gateway's (`metric::render`) |
//! | `GET /healthz` | `{"status":"up"}` |
//!
//! Anything else is 404. Connections are few and bounded: a scraper or two.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use crate::metric;

/// Connections served at once; more wait in the listen backlog.
const CONNECTIONS: usize = 16;
/// A connection (a scrape, or several over keep-alive) gets this long at most.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    handle: &'static PrometheusHandle,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| async move {
                Ok::<_, Infallible>(answer(request.method(), request.uri().path(), handle))
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(slot);
        });
    }
}

fn answer(method: &Method, path: &str, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (method, path) {
        (&Method::GET | &Method::HEAD, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metric::render(handle),
        ),
        (&Method::GET | &Method::HEAD, "/healthz") => (
            StatusCode::OK,
            "application/json",
            r#"{"status":"up"}"#.to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "only /metrics and /healthz here\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_health_are_served_and_nothing_else() {
        let handle = metric::install();
        let metrics = answer(&Method::GET, "/metrics", handle);
        assert_eq!(metrics.status(), StatusCode::OK);
        assert_eq!(
            metrics.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4"
        );
        assert_eq!(answer(&Method::GET, "/healthz", handle).status(), 200);
        assert_eq!(answer(&Method::GET, "/api/bookings", handle).status(), 404);
        assert_eq!(answer(&Method::POST, "/metrics", handle).status(), 404);
    }
}
