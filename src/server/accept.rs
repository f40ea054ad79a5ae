//! Client workers: each accepts on its clones of the listeners, admits a connection
//! under the connection limit (or answers it 503), and serves it on its own thread.

use crate::proxy::upstream::Pools;
use crate::proxy::{ConnInfo, Proxy};
use crate::routing::RoutingTable;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::conn::{serve_io, CancelGuard, ResetWatch, SendTimeout};
use super::detect::{detect_h2, Prefixed};
use super::shutdown::stopped;

/// What every client worker shares.
pub(super) struct ClientSide {
    pub(super) proxy: Arc<Proxy>,
    pub(super) limits: crate::config::Limits,
    pub(super) conns: Arc<Semaphore>,
    /// Over-limit connections being answered 503 at once.
    pub(super) rejects: Arc<Semaphore>,
    /// The routing table (and its metrics).
    pub(super) table: Arc<RoutingTable>,
    /// The upstream connection pools, swept by each worker.
    pub(super) pools: Arc<Pools>,
}

/// How often a worker drops the idle upstream connections their upstream closed.
pub(super) const POOL_SWEEP: Duration = Duration::from_secs(5);

/// One client worker: accepts on its clones of the listeners, serves each
/// connection on this thread, and on stop drains up to the deadline.
pub(super) async fn worker(
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
            side.pools.sweep();
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

pub(super) async fn accept_client(
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
                side.table.metrics().overload.increment(0);
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

/// What one connection's requests share. A request clones this (a reference count of
/// its connection's own) rather than the process-wide `Proxy` or metrics, so no count
/// is written by every request of every worker.
struct Served {
    proxy: Arc<Proxy>,
    info: Arc<ConnInfo>,
}

/// Serves one client connection with the protocol it speaks: ALPN on TLS, the
/// HTTP/2 connection preface on cleartext (prior knowledge), HTTP/1.1 otherwise.
/// A connection over the limit (`admitted` false) is answered 503 `overloaded` and
/// closed (HTTP/2: GOAWAY before any stream).
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_client(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<TlsAcceptor>,
    side: Arc<ClientSide>,
    stop: watch::Receiver<bool>,
    admitted: bool,
    hold: tokio::sync::mpsc::Sender<()>,
) {
    let head_timeout = side.limits.header_read_timeout();
    let served = Arc::new(Served {
        proxy: Arc::clone(&side.proxy),
        info: Arc::new(ConnInfo {
            hold: Some(hold),
            ..ConnInfo::new(peer, tls.is_some(), Arc::clone(side.table.metrics()))
        }),
    });
    let resets = Arc::new(ResetWatch::default());
    let watch = Arc::clone(&resets);
    let service = service_fn(move |req| {
        let served = Arc::clone(&served);
        let guard = CancelGuard(Some(Arc::clone(&watch)));
        async move {
            let resp = if admitted {
                served.proxy.handle(&served.info, req).await
            } else {
                served.proxy.overloaded(&req)
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
            let mut stream = stream;
            let detect = tokio::time::timeout(head_timeout, detect_h2(&mut stream));
            let (h2, taken) = tokio::select! {
                r = detect => match r {
                    Ok(Ok(x)) => x,
                    _ => return,
                },
                _ = stopped(&mut on_stop) => return,
            };
            match taken {
                None => {
                    let io = TokioIo::new(SendTimeout::new(stream, send_timeout));
                    serve_io(io, h2, service, &side.limits, stop, &resets, admitted).await
                }
                // rare (a preface that arrived in pieces): boxed, so it does not grow
                // every connection's task
                Some(prefix) => {
                    let stream = Prefixed::new(stream, Some(prefix));
                    let io = TokioIo::new(SendTimeout::new(stream, send_timeout));
                    let serve = serve_io(io, h2, service, &side.limits, stop, &resets, admitted);
                    Box::pin(serve).await
                }
            }
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

/// Counts an open client connection until dropped.
struct OpenConnection(Arc<crate::telemetry::Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.load.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
