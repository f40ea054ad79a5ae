//! Slow and greedy clients: connection and in-flight limits answer 503 `overloaded`
//! instead of queueing without bound; a stalled request body gets 408 and the
//! connection closed; a client that stops reading has its connection closed; a normal
//! client keeps being served meanwhile. Everything bounded in count and time.

use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (or `limit` passes); returns the bytes and whether the
/// connection was closed.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

async fn metric(g: &TestGateway, name: &str) -> f64 {
    let text = get(&format!("http://{}/metrics", g.admin), &[])
        .await
        .text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .map(|v| v.trim().parse().unwrap_or(-1.0))
        })
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_room_comes_back() {
    let g = TestGateway::builder()
        .limits(|l| l.max_connections = 4)
        .start()
        .await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");

    // four keep-alive connections, each served once and left open
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(g.client).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    // the fifth is told so, and closed
    for _ in 0..3 {
        let mut s = TcpStream::connect(g.client).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let (out, closed) = read_to_close(&mut s, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("\"code\":\"overloaded\""), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("retry-after: 1"),
            "{text}"
        );
        assert!(closed, "an over-limit connection stays open");
    }
    assert_eq!(
        metric(
            &g,
            "switchyard_overload_rejections_total{limit=\"connections\"}"
        )
        .await,
        3.0
    );
    // one held connection goes away: a new client is served again
    drop(held.pop());
    eventually("a freed connection slot is used", || async {
        let mut s = TcpStream::connect(g.client).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let (out, _) = read_to_close(&mut s, Duration::from_millis(300)).await;
        out.starts_with(b"HTTP/1.1 200")
    })
    .await;
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_get_503() {
    // the limit is divided among the workers: one worker holds all of it
    let g = TestGateway::builder()
        .limits(|l| l.max_in_flight = 3)
        .config(|c| c.workers = 1)
        .start()
        .await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);

    let slow: Vec<_> = (0..3)
        .map(|_| {
            let (url, auth) = (g.url("/slow/1500"), auth.clone());
            tokio::spawn(async move { get(&url, &[("authorization", &auth)]).await.status })
        })
        .collect();
    eventually("three requests in flight", || async {
        metric(&g, "switchyard_requests_in_flight").await == 3.0
    })
    .await;
    let r = get(&g.url("/"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "overloaded");
    assert_eq!(r.header("retry-after"), Some("1"));
    for s in slow {
        assert_eq!(
            s.await.unwrap(),
            200,
            "admitted requests are served in full"
        );
    }
    assert_eq!(
        get(&g.url("/"), &[("authorization", &auth)]).await.status,
        200
    );
    assert_eq!(
        metric(
            &g,
            "switchyard_overload_rejections_total{limit=\"requests\"}"
        )
        .await,
        1.0
    );
    assert_eq!(metric(&g, "switchyard_requests_in_flight").await, 0.0);
}

/// Many clients that stop sending their request body halfway: each gets 408 and its
/// connection closed within the body timeout; the upstream never sees a complete
/// request from them; a normal client is served without delay meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_and_others_are_served() {
    let g = TestGateway::builder()
        .limits(|l| l.body_read_timeout_ms = 500)
        .start()
        .await;
    let (up, seen) = counting_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);

    let started = Instant::now();
    let slow: Vec<_> = (0..50)
        .map(|_| {
            let (addr, token) = (g.client, token.clone());
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let head = format!(
                    "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n"
                );
                s.write_all(head.as_bytes()).await.unwrap();
                s.write_all(&[b'a'; 100]).await.unwrap();
                // ... and nothing more
                let (out, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
                (String::from_utf8_lossy(&out).into_owned(), closed, Instant::now())
            })
        })
        .collect();
    for _ in 0..10 {
        let t = Instant::now();
        let r = send(
            http::Method::POST,
            &g.url("/"),
            &[("authorization", &auth)],
            bytes::Bytes::from_static(b"a normal body"),
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in slow {
        let (text, closed, at) = s.await.unwrap();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
        assert!(closed, "a stalled upload's connection stays open");
        assert!(
            at - started < Duration::from_millis(2500),
            "closed after {:?}",
            at - started
        );
    }
    assert_eq!(
        seen.complete(),
        10,
        "only the normal requests arrived whole"
    );
}

/// A client that asks for a large answer and stops reading: its connection is closed
/// within the send timeout instead of holding the gateway's buffers and the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_cut_off() {
    let g = TestGateway::builder()
        .limits(|l| l.send_timeout_ms = 400)
        .start()
        .await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    const SIZE: usize = 64 * 1024 * 1024;

    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (addr, token) = (g.client, token.clone());
            tokio::spawn(async move {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.set_recv_buffer_size(4096).unwrap();
                let mut s = sock.connect(addr).await.unwrap();
                let head = format!(
                    "GET /bytes/{SIZE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
                );
                s.write_all(head.as_bytes()).await.unwrap();
                // read a little, then stop reading for well past the send timeout
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2000)).await;
                let (rest, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
                (rest.len(), closed)
            })
        })
        .collect();
    // meanwhile a normal client is served promptly
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(
            get(&g.url("/"), &[("authorization", &auth)]).await.status,
            200
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in readers {
        let (read, closed) = r.await.unwrap();
        assert!(closed, "the connection ends");
        assert!(
            read < SIZE / 2,
            "a client that stopped reading still got {read} bytes"
        );
    }
    eventually("the stalled connections are gone", || async {
        metric(&g, "switchyard_client_connections").await <= 1.0
    })
    .await;
}

/// A connection still in its TLS handshake, or part-way through the HTTP/2 preface,
/// obeys the stop signal: the gateway stops at once instead of waiting for the head
/// timeout (60 s here); a partial preface followed by HTTP/1.1 is still served as
/// HTTP/1.1, and one completed later as HTTP/2.
#[tokio::test]
async fn connections_before_their_protocol_obey_the_stop_signal() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let acceptor =
        switchyard::server::tls_acceptor_from(vec![cert.cert.der().clone()], key).unwrap();
    let g = TestGateway::builder()
        .tls(acceptor)
        .limits(|l| {
            l.header_read_timeout_ms = 60_000;
            l.drain_timeout_ms = 30_000;
        })
        .start()
        .await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;

    // "PRI * HTTP" then an HTTP/1.1 request that merely starts alike: still HTTP/1.1
    // (and the bytes read during detection are not lost)
    let mut s = TcpStream::connect(g.client).await.unwrap();
    s.write_all(b"PRI").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"X / HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // the preface in two pieces, then an empty SETTINGS frame: the gateway answers
    // with its own SETTINGS frame (HTTP/2)
    let mut s = TcpStream::connect(g.client).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        n >= 9 && buf[3] == 4,
        "not an HTTP/2 SETTINGS frame: {:?}",
        &buf[..n]
    );
    drop(s);

    // the connections that hold the stop: a TLS connection that never says hello, and
    // a cleartext one stuck in the middle of the preface
    let _tls = TcpStream::connect(g.tls.unwrap()).await.unwrap();
    let mut partial = TcpStream::connect(g.client).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    g.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stop waited {:?} for connections that had not begun",
        started.elapsed()
    );
}
