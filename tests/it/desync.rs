//! The HTTP/1.1 framing classes a request-smuggling test set looks for, each on a
//! keep-alive connection that first carries a good request: an invalid `host`,
//! `chunked` applied more than once, field names that mimic framing fields, and
//! bodies that break before their end. A recording upstream checks that it never saw
//! an ambiguous or truncated request (every head it received came with its whole
//! body), and the client gets its own error, never a 502.

use crate::support::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Bed {
    g: TestGateway,
    seen: Arc<Seen>,
    auth: String,
}

async fn bed(builder: GatewayBuilder) -> Bed {
    let g = builder.start().await;
    let (up, seen) = counting_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    Bed {
        g,
        seen,
        auth: format!("Authorization: Bearer {token}\r\n"),
    }
}

impl Bed {
    /// A good request to put first on a keep-alive connection.
    fn good(&self) -> String {
        format!(
            "POST /good HTTP/1.1\r\nHost: gw\r\n{}Content-Length: 2\r\n\r\nok",
            self.auth
        )
    }
}

/// Writes `parts` with `pause` between them, then reads until the gateway closes the
/// connection (or 3 s pass). Returns the responses' status lines and whether the
/// connection was closed.
async fn exchange(addr: SocketAddr, parts: &[&[u8]], pause: Duration) -> (Vec<u16>, String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        if s.write_all(p).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&out).into_owned();
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect();
    (statuses, text, closed)
}

/// No upstream error of any kind was counted.
async fn no_upstream_errors(g: &TestGateway) {
    let m = get(&format!("http://{}/metrics", g.admin), &[])
        .await
        .text();
    assert!(
        !m.lines()
            .any(|l| l.starts_with("switchyard_upstream_errors_total") && !l.ends_with(" 0")),
        "{m}"
    );
}

/// The upstream never received a head without its whole body.
fn nothing_truncated(seen: &Seen, what: &str) {
    assert_eq!(
        seen.heads(),
        seen.complete(),
        "{what}: the upstream saw a request whose body was cut: {}",
        seen.text.lock().unwrap()
    );
}

#[tokio::test]
async fn an_invalid_host_is_refused_and_closes_the_connection() {
    let b = bed(TestGateway::builder()).await;
    let hosts = [
        "a b", "a/b", "a@b", "", "[::1", "h:8o", "h:123456", "a\"b", "a<b", "x:1:2", "%zz",
    ];
    for (i, h) in hosts.iter().enumerate() {
        let bad = format!("GET /bad HTTP/1.1\r\nHost: {h}\r\n{}\r\n", b.auth);
        let req = format!("{}{bad}", b.good());
        let (statuses, text, closed) =
            exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
        assert_eq!(statuses, [200, 400], "host {h:?}: {text}");
        assert!(text.contains("\"bad_request\""), "host {h:?}: {text}");
        assert!(closed, "host {h:?}: the connection stays open");
        assert_eq!(
            b.seen.heads(),
            i as u64 + 1,
            "host {h:?} reached the upstream"
        );
    }
    // valid forms pass
    for h in ["example.com:8080", "[::1]:8443", "127.0.0.1", "a-b.c_d~e"] {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {h}\r\n{}Connection: close\r\n\r\n",
            b.auth
        );
        let (statuses, text, _) = exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
        assert_eq!(statuses, [200], "host {h:?}: {text}");
    }
    nothing_truncated(&b.seen, "hosts");
}

#[tokio::test]
async fn chunked_is_applied_exactly_once_or_refused() {
    let b = bed(TestGateway::builder()).await;
    let body = "5\r\nhello\r\n0\r\n\r\n";
    let cases: [(&str, &str, u16); 9] = [
        (
            "chunked, chunked",
            "Transfer-Encoding: chunked, chunked\r\n",
            400,
        ),
        (
            "two chunked lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        (
            "chunked twice with a length",
            "Content-Length: 15\r\nTransfer-Encoding: chunked, chunked\r\n",
            400,
        ),
        (
            "two lines with a length",
            "Transfer-Encoding: chunked\r\nContent-Length: 15\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        (
            "chunked,chunked",
            "Transfer-Encoding: chunked,chunked\r\n",
            400,
        ),
        ("an empty element", "Transfer-Encoding: , chunked\r\n", 400),
        ("a parameter", "Transfer-Encoding: chunked;ext=1\r\n", 400),
        ("gzip first", "Transfer-Encoding: gzip, chunked\r\n", 501),
        (
            "an unknown coding on its own line",
            "Transfer-Encoding: x-custom\r\nTransfer-Encoding: chunked\r\n",
            501,
        ),
    ];
    for (i, (what, te, status)) in cases.iter().enumerate() {
        let bad = format!("POST /bad HTTP/1.1\r\nHost: gw\r\n{}{te}\r\n{body}", b.auth);
        // and a request smuggled behind it, which must never be served
        let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: gw\r\n{}\r\n", b.auth);
        let req = format!("{}{bad}{smuggled}", b.good());
        let (statuses, text, closed) =
            exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
        assert_eq!(statuses, [200, *status], "{what}: {text}");
        assert!(closed, "{what}: the connection stays open");
        assert_eq!(b.seen.heads(), i as u64 + 1, "{what}: reached the upstream");
    }
    assert!(!b.seen.text.lock().unwrap().contains("/smuggled"));
    // one chunked, with spaces and any case, is served
    let ok = format!(
        "POST /one HTTP/1.1\r\nHost: gw\r\n{}Transfer-Encoding:  Chunked \r\n\r\n{body}",
        b.auth
    );
    let req = format!("{}{ok}{}", b.good(), b.good());
    let (statuses, text, _) = exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
    assert_eq!(statuses, [200, 200, 200], "{text}");
    nothing_truncated(&b.seen, "codings");
}

#[tokio::test]
async fn framing_lookalike_names_never_reach_the_upstream() {
    let b = bed(TestGateway::builder()).await;
    let req = format!(
        "{}POST /look HTTP/1.1\r\nHost: gw\r\n{}Content-Length: 5\r\nTransfer_Encoding: chunked\r\nContent_Length: 99\r\nX_Forwarded_For: 6.6.6.6\r\nProxy_Connection: keep-alive\r\nX_Custom_Thing: kept\r\n\r\nhello{}",
        b.good(),
        b.auth,
        b.good()
    );
    let (statuses, text, _) = exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
    assert_eq!(statuses, [200, 200, 200], "{text}");
    let seen = b.seen.text.lock().unwrap().to_lowercase();
    for name in [
        "transfer_encoding",
        "content_length",
        "x_forwarded_for",
        "proxy_connection",
    ] {
        assert!(!seen.contains(name), "{name} reached the upstream: {seen}");
    }
    assert!(seen.contains("x_custom_thing: kept"), "{seen}");
    assert!(!seen.contains("6.6.6.6"), "{seen}");
    drop(seen);
    nothing_truncated(&b.seen, "lookalikes");

    // drop_all: every name with an underscore goes
    let b = bed(TestGateway::builder().proxy(|p| {
        p.underscore_fields = switchyard::config::UnderscoreFields::DropAll;
    }))
    .await;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: gw\r\n{}X_Custom_Thing: gone\r\nConnection: close\r\n\r\n",
        b.auth
    );
    let (statuses, text, _) = exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
    assert_eq!(statuses, [200], "{text}");
    assert!(!b
        .seen
        .text
        .lock()
        .unwrap()
        .to_lowercase()
        .contains("x_custom_thing"));
}

#[tokio::test]
async fn a_broken_body_is_the_clients_error_and_never_reaches_the_upstream() {
    let b = bed(TestGateway::builder().limits(|l| l.body_read_timeout_ms = 300)).await;
    let head = |framing: &str| {
        format!(
            "{}POST /broken HTTP/1.1\r\nHost: gw\r\n{}{framing}\r\n",
            b.good(),
            b.auth
        )
    };
    // a body shorter than its length, then a stall: 408
    let req = head("Content-Length: 10\r\n") + "hello";
    let (statuses, text, closed) = exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
    assert_eq!(statuses, [200, 408], "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
    assert!(closed);
    // chunked data past its size, a missing CRLF, a bad size: 400
    for (what, chunks) in [
        ("data past the chunk size", "5\r\nhelloXX\r\n0\r\n\r\n"),
        ("no CRLF after the data", "5\r\nhello0\r\n\r\n"),
        ("a size that is not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        (
            "a second chunk broken",
            "5\r\nhello\r\n3\r\nabcdef\r\n0\r\n\r\n",
        ),
    ] {
        let req = head("Transfer-Encoding: chunked\r\n") + chunks;
        let (statuses, text, closed) =
            exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
        assert_eq!(statuses, [200, 400], "{what}: {text}");
        assert!(text.contains("\"bad_request\""), "{what}: {text}");
        assert!(closed, "{what}");
    }
    // the client leaves mid-body (length and chunked): nothing reaches the upstream
    for framing in ["Content-Length: 10\r\n", "Transfer-Encoding: chunked\r\n"] {
        let mut s = TcpStream::connect(b.g.client).await.unwrap();
        let req = head(framing)
            + if framing.starts_with("Content") {
                "hel"
            } else {
                "5\r\nhel"
            };
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap(); // the good request's answer
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // only the good requests arrived, each whole
    assert_eq!(b.seen.heads(), 7, "{}", b.seen.text.lock().unwrap());
    nothing_truncated(&b.seen, "small bodies");
    assert!(!b.seen.text.lock().unwrap().contains("/broken"));

    // no upstream error was counted for any of it
    no_upstream_errors(&b.g).await;
}

#[tokio::test]
async fn a_large_broken_body_is_cut_upstream_and_answered_as_the_clients_error() {
    // over the buffer: streamed, so the upstream sees the start of it; the client
    // still gets 400 (not 502) and no upstream error is counted
    let b = bed(TestGateway::builder().proxy(|p| p.request_buffer_bytes = 1024)).await;
    let chunk = "x".repeat(2000);
    let req = format!(
        "POST /big HTTP/1.1\r\nHost: gw\r\n{}Transfer-Encoding: chunked\r\n\r\n7d0\r\n{chunk}\r\n7d0\r\n{chunk}XXXX\r\n0\r\n\r\n",
        b.auth
    );
    let (statuses, text, closed) = exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
    assert_eq!(statuses, [400], "{text}");
    assert!(text.contains("\"bad_request\""), "{text}");
    assert!(closed);
    no_upstream_errors(&b.g).await;
    // a body within the buffer goes upstream whole, with a content-length even when
    // the client sent it chunked
    let req = format!(
        "POST /small HTTP/1.1\r\nHost: gw\r\n{}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        b.auth
    );
    let (statuses, text, _) = exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
    assert_eq!(statuses, [200], "{text}");
    // a streamed body (over the buffer) with a length in an odd form: the upstream
    // gets the length in canonical form
    let req = format!(
        "POST /streamed HTTP/1.1\r\nHost: gw\r\n{}Content-Length: 0002000\r\nConnection: close\r\n\r\n{chunk}",
        b.auth
    );
    let (statuses, text, _) = exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
    assert_eq!(statuses, [200], "{text}");
    let seen = b.seen.text.lock().unwrap().clone();
    let streamed = &seen[seen.find("POST /streamed").unwrap()..];
    assert!(streamed.contains("content-length: 2000\n"), "{streamed}");
    let small = &seen[seen.find("POST /small").unwrap()..];
    assert!(small.contains("content-length: 7"), "{small}");
    assert!(small.contains("abcdefg"), "{small}");
    assert!(!small.contains("transfer-encoding"), "{small}");
}

/// Framing variants beyond the four classes: each is either refused (400, connection
/// closed, nothing forwarded) or forwarded with its body whole, re-framed with a
/// canonical `content-length`, and nothing of its framing (extensions, trailers, a
/// second length) left for another hop to read differently.
#[tokio::test]
async fn other_framing_variants_are_refused_or_reframed() {
    let b = bed(TestGateway::builder()).await;
    // (what, framing fields, body bytes as sent, the body it stands for, must refuse)
    let cases: [(&str, &str, &str, &str, bool); 12] = [
        (
            "length with leading zeros",
            "Content-Length: 005\r\n",
            "hello",
            "hello",
            false,
        ),
        (
            "a repeated equal length in one line",
            "Content-Length: 5, 5\r\n",
            "hello",
            "hello",
            false,
        ),
        (
            "a repeated equal length on two lines",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "hello",
            "hello",
            false,
        ),
        (
            "a chunk extension",
            "Transfer-Encoding: chunked\r\n",
            "5;ext=\"v\"\r\nhello\r\n0\r\n\r\n",
            "hello",
            false,
        ),
        (
            "a trailer field",
            "Transfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\nX-Smuggle: t\r\n\r\n",
            "hello",
            false,
        ),
        (
            "bare LF in chunk lines",
            "Transfer-Encoding: chunked\r\n",
            "5\nhello\n0\n\n",
            "hello",
            false,
        ),
        (
            "a chunk size that overflows",
            "Transfer-Encoding: chunked\r\n",
            "fffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
            "",
            true,
        ),
        (
            "a negative length",
            "Content-Length: -5\r\n",
            "hello",
            "",
            true,
        ),
        (
            "a length with a sign",
            "Content-Length: +5\r\n",
            "hello",
            "",
            true,
        ),
        (
            "two different lengths in one line",
            "Content-Length: 5, 6\r\n",
            "hello!",
            "",
            true,
        ),
        (
            "connection naming content-length",
            "Connection: content-length\r\nContent-Length: 5\r\n",
            "hello",
            "hello",
            false,
        ),
        (
            "a zero-length chunked body",
            "Transfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
            "",
            false,
        ),
    ];
    for (what, framing, sent, meant, refuse) in cases {
        b.seen.text.lock().unwrap().clear();
        let heads = b.seen.heads();
        let req = format!(
            "{}POST /case HTTP/1.1\r\nHost: gw\r\n{}{framing}\r\n{sent}GET /after HTTP/1.1\r\nHost: gw\r\n{}Connection: close\r\n\r\n",
            b.good(),
            b.auth,
            b.auth
        );
        let (statuses, text, closed) =
            exchange(b.g.client, &[req.as_bytes()], Duration::ZERO).await;
        let seen = b.seen.text.lock().unwrap().to_lowercase();
        assert!(closed, "{what}");
        if statuses == [200, 400] {
            // refused: the case never reached the upstream, nor anything behind it
            assert_eq!(b.seen.heads(), heads + 1, "{what}: {seen}");
            assert!(
                !seen.contains("/case") && !seen.contains("/after"),
                "{what}: {seen}"
            );
            continue;
        }
        assert!(!refuse, "{what}: served {statuses:?}: {text}");
        assert_eq!(statuses, [200, 200, 200], "{what}: {text}");
        let case = &seen[seen.find("post /case").unwrap()..seen.find("get /after").unwrap()];
        assert!(
            case.contains(&format!("content-length: {}\n", meant.len())),
            "{what}: {case}"
        );
        assert_eq!(case.matches("content-length").count(), 1, "{what}: {case}");
        assert!(case.ends_with(meant), "{what}: {case}");
        for leftover in ["transfer-encoding", "x-smuggle", "ext=", "connection"] {
            assert!(!case.contains(leftover), "{what}: {leftover} in {case}");
        }
    }
    nothing_truncated(&b.seen, "variants");
}
