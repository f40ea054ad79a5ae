//! The byte stream under an upstream connection: plain TCP for `http://` upstreams,
//! TLS (rustls) for `https://` ones, verified against the system's roots or the CA
//! in `[upstream_tls] ca_file`, with SNI from the URL's host.

use rustls::pki_types::{CertificateDer, ServerName};
use std::io::IoSlice;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A connection's stream to its upstream.
pub enum UpstreamStream {
    Plain(TcpStream),
    /// Boxed: the TLS state is large, and only `https://` upstreams carry it.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// What an `https://` upstream's connections need: the verifying client
/// configuration, or why there is none (so its requests fail with that reason).
pub type TlsClient = Result<Arc<rustls::ClientConfig>, Arc<str>>;

/// The client configuration for `https://` upstreams: the certificates of `ca_file`
/// when given, else the system's roots.
pub fn tls_client(ca_file: Option<&Path>) -> TlsClient {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_pem_certs(path).map_err(Arc::<str>::from)? {
                roots
                    .add(cert)
                    .map_err(|e| Arc::<str>::from(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Arc::from(
                    "no system trust roots were found; set [upstream_tls] ca_file",
                ));
            }
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| Arc::from(e.to_string()))
}

/// The PEM certificates of `path`: at least one, each parsed.
pub fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// How one `https://` endpoint's connections are secured: the connector and the name
/// its certificate must carry (SNI too).
#[derive(Clone)]
pub struct TlsTarget {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("name", &self.name)
            .finish()
    }
}

/// The TLS side of `host`'s endpoint, or why it cannot have one.
pub fn tls_target(client: &TlsClient, host: &str) -> Result<TlsTarget, Arc<str>> {
    let config = client.as_ref().map_err(Arc::clone)?;
    // an IPv6 literal comes bracketed in a URL's authority
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Arc::<str>::from(format!("{host:?} is not a TLS server name: {e}")))?;
    Ok(TlsTarget {
        connector: TlsConnector::from(Arc::clone(config)),
        name,
    })
}
