//! Serving one connection: hyper's HTTP/1.1 or HTTP/2 server with the gateway's
//! settings, the guard against rapid-reset streams, and the send timeout.

use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::shutdown::Stop;

pub(super) async fn serve_io<I, S, B>(
    io: I,
    h2: bool,
    service: S,
    limits: &crate::config::Limits,
    mut stop: watch::Receiver<bool>,
    resets: &ResetWatch,
    admitted: bool,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(Some(20))
            .max_local_error_reset_streams(Some(1024));
        let conn = b.serve_connection(io, service);
        tokio::pin!(conn);
        if !admitted {
            // over the connection limit: GOAWAY before any stream (safe to retry)
            conn.as_mut().graceful_shutdown();
        }
        let r = tokio::select! {
            r = conn.as_mut() => r,
            _ = Stop::new(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            _ = resets.abusive.notified() => {
                // the rapid-reset pattern (CVE-2023-44487): GOAWAY, then close
                tracing::warn!(cancelled = resets.cancelled.load(Ordering::Relaxed), "client cancels most of its streams; closing the connection");
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await {
                    Ok(r) => r,
                    Err(_) => Ok(()),
                }
            }
        };
        if let Err(e) = r {
            tracing::debug!(error.detail = %e, "h2 connection ended with an error");
        }
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(crate::timer::ConnTimer::new())
            .header_read_timeout(limits.header_read_timeout())
            .max_buf_size((limits.max_header_bytes * 2).max(8192))
            // over the connection limit: one answer (the 503), then close
            .keep_alive(admitted);
        let conn = b.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let r = tokio::select! {
            r = conn.as_mut() => r,
            _ = Stop::new(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = r {
            tracing::debug!(error.detail = %e, "connection ended with an error");
        }
    }
}

/// Streams a client cancelled before their answer, per connection. An HTTP/2 client
/// that opens and resets streams over and over (CVE-2023-44487) makes the gateway
/// start upstream work it throws away; past [`RESET_LIMIT`] cancellations that
/// outnumber the completed requests, the connection gets GOAWAY.
#[derive(Default)]
pub(super) struct ResetWatch {
    cancelled: std::sync::atomic::AtomicU32,
    completed: std::sync::atomic::AtomicU32,
    abusive: tokio::sync::Notify,
}

/// Cancelled streams a connection may have before it is judged abusive.
pub(super) const RESET_LIMIT: u32 = 100;

/// Counts a request as cancelled unless it completed.
pub(super) struct CancelGuard(pub(super) Option<Arc<ResetWatch>>);

impl CancelGuard {
    pub(super) fn completed(mut self) {
        if let Some(w) = self.0.take() {
            w.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            let n = w.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= RESET_LIMIT && n > w.completed.load(Ordering::Relaxed) {
                w.abusive.notify_one();
            }
        }
    }
}

/// A client connection whose writes may not stall longer than `limit`: a client that
/// stops reading its answers (a slow-read attack, or a dead peer behind a full
/// window) has the connection closed instead of holding it, its upstream and its
/// buffers forever. Reads are untouched (the head and body timeouts cover them).
/// The timer is allocated the first time a write has to wait.
pub(super) struct SendTimeout<T> {
    inner: T,
    limit: Duration,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    stalled: bool,
}

impl<T> SendTimeout<T> {
    pub(super) fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            stalled: false,
        }
    }

    fn watch<R>(
        &mut self,
        polled: std::task::Poll<std::io::Result<R>>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<R>> {
        use std::task::Poll;
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.stalled {
            self.stalled = true;
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + self.limit);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for SendTimeout<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(polled, cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(polled, cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(polled, cx)
    }
}
