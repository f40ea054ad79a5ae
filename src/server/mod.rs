//! Runs the gateway on listeners it is given: the client listener (and TLS, when
//! configured) served by the proxy, the admin listener by the admin API.
//!
//! Startup: the admin listener answers at once (`/readyz` is 503), the routing table is
//! loaded from the store, then `/readyz` turns 200 and client traffic is accepted.
//! Shutdown: stop accepting, let in-flight requests finish up to the drain deadline.
//! This module never binds a port; `main.rs` and the tests do.
//!
//! Laid out by concern: this file holds startup, the listeners and the admin accept
//! loop; [`accept`] the client workers and their accept loops; [`detect`] how a
//! cleartext connection's protocol is told; [`conn`] how a connection is served
//! (HTTP/1.1 and HTTP/2 settings, the rapid-reset guard, the send timeout);
//! [`shutdown`] the stop signal as connections poll it.

mod accept;
mod conn;
mod detect;
mod shutdown;
pub mod tls;

use crate::admin::Admin;
use crate::config::Config;
use crate::proxy::upstream::Pools;
use crate::proxy::{access, Proxy};
use crate::routing::RoutingTable;
use crate::store::Store;
use crate::telemetry::Metrics;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use accept::{worker, ClientSide};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listener: {0}")]
    Io(std::io::Error),
    #[error("loading the state from the store: {0}")]
    Load(#[from] crate::store::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("secrets: {0}")]
    SecretKey(String),
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
    /// The upstream connection pools the table's endpoints are handles of.
    pub pools: Arc<Pools>,
    pub admin_token: String,
    /// How often tokens' uses are written to the store (`last_used_at`).
    pub usage_flush: Duration,
}

impl Gateway {
    /// The key that seals and opens secret values on this node.
    pub fn with_secret_key(self, key: Option<crate::sealing::SecretKey>) -> Self {
        if let Some(k) = key {
            self.table.set_secret_key(Arc::new(k));
        }
        self
    }

    pub fn new(config: Config, store: Store, admin_token: String) -> Self {
        let metrics = Arc::new(if config.metrics.enabled {
            Metrics::enabled(config.worker_count())
        } else {
            Metrics::disabled_for(config.worker_count())
        });
        let tls = crate::proxy::stream::tls_client(config.upstream_tls.ca_file.as_deref());
        if let Err(why) = &tls {
            tracing::debug!(reason = %why, "https:// upstreams cannot be verified");
        }
        let pools = Arc::new(
            Pools::new(config.worker_count(), config.limits.upstream_idle_per_host).with_tls(tls),
        );
        Self {
            table: Arc::new(
                RoutingTable::with(metrics, Arc::clone(&pools) as _)
                    .with_policy(config.upstream.clone()),
            ),
            pools,
            config,
            store,
            admin_token,
            usage_flush: Duration::from_secs(10),
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

/// Tells systemd (`Type=notify`, `NOTIFY_SOCKET`) where the gateway stands: ready
/// once the state is loaded and client traffic is served, stopping when the drain
/// starts. Nothing without a service manager.
fn notify_service_manager(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error.detail = %e, "the service manager could not be told");
    }
}

/// Writes the tokens used since the last round to the store, every `every`: at most
/// one write per token per minute, all in one transaction. A failed write is dropped
/// (the figure is approximate) and logged.
async fn record_usage(store: Store, table: Arc<RoutingTable>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let used = table.take_used(crate::domain::now_ms());
        if used.is_empty() {
            continue;
        }
        let n = used.len();
        if let Err(e) = store.touch_tokens(used).await {
            tracing::warn!(tokens = n, error.detail = %e, "token uses not recorded");
        }
    }
}

/// Refuses to start when the store holds secrets this node's key did not seal: without
/// it, versions that inject them would be refused every request.
async fn check_secret_key(store: &Store, table: &RoutingTable) -> Result<(), Error> {
    let ids = store.secret_key_ids().await?;
    if ids.is_empty() {
        return Ok(());
    }
    match table.secret_key() {
        None => Err(Error::SecretKey(format!(
            "the store holds secrets sealed with key {}; set SWITCHYARD_SECRET_KEY to that key (base64 of 32 bytes)",
            ids.join(", ")
        ))),
        Some(k) if ids.iter().any(|i| i != k.id()) => Err(Error::SecretKey(format!(
            "the store holds secrets sealed with key {}, but this node's key is {}",
            ids.join(", "),
            k.id()
        ))),
        Some(_) => Ok(()),
    }
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
        pools,
        admin_token,
        usage_flush,
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
    // tokens' last use, written in batches off the request path
    let usage = tokio::spawn(record_usage(store.clone(), Arc::clone(&table), usage_flush));
    // active health checks of the live versions, once for the node
    let checks = tokio::spawn(crate::routing::checks::run(Arc::clone(&table)));
    // automatic rollback from this node's own numbers
    let autoroll = tokio::spawn(crate::admin::autoroll::run(Arc::clone(&admin)));
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

    let retention = config.fleet.feed_retention();
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
        if let Some(k) = &snap.pin_key {
            table.set_pin_key(k);
        }
        check_secret_key(&store, &table).await?;
        for c in &snap.changes {
            table.apply(c);
        }
        table.set_feed_revision(snap.revision);
        ready.store(true, Ordering::Release);
        notify_service_manager(&[sd_notify::NotifyState::Ready]);
        tracing::info!(
            revision = snap.revision,
            routes = table.slot_count(),
            tokens = table.token_count(),
            "state loaded; ready"
        );
        let follower = store.fleet_url().map(|url| {
            let follow = crate::fleet::follow(store.clone(), Arc::clone(&table), url.to_owned());
            let prune = crate::fleet::prune(store.clone(), retention);
            tokio::spawn(async move {
                tokio::join!(follow, prune);
            })
        });
        Ok::<_, Error>(follower)
    };

    let proxy = Arc::new(
        Proxy::new(
            Arc::clone(&table),
            config.limits.clone(),
            config.proxy.clone(),
            access::AccessLog::from_config(&config.log),
        )
        .with_session_cookie(&config.routing.session_cookie),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let workers = config.worker_count();
    let client = Arc::new(ClientSide {
        proxy,
        limits: config.limits.clone(),
        conns: Arc::new(Semaphore::new(config.limits.max_connections)),
        rejects: Arc::new(Semaphore::new(config.limits.reject_slots())),
        table: Arc::clone(&table),
        pools,
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
                    crate::worker::set(i);
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
    checks.abort();
    autoroll.abort();
    usage.abort();
    // the uses noted since the last round are not left behind
    let used = table.take_used(crate::domain::now_ms());
    if !used.is_empty() {
        if let Err(e) = store.touch_tokens(used).await {
            tracing::warn!(error.detail = %e, "token uses not recorded at shutdown");
        }
    }
    let drain = config.limits.drain_timeout();
    notify_service_manager(&[sd_notify::NotifyState::Stopping]);
    tracing::info!(
        drain_ms = drain.as_millis() as u64,
        "shutting down: no new connections, draining"
    );
    let _ = stop_tx.send(true);
    // open streams go on until just before the deadline, then end with the hint at
    // their next boundary (the margin leaves time to reach it and write it)
    let margin = (drain / 4).min(Duration::from_millis(500));
    table.end_streams(
        crate::routing::streams::EndReason::Shutdown,
        tokio::time::Instant::now() + drain.saturating_sub(margin),
    );
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

/// Stops a background task when the server stops.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
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
