//! The data plane: authenticate the deployment token, resolve the environment's live
//! version, forward to one of its upstreams, stream the answer back.
//!
//! Per request: the token found in the worker's cache of verified tokens (a keyed
//! SipHash; SHA-256 and one `DashMap` read the first time), one `ArcSwap` load
//! (slot → route), the endpoint picked (two random choices by outstanding requests
//! when a version has several; [`crate::routing::health`]), and the upstream call on a
//! connection of the worker's own pool ([`upstream`], driven inside the request's
//! task). The upstream head is written by the gateway ([`h1`]): the client's fields as
//! hyper parsed them, minus the hop-by-hop ones (removed from the map, only when
//! present), `host`, `authorization` and the fields the gateway sets, which
//! ([`Added`]) are written after them; no map entry is inserted for them. The answer's
//! head is parsed with httparse and its body framed by [`h1`] as well. WebSocket
//! handshakes and health probes use hyper's client. No lock is held across an
//! `.await`; nothing grows with the number of agents, versions or tokens. A request
//! body up to `[proxy] request_buffer_bytes` is read whole first ([`body`]).
//!
//! Knows nothing of SQL or of the admin API; reads only the routing table.

pub mod access;
pub mod body;
pub mod error;
pub mod h1;
pub mod headers;
pub mod relay;
pub mod stream;
pub mod upstream;

use crate::config::{Limits, ProxyConfig, UnderscoreFields};
use crate::domain::now_ms;
use crate::envelope::{bearer, error_json, request_id_of};
use crate::routing::{Pinned, Route, RoutingTable, Slot, Target, Which};
use crate::telemetry::{
    Counted, Metrics, RetryReason, RouteMetrics, UpstreamErrorKind, UpstreamEvent, AUTH_REASONS,
};
use access::{AccessLog, Entry};
use body::{BodyBroken, BodyTimeout, BodyTooLarge, ClientBody};
use bytes::Bytes;
use error::ProxyError;
use headers::*;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use upstream::{BoxError, ConnectError, PooledBody, SendFailure, UpstreamError, UpstreamPool};

/// What the client receives: the upstream's body streamed, or a gateway answer.
pub type ResponseBody = Either<PooledBody, Full<Bytes>>;

/// Facts about one client connection, computed once when it is accepted.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's IP address, as the `x-forwarded-for` value.
    pub forwarded_for: HeaderValue,
    /// `http` or `https`.
    pub proto: HeaderValue,
    /// Held by everything serving this connection, upgraded streams included: the
    /// worker's drain waits until every holder is gone or the deadline passes.
    pub hold: Option<tokio::sync::mpsc::Sender<()>>,
    /// The gateway's metrics, held once per connection: a request's accounting reaches
    /// them through its connection, whose reference count only that connection's
    /// requests write (a clone of the process-wide `Arc` per request would be a write
    /// to one shared cache line by every request of every worker).
    pub metrics: Arc<Metrics>,
}

impl ConnInfo {
    pub fn new(peer: std::net::SocketAddr, tls: bool, metrics: Arc<Metrics>) -> Self {
        Self {
            forwarded_for: HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
            hold: None,
            metrics,
        }
    }
}

/// What the proxy learned about a request on its way: for metrics and the access log.
pub struct Trace {
    started: Instant,
    slot: Option<Arc<Slot>>,
    route: Option<Arc<Route>>,
    /// Which of the route's targets serves the request.
    which: Which,
    pinned: Pinned,
    upstream: Option<Arc<str>>,
    method: Option<http::Method>,
    /// The client connection must end after this answer (HTTP/1.x framing errors).
    close: bool,
    /// An SSE response's ticket with its slot, for the relay.
    sse: Option<Arc<crate::routing::streams::StreamTicket>>,
}

/// Completes a request's accounting when its response body ends or is dropped: the
/// duration histogram, the streams gauge and the access-log event.
struct Finish {
    status: StatusCode,
    /// Set when the access log is on.
    request_id: Option<HeaderValue>,
    log: AccessLog,
    open: OpenRequest,
    /// The response body counted as a stream.
    stream: Counted,
    trace: Trace,
    bytes: u64,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let elapsed = self.trace.started.elapsed();
        let metrics = &self.open.conn.metrics;
        metrics.load.close_stream(self.stream);
        let t = &self.trace;
        if let (Some(route), Some(slot)) = (&t.route, &t.slot) {
            route
                .metrics_of(t.which, metrics, slot)
                .record_duration(elapsed);
        }
        if let Some(rid) = &self.request_id {
            let slot = self.trace.slot.as_deref();
            let version = self
                .trace
                .route
                .as_ref()
                .and_then(|r| r.served(self.trace.which))
                .and_then(|t| t.label.to_str().ok());
            self.log.emit(&Entry {
                request_id: rid.to_str().unwrap_or("-"),
                method: self.trace.method.as_ref().map_or("-", |m| m.as_str()),
                agent: slot.map_or("-", |s| s.agent.as_str()),
                environment: slot.map_or("-", |s| s.environment.as_str()),
                version: version.unwrap_or("-"),
                status: self.status.as_u16(),
                duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                upstream: self.trace.upstream.as_deref().unwrap_or("-"),
                bytes: self.bytes,
                pinned: match self.trace.pinned {
                    Pinned::No => None,
                    Pinned::Evaluation => Some("evaluation"),
                    Pinned::Session => Some("session"),
                },
            });
        }
    }
}

/// One client request counted open (in its worker's shard), from its head until
/// dropped with the end of its response body (or with the handler, if the client
/// goes away first).
struct OpenRequest {
    /// The request's connection, for the metrics ([`ConnInfo::metrics`]).
    conn: Arc<ConnInfo>,
    counted: Counted,
}

impl OpenRequest {
    /// Counts the request; `false` beside it when it is over `limit`.
    fn open(conn: &Arc<ConnInfo>, limit: usize) -> (Self, bool) {
        let (counted, admitted) = conn.metrics.load.open_request(limit);
        let conn = Arc::clone(conn);
        (Self { conn, counted }, admitted)
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.conn.metrics.load.close_request(self.counted);
    }
}

/// An upgraded connection counted as a stream while its bytes are copied.
struct OpenStream(Arc<Metrics>, Counted);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.load.close_stream(self.1);
    }
}

/// The response body as the client receives it: the upstream's or ours, measured.
pub struct MeteredBody {
    inner: ResponseBody,
    finish: Option<Finish>,
    /// For an SSE response: ends it with the hint when its version leaves.
    relay: Option<Box<relay::SseRelay>>,
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = match this.relay.as_mut() {
            None => std::pin::Pin::new(&mut this.inner).poll_frame(cx),
            Some(r) => r.poll(std::pin::Pin::new(&mut this.inner), cx),
        };
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let (Some(d), Some(f)) = (frame.data_ref(), this.finish.as_mut()) {
                    f.bytes += d.len() as u64;
                }
            }
            std::task::Poll::Ready(_) => this.finish = None,
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pub struct Proxy {
    table: Arc<RoutingTable>,
    limits: Limits,
    config: ProxyConfig,
    access_log: AccessLog,
    /// `[routing] session_cookie` (empty: sessions only by header).
    session_cookie: String,
}

/// The cookie a session pin travels in when sessions travel in cookies.
const PIN_COOKIE: &str = "swy_pin";

/// The target a request chose and the session pin to send back (text, lifetime ms).
#[derive(Debug, Default)]
struct Chosen {
    which: Which,
    pinned: Pinned,
    pin: Option<(String, i64)>,
}

/// The value of cookie `name` in one `cookie` field (`a=1; b=2`, RFC 6265 §5.4).
fn cookie_value<'a>(field: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    field.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
    })
}

impl Proxy {
    pub fn new(
        table: Arc<RoutingTable>,
        limits: Limits,
        config: ProxyConfig,
        access_log: AccessLog,
    ) -> Self {
        Self {
            table,
            limits,
            config,
            access_log,
            session_cookie: String::new(),
        }
    }

    /// Reads session keys and pins from this cookie too (`[routing] session_cookie`).
    pub fn with_session_cookie(mut self, name: &str) -> Self {
        self.session_cookie = name.to_owned();
        self
    }

    /// Serves one client request; never fails (errors become envelopes).
    ///
    /// The request is moved once, into this future's state, and [`Self::forward`],
    /// [`Self::send`] and the upstream connection borrow it there. Each move of it
    /// (264 bytes; 336 with its body wrapped) is a copy into the connection's request
    /// state, which is cold when many connections take turns. For the same reason
    /// these are not `async fn`s: an `async fn` keeps its by-value arguments twice in
    /// its state (moved from the argument into a local when it starts); an
    /// `async move` block uses them where they are. Together: 24,719 -> 24,006
    /// instructions per request, about 30 % fewer L1 write misses (README, Performance).
    #[allow(clippy::manual_async_fn)]
    pub fn handle<'a>(
        &'a self,
        conn: &'a Arc<ConnInfo>,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Response<MeteredBody>> + 'a {
        async move {
            // the request stays here, in this future's state: the levels below borrow it
            let (limit, idle) = (self.limits.max_body_bytes, self.limits.body_read_timeout());
            let mut req = req.map(|body| ClientBody::new(body, limit, idle));
            let metrics = &conn.metrics;
            let (open, admitted) = OpenRequest::open(conn, self.limits.max_in_flight);
            let mut fields = Fields::of(
                &req,
                self.config.underscore_fields == UnderscoreFields::DropAll,
            );
            let request_id = request_id_of(fields.request_id.as_ref());
            let mut trace = Trace {
                started: Instant::now(),
                slot: None,
                route: None,
                which: Which::Main,
                pinned: Pinned::No,
                upstream: None,
                method: self.access_log.is_on().then(|| req.method().clone()),
                close: false,
                sse: None,
            };
            let forwarded = if admitted {
                self.forward(conn, &mut req, &mut fields, &request_id, &mut trace)
                    .await
            } else {
                metrics.overload.increment(1);
                Err(ProxyError::Overloaded)
            };
            // the access log's copy; otherwise the id itself goes into the answer
            let logged_id = self.access_log.is_on().then(|| request_id.clone());
            let resp = match forwarded {
                Ok(mut r) => {
                    r.headers_mut().insert(X_REQUEST_ID, request_id);
                    r
                }
                Err(e) => {
                    if let Some(i) = e
                        .auth_reason()
                        .and_then(|r| AUTH_REASONS.iter().position(|x| *x == r))
                    {
                        metrics.auth_failures.increment(i);
                    }
                    let label = trace
                        .route
                        .as_ref()
                        .and_then(|r| r.served(trace.which))
                        .map(|t| &t.label);
                    let mut r = error_response(e, &request_id, label);
                    // a body left half read cannot be skipped safely: end the connection
                    if trace.close || e.is_client_side() {
                        r.headers_mut()
                            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    if e == ProxyError::Overloaded {
                        r.headers_mut()
                            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                    }
                    r
                }
            };
            let status = resp.status();
            if let Some(slot) = &trace.slot {
                slot.requests.fetch_add(1, Ordering::Relaxed);
                if status.is_server_error() {
                    slot.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let (Some(route), Some(slot)) = (&trace.route, &trace.slot) {
                route.metrics_of(trace.which, metrics, slot).count(status);
                if let Some(bake) = route.bake_of(trace.which) {
                    let now = now_ms();
                    if bake.active(now) {
                        let ttfb =
                            u64::try_from(trace.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        bake.record(now, status.is_server_error(), ttfb);
                    }
                }
            }
            let (parts, body) = resp.into_parts();
            let relay = trace
                .sse
                .take()
                .map(|t| Box::new(relay::SseRelay::new(t, Arc::clone(metrics))));
            let finish = Finish {
                status,
                request_id: logged_id,
                log: self.access_log,
                open,
                stream: metrics.load.open_stream(),
                trace,
                bytes: 0,
            };
            Response::from_parts(
                parts,
                MeteredBody {
                    inner: body,
                    finish: Some(finish),
                    relay,
                },
            )
        }
    }

    /// The answer on a connection over the connection limit: 503 `overloaded`.
    pub fn overloaded<B>(&self, req: &Request<B>) -> Response<MeteredBody> {
        let request_id = request_id_of(req.headers().get(X_REQUEST_ID));
        let mut r = error_response(ProxyError::Overloaded, &request_id, None);
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        r.map(|inner| MeteredBody {
            inner,
            finish: None,
            relay: None,
        })
    }

    /// Checks the request, picks the target and forwards it (see [`Self::handle`] for
    /// why this is not an `async fn`).
    #[allow(clippy::manual_async_fn)]
    fn forward<'a>(
        &'a self,
        conn: &'a ConnInfo,
        req: &'a mut Request<ClientBody>,
        fields: &'a mut Fields,
        request_id: &'a HeaderValue,
        trace: &'a mut Trace,
    ) -> impl std::future::Future<Output = Result<Response<ResponseBody>, ProxyError>> + 'a {
        async move {
            if fields.head_size > self.limits.max_header_bytes {
                return Err(ProxyError::HeadersTooLarge);
            }
            if req.version() <= Version::HTTP_11 {
                // the upstream might frame this request differently: refuse it and end the
                // connection, so no byte of it can reach the next request
                if !fields.framing_is_unambiguous(req.version()) {
                    trace.close = true;
                    return Err(ProxyError::BadRequest);
                }
                if fields.hop & TRANSFER_ENCODING_BIT != 0 {
                    if let Err(e) = check_transfer_coding(req.headers()) {
                        trace.close = true;
                        return Err(match e {
                            CodingError::Invalid => ProxyError::BadRequest,
                            CodingError::Unsupported => ProxyError::NotImplemented,
                        });
                    }
                }
            }
            if fields
                .host
                .as_ref()
                .is_some_and(|h| !valid_host(h.as_bytes()))
            {
                // RFC 9112 §3.2: an invalid host is answered 400
                trace.close = true;
                return Err(ProxyError::BadRequest);
            }
            if fields.authorizations > 1 {
                // two credentials: which one would the upstream believe?
                return Err(ProxyError::BadRequest);
            }
            let token = fields
                .authorization
                .as_ref()
                .and_then(|v| bearer(v.as_bytes()))
                .ok_or(ProxyError::MissingToken)?;
            let slot = self.table.authenticate_token(token)?;
            if let Some(want) = &fields.environment {
                if want != slot.environment_header {
                    return Err(ProxyError::WrongEnvironment);
                }
            }
            let route = slot.route();
            let mut session_pin = None;
            if fields.control != 0 || route.choice.is_some() {
                // a canary, sticky sessions or a pin: rare, and out of line
                let chosen =
                    self.choose(&route, &slot, token, fields, request_id, req.headers())?;
                trace.which = chosen.which;
                trace.pinned = chosen.pinned;
                session_pin = chosen.pin;
                if chosen.pinned != Pinned::No {
                    let i = usize::from(chosen.pinned == Pinned::Session);
                    conn.metrics.pinned.increment(i);
                }
                if fields.control & CONTROL_PINS != 0 {
                    req.headers_mut().remove(X_SWITCHYARD_PIN_VERSION);
                    req.headers_mut().remove(X_SWITCHYARD_SESSION_PIN);
                }
            }
            let (agent_header, environment_header) =
                (slot.agent_header.clone(), slot.environment_header.clone());
            let route_metrics = route.metrics_of(trace.which, &conn.metrics, &slot);
            trace.slot = Some(slot);
            trace.route = Some(Arc::clone(&route));
            let target = route.served(trace.which).ok_or(ProxyError::NotDeployed)?;
            if target.stopped {
                return Err(ProxyError::VersionStopped);
            }
            if target.inject_missing.is_some() {
                return Err(secret_unavailable(target));
            }
            if fields
                .content_length()
                .is_some_and(|n| n > self.limits.max_body_bytes)
            {
                return Err(ProxyError::BodyTooLarge);
            }

            // both fields are hop-by-hop: a handshake is rare, and checked only then
            let websocket = fields.hop & (CONNECTION_BIT | UPGRADE_BIT)
                == CONNECTION_BIT | UPGRADE_BIT
                && req.version() == Version::HTTP_11
                && is_websocket_upgrade(req.headers());
            // an absolute-form target's authority wins over `host` (RFC 9112 §3.2.2)
            let forwarded_host = match req.uri().authority() {
                Some(a) => HeaderValue::from_str(a.as_str()).ok(),
                None => fields.host.take(),
            };
            let h = req.headers_mut();
            strip_hop_by_hop_bits(h, fields.hop, websocket);
            if fields.underscored {
                drop_underscored(h, self.config.underscore_fields);
            }
            // the fields the gateway sets are written after the client's when the head is
            // encoded (`host` and `authorization` of the client's are left out there)
            let mut added = Added {
                replace: fields.sent,
                authorization_in_map: false,
                fields: [None, None, None, None, None, None, None],
            };
            if self.config.trust_forwarded {
                fields.append_hop(h, conn, forwarded_host);
                added.replace &= !FORWARDED_BITS;
            } else {
                if fields.forwarded {
                    // the client's `forwarded` is replaced like its x-forwarded-* (rare)
                    match forwarded_element(
                        &conn.forwarded_for,
                        &conn.proto,
                        forwarded_host.as_ref(),
                    ) {
                        Some(v) => h.insert(http::header::FORWARDED, v),
                        None => h.remove(http::header::FORWARDED),
                    };
                }
                added.fields[SET_FORWARDED_FOR] = Some(&conn.forwarded_for);
                added.fields[SET_FORWARDED_PROTO] = Some(&conn.proto);
                added.fields[SET_FORWARDED_HOST] = forwarded_host.as_ref();
            }
            added.fields[SET_REQUEST_ID] = Some(request_id);
            added.fields[SET_AGENT] = Some(&agent_header);
            added.fields[SET_ENVIRONMENT] = Some(&environment_header);
            added.fields[SET_VERSION] = Some(&target.label);
            if !target.inject.is_empty() {
                // an injected field may be `authorization`: the client's goes first here
                h.remove(AUTHORIZATION);
                added.authorization_in_map = true;
                for (name, value) in target.inject.iter() {
                    // replaces whatever the client sent under that name
                    h.insert(name, value.clone());
                }
            }

            let upstream = if websocket {
                // boxed: the rare path must not grow every request's future
                let req = std::mem::replace(req, Request::new(ClientBody::empty()));
                Box::pin(self.websocket(conn, req, &added, route_metrics, target, trace)).await
            } else {
                self.send(req, &added, route_metrics, target, trace).await
            };
            // upstream failures were counted where they happened, once each; a client's
            // own body failing is not the upstream's error and was not counted
            let upstream = upstream.map_err(|(e, _)| e)?;
            route_metrics.record_first_byte(trace.started.elapsed());

            let (mut parts, body) = upstream.into_parts();
            if relay::is_event_stream(&parts.headers) {
                trace.sse = trace.slot.as_ref().map(|s| s.streams.open(target.version));
            }
            // (hop-by-hop fields were left out of the answer's map by `send` and
            // `websocket`)
            // (`x-request-id` is set by `handle`, which owns the id)
            parts
                .headers
                .insert(X_SWITCHYARD_VERSION, target.label.clone());
            if let Some(pin) = session_pin {
                self.attach_pin(&mut parts.headers, pin);
            }
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
    }

    /// Which of the route's targets serves this request: the version an evaluation pin
    /// names (with the token's `pin` scope), else the one a valid session pin names,
    /// else the canary or the environment's version by the session's bucket. With
    /// sticky sessions and a session key, the pin to send back.
    #[cold]
    fn choose(
        &self,
        route: &Route,
        slot: &Slot,
        token: &[u8],
        fields: &Fields,
        request_id: &HeaderValue,
        headers: &HeaderMap,
    ) -> Result<Chosen, ProxyError> {
        use crate::domain::release::{canary_bucket, in_canary};
        let mut chosen = Chosen::default();
        if let Some(v) = &fields.pin_version {
            if !self.table.token_may_pin(token) {
                return Err(ProxyError::PinNotAllowed);
            }
            let n = v
                .to_str()
                .ok()
                .and_then(|s| s.strip_prefix('v').unwrap_or(s).parse::<u32>().ok())
                .ok_or(ProxyError::PinUnavailable)?;
            let e = route.pin(n).ok_or(ProxyError::PinUnavailable)?;
            chosen.which = e.which;
            chosen.pinned = Pinned::Evaluation;
            return Ok(chosen);
        }
        let Some(choice) = route.choice.as_deref() else {
            return Ok(chosen);
        };
        let (agent, env) = (slot.agent.as_str(), slot.environment.as_str());
        let cookie = |name: &str| -> Option<&[u8]> {
            if name.is_empty() {
                return None;
            }
            headers
                .get_all(http::header::COOKIE)
                .iter()
                .find_map(|v| cookie_value(v.as_bytes(), name.as_bytes()))
        };
        let session = fields
            .session
            .as_ref()
            .map(HeaderValue::as_bytes)
            .or_else(|| cookie(&self.session_cookie));
        let key = choice.sticky_ttl_ms.and(self.table.pin_key());
        let now = now_ms();
        if let Some(key) = &key {
            let presented = fields
                .session_pin
                .as_ref()
                .map(HeaderValue::as_bytes)
                .or_else(|| {
                    if self.session_cookie.is_empty() {
                        None
                    } else {
                        cookie(PIN_COOKIE)
                    }
                });
            let valid = presented
                .and_then(|t| key.verify(agent, env, t))
                .filter(|p| p.expires_at > now)
                .and_then(|p| route.pin(p.version).filter(|e| p.revision >= e.released_at));
            if let Some(e) = valid {
                chosen.which = e.which;
                chosen.pinned = Pinned::Session;
            }
        }
        if chosen.pinned == Pinned::No {
            if let Some((weight, start)) = choice.canary {
                let k = session.unwrap_or_else(|| request_id.as_bytes());
                if in_canary(canary_bucket(agent, env, start, k), weight) {
                    chosen.which = Which::Alt(0);
                }
            }
        }
        if let (Some(key), Some(ttl), Some(_)) = (&key, choice.sticky_ttl_ms, session) {
            if let Some(t) = route.served(chosen.which) {
                let pin = crate::routing::release::Pin {
                    version: t.version,
                    revision: route.revision,
                    expires_at: now.saturating_add(ttl),
                };
                chosen.pin = Some((key.sign(agent, env, pin), ttl));
            }
        }
        Ok(chosen)
    }

    /// Sends a session pin back: the header, and the cookie when sessions travel in one.
    #[cold]
    fn attach_pin(&self, h: &mut HeaderMap, (pin, ttl_ms): (String, i64)) {
        if !self.session_cookie.is_empty() {
            let cookie = format!(
                "{PIN_COOKIE}={pin}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                ttl_ms / 1000
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                h.append(http::header::SET_COOKIE, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&pin) {
            h.insert(X_SWITCHYARD_SESSION_PIN, v);
        }
    }

    /// Sends the request to the version's upstreams: the picked endpoint, a pooled
    /// keep-alive connection or a new one; another endpoint when nothing was sent, or
    /// for GET, HEAD and OPTIONS when the connection closed before any response byte
    /// (within `[upstream] retries` and the version's retry budget); each attempt's
    /// outcome recorded for passive ejection; all within one response-head deadline.
    /// The request is only handed over once a connection is open, so a refusal never
    /// costs the body. (Not an `async fn`: see [`Self::handle`].)
    #[allow(clippy::manual_async_fn)]
    fn send<'a>(
        &'a self,
        req: &'a mut Request<ClientBody>,
        added: &'a Added<'a>,
        metrics: &'a RouteMetrics,
        target: &'a Target,
        trace: &'a mut Trace,
    ) -> impl std::future::Future<
        Output = Result<Response<PooledBody>, (ProxyError, UpstreamErrorKind)>,
    > + 'a {
        async move {
            use UpstreamErrorKind as K;
            Self::upstream_request(req);
            let mut deadline = trace.started + self.limits.upstream_response_timeout();
            if !http_body::Body::is_end_stream(req.body()) {
                // boxed: a request without a body never gets here
                let read = Box::pin(req.body_mut().buffer(self.config.request_buffer_bytes));
                if let Err(e) = read.await {
                    trace.close = true;
                    return Err(
                        classify_body_error(&*e).unwrap_or((ProxyError::BadRequest, K::Protocol))
                    );
                }
                // a known length (read whole, or declared and streamed) goes upstream in
                // canonical form, whatever the client wrote (`005`, `5, 5`, chunked)
                if let Some(n) = http_body::Body::size_hint(req.body()).exact() {
                    req.headers_mut()
                        .insert(CONTENT_LENGTH, HeaderValue::from(n));
                }
                // the upstream's time starts when it is handed the request
                deadline = Instant::now() + self.limits.upstream_response_timeout();
            }
            let policy = self.table.policy();
            let multi = target.endpoints.len() > 1;
            if multi {
                target.budget.request(now_ms());
            }
            // a request that may be sent again after it was sent: GET, HEAD or OPTIONS,
            // its body in memory, and another endpoint to send it to (only then is the
            // head copied)
            let mut spare = if multi && policy.retries > 0 && is_idempotent(req.method()) {
                req.body().replay().map(|b| copy_head(req, b))
            } else {
                None
            };
            let mut tried = 0u32;
            let mut retries = 0u32;
            let mut last = (ProxyError::UpstreamUnavailable, K::Connect);
            loop {
                let mut no_healthy = false;
                let Some(i) = target.pick(tried, &mut no_healthy) else {
                    // the last failure was counted where it happened
                    return Err(last);
                };
                if no_healthy && tried == 0 {
                    self.upstream_event(trace, target, UpstreamEvent::NoHealthy);
                }
                tried |= 1 << i;
                let ep = &target.endpoints[i];
                trace.upstream = Some(Arc::clone(&ep.addr));
                let Some(pool) = ep.handle.downcast_ref::<UpstreamPool>() else {
                    return Err(foreign_endpoint(ep));
                };
                let outstanding = ep.state.begin();
                // why this attempt failed, and whether the request is still unsent (then
                // it is still whole in `req`)
                let (failure, unsent) = loop {
                    let (mut up, fresh) = match pool.checkout() {
                        Some(s) => (s, false),
                        None => {
                            // boxed: opening connections is rare with a warm pool
                            let connect =
                                Box::pin(pool.connect(self.limits.upstream_connect_timeout()));
                            match tokio::time::timeout_at(deadline.into(), connect).await {
                                Ok(Ok(s)) => (s, true),
                                Ok(Err(e)) => {
                                    tracing::warn!(upstream.addr = %ep.addr, error.kind = "connect", error.detail = %e, "upstream connection failed");
                                    metrics.upstream_error(K::Connect);
                                    let why = e.to_string();
                                    let f = match e {
                                        ConnectError::Timeout => {
                                            (ProxyError::UpstreamTimeout, K::Connect)
                                        }
                                        _ => (ProxyError::UpstreamUnavailable, K::Connect),
                                    };
                                    self.failed(trace, target, i, &why);
                                    break (f, true);
                                }
                                Err(_) => {
                                    metrics.upstream_error(K::Timeout);
                                    self.failed(trace, target, i, "no response head in time");
                                    return Err((ProxyError::UpstreamTimeout, K::Timeout));
                                }
                            }
                        }
                    };
                    match up.send(req, &pool.host, added, deadline.into()).await {
                        Ok(head) => {
                            let Ok(pool) = Arc::clone(&ep.handle).downcast::<UpstreamPool>() else {
                                return Err(foreign_endpoint(ep));
                            };
                            if head.parts.status.is_server_error() {
                                self.failed(trace, target, i, head.parts.status.as_str());
                            } else {
                                ep.state.succeeded();
                            }
                            let body = PooledBody::new(&head, up, pool).holding(outstanding);
                            let mut parts = head.parts;
                            if head.connection_names_fields {
                                strip_hop_by_hop(&mut parts.headers, false);
                            }
                            return Ok(Response::from_parts(parts, body));
                        }
                        // an idle connection that the upstream had closed: a new one
                        Err(SendFailure::Unsent) if !fresh => {}
                        Err(SendFailure::Unsent) => {
                            metrics.upstream_error(K::Reset);
                            self.failed(trace, target, i, "connection closed before the request");
                            break ((ProxyError::UpstreamUnavailable, K::Reset), true);
                        }
                        Err(SendFailure::Failed(e)) => {
                            let (err, kind) = classify_upstream_error(&e);
                            if err.is_client_side() {
                                // the client's body broke mid-stream: its error, not the
                                // upstream's (the upstream connection is discarded)
                                tracing::debug!(upstream.addr = %ep.addr, error.code = err.parts().1, error.detail = %error_chain(&e), "client body failed while streaming");
                                return Err((err, kind));
                            }
                            let detail = error_chain(&e);
                            tracing::warn!(upstream.addr = %ep.addr, error.kind = kind.as_str(), error.detail = %detail, "upstream call failed");
                            metrics.upstream_error(kind);
                            self.failed(trace, target, i, &detail);
                            if kind != K::Reset {
                                return Err((err, kind));
                            }
                            // closed before any response byte: a GET may go elsewhere
                            break ((err, kind), false);
                        }
                        Err(SendFailure::TimedOut) => {
                            tracing::warn!(upstream.addr = %ep.addr, error.kind = "timeout", "upstream did not answer in time");
                            metrics.upstream_error(K::Timeout);
                            self.failed(trace, target, i, "no response head in time");
                            return Err((ProxyError::UpstreamTimeout, K::Timeout));
                        }
                    }
                };
                drop(outstanding);
                last = failure;
                // another endpoint: nothing was sent (any method), or the spare copy of a
                // GET, HEAD or OPTIONS whose connection closed before any response byte
                let (next, reason) = if unsent {
                    (None, RetryReason::Unsent)
                } else {
                    match spare.take() {
                        Some(r) => (Some(r), RetryReason::Closed),
                        None => return Err(last),
                    }
                };
                if retries >= policy.retries
                    || !multi
                    || tried.count_ones() as usize >= target.endpoints.len()
                    || !target.budget.try_retry(now_ms(), policy)
                {
                    return Err(last);
                }
                if let Some(next) = next {
                    *req = next;
                }
                if reason == RetryReason::Closed && policy.retries > retries + 1 {
                    // a further retry of a sent request needs a further copy
                    spare = req.body().replay().map(|b| copy_head(req, b));
                }
                retries += 1;
                self.upstream_event(trace, target, UpstreamEvent::Retry(reason));
            }
        }
    }

    /// Records a failed attempt on endpoint `i` of `target`, and the ejection it causes.
    fn failed(&self, trace: &Trace, target: &Target, i: usize, why: &str) {
        if let Some(ms) =
            crate::routing::health::record_failure(target, i, why, self.table.policy())
        {
            let ep = &target.endpoints[i];
            tracing::warn!(upstream.addr = %ep.addr, version = ?target.label, ejected_ms = ms, reason = why, "upstream endpoint ejected");
            self.upstream_event(trace, target, UpstreamEvent::Ejected);
        }
    }

    /// Counts a rare upstream event of `target`'s version.
    fn upstream_event(&self, trace: &Trace, target: &Target, e: UpstreamEvent) {
        let agent = trace.slot.as_ref().map_or("-", |s| s.agent.as_str());
        let version = target.label.to_str().unwrap_or("-");
        self.table.metrics().upstream_event(agent, version, e);
    }

    /// The request as it goes upstream: origin-form target, HTTP/1.1.
    fn upstream_request(req: &mut Request<ClientBody>) {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
        *req.version_mut() = Version::HTTP_11;
    }

    /// A WebSocket handshake: a dedicated upstream connection with upgrades; after a
    /// 101 both upgraded connections are joined and bytes copied both ways.
    async fn websocket(
        &self,
        info: &ConnInfo,
        mut req: Request<ClientBody>,
        added: &Added<'_>,
        metrics: &RouteMetrics,
        target: &Target,
        trace: &mut Trace,
    ) -> Result<Response<PooledBody>, (ProxyError, UpstreamErrorKind)> {
        use UpstreamErrorKind as K;
        let fail = |e: ProxyError, k: K| {
            metrics.upstream_error(k);
            Err((e, k))
        };
        let client_upgrade = hyper::upgrade::on(&mut req);
        let mut no_healthy = false;
        let ep = &target.endpoints[target.pick(0, &mut no_healthy).unwrap_or(0)];
        trace.upstream = Some(Arc::clone(&ep.addr));
        let Some(pool) = ep.handle.downcast_ref::<UpstreamPool>() else {
            return Err(foreign_endpoint(ep));
        };
        let stream = match pool.open(self.limits.upstream_connect_timeout()).await {
            Ok(s) => s,
            Err(ConnectError::Timeout) => return fail(ProxyError::UpstreamTimeout, K::Connect),
            Err(e) => {
                tracing::warn!(upstream.addr = %ep.addr, error.kind = "connect", error.detail = %e, "websocket upstream refused");
                return fail(ProxyError::UpstreamUnavailable, K::Connect);
            }
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            return fail(ProxyError::UpstreamUnavailable, K::Protocol);
        };
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
        added.apply(req.headers_mut(), &pool.host);
        let send = sender.send_request(req);
        let mut resp =
            match tokio::time::timeout(self.limits.upstream_response_timeout(), send).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => return fail(ProxyError::UpstreamUnavailable, K::Reset),
                Err(_) => return fail(ProxyError::UpstreamTimeout, K::Timeout),
            };
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(resp.headers_mut(), switching);
        if switching {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let metrics = Arc::clone(self.table.metrics());
            // the upgraded stream outlives the HTTP connection: it holds the drain
            let hold = info.hold.clone();
            let ticket = trace.slot.as_ref().map(|s| s.streams.open(target.version));
            tokio::spawn(async move {
                let _hold = hold;
                let (Ok(up), Ok(down)) = tokio::join!(upstream_upgrade, client_upgrade) else {
                    return;
                };
                let counted = metrics.load.open_stream();
                let _open = OpenStream(Arc::clone(&metrics), counted);
                let (up, down) = (TokioIo::new(up), TokioIo::new(down));
                match ticket {
                    Some(t) => relay::websocket(up, down, t, metrics).await,
                    None => {
                        let (mut up, mut down) = (up, down);
                        let _ = tokio::io::copy_bidirectional(&mut up, &mut down).await;
                    }
                }
            });
        }
        Ok(resp.map(PooledBody::unpooled))
    }
}

/// The fields the gateway sets on every forwarded request (and `host`, set when the
/// request is sent).
static SET: [HeaderName; 7] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REQUEST_ID,
    X_SWITCHYARD_AGENT,
    X_SWITCHYARD_ENVIRONMENT,
    X_SWITCHYARD_VERSION,
];
const SET_FORWARDED_FOR: usize = 0;
const SET_FORWARDED_PROTO: usize = 1;
const SET_FORWARDED_HOST: usize = 2;
const SET_REQUEST_ID: usize = 3;
const SET_AGENT: usize = 4;
const SET_ENVIRONMENT: usize = 5;
const SET_VERSION: usize = 6;
/// The `x-forwarded-*` fields among [`SET`].
const FORWARDED_BITS: u8 = 0b111;

/// The fields the gateway sets on a forwarded request, in [`SET`]'s order. They are
/// written after the client's own fields when the upstream head is encoded, and the
/// client's `host`, `authorization` and those of [`Added::replace`] are left out
/// there: no map entry is inserted or removed for them on a request's way.
pub struct Added<'a> {
    /// Bits of [`SET`]: the client's fields of these names are not forwarded.
    replace: u8,
    /// The client's `authorization` is already gone from the map, and one there now
    /// is the gateway's (an injected secret): it is forwarded.
    authorization_in_map: bool,
    /// Borrowed from the request's state, its connection and its route: no value is
    /// cloned (no reference count written) to be sent.
    fields: [Option<&'a HeaderValue>; 7],
}

impl<'a> Added<'a> {
    /// Whether the client's field `name` is left out of the upstream head.
    #[inline]
    pub fn drops(&self, name: &HeaderName) -> bool {
        *name == HOST
            || (*name == AUTHORIZATION && !self.authorization_in_map)
            || (self.replace != 0
                && SET
                    .iter()
                    .enumerate()
                    .any(|(i, s)| self.replace & (1 << i) != 0 && s == name))
    }

    /// The fields to write, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&'static HeaderName, &'a HeaderValue)> + '_ {
        SET.iter()
            .zip(self.fields.iter())
            .filter_map(|(n, v)| Some((n, (*v)?)))
    }

    /// Only the request id set (and nothing of the client's replaced but `host` and
    /// `authorization`).
    #[cfg(test)]
    pub fn request_id(id: &'a HeaderValue) -> Self {
        let mut a = Self {
            replace: 0,
            authorization_in_map: false,
            fields: [None, None, None, None, None, None, None],
        };
        a.fields[SET_REQUEST_ID] = Some(id);
        a
    }

    /// The same edits made in a map (a WebSocket handshake goes through hyper's client).
    #[cold]
    fn apply(&self, h: &mut HeaderMap, host: &HeaderValue) {
        if !self.authorization_in_map {
            h.remove(AUTHORIZATION);
        }
        h.insert(HOST, host.clone());
        for (i, name) in SET.iter().enumerate() {
            if self.replace & (1 << i) != 0 {
                h.remove(name);
            }
        }
        for (name, value) in self.fields() {
            h.append(name, value.clone());
        }
    }
}

/// [`Fields::control`]: the client sent a session key.
const CONTROL_SESSION: u8 = 1;
/// [`Fields::control`]: the client sent a pin (removed before forwarding).
const CONTROL_PINS: u8 = 2;

/// What the proxy needs from a request's fields, from one pass over them instead of
/// a hash lookup per name.
#[derive(Default)]
pub struct Fields {
    request_id: Option<HeaderValue>,
    authorization: Option<HeaderValue>,
    authorizations: usize,
    host: Option<HeaderValue>,
    hosts: usize,
    environment: Option<HeaderValue>,
    content_length: Option<HeaderValue>,
    /// [`hop_by_hop_bits`] of the request.
    hop: u8,
    /// Some field name has an `_` in it ([`drop_underscored`] is due).
    underscored: bool,
    /// The client sent a `forwarded` field.
    forwarded: bool,
    /// Which of the gateway's control fields the client sent ([`CONTROL_PINS`], …).
    control: u8,
    session: Option<HeaderValue>,
    session_pin: Option<HeaderValue>,
    pin_version: Option<HeaderValue>,
    /// Which of the fields the gateway sets ([`SET`]) the client sent too: those are
    /// replaced, the others only added (cheaper).
    sent: u8,
    /// The size of the head as the limit counts it: the target plus every field
    /// name and value, 4 bytes of framing each.
    head_size: usize,
}

impl Fields {
    /// One pass over the fields; `every_underscore` looks for `_` in every name (for
    /// `underscore_fields = "drop_all"`), otherwise only in names as long as a
    /// look-alike of a field the gateway controls.
    pub fn of<B>(req: &Request<B>, every_underscore: bool) -> Self {
        let mut f = Fields {
            head_size: req.uri().path_and_query().map_or(1, |p| p.as_str().len()),
            ..Fields::default()
        };
        for (k, v) in req.headers() {
            f.head_size += k.as_str().len() + v.len() + 4;
            if *k == AUTHORIZATION {
                f.authorizations += 1;
                f.authorization.get_or_insert_with(|| v.clone());
            } else if *k == HOST {
                f.hosts += 1;
                f.host.get_or_insert_with(|| v.clone());
            } else if *k == CONTENT_LENGTH {
                f.content_length.get_or_insert_with(|| v.clone());
            } else if let Some(i) = SET.iter().position(|s| s == k) {
                f.sent |= 1 << i;
                if i == SET_REQUEST_ID {
                    f.request_id.get_or_insert_with(|| v.clone());
                } else if i == SET_ENVIRONMENT {
                    f.environment.get_or_insert_with(|| v.clone());
                }
            } else {
                let name = k.as_str();
                let len = name.len();
                if len == 9 {
                    f.forwarded |= *k == http::header::FORWARDED;
                } else if len == 20 || len == 24 {
                    f.control_field(k, v);
                } else {
                    f.hop |= hop_by_hop_bit_of_len(k, len);
                }
                if every_underscore || LOOKALIKE_LENGTHS & (1u32 << len.min(31)) != 0 {
                    f.underscored |= name.as_bytes().contains(&b'_');
                }
            }
        }
        f
    }

    /// Notes a session or pin field (names of 20 or 24 bytes only come here).
    #[cold]
    fn control_field(&mut self, k: &HeaderName, v: &HeaderValue) {
        if *k == X_SWITCHYARD_SESSION {
            self.control |= CONTROL_SESSION;
            self.session.get_or_insert_with(|| v.clone());
        } else if *k == X_SWITCHYARD_SESSION_PIN {
            self.control |= CONTROL_PINS;
            self.session_pin.get_or_insert_with(|| v.clone());
        } else if *k == X_SWITCHYARD_PIN_VERSION {
            self.control |= CONTROL_PINS;
            self.pin_version.get_or_insert_with(|| v.clone());
        }
    }

    /// `[proxy] trust_forwarded`: this hop appended to the client's `x-forwarded-for`
    /// and `forwarded`; the client's `x-forwarded-proto` and `-host` kept when sent.
    fn append_hop(&self, h: &mut HeaderMap, conn: &ConnInfo, host: Option<HeaderValue>) {
        append_hop(h, &SET[SET_FORWARDED_FOR], &conn.forwarded_for);
        if self.forwarded {
            if let Some(e) = forwarded_element(&conn.forwarded_for, &conn.proto, host.as_ref()) {
                append_hop(h, &http::header::FORWARDED, &e);
            }
        }
        if self.sent & (1 << SET_FORWARDED_PROTO) == 0 {
            h.append(&SET[SET_FORWARDED_PROTO], conn.proto.clone());
        }
        if self.sent & (1 << SET_FORWARDED_HOST) == 0 {
            if let Some(v) = host {
                h.append(&SET[SET_FORWARDED_HOST], v);
            }
        }
    }

    /// HTTP/1.x framing a proxy can pass on safely (RFC 9112 §6.3, §3.2): never both
    /// `content-length` and `transfer-encoding`, and exactly one `host` in HTTP/1.1.
    /// (hyper already refuses differing or invalid lengths, a final coding other than
    /// chunked, obs-fold and bare CR.)
    fn framing_is_unambiguous(&self, version: Version) -> bool {
        if self.hop & TRANSFER_ENCODING_BIT != 0 && self.content_length.is_some() {
            return false;
        }
        version != Version::HTTP_11 || self.hosts == 1
    }

    fn content_length(&self) -> Option<u64> {
        self.content_length.as_ref()?.to_str().ok()?.parse().ok()
    }
}

/// GET, HEAD and OPTIONS: sent again on another endpoint when the connection closed
/// before any response byte.
/// A version whose secrets this node cannot supply: logged by name, never forwarded
/// without them.
#[cold]
fn secret_unavailable(target: &Target) -> ProxyError {
    tracing::error!(version = ?target.label, secrets = target.inject_missing.as_deref().unwrap_or(""), "refusing a request: its version's secrets are unavailable");
    ProxyError::SecretUnavailable
}

fn is_idempotent(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// The upstream request again, with `body`: for a retry after the first was sent.
fn copy_head(req: &Request<ClientBody>, body: ClientBody) -> Request<ClientBody> {
    let mut r = Request::new(body);
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An endpoint whose handle is not one of the proxy's pools: the routing table was
/// built without the proxy's [`upstream::Pools`] (a wiring error, never input).
fn foreign_endpoint(ep: &crate::routing::Endpoint) -> (ProxyError, UpstreamErrorKind) {
    tracing::error!(upstream.addr = %ep.addr, "the routing table has no connection pool for this endpoint");
    (ProxyError::UpstreamUnavailable, UpstreamErrorKind::Connect)
}

/// The client-side failure somewhere in an error's chain, if there is one: the
/// client's own body broke, stalled or grew over the limit.
fn classify_body_error(
    e: &(dyn std::error::Error + 'static),
) -> Option<(ProxyError, UpstreamErrorKind)> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        let found = if c.is::<BodyTooLarge>() {
            Some(ProxyError::BodyTooLarge)
        } else if c.is::<BodyTimeout>() {
            Some(ProxyError::RequestTimeout)
        } else {
            c.downcast_ref::<BodyBroken>().map(|b| {
                if b.aborted {
                    ProxyError::ClientAborted
                } else {
                    ProxyError::BadRequest
                }
            })
        };
        if let Some(p) = found {
            return Some((p, UpstreamErrorKind::Protocol));
        }
        cur = c.source();
    }
    None
}

/// Maps an upstream failure to what the client is told and the metric's kind.
fn classify_upstream_error(e: &UpstreamError) -> (ProxyError, UpstreamErrorKind) {
    match e {
        UpstreamError::Body(b) => classify_body_error(&**b)
            .unwrap_or((ProxyError::BadRequest, UpstreamErrorKind::Protocol)),
        UpstreamError::Protocol(_) => {
            (ProxyError::UpstreamUnavailable, UpstreamErrorKind::Protocol)
        }
        UpstreamError::Io(_) | UpstreamError::Closed | UpstreamError::Truncated => {
            (ProxyError::UpstreamUnavailable, UpstreamErrorKind::Reset)
        }
    }
}

/// The envelope for a gateway-made answer.
pub fn error_response(
    e: ProxyError,
    request_id: &HeaderValue,
    version: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    let (status, code, message) = e.parts();
    let body = error_json(code, message, request_id.to_str().unwrap_or("-"));
    let mut r = Response::new(Either::Right(Full::new(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(X_REQUEST_ID, request_id.clone());
    if let Some(v) = version {
        h.insert(X_SWITCHYARD_VERSION, v.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_over_the_fields() {
        let req = Request::builder()
            .uri("/abc?d")
            .header("a", "bc")
            .header("Host", "h")
            .header("authorization", "Bearer t1")
            .header("authorization", "Bearer t2")
            .header("x-request-id", "r1")
            .header("transfer-encoding", "chunked")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let f = Fields::of(&req, false);
        let fields = 1 + 2 + 4 + 1 + 2 * (13 + 9) + 12 + 2 + 17 + 7 + 14 + 1;
        assert_eq!(f.head_size, 6 + fields + 7 * 4);
        assert_eq!(f.authorizations, 2);
        assert_eq!(f.authorization.as_ref().unwrap(), "Bearer t1");
        assert_eq!(f.hosts, 1);
        assert_eq!(f.host.as_ref().unwrap(), "h");
        assert_eq!(f.request_id.as_ref().unwrap(), "r1");
        assert_eq!(f.hop, TRANSFER_ENCODING_BIT);
        assert_eq!(f.content_length(), Some(5));
        assert!(!f.framing_is_unambiguous(Version::HTTP_11));
    }
}
