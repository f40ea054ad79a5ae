//! Runs the gateway on listeners it is given: the client listener (and TLS, when
//! configured) served by the proxy, the admin listener by the admin API.
//!
//! Startup: the admin listener answers at once (`/readyz` is 503), the routing table is
//! loaded from the store, then `/readyz` turns 200 and client traffic is accepted.
//! Shutdown: stop accepting, let in-flight requests finish up to the drain deadline.
//! This module never binds a port; `main.rs` and the tests do.

use crate::admin::Admin;
use crate::config::Config;
use crate::proxy::{access, ConnInfo, Proxy};
use crate::routing::RoutingTable;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::upstream::{set_worker, Pools};
use futures_util::task::AtomicWaker;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listener: {0}")]
    Io(std::io::Error),
    #[error("loading the state from the store: {0}")]
    Load(#[from] crate::store::Error),
    #[error("TLS: {0}")]
    Tls(String),
}

/// The sockets the gateway serves. Bound by the caller.
pub struct Listeners {
    pub client: TcpListener,
    pub admin: TcpListener,
    pub tls: Option<(TcpListener, TlsAcceptor)>,
}

/// Everything the gateway runs with.
pub struct Gateway {
    pub config: Config,
    pub store: Store,
    pub table: Arc<RoutingTable>,
    pub admin_token: String,
}

impl Gateway {
    pub fn new(config: Config, store: Store, admin_token: String) -> Self {
        let metrics = Arc::new(if config.metrics.enabled {
            Metrics::enabled()
        } else {
            Metrics::disabled()
        });
        let pools = Pools::new(config.worker_count(), config.limits.upstream_idle_per_host);
        Self {
            table: Arc::new(RoutingTable::with(metrics, pools)),
            config,
            store,
            admin_token,
        }
    }
}

/// Connections the kernel completes and queues for a listener while the workers are
/// busy. tokio's `TcpListener::bind` asks for 128, so a burst of reconnecting clients
/// (after a restart, a failover) beyond that has its SYNs dropped and waits a second for
/// the retransmit; nginx asks for 511. The kernel caps this at `net.core.somaxconn`
/// (4096 on current Linux).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` (`SO_REUSEADDR`, an accept queue of
/// [`LISTEN_BACKLOG`]). Needs a tokio runtime.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Builds a rustls server config with ALPN `h2` and `http/1.1` from PEM files.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("tls.cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "tls.cert {}: no certificate found",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Tls(format!("tls.key {}: {e}", key.display())))?;
    tls_acceptor_from(certs, key)
}

/// Builds a rustls server config from DER certificates and a key.
pub fn tls_acceptor_from(
    certs: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("certificate and key do not fit: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves until `shutdown` completes, then drains.
pub async fn run(
    gw: Gateway,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let Gateway {
        config,
        store,
        table,
        admin_token,
    } = gw;
    let ready = Arc::new(AtomicBool::new(false));
    let admin = Arc::new(Admin::new(
        store.clone(),
        Arc::clone(&table),
        &admin_token,
        Arc::clone(&ready),
    ));
    // histograms keep raw samples until drained: drain them even if nobody scrapes
    let upkeep = {
        let table = Arc::clone(&table);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                table.metrics().upkeep();
            }
        })
    };
    let graceful = GracefulShutdown::new();
    let admin_builder = auto::Builder::new(TokioExecutor::new());
    let admin_conns = Arc::new(Semaphore::new(256));
    let serve_admin = admin_accept_loop(listeners.admin, &admin_builder, admin_conns, &graceful, {
        let admin = Arc::clone(&admin);
        move || {
            let admin = Arc::clone(&admin);
            service_fn(move |req| Arc::clone(&admin).handle(req))
        }
    });

    let load = async {
        // a store that is away at start is waited for: /readyz says 503 meanwhile
        let mut wait = Duration::from_millis(100);
        let snap = loop {
            match store.snapshot().await {
                Ok(s) => break s,
                Err(crate::store::Error::Unavailable(e)) => {
                    tracing::warn!(error.detail = %e, "store unavailable at start; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(Error::Load(e)),
            }
        };
        for c in &snap.changes {
            table.apply(c);
        }
        table.set_feed_revision(snap.revision);
        ready.store(true, Ordering::Release);
        tracing::info!(
            revision = snap.revision,
            routes = table.slot_count(),
            tokens = table.token_count(),
            "state loaded; ready"
        );
        let follower = store.fleet_url().map(|url| {
            tokio::spawn(crate::fleet::follow(
                store.clone(),
                Arc::clone(&table),
                url.to_owned(),
            ))
        });
        Ok::<_, Error>(follower)
    };

    let proxy = Arc::new(Proxy::new(
        Arc::clone(&table),
        config.limits.clone(),
        config.proxy.clone(),
        access::AccessLog::from_config(&config.log),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let workers = config.worker_count();
    let client = Arc::new(ClientSide {
        proxy,
        limits: config.limits.clone(),
        conns: Arc::new(Semaphore::new(config.limits.max_connections)),
        rejects: Arc::new(Semaphore::new(config.limits.reject_slots())),
        table: Arc::clone(&table),
    });
    let mut finished = Vec::new();
    let serving = async {
        let _follower = AbortOnDrop(load.await?);
        let plain = listeners.client.into_std().map_err(Error::Io)?;
        let tls = match listeners.tls {
            Some((l, a)) => Some((l.into_std().map_err(Error::Io)?, a)),
            None => None,
        };
        for i in 0..workers {
            let plain = plain.try_clone().map_err(Error::Io)?;
            let tls = match &tls {
                Some((l, a)) => Some((l.try_clone().map_err(Error::Io)?, a.clone())),
                None => None,
            };
            let (client, stop) = (Arc::clone(&client), stop_rx.clone());
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            finished.push(done_rx);
            std::thread::Builder::new()
                .name(format!("switchyard-w{i}"))
                .spawn(move || {
                    set_worker(i);
                    // access-log lines go out when the worker has nothing else to do
                    access::buffer_this_thread();
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .on_thread_park(access::flush)
                        .build()
                    {
                        Ok(rt) => {
                            rt.block_on(worker(plain, tls, client, stop));
                            // what is left of its requests ends here, and is logged
                            drop(rt);
                        }
                        Err(e) => {
                            tracing::error!(error.detail = %e, "worker runtime failed to start")
                        }
                    }
                    access::flush();
                    let _ = done_tx.send(());
                })
                .map_err(Error::Io)?;
        }
        tracing::info!(workers, "serving client traffic");
        std::future::pending::<()>().await;
        Ok::<_, Error>(())
    };

    tokio::select! {
        _ = shutdown => {}
        _ = serve_admin => {}
        r = serving => r?,
    }
    upkeep.abort();
    let drain = config.limits.drain_timeout();
    tracing::info!(
        drain_ms = drain.as_millis() as u64,
        "shutting down: no new connections, draining"
    );
    let _ = stop_tx.send(true);
    // workers drain within the deadline themselves; the admin listener alongside
    let admin_drained = tokio::time::timeout(drain, graceful.shutdown());
    let _ = tokio::join!(admin_drained, futures_util::future::join_all(finished));
    tracing::info!("stopped");
    Ok(())
}

/// The admin listener's accept loop: HTTP/1.1 or HTTP/2 per connection (hyper-util's
/// auto builder), at most `limit` connections, drained by `graceful` on shutdown.
async fn admin_accept_loop<S, F, B>(
    listener: TcpListener,
    builder: &auto::Builder<TokioExecutor>,
    limit: Arc<Semaphore>,
    graceful: &GracefulShutdown,
    make_service: F,
) where
    F: Fn() -> S,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // out of file descriptors and the like: back off instead of spinning
                tracing::warn!(error.detail = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = builder
            .serve_connection(TokioIo::new(stream), make_service())
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error.detail = %e, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// What every client worker shares.
struct ClientSide {
    proxy: Arc<Proxy>,
    limits: crate::config::Limits,
    conns: Arc<Semaphore>,
    /// Over-limit connections being answered 503 at once.
    rejects: Arc<Semaphore>,
    /// The routing table: its metrics and its upstream pools.
    table: Arc<RoutingTable>,
}

/// How often a worker drops the idle upstream connections their upstream closed.
const POOL_SWEEP: Duration = Duration::from_secs(5);

/// One client worker: accepts on its clones of the listeners, serves each
/// connection on this thread, and on stop drains up to the deadline.
async fn worker(
    plain: std::net::TcpListener,
    tls: Option<(std::net::TcpListener, TlsAcceptor)>,
    side: Arc<ClientSide>,
    stop: watch::Receiver<bool>,
) {
    let (active_tx, mut active_rx) = tokio::sync::mpsc::channel::<()>(1);
    let accept = async {
        let plain = match TcpListener::from_std(plain) {
            Ok(l) => l,
            Err(e) => return tracing::error!(error.detail = %e, "listener unusable"),
        };
        let tls = tls.and_then(|(l, a)| TcpListener::from_std(l).ok().map(|l| (l, a)));
        let plain_loop = accept_client(&plain, None, &side, &stop, &active_tx);
        match &tls {
            Some((l, a)) => {
                tokio::join!(
                    plain_loop,
                    accept_client(l, Some(a), &side, &stop, &active_tx)
                );
            }
            None => plain_loop.await,
        }
    };
    let sweep = async {
        let mut tick = tokio::time::interval(POOL_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            side.table.pools().sweep();
        }
    };
    let mut on_stop = stop.clone();
    tokio::select! {
        _ = accept => {}
        _ = sweep => {}
        _ = stopped(&mut on_stop) => {}
    }
    drop(active_tx);
    // every connection holds a sender: recv() ends when the last one is gone
    let _ = tokio::time::timeout(side.limits.drain_timeout(), active_rx.recv()).await;
}

async fn accept_client(
    listener: &TcpListener,
    tls: Option<&TlsAcceptor>,
    side: &Arc<ClientSide>,
    stop: &watch::Receiver<bool>,
    active: &tokio::sync::mpsc::Sender<()>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // out of file descriptors and the like: back off instead of spinning
                tracing::warn!(error.detail = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // over the limit: a bounded number of connections get their 503, the rest
        // are closed at once
        let (permit, admit) = match Arc::clone(&side.conns).try_acquire_owned() {
            Ok(p) => (p, true),
            Err(_) => {
                side.table.metrics().overload[0].increment(1);
                match Arc::clone(&side.rejects).try_acquire_owned() {
                    Ok(p) => (p, false),
                    Err(_) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let load = Arc::clone(side.table.metrics());
        load.load.connections.fetch_add(1, Ordering::Relaxed);
        let guard = (permit, OpenConnection(load));
        let (side, stop, tls, hold) =
            (Arc::clone(side), stop.clone(), tls.cloned(), active.clone());
        tokio::spawn(async move {
            if admit {
                serve_client(stream, peer, tls, side, stop, true, hold).await;
            } else {
                // a bounded time to hear the request and answer 503
                let limit = side.limits.header_read_timeout() + Duration::from_secs(1);
                let side2 = Arc::clone(&side);
                let serve = serve_client(stream, peer, tls, side2, stop, false, hold);
                let _ = tokio::time::timeout(limit, serve).await;
            }
            drop(guard);
        });
    }
}

/// Serves one client connection with the protocol it speaks: ALPN on TLS, the
/// HTTP/2 connection preface on cleartext (prior knowledge), HTTP/1.1 otherwise.
/// A connection over the limit (`admitted` false) is answered 503 `overloaded` and
/// closed (HTTP/2: GOAWAY before any stream).
#[allow(clippy::too_many_arguments)]
async fn serve_client(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<TlsAcceptor>,
    side: Arc<ClientSide>,
    stop: watch::Receiver<bool>,
    admitted: bool,
    hold: tokio::sync::mpsc::Sender<()>,
) {
    let head_timeout = side.limits.header_read_timeout();
    let proxy = Arc::clone(&side.proxy);
    let info = Arc::new(ConnInfo {
        hold: Some(hold),
        ..ConnInfo::new(peer, tls.is_some())
    });
    let resets = Arc::new(ResetWatch::default());
    let watch = Arc::clone(&resets);
    let service = service_fn(move |req| {
        let (proxy, info) = (Arc::clone(&proxy), Arc::clone(&info));
        let guard = CancelGuard(Some(Arc::clone(&watch)));
        async move {
            let resp = if admitted {
                proxy.handle(&info, req).await
            } else {
                proxy.overloaded(&req)
            };
            guard.completed();
            Ok::<_, Infallible>(resp)
        }
    });
    let send_timeout = side.limits.send_timeout();
    // detection and the TLS handshake obey the stop signal: a connection that has not
    // said which protocol it speaks holds nothing worth draining
    let mut on_stop = stop.clone();
    match tls {
        None => {
            let detect = tokio::time::timeout(head_timeout, detect_h2(stream));
            let (h2, stream) = tokio::select! {
                r = detect => match r {
                    Ok(Ok(x)) => x,
                    _ => return,
                },
                _ = stopped(&mut on_stop) => return,
            };
            let io = TokioIo::new(SendTimeout::new(stream, send_timeout));
            serve_io(io, h2, service, &side.limits, stop, &resets, admitted).await
        }
        Some(acceptor) => {
            let stream = SendTimeout::new(stream, send_timeout);
            let handshake = tokio::time::timeout(head_timeout, acceptor.accept(stream));
            let s = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    _ => return,
                },
                _ = stopped(&mut on_stop) => return,
            };
            let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = TokioIo::new(s);
            // boxed: TLS state is large, and would make every plain connection's task
            // as large too
            Box::pin(serve_io(
                io,
                h2,
                service,
                &side.limits,
                stop,
                &resets,
                admitted,
            ))
            .await
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Tells HTTP/2 prior knowledge (the connection preface) from anything else (HTTP/1.1).
/// The first bytes are peeked; only when they are a strict prefix of the preface are
/// they read, with the rest, waiting on the socket rather than peeking again — those
/// bytes are then handed back to the protocol through [`Prefixed`].
async fn detect_h2(
    mut stream: tokio::net::TcpStream,
) -> std::io::Result<(bool, Prefixed<tokio::net::TcpStream>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 24];
    let n = stream.peek(&mut buf).await?;
    if n == 0 || buf[..n] != H2_PREFACE[..n] {
        return Ok((false, Prefixed::new(stream, None)));
    }
    if n == H2_PREFACE.len() {
        return Ok((true, Prefixed::new(stream, None)));
    }
    let mut got = Vec::with_capacity(H2_PREFACE.len());
    while got.len() < H2_PREFACE.len() {
        // never more than the preface's remaining bytes: nothing after it is taken
        let want = H2_PREFACE.len() - got.len();
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        if got[..] != H2_PREFACE[..got.len()] {
            return Ok((false, Prefixed::new(stream, Some(got.into()))));
        }
    }
    Ok((true, Prefixed::new(stream, Some(got.into()))))
}

/// A stream whose first reads return bytes already taken from it (during protocol
/// detection). One branch per read otherwise.
struct Prefixed<T> {
    prefix: Option<bytes::Bytes>,
    inner: T,
}

impl<T> Prefixed<T> {
    fn new(inner: T, prefix: Option<bytes::Bytes>) -> Self {
        Self { prefix, inner }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(p) = self.prefix.as_mut() {
            let n = p.len().min(buf.remaining());
            buf.put_slice(&p.split_to(n));
            if p.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_io<I, S, B>(
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

/// Completes once the stop flag is set (the watch guard is not held across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// [`stopped`] for a client connection, which is polled on every wake of the
/// connection: the watch is shared by every connection and polling a waiting watch
/// takes its lock, so here it is polled once to register and then only when it
/// woke the connection.
struct Stop<'a> {
    signal: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    relay: Arc<StopRelay>,
    waker: Waker,
}

struct StopRelay {
    /// The signal woke (or has not been polled yet).
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for StopRelay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a> Stop<'a> {
    fn new(stop: &'a mut watch::Receiver<bool>) -> Self {
        let relay = Arc::new(StopRelay {
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            signal: Box::pin(stopped(stop)),
            waker: Waker::from(Arc::clone(&relay)),
            relay,
        }
    }
}

impl Future for Stop<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.relay.task.register(cx.waker());
        if !self.relay.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.signal
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

/// Streams a client cancelled before their answer, per connection. An HTTP/2 client
/// that opens and resets streams over and over (CVE-2023-44487) makes the gateway
/// start upstream work it throws away; past [`RESET_LIMIT`] cancellations that
/// outnumber the completed requests, the connection gets GOAWAY.
#[derive(Default)]
struct ResetWatch {
    cancelled: std::sync::atomic::AtomicU32,
    completed: std::sync::atomic::AtomicU32,
    abusive: tokio::sync::Notify,
}

/// Cancelled streams a connection may have before it is judged abusive.
const RESET_LIMIT: u32 = 100;

/// Counts a request as cancelled unless it completed.
struct CancelGuard(Option<Arc<ResetWatch>>);

impl CancelGuard {
    fn completed(mut self) {
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

/// Counts an open client connection until dropped.
struct OpenConnection(Arc<crate::telemetry::Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.load.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Stops a background task when the server stops.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// A client connection whose writes may not stall longer than `limit`: a client that
/// stops reading its answers (a slow-read attack, or a dead peer behind a full
/// window) has the connection closed instead of holding it, its upstream and its
/// buffers forever. Reads are untouched (the head and body timeouts cover them).
/// The timer is allocated the first time a write has to wait.
struct SendTimeout<T> {
    inner: T,
    limit: Duration,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    stalled: bool,
}

impl<T> SendTimeout<T> {
    fn new(inner: T, limit: Duration) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections are queued for the workers beyond tokio's default of 128 while
    /// nothing accepts: none of them waits for a SYN retransmit.
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_accept_queue() {
        let burst = 300;
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok());
        if somaxconn.is_some_and(|m| m <= burst) {
            eprintln!("SKIPPED: net.core.somaxconn {somaxconn:?} is not above {burst}");
            return;
        }
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let connects = (0..burst).map(|_| async move {
            // a dropped SYN is retried after 1 s, and again: 5 s is never reached
            // by a connection the queue has room for
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await
        });
        let streams = futures_util::future::join_all(connects).await;
        let connected = streams.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(
            connected, burst,
            "connections completed while nothing accepted"
        );
        drop(l);
    }
}
