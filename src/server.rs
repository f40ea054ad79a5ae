//! Runs the gateway on listeners it is given: the client listener (and TLS, when
//! configured) served by the proxy, the admin listener by the admin API.
//!
//! Startup: the admin listener answers at once (`/readyz` is 503), the routing table is
//! loaded from the store, then `/readyz` turns 200 and client traffic is accepted.
//! Shutdown: stop accepting, let in-flight requests finish up to the drain deadline.
//! This module never binds a port; `main.rs` and the tests do.

use crate::admin::Admin;
use crate::config::Config;
use crate::proxy::{ConnInfo, Proxy};
use crate::routing::RoutingTable;
use crate::store::Store;
use crate::telemetry::Metrics;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
        Self {
            config,
            store,
            table: Arc::new(RoutingTable::with_metrics(metrics)),
            admin_token,
        }
    }
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

fn client_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let l = &config.limits;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_read_timeout())
        .max_buf_size((l.max_header_bytes * 2).max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(l.max_header_bytes * 2).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024));
    b
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
    let metrics = Arc::clone(table.metrics());
    let graceful = GracefulShutdown::new();
    let admin_builder = auto::Builder::new(TokioExecutor::new());
    let admin_conns = Arc::new(Semaphore::new(256));
    let serve_admin = accept_loop(
        listeners.admin,
        None,
        &admin_builder,
        admin_conns,
        &graceful,
        None,
        {
            let admin = Arc::clone(&admin);
            move |_peer, _tls| {
                let admin = Arc::clone(&admin);
                service_fn(move |req| Arc::clone(&admin).handle(req))
            }
        },
    );

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
        config.log.access_log,
    ));
    let client_builder = client_builder(&config);
    let conns = Arc::new(Semaphore::new(config.limits.max_connections));
    let make_proxy_service = |peer: std::net::SocketAddr, tls: bool| {
        let proxy = Arc::clone(&proxy);
        let conn = Arc::new(ConnInfo::new(peer, tls));
        service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            let conn = Arc::clone(&conn);
            async move { Ok::<_, Infallible>(proxy.handle(&conn, req).await) }
        })
    };
    let serving = async {
        let _follower = AbortOnDrop(load.await?);
        let plain = accept_loop(
            listeners.client,
            None,
            &client_builder,
            Arc::clone(&conns),
            &graceful,
            Some(metrics.connections.clone()),
            make_proxy_service,
        );
        match listeners.tls {
            Some((l, acceptor)) => {
                let tls = accept_loop(
                    l,
                    Some(acceptor),
                    &client_builder,
                    Arc::clone(&conns),
                    &graceful,
                    Some(metrics.connections.clone()),
                    make_proxy_service,
                );
                tokio::join!(plain, tls);
            }
            None => plain.await,
        }
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
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("drain deadline passed; closing the remaining connections"),
    }
    Ok(())
}

/// Accepts connections until dropped. Each connection holds a permit of `limit`;
/// at the limit, new connections wait in the kernel's backlog.
async fn accept_loop<S, F, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    builder: &auto::Builder<TokioExecutor>,
    limit: Arc<Semaphore>,
    graceful: &GracefulShutdown,
    open: Option<metrics::Gauge>,
    make_service: F,
) where
    F: Fn(std::net::SocketAddr, bool) -> S,
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
    let handshake_timeout = Duration::from_secs(10);
    loop {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // out of file descriptors and the like: back off instead of spinning
                tracing::warn!(error.detail = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = make_service(peer, tls.is_some());
        let open = open.clone().map(|g| {
            g.increment(1.0);
            OpenConnection(g)
        });
        match &tls {
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error.detail = %e, "connection ended with an error");
                    }
                    drop((permit, open));
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls_stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error.detail = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls_stream), service)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error.detail = %e, "connection ended with an error");
                    }
                    drop((permit, open));
                });
            }
        }
    }
}

/// Counts an open client connection until dropped.
struct OpenConnection(metrics::Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
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
