//! `https://` upstreams: verified against `[upstream_tls] ca_file`, SNI from the URL's
//! host, pooled like plain ones; a certificate the gateway does not trust is a 502
//! `upstream_unavailable` and a log line naming the reason.

use crate::support::*;
use http::Method;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// A self-signed certificate for `localhost`: the upstream's, and the CA a gateway
/// trusts when it is given as `ca_file`.
struct Cert {
    pem: String,
    der: rustls_pki_types::CertificateDer<'static>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
}

fn cert() -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Cert {
        pem: c.cert.pem(),
        der: c.cert.der().clone(),
        key: rustls_pki_types::PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into()),
    }
}

/// An HTTPS echo upstream on 127.0.0.1:0 with `cert`; counts its TLS connections.
async fn https_upstream(cert: &Cert) -> (SocketAddr, Arc<AtomicU64>) {
    let acceptor =
        switchyard::server::tls_acceptor_from(vec![cert.der.clone()], cert.key.clone_key())
            .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let handshakes = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(|req| echo_answer("tls", req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, handshakes)
}

#[tokio::test]
async fn an_https_upstream_is_verified_with_the_configured_ca_and_pooled() {
    let server = cert();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.pem).unwrap();
    let (up, handshakes) = https_upstream(&server).await;
    let g = TestGateway::builder()
        .config(move |c| c.upstream_tls.ca_file = Some(ca))
        .start()
        .await;
    g.post("/v1/agents", json!({"name": "bot"})).await;
    let url = format!("https://localhost:{}", up.port());
    let (s, b) = g
        .post("/v1/agents/bot/versions", json!({"upstreams": [url]}))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["upstreams"][0], url);
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    for _ in 0..10 {
        let r = get(&g.url("/over-tls"), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        assert_eq!(body["version"], "tls", "answered by the HTTPS upstream");
        assert_eq!(body["path"], "/over-tls");
        assert_eq!(
            body["headers"]["host"],
            format!("localhost:{}", up.port()),
            "the upstream's own host"
        );
    }
    let n = handshakes.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&n),
        "{n} TLS handshakes for 10 requests: connections are pooled"
    );
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_a_502_with_the_reason_in_the_log() {
    let server = cert();
    let other = cert();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong, &other.pem).unwrap();
    let (up, handshakes) = https_upstream(&server).await;
    let b = Binary::start(
        dir.path(),
        &format!(
            "[upstream_tls]\nca_file = {:?}\n",
            wrong.display().to_string()
        ),
    )
    .await;
    let (s, v) = b
        .admin_call(Method::POST, "/v1/agents", Some(json!({"name": "bot"})))
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    let url = format!("https://localhost:{}", up.port());
    let (s, v) = b
        .admin_call(
            Method::POST,
            "/v1/agents/bot/versions",
            Some(json!({"upstreams": [url]})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    b.deploy("bot", "staging", "v1").await;
    let (token, _) = b.token("bot", "staging").await;
    let r = get(
        &format!("http://{}/", b.client),
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.error_code(), "upstream_unavailable");
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "no request got through"
    );
    eventually("the log names the certificate failure", || async {
        let log = b.log_text();
        log.contains("upstream connection failed") && log.contains("certificate")
    })
    .await;
    // the reason, not a secret: no token in the log
    assert!(!b.log_text().contains(&token));
}

#[tokio::test]
async fn a_ca_file_that_is_not_pem_stops_the_start_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let text = format!(
        "[upstream_tls]\nca_file = {:?}\n",
        bad.display().to_string()
    );
    let e = switchyard::config::Config::parse(&text)
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(e.setting, "upstream_tls.ca_file", "{e}");
}
