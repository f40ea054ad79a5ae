//! Upstream connection pools: keep-alive HTTP/1.1 connections to each upstream
//! endpoint, one idle list per worker thread.
//!
//! A connection is driven by the request that holds it, inside that request's task:
//! sending the request, reading the answer and streaming its body are polls of the
//! client connection's task, with no second task and no hand-off between tasks per
//! request. Consequently a connection belongs to the worker that opened it and is only
//! reused by that worker. Checkout pops the newest idle connection (LIFO keeps the
//! warm ones warm); the connection goes back when the response body has ended.
//! Idle connections are not polled by anyone: a checkout finds out whether the
//! upstream closed one meanwhile (its request is then handed back unsent), and each
//! worker sweeps its idle lists every few seconds so closed sockets do not linger.
//! Locks: one `std::sync::Mutex` per (endpoint, worker), held for a push, a pop or a
//! sweep, never across an `.await`; uncontended, since only its worker touches it.
//!
//! Pools are shared by every route that names the same address, so a pointer move
//! between versions on the same upstream keeps its warm connections.

use super::stream::{tls_target, TlsClient, TlsTarget, UpstreamStream};
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::task::AtomicWaker;
use http::uri::Authority;
use http::HeaderValue;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What the gateway sends upstream: the client's body under the size and idle limits.
pub type UpstreamBody = super::body::ClientBody;
type Sender = http1::SendRequest<UpstreamBody>;
type Connection = http1::Connection<TokioIo<UpstreamStream>, UpstreamBody>;
/// A request the connection could not take, handed back unsent when it can be.
pub type SendError = hyper::client::conn::TrySendError<Request<UpstreamBody>>;

/// Why [`Upstream::send`] brought no response head.
pub enum SendFailure {
    /// The connection failed or refused the request (which is inside when unsent).
    /// Boxed: it is rare, and carries the whole request.
    Failed(Box<SendError>),
    /// The deadline passed first.
    TimedOut,
}

/// Why a new upstream connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Refused(std::io::Error),
    Timeout,
    /// The TLS handshake failed, or the endpoint cannot have one (the reason).
    Tls(String),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) => write!(f, "connect failed: {e}"),
            Self::Timeout => f.write_str("connect timed out"),
            Self::Tls(why) => write!(f, "TLS handshake failed: {why}"),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

/// Routes the wakeups of a connection that is driven inside a request's task.
///
/// The connection's own channels (the request queue, the response, the body) signal
/// one another while the task polls it; passing those on would only make the task
/// poll itself once more. A wakeup that arrives while the task is inside the
/// connection is noted instead and the connection is polled again at once; one that
/// arrives from outside (the socket, through the runtime's I/O driver) wakes the task
/// that drove the connection last, if it still holds it.
#[derive(Default)]
struct Relay {
    task: AtomicWaker,
    busy: AtomicBool,
    woken: AtomicBool,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.busy.load(Ordering::Acquire) {
            self.woken.store(true, Ordering::Release);
        } else {
            self.task.wake();
        }
    }
}

/// Rounds of polling in one go before the task yields to others.
const ROUNDS: usize = 32;

/// hyper's halves of one connection.
struct Io {
    sender: Sender,
    /// `None` once the connection has ended (closed by either side, or failed);
    /// dropping it hands back what it still held: a request not yet written comes
    /// back to its sender, a body being received ends.
    conn: Option<Connection>,
}

impl Io {
    /// Lets the connection read and write what it can; `false` once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = &mut self.conn {
            if let Poll::Ready(r) = Pin::new(conn).poll(cx) {
                self.conn = None;
                if let Err(e) = r {
                    tracing::debug!(error.detail = %e, "upstream connection ended");
                }
            }
        }
        self.conn.is_some()
    }

    fn is_open(&self) -> bool {
        self.conn.is_some() && !self.sender.is_closed()
    }
}

/// One keep-alive connection to an upstream, driven by whoever holds it: the
/// request that sends on it, then its response body until the body ends.
pub struct Upstream {
    io: Io,
    relay: Arc<Relay>,
    waker: Waker,
    /// A request has been sent on it (a new connection takes its first one at once).
    used: bool,
    /// The response-head deadline of the request in flight: one timer per connection,
    /// moved forward for each request (a later deadline only updates the timer's
    /// entry; the runtime's timer wheel is touched when the old one comes due).
    timer: Option<Pin<Box<Sleep>>>,
}

impl Upstream {
    fn new(sender: Sender, conn: Connection) -> Self {
        let relay = Arc::new(Relay::default());
        Self {
            io: Io {
                sender,
                conn: Some(conn),
            },
            waker: Waker::from(Arc::clone(&relay)),
            relay,
            used: false,
            timer: None,
        }
    }

    /// Polls `step` (the connection and what it feeds) until it is ready or nothing
    /// it touched asked for another round. The socket wakes the task of `cx`.
    fn run<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut step: impl FnMut(&mut Io, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.relay.task.register(cx.waker());
        let mut inner = Context::from_waker(&self.waker);
        for _ in 0..ROUNDS {
            self.relay.woken.store(false, Ordering::Relaxed);
            self.relay.busy.store(true, Ordering::Release);
            let r = step(&mut self.io, &mut inner);
            self.relay.busy.store(false, Ordering::Release);
            if r.is_ready() || !self.relay.woken.load(Ordering::Acquire) {
                return r;
            }
        }
        // still more to do: let the worker's other tasks run first
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Lets go of the task that drove the connection: from now on its socket wakes
    /// nobody until the connection is next checked out. `false` when it has ended.
    fn release(&mut self) -> bool {
        self.relay.task.take();
        self.io.is_open()
    }

    /// Waits (briefly) until a used connection has finished its last exchange and
    /// takes another request. Rare: the exchange normally ends in the same poll that
    /// reads the end of the response.
    async fn ready(&mut self) -> bool {
        let wait = std::future::poll_fn(|cx| {
            self.run(cx, |io, cx| {
                if !io.drive(cx) {
                    return Poll::Ready(false);
                }
                io.sender.poll_ready(cx).map(|r| r.is_ok())
            })
        });
        matches!(
            tokio::time::timeout(Duration::from_millis(100), wait).await,
            Ok(true)
        )
    }

    /// Sends one request and waits, until `deadline`, for the response head, driving
    /// the connection meanwhile. A request the connection could not take is in the
    /// error.
    pub async fn send(
        &mut self,
        req: Request<UpstreamBody>,
        deadline: Instant,
    ) -> Result<Response<Incoming>, SendFailure> {
        if self.used && !self.io.sender.is_ready() {
            // when it is still not ready, the request comes back unsent below
            self.ready().await;
        }
        self.used = true;
        let mut timer = match self.timer.take() {
            Some(mut t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        // unconstrained: the answer is polled right after the connection delivers it,
        // and a spent task budget must not turn that poll into another round
        let answer = tokio::task::unconstrained(self.io.sender.try_send_request(req));
        let mut answer = std::pin::pin!(answer);
        let r = std::future::poll_fn(|cx| {
            self.run(cx, |io, cx| {
                io.drive(cx);
                if let Poll::Ready(r) = answer.as_mut().poll(cx) {
                    return Poll::Ready(r.map_err(|e| SendFailure::Failed(Box::new(e))));
                }
                // polled with the connection's waker: once the connection is back in
                // the pool, a timer that comes due wakes nobody
                let due = std::pin::pin!(tokio::task::unconstrained(timer.as_mut()));
                due.poll(cx).map(|()| Err(SendFailure::TimedOut))
            })
        })
        .await;
        self.timer = Some(timer);
        r
    }
}

/// The connections to one upstream address.
pub struct UpstreamPool {
    pub authority: Authority,
    /// The `host` header the upstream receives.
    pub host: HeaderValue,
    /// `https://` endpoints: how their connections are secured, or why they cannot be.
    tls: Option<Result<TlsTarget, Arc<str>>>,
    /// Boxed connections: one moves with every request, so only a pointer should.
    #[allow(clippy::vec_box)]
    idle: Box<[Mutex<Vec<Box<Upstream>>>]>,
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
    fn new(
        authority: Authority,
        tls: Option<Result<TlsTarget, Arc<str>>>,
        workers: usize,
        max_idle: usize,
    ) -> Self {
        Self {
            host: HeaderValue::from_str(authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("upstream")),
            authority,
            tls,
            idle: (0..workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            max_idle,
        }
    }

    #[allow(clippy::vec_box)]
    fn slot(&self) -> &Mutex<Vec<Box<Upstream>>> {
        &self.idle[crate::worker::index().unwrap_or(0) % self.idle.len()]
    }

    /// The newest idle connection of this worker that is still open. One the upstream
    /// closed while it was idle is found out when it is sent on: the request comes
    /// back unsent.
    pub fn checkout(&self) -> Option<Box<Upstream>> {
        let mut idle = self.slot().lock().ok()?;
        while let Some(up) = idle.pop() {
            if up.io.is_open() {
                return Some(up);
            }
        }
        None
    }

    /// Puts a connection back after its response has ended.
    pub fn give_back(&self, mut up: Box<Upstream>) {
        if !up.release() {
            return;
        }
        if let Ok(mut idle) = self.slot().lock() {
            if idle.len() < self.max_idle {
                idle.push(up);
            }
        }
    }

    /// Drops this worker's idle connections that the upstream has closed: each is
    /// polled once, with no task to wake.
    pub fn sweep(&self) {
        if let Ok(mut idle) = self.slot().lock() {
            let mut cx = Context::from_waker(Waker::noop());
            idle.retain_mut(|up| up.io.drive(&mut cx) && up.io.is_open());
        }
    }

    /// Opens a stream to the endpoint: TCP, then TLS for an `https://` one, both
    /// within `timeout`.
    pub async fn open(&self, timeout: Duration) -> Result<UpstreamStream, ConnectError> {
        let default_port = if self.tls.is_some() { 443 } else { 80 };
        let addr = format!(
            "{}:{}",
            self.authority.host(),
            self.authority.port_u16().unwrap_or(default_port)
        );
        let deadline = Instant::now() + timeout;
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Refused(e)),
            Err(_) => return Err(ConnectError::Timeout),
        };
        let _ = stream.set_nodelay(true);
        let target = match &self.tls {
            None => return Ok(UpstreamStream::Plain(stream)),
            Some(Ok(t)) => t,
            Some(Err(why)) => return Err(ConnectError::Tls(why.to_string())),
        };
        let handshake = target.connector.connect(target.name.clone(), stream);
        match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(s)) => Ok(UpstreamStream::Tls(Box::new(s))),
            Ok(Err(e)) => Err(ConnectError::Tls(e.to_string())),
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    /// Opens a new connection on this worker.
    pub async fn connect(&self, timeout: Duration) -> Result<Box<Upstream>, ConnectError> {
        let stream = self.open(timeout).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        // boxed: a connection's state is large and moves with every request
        Ok(Box::new(Upstream::new(sender, conn)))
    }
}

/// Every pool, by address. Routes look their endpoints' pools up here when they are
/// built (control plane); requests never do.
#[derive(Debug)]
pub struct Pools {
    map: DashMap<String, Arc<UpstreamPool>>,
    workers: usize,
    max_idle: usize,
    /// For `https://` endpoints.
    tls: TlsClient,
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
            tls: Err(Arc::from("no TLS client configuration")),
        }
    }

    /// How `https://` endpoints are verified ([`super::stream::tls_client`]).
    pub fn with_tls(mut self, tls: TlsClient) -> Self {
        self.tls = tls;
        self
    }

    /// The pool of `authority`, over TLS when `https`.
    pub fn get(&self, authority: &Authority, https: bool) -> Arc<UpstreamPool> {
        let key = format!("{}://{}", if https { "https" } else { "http" }, authority);
        if let Some(p) = self.map.get(&key) {
            return Arc::clone(p.value());
        }
        Arc::clone(
            self.map
                .entry(key)
                .or_insert_with(|| {
                    let tls = https.then(|| tls_target(&self.tls, authority.host()));
                    Arc::new(UpstreamPool::new(
                        authority.clone(),
                        tls,
                        self.workers,
                        self.max_idle,
                    ))
                })
                .value(),
        )
    }

    /// Sweeps the calling worker's idle connections in every pool.
    pub fn sweep(&self) {
        let pools: Vec<Arc<UpstreamPool>> =
            self.map.iter().map(|p| Arc::clone(p.value())).collect();
        for p in pools {
            p.sweep();
        }
    }
}

/// An upstream response body that drives its connection while it is read and
/// returns the connection to the pool when it ends.
pub struct PooledBody {
    inner: Incoming,
    ret: Option<(Box<Upstream>, Arc<UpstreamPool>)>,
    /// The request counted against its endpoint until the body ends.
    held: Option<crate::routing::health::Outstanding>,
}

impl PooledBody {
    pub fn new(inner: Incoming, up: Box<Upstream>, pool: Arc<UpstreamPool>) -> Self {
        let mut b = Self {
            inner,
            ret: Some((up, pool)),
            held: None,
        };
        if b.inner.is_end_stream() {
            b.give_back();
        }
        b
    }

    /// A body whose connection is not pooled (upgrades: driven by its own task).
    pub fn unpooled(inner: Incoming) -> Self {
        Self {
            inner,
            ret: None,
            held: None,
        }
    }

    /// Keeps the request counted against its endpoint until the body ends.
    pub fn holding(mut self, o: crate::routing::health::Outstanding) -> Self {
        if self.ret.is_some() {
            self.held = Some(o);
        }
        self
    }

    fn give_back(&mut self) {
        self.held = None;
        if let Some((up, pool)) = self.ret.take() {
            pool.give_back(up);
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
        let this = &mut *self;
        let inner = &mut this.inner;
        let r = match &mut this.ret {
            Some((up, _)) => {
                let r = up.run(cx, |io, cx| match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Pending => {
                        io.drive(cx);
                        Pin::new(&mut *inner).poll_frame(cx)
                    }
                    ready => ready,
                });
                if r.is_pending() && up.io.conn.is_none() {
                    // the connection is gone: dropping it ends the body
                    this.ret = None;
                    Pin::new(&mut this.inner).poll_frame(cx)
                } else {
                    r
                }
            }
            // not pooled: the connection runs in a task of its own
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        match &r {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.ret = None,
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

/// `GET path` on a connection of its own (not pooled): an answer below 500 passes.
async fn probe_http(pool: &UpstreamPool, path: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let stream = pool.open(timeout).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, pool.host.clone())
        .header(http::header::USER_AGENT, "switchyard-health")
        .body(http_body_util::Empty::new())
        .map_err(|e| format!("bad health path: {e}"))?;
    let answer = tokio::time::timeout_at(deadline, sender.send_request(req)).await;
    driver.abort();
    match answer {
        Ok(Ok(r)) if r.status().as_u16() < 500 => Ok(()),
        Ok(Ok(r)) => Err(format!("{path} answered {}", r.status().as_u16())),
        Ok(Err(e)) => Err(format!("{path}: {e}")),
        Err(_) => Err(format!(
            "{path}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

impl crate::routing::Endpoints for Pools {
    fn probe<'a>(
        &'a self,
        url: &'a str,
        path: Option<&'a str>,
        timeout: Duration,
    ) -> crate::routing::Probe<'a> {
        Box::pin(async move {
            let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
            let authority = uri.authority().ok_or("no host")?.clone();
            let pool = self.get(&authority, uri.scheme_str() == Some("https"));
            match path {
                Some(p) => probe_http(&pool, p, timeout).await,
                None => pool.open(timeout).await.map(drop).map_err(|e| match e {
                    ConnectError::Timeout => {
                        format!("no connection within {} ms", timeout.as_millis())
                    }
                    e => e.to_string(),
                }),
            }
        })
    }

    /// `http://host:port…` or `https://…` → its authority and that endpoint's pool.
    fn endpoint(&self, url: &str) -> Option<(Arc<str>, crate::routing::EndpointHandle)> {
        let uri: http::Uri = url.parse().ok()?;
        let authority = uri.authority()?.clone();
        let https = uri.scheme_str() == Some("https");
        let pool: crate::routing::EndpointHandle = self.get(&authority, https);
        Some((Arc::from(authority.as_str()), pool))
    }
}
