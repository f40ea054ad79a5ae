//! Upstream connection pools: keep-alive HTTP/1.1 connections to each upstream
//! endpoint, one idle list per worker thread.
//!
//! A connection is driven by the runtime of the worker that opened it and is only
//! reused by that worker, so a request never hops between threads. Checkout pops the
//! newest idle connection (LIFO keeps the warm ones warm); the connection goes back when
//! the response body has ended, with no task spawned. Locks: one `std::sync::Mutex`
//! per (endpoint, worker), held for a push or a pop, never across an `.await`;
//! uncontended, since only its worker touches it.
//!
//! Pools are shared by every route that names the same address, so a pointer move
//! between versions on the same upstream keeps its warm connections.

use bytes::Bytes;
use dashmap::DashMap;
use http::uri::Authority;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::cell::Cell;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What the gateway sends upstream: the client's body under the size and idle limits.
pub type UpstreamBody = crate::proxy::body::ClientBody;
pub type Sender = http1::SendRequest<UpstreamBody>;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Declares which worker the current thread is (0-based).
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

fn worker() -> usize {
    WORKER.with(|w| w.get())
}

/// Why a new upstream connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Refused(std::io::Error),
    Timeout,
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) => write!(f, "connect failed: {e}"),
            Self::Timeout => f.write_str("connect timed out"),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

/// The connections to one upstream address.
pub struct UpstreamPool {
    pub authority: Authority,
    /// The `host` header the upstream receives.
    pub host: HeaderValue,
    idle: Box<[Mutex<Vec<Sender>>]>,
    max_idle: usize,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("authority", &self.authority)
            .finish()
    }
}

impl UpstreamPool {
    fn new(authority: Authority, workers: usize, max_idle: usize) -> Self {
        Self {
            host: HeaderValue::from_str(authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("upstream")),
            authority,
            idle: (0..workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            max_idle,
        }
    }

    fn slot(&self) -> &Mutex<Vec<Sender>> {
        &self.idle[worker() % self.idle.len()]
    }

    /// The newest idle connection of this worker that can take a request. A connection
    /// given back a moment ago may still be finishing its previous exchange on this
    /// thread: waiting for it is a poll of the connection, not a network round trip.
    pub async fn checkout(&self) -> Option<Sender> {
        loop {
            let popped = self.slot().lock().ok()?.pop();
            let mut s = popped?;
            if s.is_ready() {
                return Some(s);
            }
            // not ready yet (rare): give it a moment, then drop it for another
            let ready = tokio::time::timeout(Duration::from_millis(100), s.ready()).await;
            if matches!(ready, Ok(Ok(()))) {
                return Some(s);
            }
        }
    }

    /// Puts a connection back after its response has ended.
    pub fn give_back(&self, s: Sender) {
        if s.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.slot().lock() {
            if idle.len() < self.max_idle {
                idle.push(s);
            }
        }
    }

    /// Opens a new connection, driven by the current runtime.
    pub async fn connect(&self, timeout: Duration) -> Result<Sender, ConnectError> {
        let addr = format!(
            "{}:{}",
            self.authority.host(),
            self.authority.port_u16().unwrap_or(80)
        );
        let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Refused(e)),
            Err(_) => return Err(ConnectError::Timeout),
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error.detail = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Idle connections of all workers (for tests and status).
    pub fn idle_count(&self) -> usize {
        self.idle
            .iter()
            .map(|m| m.lock().map(|v| v.len()).unwrap_or(0))
            .sum()
    }
}

/// Every pool, by address. Routes look their endpoints' pools up here when they are
/// built (control plane); requests never do.
#[derive(Debug)]
pub struct Pools {
    map: DashMap<String, Arc<UpstreamPool>>,
    workers: usize,
    max_idle: usize,
}

impl Default for Pools {
    fn default() -> Self {
        Self::new(1, 512)
    }
}

impl Pools {
    pub fn new(workers: usize, max_idle: usize) -> Self {
        Self {
            map: DashMap::new(),
            workers: workers.max(1),
            max_idle,
        }
    }

    pub fn get(&self, authority: &Authority) -> Arc<UpstreamPool> {
        if let Some(p) = self.map.get(authority.as_str()) {
            return Arc::clone(p.value());
        }
        Arc::clone(
            self.map
                .entry(authority.as_str().to_owned())
                .or_insert_with(|| {
                    Arc::new(UpstreamPool::new(
                        authority.clone(),
                        self.workers,
                        self.max_idle,
                    ))
                })
                .value(),
        )
    }
}

/// An upstream response body that returns its connection to the pool when it ends.
pub struct PooledBody {
    inner: Incoming,
    ret: Option<(Sender, Arc<UpstreamPool>)>,
}

impl PooledBody {
    pub fn new(inner: Incoming, sender: Sender, pool: Arc<UpstreamPool>) -> Self {
        let mut b = Self {
            inner,
            ret: Some((sender, pool)),
        };
        if b.inner.is_end_stream() {
            b.give_back();
        }
        b
    }

    /// A body whose connection is not pooled (upgrades).
    pub fn unpooled(inner: Incoming) -> Self {
        Self { inner, ret: None }
    }

    fn give_back(&mut self) {
        if let Some((s, pool)) = self.ret.take() {
            pool.give_back(s);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.ret = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
