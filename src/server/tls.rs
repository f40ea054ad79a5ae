//! The client listener's certificate, reloaded without a restart: on SIGHUP and when
//! the files change. Every handshake asks [`CertStore`] (rustls's certificate
//! resolver) for the current pair, one `ArcSwap` load; a reload swaps it, so new
//! connections get the new certificate and open ones keep theirs. A pair that does not
//! load, or whose key does not match the certificate, keeps the current one and is
//! logged with the reason.

use super::Error;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// What tells a file changed: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

/// The certificate and key files and the pair loaded from them.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<(Stamp, Stamp)>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads and checks a pair: the chain parses, the key parses, and they match.
fn read_pair(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate found", cert.display()));
    }
    let k =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
    CertifiedKey::from_der(certs, k, provider)
        .map_err(|e| format!("certificate and key do not fit: {e}"))
}

impl CertStore {
    /// Loads the pair; an error here stops the start.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = (stamp(cert), stamp(key));
        let pair = read_pair(cert, key, &provider).map_err(Error::Tls)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(pair),
            provider,
            seen: Mutex::new(seen),
        }))
    }

    /// An acceptor (ALPN `h2`, `http/1.1`) whose handshakes take the current pair.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, Error> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(cfg)))
    }

    /// Reads the files again; on success the next handshake uses the new pair. On
    /// failure the current pair stays and the reason is returned.
    pub fn reload(&self) -> Result<(), String> {
        let seen = (stamp(&self.cert), stamp(&self.key));
        if let Ok(mut s) = self.seen.lock() {
            *s = seen;
        }
        let pair = read_pair(&self.cert, &self.key, &self.provider)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }

    /// Whether either file changed since the last load.
    fn changed(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        self.seen.lock().map(|s| *s != now).unwrap_or(false)
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => {
                tracing::info!(cert = %self.cert.display(), trigger = why, "TLS certificate reloaded")
            }
            Err(reason) => {
                tracing::error!(cert = %self.cert.display(), trigger = why, reason = %reason, "TLS certificate not reloaded; the current one stays")
            }
        }
    }

    /// Reloads on SIGHUP, and when the files change (checked every `every`; zero:
    /// SIGHUP only). Runs until dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        #[cfg(unix)]
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error.detail = %e, "no SIGHUP handler: certificate reload by file change only");
                None
            }
        };
        let mut tick = tokio::time::interval(if every.is_zero() {
            Duration::from_secs(3600)
        } else {
            every
        });
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let signal = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let signal = std::future::pending::<()>();
            tokio::select! {
                _ = signal => self.reload_logged("SIGHUP"),
                _ = tick.tick() => {
                    if !every.is_zero() && self.changed() {
                        self.reload_logged("file change");
                    }
                }
            }
        }
    }
}
