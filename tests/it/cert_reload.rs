//! The client listener's certificate is reloaded without a restart — on SIGHUP and when
//! the files change — and judged by what a TLS client is shown: new connections get the
//! new certificate, an open connection goes on with its own, and a bad new pair keeps
//! the old one with the reason in the log.

use crate::support::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pair {
    der: rustls_pki_types::CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn pair() -> Pair {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Pair {
        der: c.cert.der().clone(),
        cert_pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
    }
}

fn write(dir: &Path, cert: &str, key: &str) {
    // written aside and renamed, as a certificate manager does
    for (name, text) in [("cert.pem", cert), ("key.pem", key)] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection that trusts every pair of the test, and the certificate it was shown.
async fn connect(addr: std::net::SocketAddr, trusted: &[&Pair]) -> (Tls, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    for p in trusted {
        roots.add(p.der.clone()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let shown = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, shown)
}

/// One keep-alive request on an open connection: the status line.
async fn ask(tls: &mut Tls) -> String {
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

async fn start(dir: &Path, watch_ms: u64) -> (Binary, std::net::SocketAddr) {
    let tls_addr = dead_address().await;
    let extra = format!(
        "[tls]\nlisten = \"{tls_addr}\"\ncert = \"{}\"\nkey = \"{}\"\nwatch_interval_ms = {watch_ms}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let b = Binary::start(dir, &extra).await;
    (b, tls_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_bad_pair_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b_pair, c) = (pair(), pair(), pair());
    let all = [&a, &b_pair, &c];
    write(dir.path(), &a.cert_pem, &a.key_pem);
    let (mut b, addr) = start(dir.path(), 0).await;
    let (mut open, shown) = connect(addr, &all).await;
    assert_eq!(shown, a.der.to_vec());
    assert!(ask(&mut open).await.starts_with("HTTP/1.1 401"));

    write(dir.path(), &b_pair.cert_pem, &b_pair.key_pem);
    // no reload without the signal (file watching is off here)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connect(addr, &all).await.1, a.der.to_vec());
    b.signal("HUP");
    eventually("new connections get the new certificate", || async {
        connect(addr, &all).await.1 == b_pair.der.to_vec()
    })
    .await;
    // the connection opened before goes on, with the certificate it was shown
    assert!(ask(&mut open).await.starts_with("HTTP/1.1 401"));
    assert_eq!(
        open.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
        a.der.to_vec()
    );

    // C's certificate with B's key: refused, B stays, and the log says why
    write(dir.path(), &c.cert_pem, &b_pair.key_pem);
    b.signal("HUP");
    eventually("the refusal is logged", || async {
        b.log_text().contains("TLS certificate not reloaded")
    })
    .await;
    assert!(b.log_text().contains("do not fit"), "{}", b.log_text());
    assert_eq!(connect(addr, &all).await.1, b_pair.der.to_vec());
    // a key file that is not PEM at all: the same
    write(dir.path(), &c.cert_pem, "not a key");
    b.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connect(addr, &all).await.1, b_pair.der.to_vec());
    // the right pair again: taken
    write(dir.path(), &c.cert_pem, &c.key_pem);
    b.signal("HUP");
    eventually("the fixed pair is taken", || async {
        connect(addr, &all).await.1 == c.der.to_vec()
    })
    .await;
    assert!(
        b.child.try_wait().unwrap().is_none(),
        "SIGHUP did not stop the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b_pair) = (pair(), pair());
    let all = [&a, &b_pair];
    write(dir.path(), &a.cert_pem, &a.key_pem);
    let (b, addr) = start(dir.path(), 200).await;
    assert_eq!(connect(addr, &all).await.1, a.der.to_vec());
    write(dir.path(), &b_pair.cert_pem, &b_pair.key_pem);
    eventually("the new pair is picked up", || async {
        connect(addr, &all).await.1 == b_pair.der.to_vec()
    })
    .await;
    assert!(b.log_text().contains("TLS certificate reloaded"));
}
