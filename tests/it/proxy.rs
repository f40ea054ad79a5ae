//! The data plane end to end: real gateway, real upstreams, real clients.

use crate::support::*;
use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A gateway with agent `bot` (v1, v2 on two echo upstreams), staging on v1, and a
/// staging token.
async fn setup() -> (TestGateway, String, String) {
    setup_with(TestGateway::builder()).await
}

async fn setup_with(b: GatewayBuilder) -> (TestGateway, String, String) {
    let g = b.start().await;
    let v1 = echo_upstream("v1").await;
    let v2 = echo_upstream("v2").await;
    g.agent_with_versions("bot", &[v1, v2]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, id) = g.token("bot", "staging").await;
    (g, token, id)
}

#[tokio::test]
async fn forwards_with_the_header_rules_in_both_directions() {
    let (g, token, _) = setup().await;
    let auth = bearer(&token);
    let r = send(
        Method::POST,
        &g.url("/a/b?x=1&y=2"),
        &[
            ("authorization", &auth),
            ("connection", "x-client-hop"),
            ("x-client-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic abc"),
            ("x-request-id", "client-id-123"),
            ("x-custom", "kept"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.example"),
            ("x-switchyard-agent", "other"),
            ("x-switchyard-environment", "staging"),
            ("x-switchyard-version", "v99"),
        ],
        Bytes::from_static(b"hello"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["version"], "v1");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/a/b");
    assert_eq!(seen["query"], "x=1&y=2");
    assert_eq!(seen["body_len"], 5);
    let h = &seen["headers"];
    for gone in [
        "authorization",
        "x-client-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert!(
        !h.to_string().contains(&token),
        "the token reached the upstream"
    );
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], g.client.to_string());
    assert_eq!(h["x-request-id"], "client-id-123");
    assert_eq!(h["x-switchyard-agent"], "bot");
    assert_eq!(h["x-switchyard-environment"], "staging");
    assert_eq!(h["x-switchyard-version"], "v1");
    // the answer: upstream's hop-by-hop fields removed, ours added
    assert_eq!(r.header("x-switchyard-version"), Some("v1"));
    assert_eq!(r.header("x-request-id"), Some("client-id-123"));
    assert_eq!(r.header("x-upstream-kept"), Some("yes"));
    assert_eq!(r.header("x-upstream-hop"), None);
    assert_eq!(r.header("keep-alive"), None);

    // an insane request id is replaced, and the new one is returned
    let r = get(
        &g.url("/"),
        &[
            ("authorization", &auth),
            ("x-request-id", "has spaces and ; semicolons"),
        ],
    )
    .await;
    let rid = r.header("x-request-id").unwrap().to_owned();
    assert_ne!(rid, "has spaces and ; semicolons");
    let h = &r.json()["headers"];
    assert_eq!(h["x-request-id"], rid.as_str());
    // fields the client did not send are added once each
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-switchyard-agent"], "bot");
    assert_eq!(h["x-switchyard-environment"], "staging");
    assert_eq!(h["x-switchyard-version"], "v1");
}

#[tokio::test]
async fn every_row_of_the_error_table() {
    let (g, token, id) = setup_with(TestGateway::builder().limits(|l| {
        l.max_body_bytes = 1024;
        l.max_header_bytes = 2048;
        l.upstream_response_timeout_ms = 300;
    }))
    .await;
    let auth = bearer(&token);
    let check = |r: Resp, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.error_code(), code);
    };
    check(get(&g.url("/"), &[]).await, 401, "unauthenticated");
    check(
        get(&g.url("/"), &[("authorization", "Basic abc")]).await,
        401,
        "unauthenticated",
    );
    check(
        get(&g.url("/"), &[("authorization", "Bearer swy_nope")]).await,
        401,
        "unauthenticated",
    );
    check(
        get(
            &g.url("/"),
            &[("authorization", &auth), ("authorization", &auth)],
        )
        .await,
        400,
        "bad_request",
    );
    check(
        get(
            &g.url("/"),
            &[
                ("authorization", &auth),
                ("x-switchyard-environment", "production"),
            ],
        )
        .await,
        403,
        "wrong_environment",
    );
    assert_eq!(
        get(
            &g.url("/"),
            &[
                ("authorization", &auth),
                ("x-switchyard-environment", "staging")
            ]
        )
        .await
        .status,
        200
    );
    check(
        send(
            Method::POST,
            &g.url("/"),
            &[("authorization", &auth)],
            Bytes::from(vec![b'x'; 2048]),
        )
        .await,
        413,
        "body_too_large",
    );
    let big = "y".repeat(3000);
    check(
        get(&g.url("/"), &[("authorization", &auth), ("x-big", &big)]).await,
        431,
        "headers_too_large",
    );
    check(
        get(&g.url("/slow/2000"), &[("authorization", &auth)]).await,
        504,
        "upstream_timeout",
    );

    // an upstream that refuses, and one that resets
    let dead = dead_address().await;
    let reset = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                drop(s);
            }
        });
        a
    };
    g.post(
        "/v1/agents/bot/versions",
        json!({"upstreams": [format!("http://{dead}")]}),
    )
    .await;
    g.post(
        "/v1/agents/bot/versions",
        json!({"upstreams": [format!("http://{reset}")]}),
    )
    .await;
    g.deploy("bot", "staging", "v3").await;
    check(
        get(&g.url("/"), &[("authorization", &auth)]).await,
        502,
        "upstream_unavailable",
    );
    g.deploy("bot", "staging", "v4").await;
    check(
        get(&g.url("/"), &[("authorization", &auth)]).await,
        502,
        "upstream_unavailable",
    );

    g.deploy("bot", "staging", "v1").await;
    g.post("/v1/agents/bot/versions/v1/stop", json!({})).await;
    let r = get(&g.url("/"), &[("authorization", &auth)]).await;
    assert_eq!(r.header("x-switchyard-version"), Some("v1"));
    check(r, 503, "version_stopped");
    g.post("/v1/agents/bot/versions/v1/start", json!({})).await;
    assert_eq!(
        get(&g.url("/"), &[("authorization", &auth)]).await.status,
        200
    );

    g.post("/v1/agents/bot/environments/staging/undeploy", json!({}))
        .await;
    check(
        get(&g.url("/"), &[("authorization", &auth)]).await,
        503,
        "not_deployed",
    );
    g.deploy("bot", "staging", "v1").await;

    let (s, _) = g
        .admin(Method::DELETE, &format!("/v1/tokens/{id}"), None)
        .await;
    assert_eq!(s, 204);
    check(
        get(&g.url("/"), &[("authorization", &auth)]).await,
        403,
        "token_revoked",
    );

    let soon = switchyard::domain::format_time(switchyard::domain::now_ms() + 1500);
    let (_, t) = g
        .post(
            "/v1/agents/bot/environments/staging/tokens",
            json!({"expires_at": soon}),
        )
        .await;
    let short = bearer(t["token"].as_str().unwrap());
    assert_eq!(
        get(&g.url("/"), &[("authorization", &short)]).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    check(
        get(&g.url("/"), &[("authorization", &short)]).await,
        403,
        "token_expired",
    );
}

#[tokio::test]
async fn refused_upstreams_are_skipped() {
    let (g, token, _) = setup().await;
    let dead = dead_address().await;
    let live = echo_upstream("v3").await;
    let (s, b) = g
        .post(
            "/v1/agents/bot/versions",
            json!({"upstreams": [format!("http://{dead}"), format!("http://{live}")]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    g.deploy("bot", "staging", "v3").await;
    for _ in 0..6 {
        let r = send(
            Method::POST,
            &g.url("/"),
            &[("authorization", &bearer(&token))],
            Bytes::from_static(b"body"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["body_len"], 4, "the body survives the failover");
    }
}

#[tokio::test]
async fn http2_cleartext_on_the_same_port() {
    let (g, token, _) = setup().await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::get(g.url("/h2"))
        .header("authorization", bearer(&token))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-version"], "v1");
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["path"], "/h2");
    assert_eq!(body["headers"]["x-forwarded-host"], g.client.to_string());
}

#[tokio::test]
async fn tls_with_alpn_h2_and_http1() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let acceptor = switchyard::server::tls_acceptor_from(vec![cert_der.clone()], key).unwrap();
    let (g, token, _) = setup_with(TestGateway::builder().tls(acceptor)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    for (alpn, want) in [
        (&b"h2"[..], http::Version::HTTP_2),
        (&b"http/1.1"[..], http::Version::HTTP_11),
    ] {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = TcpStream::connect(g.tls.unwrap()).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let req = http::Request::get("https://localhost/tls")
            .header("authorization", bearer(&token))
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = if want == http::Version::HTTP_2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (mut parts, body) = req.into_parts();
            parts.uri = "/tls".parse().unwrap();
            send.send_request(http::Request::from_parts(parts, body))
                .await
                .unwrap()
        };
        assert_eq!(resp.version(), want);
        assert_eq!(resp.status(), 200);
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");
        assert_eq!(body["version"], "v1");
    }
}

#[tokio::test]
async fn server_sent_events_stream_without_buffering() {
    let g = TestGateway::start().await;
    let second_sent = Arc::new(AtomicBool::new(false));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    {
        let second_sent = Arc::clone(&second_sent);
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let _ = s.read(&mut buf).await.unwrap();
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            let ev = |n: u8| {
                let data = format!("data: event {n}\n\n");
                format!("{:x}\r\n{data}\r\n", data.len())
            };
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(ev(1).as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            second_sent.store(true, Ordering::SeqCst);
            s.write_all(ev(2).as_bytes()).await.unwrap();
            s.write_all(b"0\r\n\r\n").await.unwrap();
        });
    }
    g.agent_with_versions("sse", &[up]).await;
    g.deploy("sse", "staging", "v1").await;
    let (token, _) = g.token("sse", "staging").await;

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(g.url("/events"))
        .header("authorization", bearer(&token))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: event 1\n\n");
    assert!(
        !second_sent.load(Ordering::SeqCst),
        "the first event arrived only after the second was sent"
    );
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"data: event 2\n\n");
}

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let g = TestGateway::start().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        let _ = ws.send(m).await;
                    }
                }
            });
        }
    });
    g.agent_with_versions("ws", &[up]).await;
    g.deploy("ws", "staging", "v1").await;
    let (token, _) = g.token("ws", "staging").await;

    let mut req = format!("ws://{}/socket", g.client)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", bearer(&token).parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["x-switchyard-version"], "v1");
    for i in 0..3 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("ping {i}"));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_data().as_ref(), &[0u8, 1, 2, 255]);
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let (g, token, _) =
        setup_with(TestGateway::builder().limits(|l| l.header_read_timeout_ms = 400)).await;
    let mut s = TcpStream::connect(g.client).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    assert_cut_off(&mut s, "the slow connection is closed").await;
    assert!(started.elapsed() < Duration::from_secs(3));
    // and a normal client is still served
    assert_eq!(
        get(&g.url("/"), &[("authorization", &bearer(&token))])
            .await
            .status,
        200
    );
}

/// The head timeout holds for every request on a kept-alive connection, not only the
/// first: after some requests, a head that stalls halfway, and a connection that goes
/// quiet, are each closed.
#[tokio::test]
async fn later_heads_on_a_kept_alive_connection_are_timed_too() {
    let (g, token, _) =
        setup_with(TestGateway::builder().limits(|l| l.header_read_timeout_ms = 400)).await;
    let request = format!("GET / HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n");
    for stall in [&b"GET / HTTP/1.1\r\nHost: x\r\n"[..], b""] {
        let mut s = TcpStream::connect(g.client).await.unwrap();
        // together well past one head timeout
        for _ in 0..4 {
            s.write_all(request.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                buf[..n].starts_with(b"HTTP/1.1 200"),
                "{:?}",
                String::from_utf8_lossy(&buf[..n])
            );
            // a pause within the head timeout
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        s.write_all(stall).await.unwrap();
        assert_cut_off(&mut s, "the stalled connection is closed").await;
    }
}

/// Within 5 s the gateway answers 408 or closes the connection.
async fn assert_cut_off(s: &mut TcpStream, what: &str) {
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .map(|r| r.unwrap_or(0))
        .expect(what);
    assert!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// A client loop sends requests without pause while the pointer flips between v1 and
/// v2 1,000 times: no request fails, and every request is served — as the upstream
/// that answered says — by a version installed by a flip between the last flip
/// acknowledged when it started and the last flip sent when it ended; so a request
/// that starts after a flip's 200 and ends before the next flip is sent is served by
/// exactly the version that flip installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_under_load() {
    let (g, token, _) = setup().await;
    let auth = bearer(&token);
    // flips[n] is the version installed by flip n; issued/acked count flips
    let issued = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let completions = Arc::new(AtomicU64::new(0));
    const FLIPS: u64 = 1000;
    let version_of = |n: u64| if n % 2 == 0 { "v1" } else { "v2" }; // flip 0 = the initial v1

    let mut clients = Vec::new();
    for _ in 0..2 {
        let (issued, acked, done, url, auth) = (
            Arc::clone(&issued),
            Arc::clone(&acked),
            Arc::clone(&done),
            g.url("/load"),
            auth.clone(),
        );
        let completions = Arc::clone(&completions);
        clients.push(tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let (mut total, mut strict, mut failed) = (0u64, 0u64, 0u64);
            while !done.load(Ordering::Acquire) {
                let start_acked = acked.load(Ordering::Acquire);
                let req = http::Request::get(&url)
                    .header("authorization", &auth)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let resp = client.request(req).await;
                let end_issued = issued.load(Ordering::Acquire);
                completions.fetch_add(1, Ordering::AcqRel);
                total += 1;
                let Ok(resp) = resp else {
                    failed += 1;
                    continue;
                };
                if resp.status() != 200 {
                    failed += 1;
                    continue;
                }
                // judged by what the upstream says it is, not by the gateway's header
                let header = resp.headers()["x-switchyard-version"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let got = seen["version"].as_str().unwrap().to_owned();
                assert_eq!(header, got, "the header names another version than served");
                let allowed: Vec<&str> = (start_acked..=end_issued).map(version_of).collect();
                assert!(
                    allowed.contains(&got.as_str()),
                    "served {got}; flips {start_acked}..={end_issued} allow {allowed:?}"
                );
                if start_acked == end_issued {
                    strict += 1;
                }
            }
            (total, strict, failed)
        }));
    }
    for n in 1..=FLIPS {
        issued.store(n, Ordering::Release);
        g.deploy("bot", "staging", version_of(n)).await;
        acked.store(n, Ordering::Release);
        // let the clients run a request or two on this version (bounded wait)
        let c0 = completions.load(Ordering::Acquire);
        for _ in 0..200 {
            if completions.load(Ordering::Acquire) >= c0 + 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    done.store(true, Ordering::Release);
    let (mut total, mut strict) = (0, 0);
    for c in clients {
        let (t, s, f) = c.await.unwrap();
        assert_eq!(f, 0, "failed requests");
        total += t;
        strict += s;
    }
    assert!(total > FLIPS, "the clients kept sending: {total}");
    assert!(strict > 0, "some requests ran entirely between two flips");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_upstream_request() {
    let g = TestGateway::start().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<bool>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let _ = s.read(&mut buf).await.unwrap();
        // never answer; report whether the gateway closed the connection
        let closed = matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
        let _ = tx.send(closed);
    });
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let mut c = TcpStream::connect(g.client).await.unwrap();
    let req = format!("GET /hang HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
    assert!(
        rx.await.unwrap(),
        "the upstream connection was closed when the client left"
    );
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let g = TestGateway::builder().start().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    {
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req| echo_answer("v1", req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    }
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    for _ in 0..30 {
        assert_eq!(
            get(&g.url("/"), &[("authorization", &auth)]).await.status,
            200
        );
    }
    // one connection per worker thread at most, never one per request
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&n),
        "{n} upstream connections for 30 sequential requests"
    );
    // a move to another version on the same upstream keeps the warm connections
    g.post(
        "/v1/agents/bot/versions",
        json!({"upstreams": [format!("http://{up}")]}),
    )
    .await;
    g.deploy("bot", "staging", "v2").await;
    for _ in 0..10 {
        assert_eq!(
            get(&g.url("/"), &[("authorization", &auth)]).await.status,
            200
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        n,
        "the pool is shared across versions"
    );
}

/// An upstream that answers one request per connection with keep-alive framing, then,
/// after 100 ms idle, closes its side (FIN) and reports once the gateway has closed
/// its side too.
async fn upstream_closing_idle_connections() -> (
    SocketAddr,
    Arc<AtomicU64>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                s.write_all(answer).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                s.shutdown().await.unwrap();
                // whatever arrives now is not answered; EOF means the gateway let go
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        let _ = tx.send(());
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, rx)
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced_without_an_error() {
    let g = TestGateway::start().await;
    let (up, accepted, _closed) = upstream_closing_idle_connections().await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    for i in 1..=3 {
        let r = get(&g.url("/"), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.text(), "ok");
        // the upstream has closed the idle connection by the next request
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_connections_the_upstream_closed_are_let_go() {
    let g = TestGateway::start().await;
    let (up, _, mut closed) = upstream_closing_idle_connections().await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let r = get(&g.url("/"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(r.status, 200);
    // no further request: the worker's sweep (every 5 s) notices the close
    let let_go = tokio::time::timeout(Duration::from_secs(8), closed.recv()).await;
    assert!(
        matches!(let_go, Ok(Some(()))),
        "the gateway still holds a connection its upstream closed"
    );
}

#[tokio::test]
async fn each_request_on_a_kept_alive_upstream_connection_gets_its_own_response_deadline() {
    let mut b = TestGateway::builder().limits(|l| l.upstream_response_timeout_ms = 600);
    // one worker: every request takes the same pooled upstream connection
    b.config.workers = 1;
    let g = b.start().await;
    let (up, seen) = counting_upstream("ok").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    // together well past one deadline, each within its own
    for i in 1..=4 {
        let r = get(&g.url("/slow/300"), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(seen.connections(), 1, "the requests shared one connection");
    let r = get(&g.url("/slow/3000"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.error_code(), "upstream_timeout");
    // the connection that timed out is not reused; the next request gets a new one
    let r = get(&g.url("/"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(seen.connections(), 2);
}

#[tokio::test]
async fn stopping_closes_idle_keep_alive_connections_without_waiting_for_the_drain_deadline() {
    let (g, token, _) =
        setup_with(TestGateway::builder().limits(|l| l.drain_timeout_ms = 60_000)).await;
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(g.client).await.unwrap();
        let req = format!("GET / HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {token}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        conns.push(s);
    }
    // idle, kept alive: the stop must reach every one of them
    let stopping = tokio::spawn(g.stop());
    for mut s in conns {
        let mut buf = [0u8; 64];
        let end = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(
            matches!(end, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection was left open after the stop: {end:?}"
        );
    }
    stopping.await.unwrap();
}
