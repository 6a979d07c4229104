//! The HTTP server: an HTTP/1.1 accept loop with connection discipline and
//! graceful shutdown.
//!
//! Every connection is bounded: at most HERDGATE_MAX_CONNECTIONS are open (one
//! more is answered 503 and closed), each is closed after
//! HERDGATE_IDLE_TIMEOUT of silence (waiting for its first byte costs no hyper
//! buffer; after it, [`idle`] keeps the deadline) and must send a whole header
//! within HERDGATE_HEADER_TIMEOUT (hyper's header timer, which also starts again
//! after every answer). Only HTTP/1 is served: an HTTP/2 preface is a bad request
//! line, so no h2c connection escapes these limits.
//!
//! On the stop signal it stops accepting, lets in-flight requests finish within
//! the configured grace, then returns. Connection errors are logged where they
//! happen and never reach the accept loop.

pub mod api;
pub mod body;
pub mod dispatch;
pub mod forwarded;
pub mod idle;
pub mod metrics_only;
pub mod problem;
pub mod query;
pub mod request;
pub mod response;
pub mod router;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use tokio_util::sync::CancellationToken;

use crate::app::App;

/// Request headers (with the request line) larger than this get 431: hyper's
/// default lets a header grow to ~400 KB, which times many connections is a lot of memory.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The connection's TCP peer, put in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The address the per-client limits count `req` against: the TCP peer, or
/// behind a trusted proxy the client it names (see [`forwarded`]). Read only
/// where a limit needs it, so other requests never parse the header.
pub fn client_address<B>(app: &App, req: &http::Request<B>) -> Option<std::net::IpAddr> {
    let peer = req.extensions().get::<Peer>()?;
    let trusted = &app.config.http.trusted_proxies;
    Some(trusted.client(peer.0.ip(), req.headers()))
}

/// Serves `listener` until `shutdown` resolves, then drains.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let http = &app.config.http;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    let builder = Arc::new(builder);
    let idle_timeout = http.idle_timeout;
    let cap = crate::limits::connection_cap(http.max_connections);
    if cap < http.max_connections {
        tracing::warn!(
            wanted = http.max_connections,
            cap,
            "the open-files limit caps connections below HERDGATE_MAX_CONNECTIONS"
        );
    }
    let slots = Arc::new(Semaphore::new(cap));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let mut reserve = Reserve::open();
    let graceful = GracefulShutdown::new();
    // Ends the connections still waiting for their first byte, which graceful does not track.
    let stopping = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    reserve.shed(&listener, e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream, &refusing);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let busy = idle::Busy::default();
        let answering = busy.clone();
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let answering = answering.enter();
            req.extensions_mut().insert(Peer(peer));
            async move {
                let response = dispatch::handle(&app, req).await;
                drop(answering);
                Ok::<_, Infallible>(response)
            }
        });
        let (watcher, builder, stopping) = (graceful.watcher(), builder.clone(), stopping.clone());
        tokio::spawn(async move {
            let open = metrics::gauge!(crate::metric::HTTP_CONNECTIONS);
            open.increment(1);
            // Until its first byte a connection is a socket and a task; hyper's
            // buffers (16 KiB) only come with a request. A peek, not `readable()`,
            // which is ready at once on a fresh socket (tokio allows it to be
            // spurious), so the wait would be hyper's, buffers and all.
            let mut first_byte = [0u8; 1];
            let spoke = tokio::select! {
                first = tokio::time::timeout(idle_timeout, stream.peek(&mut first_byte)) => {
                    matches!(first, Ok(Ok(1)))
                }
                _ = stopping.cancelled() => false,
            };
            if spoke {
                let io = TokioIo::new(idle::Idle::new(stream, idle_timeout, busy));
                if let Err(e) = watcher.watch(builder.serve_connection(io, service)).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
            open.decrement(1);
            drop(slot);
        });
    }
    drop(listener);
    stopping.cancel();
    let grace = app.config.http.shutdown_grace;
    tracing::info!(
        connections = graceful.count(),
        "draining in-flight requests"
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(?grace, "grace period over, closing remaining connections"),
    }
}

/// The whole answer to a connection over the cap, rendered once.
static REFUSAL: LazyLock<Bytes> = LazyLock::new(|| {
    let body = problem::Problem::too_many_connections().body();
    Bytes::from(format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {}\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        problem::CONTENT_TYPE,
        body.len()
    ))
});

/// Connections being refused at once; past it, more are closed without a word.
/// Their descriptors come out of the spare ones `limits::connection_cap` keeps.
const REFUSING_AT_ONCE: usize = 64;

/// How long a refused connection is given to send its request head.
const REFUSAL_WAIT: Duration = Duration::from_millis(200);

/// Reads what the client sent first (its request head, up to 4 KiB, for 200 ms
/// at most), answers 503 and closes. Reading first makes the answer an
/// answer: an HTTP client discards a response that comes before its request,
/// and closing on unread bytes would reset the connection.
fn refuse(stream: TcpStream, refusing: &Arc<Semaphore>) {
    metrics::counter!(crate::metric::HTTP_CONNECTIONS_REFUSED).increment(1);
    let Ok(turn) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let mut head = [0u8; 4096];
        let _ = tokio::time::timeout(REFUSAL_WAIT, stream.read(&mut head)).await;
        let _ = tokio::time::timeout(REFUSAL_WAIT, stream.write_all(&REFUSAL)).await;
        let _ = stream.shutdown().await;
        drop(turn);
    });
}

/// Out of descriptors: answers without reading or waiting (the answer fits a
/// fresh socket's send buffer), so the descriptor is free again at once.
fn refuse_now(stream: TcpStream) {
    metrics::counter!(crate::metric::HTTP_CONNECTIONS_REFUSED).increment(1);
    let _ = stream.try_write(&REFUSAL);
}

/// One file descriptor kept in reserve, so that when the process runs out of
/// them the connection waiting in the backlog can still be accepted and answered
/// (503, closed) instead of the accept loop spinning while healthy clients wait.
struct Reserve(Option<std::fs::File>);

impl Reserve {
    fn open() -> Self {
        Reserve(std::fs::File::open("/dev/null").ok())
    }

    async fn shed(&mut self, listener: &TcpListener, error: std::io::Error) {
        let out_of_files = matches!(error.raw_os_error(), Some(23 | 24)); // ENFILE, EMFILE
        if !out_of_files {
            // ECONNABORTED and the like concern one connection only.
            tracing::debug!(error = %error, "accept failed");
            return;
        }
        tracing::warn!(error = %error, "out of file descriptors: refusing a connection");
        if self.0.take().is_some()
            && let Ok((stream, _)) = listener.accept().await
        {
            refuse_now(stream);
        }
        *self = Reserve::open();
        if self.0.is_none() {
            // Still none free: give the connections being closed a moment.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
