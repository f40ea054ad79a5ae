//! HTTP/2 abuse with a raw frame-level client (the `h2` crate would refuse to send
//! most of these): malformed requests (RFC 9113 §8.1–8.3) are reset and never reach
//! the upstream, the concurrent-stream limit is advertised and enforced, and a
//! CONTINUATION flood is cut off after a handful of frames.

use crate::support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PROTOCOL_ERROR: u32 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing (RFC 7541 §6.2.2), names as
/// given: no lowercasing, no validation.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

struct RawH2 {
    s: TcpStream,
    buf: Vec<u8>,
    /// The server's SETTINGS, as (identifier, value).
    settings: Vec<(u16, u32)>,
    /// The server closed the connection.
    closed: bool,
}

impl RawH2 {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut c = Self {
            s,
            buf: Vec::new(),
            settings: Vec::new(),
            closed: false,
        };
        c.send(SETTINGS, 0, 0, &[]).await;
        c
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let _ = self.try_send(kind, flags, stream, payload).await;
    }

    async fn try_send(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let len = payload.len() as u32;
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&len.to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        self.s.write_all(&f).await
    }

    /// The next frame other than SETTINGS, PING and WINDOW_UPDATE (SETTINGS are
    /// acknowledged and remembered); `None` when the server closes or `wait` passes.
    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let end = tokio::time::Instant::now() + wait;
        loop {
            while self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() < 9 + len {
                    break;
                }
                let f = Frame {
                    kind: self.buf[3],
                    flags: self.buf[4],
                    stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap()) & 0x7fff_ffff,
                    payload: self.buf[9..9 + len].to_vec(),
                };
                self.buf.drain(..9 + len);
                match f.kind {
                    SETTINGS if f.flags & 1 == 0 => {
                        for p in f.payload.chunks(6) {
                            let id = u16::from_be_bytes([p[0], p[1]]);
                            let v = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
                            self.settings.push((id, v));
                        }
                        self.send(SETTINGS, 1, 0, &[]).await;
                    }
                    SETTINGS | 0x6 | 0x8 => {}
                    _ => return Some(f),
                }
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(end, self.s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.closed = true;
                    return None;
                }
                Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The server's answer to `stream`: its first HEADERS, RST_STREAM or GOAWAY.
    async fn outcome(&mut self, stream: u32) -> Option<Frame> {
        while let Some(f) = self.next(Duration::from_secs(3)).await {
            if f.kind == GOAWAY || (f.stream == stream && [HEADERS, RST_STREAM].contains(&f.kind)) {
                return Some(f);
            }
        }
        None
    }
}

fn request<'a>(auth: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "gateway.test"),
        ("authorization", auth),
    ]
}

async fn setup() -> (TestGateway, String, std::sync::Arc<Seen>) {
    let g = TestGateway::start().await;
    let (up, seen) = counting_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    (g, bearer(&token), seen)
}

#[tokio::test]
async fn malformed_requests_are_reset_and_never_forwarded() {
    let (g, auth, seen) = setup().await;

    // the same client, well-formed: answered (the harness itself works)
    let mut c = RawH2::connect(g.client).await;
    c.send(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&request(&auth, "/ok")),
    )
    .await;
    let f = c.outcome(1).await.expect("an answer");
    assert_eq!(f.kind, HEADERS, "{f:?}");
    assert_eq!(seen.heads(), 1);
    // `te: trailers` is the one TE value allowed
    let mut fields = request(&auth, "/te");
    fields.push(("te", "trailers"));
    c.send(HEADERS, END_HEADERS | END_STREAM, 3, &block(&fields))
        .await;
    assert_eq!(c.outcome(3).await.expect("an answer").kind, HEADERS);
    assert_eq!(seen.heads(), 2);

    let r = request(&auth, "/bad");
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f = r.clone();
        f.extend_from_slice(extra);
        f
    };
    let mut pseudo_late = r.clone();
    pseudo_late.swap(2, 4); // :path after authorization
    let mut pseudo_twice = r.clone();
    pseudo_twice.insert(3, (":path", "/again"));
    let mut no_path = r.clone();
    no_path.remove(2);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("uppercase name", with(&[("X-Upper", "a")])),
        ("connection", with(&[("connection", "keep-alive")])),
        ("keep-alive", with(&[("keep-alive", "timeout=5")])),
        (
            "proxy-connection",
            with(&[("proxy-connection", "keep-alive")]),
        ),
        (
            "transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
        ),
        ("upgrade", with(&[("upgrade", "websocket")])),
        ("te other than trailers", with(&[("te", "gzip")])),
        ("pseudo-header after a regular one", pseudo_late),
        ("repeated pseudo-header", pseudo_twice),
        ("unknown pseudo-header", with(&[(":protocol-x", "y")])),
        ("missing :path", no_path),
    ];
    for (what, fields) in &cases {
        let mut c = RawH2::connect(g.client).await;
        c.send(HEADERS, END_HEADERS | END_STREAM, 1, &block(fields))
            .await;
        let f = c.outcome(1).await;
        match &f {
            Some(f) if f.kind == RST_STREAM || f.kind == GOAWAY => {
                assert_eq!(f.error_code(), PROTOCOL_ERROR, "{what}: {f:?}")
            }
            other => panic!("{what}: not reset: {other:?}"),
        }
    }
    assert_eq!(seen.heads(), 2, "a malformed request reached the upstream");

    // content-length that disagrees with the DATA frames: reset, and the upstream
    // never receives a complete request (a partial one is aborted, its connection
    // discarded)
    for (what, length, data) in [
        ("less data than announced", "10", &b"hello"[..]),
        ("more data than announced", "2", &b"hello"[..]),
    ] {
        let mut c = RawH2::connect(g.client).await;
        let mut fields = request(&auth, "/length");
        fields.push(("content-length", length));
        c.send(HEADERS, END_HEADERS, 1, &block(&fields)).await;
        c.send(DATA, END_STREAM, 1, data).await;
        let f = c.outcome(1).await;
        match &f {
            Some(f) if f.kind == RST_STREAM || f.kind == GOAWAY => {
                assert_eq!(f.error_code(), PROTOCOL_ERROR, "{what}: {f:?}")
            }
            other => panic!("{what}: not reset: {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        seen.complete(),
        2,
        "a request with a wrong content-length arrived whole upstream"
    );
    // the gateway is fine
    assert_eq!(
        get(&g.url("/"), &[("authorization", &auth)]).await.status,
        200
    );
}

#[tokio::test]
async fn concurrent_streams_are_bounded() {
    let g = TestGateway::start().await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);

    let mut c = RawH2::connect(g.client).await;
    // the first frame read brings the server's SETTINGS
    let mut fields = request(&auth, "/slow/1500");
    fields[0] = (":method", "GET");
    let headers = block(&fields);
    for i in 0..300u32 {
        c.send(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &headers)
            .await;
    }
    let (mut answered, mut refused) = (0, 0);
    while answered + refused < 300 {
        let Some(f) = c.next(Duration::from_secs(5)).await else {
            break;
        };
        match f.kind {
            HEADERS => answered += 1,
            RST_STREAM => {
                assert_eq!(f.error_code(), REFUSED_STREAM, "{f:?}");
                refused += 1;
            }
            GOAWAY => panic!("the connection was ended: {f:?}"),
            _ => {}
        }
    }
    let max = c
        .settings
        .iter()
        .find(|(id, _)| *id == 0x3)
        .map(|(_, v)| *v);
    assert_eq!(max, Some(256), "SETTINGS_MAX_CONCURRENT_STREAMS advertised");
    assert_eq!(answered, 256, "streams within the limit are served");
    assert_eq!(refused, 44, "streams beyond it are refused");
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off_early() {
    let (g, auth, seen) = setup().await;
    let mut c = RawH2::connect(g.client).await;
    // take (and acknowledge) the server's SETTINGS first: nothing may come between
    // the frames of one header block
    assert!(c.next(Duration::from_millis(300)).await.is_none());
    assert!(!c.settings.is_empty() && !c.closed);
    c.send(HEADERS, 0, 1, &block(&request(&auth, "/flood")))
        .await;
    let piece = block(&[("x-flood", "aaaaaaaaaaaaaaaa")]);
    let mut sent = 0;
    let mut goaway = None;
    for _ in 0..10_000 {
        if c.try_send(CONTINUATION, 0, 1, &piece).await.is_err() {
            break;
        }
        sent += 1;
        match c.next(Duration::from_millis(20)).await {
            Some(f) if f.kind == GOAWAY => {
                goaway = Some(f);
                break;
            }
            Some(_) => {}
            None if c.closed => break,
            None => {}
        }
    }
    let f = goaway.expect("GOAWAY");
    assert_eq!(
        f.error_code(),
        ENHANCE_YOUR_CALM,
        "after {sent} frames: {f:?}"
    );
    assert!(sent <= 10, "GOAWAY only after {sent} CONTINUATION frames");
    assert_eq!(seen.heads(), 0);
    assert_eq!(
        get(&g.url("/"), &[("authorization", &auth)]).await.status,
        200
    );
}
