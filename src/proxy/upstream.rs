//! Upstream connection pools: keep-alive HTTP/1.1 connections to each upstream
//! endpoint, one idle list per worker thread.
//!
//! A connection is driven by the request that holds it, inside that request's task:
//! the request head is written from the request straight into the connection's
//! buffer ([`super::h1`]), the answer's head is parsed out of the bytes read, and its
//! body is read by the client connection's task as it writes it out; no second task
//! and no channel per request. Consequently a connection belongs to the worker that
//! opened it and is only reused by that worker. Checkout pops the newest idle
//! connection (LIFO keeps the warm ones warm); the connection goes back when the
//! response body has ended with nothing unread after it. Idle connections are not
//! polled by anyone: a checkout finds out whether the upstream closed one meanwhile
//! (one read that would block; the request is then handed back unsent), and each
//! worker sweeps its idle lists every few seconds so closed sockets do not linger.
//! Locks: one `std::sync::Mutex` per (endpoint, worker), held for a push, a pop or a
//! sweep, never across an `.await`; uncontended, since only its worker touches it.
//!
//! Pools are shared by every route that names the same address, so a pointer move
//! between versions on the same upstream keeps its warm connections.

use super::h1::{self, Chunks, Decoded, Framing, ProtocolError, RequestFraming};
use super::stream::{tls_target, TlsClient, TlsTarget, UpstreamStream};
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use http::uri::Authority;
use http::HeaderValue;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What the gateway sends upstream: the client's body under the size and idle limits.
pub type UpstreamBody = super::body::ClientBody;

/// Why [`Upstream::send`] brought no response head.
pub enum SendFailure {
    /// The connection was closed before the request was written: the request is
    /// whole, and can go on another connection.
    Unsent,
    /// The exchange failed after the request was handed over.
    Failed(UpstreamError),
    /// The deadline passed first.
    TimedOut,
}

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream connection failed: {0}")]
    Io(#[source] std::io::Error),
    /// The upstream closed the connection before a whole response head.
    #[error("upstream closed the connection before answering")]
    Closed,
    /// The upstream closed the connection before the body's announced end.
    #[error("upstream closed the connection in the middle of the body")]
    Truncated,
    #[error("invalid response from upstream: {0}")]
    Protocol(#[source] ProtocolError),
    /// The client's request body failed while it was being sent (its error inside).
    #[error("the request body failed: {0}")]
    Body(#[source] BoxError),
}

/// Why a new upstream connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Refused(std::io::Error),
    Timeout,
    /// The TLS handshake failed, or the endpoint cannot have one (the reason).
    Tls(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) => write!(f, "connect failed: {e}"),
            Self::Timeout => f.write_str("connect timed out"),
            Self::Tls(why) => write!(f, "TLS handshake failed: {why}"),
        }
    }
}

/// How much is read at a time to start with; a connection whose reads fill the
/// buffer reads twice as much next time, up to [`MAX_READ_SIZE`], and half as much
/// again after reads that fill less than a quarter (as hyper's adaptive reads).
/// Reading into a larger buffer costs nothing more (it is not zeroed), but a larger
/// buffer per connection is more memory touched per request.
const READ_SIZE: usize = 8 * 1024;
/// At most, when a body's announced length is larger.
const MAX_READ_SIZE: usize = 64 * 1024;

/// One keep-alive connection to an upstream, driven by whoever holds it: the
/// request that sends on it, then its response body until the body ends.
pub struct Upstream {
    io: UpstreamStream,
    /// Bytes read and not yet taken: the rest of a response.
    rd: BytesMut,
    /// The request head, and body pieces, on their way out (kept for its capacity).
    wr: Vec<u8>,
    /// How much the next read asks for, at least ([`READ_SIZE`]).
    read_size: usize,
    /// A request has been sent on it (a new connection takes its first one at once).
    used: bool,
    /// The response-head deadline of the request in flight: one timer per connection,
    /// moved forward for each request (a later deadline only updates the timer's
    /// entry; the runtime's timer wheel is touched when the old one comes due).
    timer: Option<Pin<Box<Sleep>>>,
    /// The field names of the last answer, reused by the next one's head.
    names: h1::NameCache,
}

/// The request side of one exchange while it is being written.
struct Outgoing {
    framing: RequestFraming,
    /// How much of `wr` is written.
    written: usize,
    /// The head has been written whole: the request can no longer be handed back.
    head_out: bool,
    /// The body has ended and its last bytes are in `wr`.
    body_done: bool,
}

impl Upstream {
    fn new(io: UpstreamStream) -> Self {
        Self {
            io,
            rd: BytesMut::new(),
            wr: Vec::new(),
            read_size: READ_SIZE,
            used: false,
            timer: None,
            names: h1::NameCache::default(),
        }
    }

    /// Whether an idle connection is still usable: no byte and no end arrived while
    /// it was idle (one read that would block, with nobody to wake).
    fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.rd.clear();
        self.rd.reserve(READ_SIZE);
        matches!(
            poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.rd),
            Poll::Pending
        )
    }

    /// Reads what the socket has into `rd`: `Ok(false)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<std::io::Result<bool>> {
        let want = want.clamp(self.read_size, MAX_READ_SIZE);
        if self.rd.capacity() - self.rd.len() < want / 2 {
            self.rd.reserve(want);
        }
        let offered = self.rd.capacity() - self.rd.len();
        let n = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rd))?;
        if n >= offered {
            self.read_size = (self.read_size * 2).min(MAX_READ_SIZE);
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(READ_SIZE);
        }
        Poll::Ready(Ok(n > 0))
    }

    /// Sends one request and waits, until `deadline`, for the response head, writing
    /// the request body meanwhile. The request is borrowed, not taken: it stays where
    /// the caller keeps it (moving it into this future would copy it into every
    /// connection's request state), and one the connection could not take
    /// ([`SendFailure::Unsent`]) can go on another.
    pub async fn send(
        &mut self,
        req: &mut Request<UpstreamBody>,
        host: &HeaderValue,
        added: &super::Added<'_>,
        deadline: Instant,
    ) -> Result<h1::Head, SendFailure> {
        if self.used && !self.still_open() {
            return Err(SendFailure::Unsent);
        }
        self.used = true;
        self.rd.clear();
        self.wr.clear();
        let framing = h1::request_framing(req);
        h1::encode_head(&mut self.wr, req, host, added, framing);
        let mut out = Outgoing {
            framing,
            written: 0,
            head_out: false,
            body_done: framing == RequestFraming::Empty,
        };
        let head_len = self.wr.len();
        let mut timer = match self.timer.take() {
            Some(mut t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        // Err(None): the deadline passed
        let r = std::future::poll_fn(|cx| {
            if let Err(e) = self.poll_write_request(cx, req, &mut out, head_len) {
                return Poll::Ready(Err(Some(e)));
            }
            if let Poll::Ready(r) = self.poll_head(cx, req.method()) {
                return Poll::Ready(r.map_err(Some));
            }
            timer.as_mut().poll(cx).map(|()| Err(None))
        })
        .await;
        self.timer = Some(timer);
        match r {
            Ok(mut head) => {
                if !out.body_done || out.written < self.wr.len() {
                    // answered before the whole request was sent: the rest never will
                    // be, so the connection cannot carry another request
                    head.keep_alive = false;
                }
                Ok(head)
            }
            // nothing of the request went out whole: it can go elsewhere
            Err(Some(UpstreamError::Io(_))) if !out.head_out => Err(SendFailure::Unsent),
            Err(Some(e)) => Err(SendFailure::Failed(e)),
            Err(None) => Err(SendFailure::TimedOut),
        }
    }

    /// Writes what can be written of the request: the rest of `wr`, then body pieces
    /// as the client's body yields them.
    fn poll_write_request(
        &mut self,
        cx: &mut Context<'_>,
        req: &mut Request<UpstreamBody>,
        out: &mut Outgoing,
        head_len: usize,
    ) -> Result<(), UpstreamError> {
        loop {
            while out.written < self.wr.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wr[out.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Err(UpstreamError::Io(std::io::ErrorKind::WriteZero.into()))
                    }
                    Poll::Ready(Ok(n)) => {
                        out.written += n;
                        if out.written >= head_len {
                            out.head_out = true;
                        }
                    }
                    Poll::Ready(Err(e)) => return Err(UpstreamError::Io(e)),
                    Poll::Pending => return Ok(()),
                }
            }
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Err(UpstreamError::Io(e));
            }
            if out.body_done {
                return Ok(());
            }
            self.wr.clear();
            out.written = 0;
            match Pin::new(req.body_mut()).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Some(Err(e))) => return Err(UpstreamError::Body(e)),
                Poll::Ready(Some(Ok(frame))) => {
                    // trailers are not forwarded (the `trailer` field that would announce
                    // them is hop-by-hop)
                    if let Ok(data) = frame.into_data() {
                        match out.framing {
                            RequestFraming::Chunked => h1::encode_chunk(&mut self.wr, &data),
                            _ => self.wr.extend_from_slice(&data),
                        }
                    }
                }
                Poll::Ready(None) => {
                    if out.framing == RequestFraming::Chunked {
                        self.wr.extend_from_slice(h1::LAST_CHUNK);
                    }
                    out.body_done = true;
                }
            }
        }
    }

    /// Reads until a whole response head is in.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &http::Method,
    ) -> Poll<Result<h1::Head, UpstreamError>> {
        loop {
            if !self.rd.is_empty() {
                match h1::parse_head(&mut self.rd, method, &mut self.names) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(UpstreamError::Protocol(e))),
                }
            }
            match self.poll_fill(cx, READ_SIZE) {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => return Poll::Ready(Err(UpstreamError::Closed)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(UpstreamError::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
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
        self.slot().lock().ok()?.pop()
    }

    /// Puts a connection back after its response has ended.
    pub fn give_back(&self, up: Box<Upstream>) {
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
            idle.retain_mut(|up| up.still_open());
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
        // boxed: it moves with every request, and with the body into the response
        Ok(Box::new(Upstream::new(stream)))
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

/// An upstream response body, read off its connection by the client connection's task
/// as it writes it out; the connection goes back to the pool when the body has ended
/// with nothing after it and the upstream keeps it open.
pub struct PooledBody {
    state: BodyState,
    /// The request counted against its endpoint until the body ends.
    held: Option<crate::routing::health::Outstanding>,
}

enum BodyState {
    /// Nothing (more) to send.
    Done,
    /// The whole body, read with the head (the connection is back in the pool).
    Whole(Bytes),
    /// Still to be read from the connection.
    Reading(Reading),
    /// An upgrade's answer, read by hyper's client (WebSocket handshakes).
    Hyper(Incoming),
}

struct Reading {
    up: Box<Upstream>,
    pool: Arc<UpstreamPool>,
    decoder: Decoder,
    keep_alive: bool,
}

enum Decoder {
    /// Bytes left.
    Length(u64),
    Chunked(Chunks),
    /// Until the upstream closes.
    Close,
}

impl PooledBody {
    /// The body of `head`, read from `up` (whose buffer holds what came after the
    /// head). A body already read whole, or an empty one, frees the connection now.
    pub fn new(head: &h1::Head, mut up: Box<Upstream>, pool: Arc<UpstreamPool>) -> Self {
        let keep_alive = head.keep_alive;
        let decoder = match head.framing {
            Framing::Empty => Decoder::Length(0),
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunks::Size),
            Framing::Close => Decoder::Close,
        };
        let state = match decoder {
            Decoder::Length(n) if n <= up.rd.len() as u64 => {
                // in the buffer already: the usual small answer
                let whole = up.rd.split_to(n as usize).freeze();
                if keep_alive && up.rd.is_empty() {
                    pool.give_back(up);
                }
                if whole.is_empty() {
                    BodyState::Done
                } else {
                    BodyState::Whole(whole)
                }
            }
            decoder => BodyState::Reading(Reading {
                up,
                pool,
                decoder,
                keep_alive,
            }),
        };
        Self { state, held: None }
    }

    /// A body whose connection is not pooled (upgrades: driven by its own task).
    pub fn unpooled(inner: Incoming) -> Self {
        Self {
            state: BodyState::Hyper(inner),
            held: None,
        }
    }

    /// Keeps the request counted against its endpoint until the body ends.
    pub fn holding(mut self, o: crate::routing::health::Outstanding) -> Self {
        if matches!(self.state, BodyState::Reading(_)) {
            self.held = Some(o);
        }
        self
    }

    /// The body has ended: the connection goes back when it can carry another request.
    fn finish(&mut self) {
        self.held = None;
        if let BodyState::Reading(r) = std::mem::replace(&mut self.state, BodyState::Done) {
            if r.keep_alive && r.up.rd.is_empty() {
                r.pool.give_back(r.up);
            }
        }
    }
}

impl Reading {
    /// The next piece of the body; `None` at its end.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        let up = &mut self.up;
        loop {
            let want = match &mut self.decoder {
                Decoder::Length(0) => return Poll::Ready(None),
                Decoder::Length(left) => {
                    if !up.rd.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(up.rd.len());
                        *left -= n as u64;
                        return Poll::Ready(Some(Ok(up.rd.split_to(n).freeze())));
                    }
                    usize::try_from(*left).unwrap_or(usize::MAX)
                }
                Decoder::Chunked(c) => match c.decode(&mut up.rd) {
                    Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(d))),
                    Ok(Decoded::End) => return Poll::Ready(None),
                    Ok(Decoded::More) => READ_SIZE,
                    Err(e) => return Poll::Ready(Some(Err(UpstreamError::Protocol(e)))),
                },
                Decoder::Close => {
                    if !up.rd.is_empty() {
                        return Poll::Ready(Some(Ok(up.rd.split().freeze())));
                    }
                    MAX_READ_SIZE
                }
            };
            match up.poll_fill(cx, want) {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => {
                    return Poll::Ready(match self.decoder {
                        Decoder::Close => None,
                        _ => Some(Err(UpstreamError::Truncated)),
                    })
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(UpstreamError::Io(e)))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match &mut this.state {
            BodyState::Done => Poll::Ready(None),
            BodyState::Whole(_) => {
                let BodyState::Whole(b) = std::mem::replace(&mut this.state, BodyState::Done)
                else {
                    return Poll::Ready(None);
                };
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            BodyState::Reading(r) => match r.poll_next(cx) {
                Poll::Ready(Some(Ok(d))) => {
                    if matches!(r.decoder, Decoder::Length(0)) {
                        this.finish();
                    }
                    Poll::Ready(Some(Ok(Frame::data(d))))
                }
                Poll::Ready(None) => {
                    this.finish();
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => {
                    // the connection is in an unknown state: it closes
                    this.state = BodyState::Done;
                    this.held = None;
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Pending => Poll::Pending,
            },
            BodyState::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            BodyState::Done => true,
            BodyState::Whole(_) => false,
            BodyState::Reading(r) => matches!(r.decoder, Decoder::Length(0)),
            BodyState::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Whole(b) => SizeHint::with_exact(b.len() as u64),
            BodyState::Reading(Reading {
                decoder: Decoder::Length(n),
                ..
            }) => SizeHint::with_exact(*n),
            BodyState::Reading(_) => SizeHint::default(),
            BodyState::Hyper(b) => b.size_hint(),
        }
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
