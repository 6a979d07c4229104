//! The idle deadline of one connection: a socket that sends and reads nothing for
//! HERDGATE_IDLE_TIMEOUT while none of its requests is being answered is closed.
//!
//! It covers what hyper's header timeout does not: a connection that never sends
//! its first byte waits here, not in hyper, and a client that stops reading its
//! answer stalls a write that nothing else would end. One timer per connection,
//! re-armed lazily: a read or write only stores the time, so the hot path never
//! touches the timer wheel.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// An I/O stream that fails with `TimedOut` once it has been idle too long.
pub struct Idle<T> {
    inner: T,
    timeout: Duration,
    /// The last time bytes moved either way.
    last: Instant,
    timer: Pin<Box<Sleep>>,
    busy: Busy,
}

/// Counts the requests of one connection being answered; while any is, the
/// connection is not idle however long the answer takes.
#[derive(Clone, Default)]
pub struct Busy(Arc<AtomicUsize>);

/// Held while a request is answered.
pub struct Answering(Busy);

impl Busy {
    pub fn enter(&self) -> Answering {
        self.0.fetch_add(1, Ordering::Relaxed);
        Answering(self.clone())
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> Idle<T> {
    pub fn new(inner: T, timeout: Duration, busy: Busy) -> Self {
        let last = Instant::now();
        Idle {
            inner,
            timeout,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + timeout)),
            busy,
        }
    }

    /// Ready with an error once the deadline passed with no bytes moved and no
    /// request being answered; otherwise re-arms the timer and stays pending.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let next = if self.busy.any() {
                // Answering counts as activity: the answer's first write must not
                // find the deadline already passed.
                self.last = now;
                now + self.timeout
            } else if now >= self.last + self.timeout {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ));
            } else {
                self.last + self.timeout
            };
            self.timer.as_mut().reset(next);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.written(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                this.written(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T> Idle<T> {
    fn written(&mut self, n: usize) {
        if n > 0 {
            self.last = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_times_out_and_a_busy_one_does_not() {
        let (client, server) = duplex(64);
        let busy = Busy::default();
        let mut idle = Idle::new(server, Duration::from_secs(5), busy.clone());
        let mut buf = [0u8; 8];
        let answering = busy.enter();
        let waited = tokio::time::timeout(Duration::from_secs(30), idle.read(&mut buf)).await;
        assert!(waited.is_err(), "a connection being answered is never idle");
        drop(answering);
        let err = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_a_stream_open() {
        let (mut client, server) = duplex(64);
        let mut idle = Idle::new(server, Duration::from_secs(5), Busy::default());
        let mut buf = [0u8; 1];
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            client.write_all(b"x").await.unwrap();
            idle.read_exact(&mut buf).await.unwrap();
        }
        let started = Instant::now();
        let err = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
