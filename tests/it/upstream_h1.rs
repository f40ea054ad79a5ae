//! The gateway's own HTTP/1.1 client against a scripted upstream: every way a response
//! can be framed, the answers it must refuse, request bodies of unknown length, and
//! which connections are reused. Judged by what the raw upstream received and by what
//! the client got.

use crate::support::*;
use bytes::Bytes;
use http::Method;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream saw.
#[derive(Default)]
struct Upstream {
    connections: AtomicU64,
    /// Each request as received: head, then the body as it arrived on the wire.
    requests: Mutex<Vec<String>>,
}

/// One request off `s`: its head and its body bytes as sent (content-length or
/// chunked, read to the end of the last chunk); `None` at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = lower.contains("transfer-encoding: chunked");
    let complete = |b: &[u8]| match (length, chunked) {
        (Some(n), _) => b.len() >= n,
        (None, true) => b.ends_with(b"0\r\n\r\n"),
        (None, false) => true,
    };
    while !complete(buf) {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Vec<u8> = match length {
        Some(n) => buf.drain(..n).collect(),
        None => std::mem::take(buf),
    };
    Some((head, body))
}

/// An upstream that answers each request with the bytes its path names, then keeps
/// the connection unless the script says to close it.
async fn scripted() -> (SocketAddr, Arc<Upstream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Upstream::default());
    let up = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            up.connections.fetch_add(1, Ordering::SeqCst);
            let up = Arc::clone(&up);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some((head, body)) = read_request(&mut s, &mut buf).await {
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    up.requests
                        .lock()
                        .unwrap()
                        .push(format!("{head}{}", String::from_utf8_lossy(&body)));
                    let (answer, close): (Vec<u8>, bool) = match path.as_str() {
                        "/chunked" => (
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n\
                              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
                                .to_vec(),
                            false,
                        ),
                        "/close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(), true),
                        "/interim" => (
                            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\
                              Link: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\n\
                              Content-Length: 2\r\n\r\nok"
                                .to_vec(),
                            false,
                        ),
                        "/both" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\
                              Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                                .to_vec(),
                            false,
                        ),
                        "/two-lengths" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"
                                .to_vec(),
                            false,
                        ),
                        "/bad-chunk" => (
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"
                                .to_vec(),
                            false,
                        ),
                        "/upgrade" => (
                            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n".to_vec(),
                            false,
                        ),
                        "/truncated" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf".to_vec(),
                            true,
                        ),
                        "/extra" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\
                              Content-Length: 8\r\n\r\nsmuggled"
                                .to_vec(),
                            false,
                        ),
                        "/no-content" => (
                            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n".to_vec(),
                            false,
                        ),
                        "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(), false),
                        "/http10" => (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), true),
                        "/big" => {
                            let body = vec![b'b'; 300_000];
                            let mut a = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .into_bytes();
                            a.extend_from_slice(&body);
                            (a, false)
                        }
                        _ => {
                            let text = format!("got {} bytes", body.len());
                            (
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len())
                                    .into_bytes(),
                                false,
                            )
                        }
                    };
                    if s.write_all(&answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn gateway(up: SocketAddr) -> (TestGateway, String) {
    let mut b = TestGateway::builder().proxy(|p| p.request_buffer_bytes = 1024);
    // one worker: one pool, so reuse is visible in the upstream's connection count
    b.config.workers = 1;
    let g = b.start().await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    (g, bearer(&token))
}

#[tokio::test]
async fn every_framing_of_an_answer_arrives_whole() {
    let (up, seen) = scripted().await;
    let (g, auth) = gateway(up).await;
    let h = [("authorization", auth.as_str())];

    let r = get(&g.url("/chunked"), &h).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "hello world".into()));
    assert!(
        r.header("transfer-encoding").is_none() || r.header("transfer-encoding") == Some("chunked")
    );
    assert!(
        r.header("trailer").is_none(),
        "hop-by-hop `trailer` forwarded"
    );
    let r = get(&g.url("/interim"), &h).await;
    assert_eq!((r.status.as_u16(), r.text()), (201, "ok".into()));
    let r = send(Method::HEAD, &g.url("/head"), &h, Bytes::new()).await;
    assert_eq!(
        (r.status.as_u16(), r.header("content-length")),
        (200, Some("5"))
    );
    let r = get(&g.url("/no-content"), &h).await;
    assert_eq!((r.status.as_u16(), r.text()), (204, String::new()));
    let r = get(&g.url("/big"), &h).await;
    assert_eq!(r.body.len(), 300_000);
    assert!(r.body.iter().all(|&b| b == b'b'));
    // all of these left the connection fit for the next request
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);

    // read until the upstream closes: whole, and that connection is not reused
    let r = get(&g.url("/close"), &h).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "until the end".into()));
    let r = get(&g.url("/http10"), &h).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "ok".into()));
    let r = get(&g.url("/"), &h).await;
    assert_eq!(r.text(), "got 0 bytes");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);

    // bytes after an answer are never read as the next one
    let r = get(&g.url("/extra"), &h).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "ok".into()));
    let r = get(&g.url("/"), &h).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "got 0 bytes".into()));
    assert_eq!(seen.connections.load(Ordering::SeqCst), 4);
    g.stop().await;
}

#[tokio::test]
async fn answers_that_could_be_read_two_ways_are_refused() {
    let (up, seen) = scripted().await;
    let (g, auth) = gateway(up).await;
    let h = [("authorization", auth.as_str())];
    let mut connections = 1;
    for path in ["/both", "/two-lengths", "/upgrade"] {
        let r = get(&g.url(path), &h).await;
        assert_eq!(r.status.as_u16(), 502, "{path}: {}", r.text());
        assert_eq!(r.error_code(), "upstream_unavailable", "{path}");
        // and the connection is not used again
        let r = get(&g.url("/"), &h).await;
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, "got 0 bytes".into()),
            "after {path}"
        );
        connections += 1;
        assert_eq!(
            seen.connections.load(Ordering::SeqCst),
            connections,
            "after {path}"
        );
    }
    let m = scrape(&g).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("switchyard_upstream_errors_total")
                && l.contains("kind=\"protocol\"")
                && l.ends_with(" 3")),
        "{m}"
    );

    // a body cut short, or a malformed chunk after the head went out: the client's
    // response is cut too (its connection closed), never completed
    let addr = g.url("/").replace("http://", "");
    let addr = addr.trim_end_matches('/');
    // (hyper writes the head with the first body bytes, after polling the body once
    // more: when the failure is found then, nothing at all is written)
    for path in ["/truncated", "/bad-chunk"] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "{path}: the client connection was left open");
        let text = String::from_utf8_lossy(&got);
        if text.is_empty() {
            continue;
        }
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        match path {
            // announced 10 bytes
            "/truncated" => assert!(body.len() < 10, "{path}: {text}"),
            _ => assert!(
                !body.ends_with("0\r\n\r\n"),
                "{path}: ended as if whole: {text}"
            ),
        }
    }
    g.stop().await;
}

async fn scrape(g: &TestGateway) -> String {
    get(&format!("http://{}/metrics", g.admin), &[])
        .await
        .text()
}

#[tokio::test]
async fn request_bodies_are_framed_for_the_upstream() {
    let (up, seen) = scripted().await;
    let (g, auth) = gateway(up).await;
    let addr = g.url("/").replace("http://", "");
    let addr = addr.trim_end_matches('/').to_owned();

    // a small body: read whole, sent with its length
    let r = send(
        Method::POST,
        &g.url("/small"),
        &[("authorization", &auth)],
        Bytes::from_static(b"abcdefg"),
    )
    .await;
    assert_eq!(r.text(), "got 7 bytes");

    // a chunked body over the buffer: streamed, chunked again, every byte there
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let piece = "x".repeat(1000);
    let mut req = format!(
        "POST /streamed HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    for _ in 0..5 {
        req.push_str(&format!("{:x}\r\n{piece}\r\n", piece.len()));
    }
    req.push_str("0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&got[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let requests = seen.requests.lock().unwrap().clone();
    let streamed = requests
        .iter()
        .find(|r| r.starts_with("POST /streamed"))
        .unwrap();
    assert!(
        streamed.contains("transfer-encoding: chunked\r\n"),
        "{streamed}"
    );
    let body = &streamed[streamed.find("\r\n\r\n").unwrap() + 4..];
    let mut decoded = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            break;
        }
        decoded.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    assert_eq!(decoded, piece.repeat(5));
    let small = requests
        .iter()
        .find(|r| r.starts_with("POST /small"))
        .unwrap();
    assert!(small.contains("content-length: 7\r\n"), "{small}");
    assert!(small.ends_with("\r\n\r\nabcdefg"), "{small}");
    // the head: host first, the client's authorization gone, the gateway's fields last
    let lines: Vec<&str> = small.lines().collect();
    assert_eq!(lines[0], "POST /small HTTP/1.1");
    assert!(lines[1].starts_with("host: 127.0.0.1:"), "{small}");
    assert!(
        !small.to_ascii_lowercase().contains("authorization"),
        "{small}"
    );
    assert!(small.contains("x-switchyard-version: v1\r\n"), "{small}");
    g.stop().await;
}
