//! Forwarding fields treated alike (`forwarded` like `x-forwarded-*`), and failures
//! counted once against whoever caused them: a reset on a fresh upstream connection
//! once, a refused WebSocket connect as `connect`, a client that leaves mid-upload
//! not at all as an upstream error.

use crate::support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn scrape(g: &TestGateway) -> String {
    get(&format!("http://{}/metrics", g.admin), &[])
        .await
        .text()
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn upstream_errors(text: &str, kind: &str) -> f64 {
    value(
        text,
        &format!(
            r#"switchyard_upstream_errors_total{{agent="bot",environment="staging",kind="{kind}"}}"#
        ),
    )
}

#[tokio::test]
async fn forwarded_is_replaced_like_x_forwarded_unless_trusted() {
    let up = echo_upstream("v1").await;
    let sent = [
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "spoofed.example"),
    ];
    for trusted in [false, true] {
        let g = TestGateway::builder()
            .proxy(|p| p.trust_forwarded = trusted)
            .start()
            .await;
        g.agent_with_versions("bot", &[up]).await;
        g.deploy("bot", "staging", "v1").await;
        let (token, _) = g.token("bot", "staging").await;
        let auth = bearer(&token);
        let mut headers = vec![("authorization", auth.as_str()), ("host", "api.example")];
        headers.extend_from_slice(&sent);
        let seen = get(&g.url("/"), &headers).await.json();
        let h = &seen["headers"];
        if trusted {
            assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "{seen}");
            assert_eq!(
                h["forwarded"],
                "for=6.6.6.6;proto=https, for=127.0.0.1;proto=http;host=\"api.example\"",
                "{seen}"
            );
            assert_eq!(h["x-forwarded-proto"], "https", "{seen}");
            assert_eq!(h["x-forwarded-host"], "spoofed.example", "{seen}");
        } else {
            assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{seen}");
            assert_eq!(
                h["forwarded"], "for=127.0.0.1;proto=http;host=\"api.example\"",
                "{seen}"
            );
            assert_eq!(h["x-forwarded-proto"], "http", "{seen}");
            assert_eq!(h["x-forwarded-host"], "api.example", "{seen}");
        }
        // without a client `forwarded`, none is added (x-forwarded-* carry it)
        let seen = get(&g.url("/"), &[("authorization", auth.as_str())])
            .await
            .json();
        assert!(seen["headers"].get("forwarded").is_none(), "{seen}");
    }
}

#[tokio::test]
async fn a_reset_on_a_fresh_connection_is_counted_once() {
    // an upstream that accepts and closes every connection at once
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    let g = TestGateway::start().await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let r = get(&g.url("/"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(r.status, 502);
    let text = scrape(&g).await;
    let all: f64 = ["connect", "timeout", "reset", "protocol"]
        .iter()
        .map(|k| upstream_errors(&text, k))
        .sum();
    assert_eq!(all, 1.0, "one failure, one count: {text}");
}

#[tokio::test]
async fn a_refused_websocket_connect_is_a_connect_error() {
    let dead = dead_address().await;
    let g = TestGateway::start().await;
    g.agent_with_versions("bot", &[dead]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let mut s = TcpStream::connect(g.client).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 502"));
    let text = scrape(&g).await;
    assert_eq!(upstream_errors(&text, "connect"), 1.0, "{text}");
    assert_eq!(upstream_errors(&text, "reset"), 0.0, "{text}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_upload_is_not_an_upstream_error() {
    let (up, seen) = counting_upstream("v1").await;
    // a small buffer, so the body is streamed and the upstream sees its start
    let g = TestGateway::builder()
        .proxy(|p| p.request_buffer_bytes = 16)
        .start()
        .await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let mut s = TcpStream::connect(g.client).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'x'; 4096]).await.unwrap();
    eventually("the upstream has the head", || async { seen.heads() == 1 }).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = scrape(&g).await;
    for k in ["connect", "timeout", "reset", "protocol"] {
        assert_eq!(upstream_errors(&text, k), 0.0, "{k}: {text}");
    }
    assert_eq!(
        value(
            &text,
            r#"switchyard_requests_total{agent="bot",environment="staging",version="v1",status_class="5xx"}"#
        ),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"switchyard_requests_total{agent="bot",environment="staging",version="v1",status_class="4xx"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(seen.complete(), 0);
}

/// The real binary's access log says what happened to a client that left mid-upload:
/// 499, as nginx logs it, never a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_says_499_for_a_client_that_left() {
    let dir = tempfile::tempdir().unwrap();
    let b = Binary::start(dir.path(), "").await;
    let (up, seen) = counting_upstream("v1").await;
    b.agent_with_versions("bot", &[up]).await;
    b.deploy("bot", "staging", "v1").await;
    let (token, _) = b.token("bot", "staging").await;
    let mut s = TcpStream::connect(b.client).await.unwrap();
    let head = format!(
        "POST /leaving HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'x'; 100]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    eventually("the access log has the request, as 499", || async {
        b.log_text().contains("\"status\":499")
    })
    .await;
    assert!(!b.log_text().contains("\"status\":502"), "{}", b.log_text());
    assert_eq!(
        seen.heads(),
        0,
        "a broken small body never reached the upstream"
    );
}
