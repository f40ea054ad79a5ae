//! The upstream side of HTTP/1.1, as the gateway speaks it: the request head written
//! straight from the request into a connection's buffer, the response head parsed by
//! `httparse` out of the bytes read, and the response body's framing (RFC 9112 §6).
//!
//! Only what a proxy to its own upstreams needs: one request at a time per
//! connection, no pipelining, no upgrades (WebSocket handshakes go through hyper's
//! client on a connection of their own). Everything here is plain functions over
//! byte buffers; [`super::upstream`] does the I/O.
//!
//! Strict where a lax reading could let one response be read as two: a response with
//! both `transfer-encoding` and `content-length`, a `content-length` that is not one
//! number (equal repeats are allowed), a chunk-size line that is not hex digits, and
//! bytes after a response on a connection that is reused are all refused, and the
//! connection is closed.

use super::headers::{hop_by_hop_bit, is_hop_by_hop_name};
use super::Added;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use std::mem::MaybeUninit;

/// The most response fields read (as hyper's default).
pub const MAX_HEADERS: usize = 100;
/// The largest response head read; a longer one is refused.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The longest chunk-size line (with its extensions) and the most trailer bytes read.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why a response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("the response head is not valid HTTP/1.1: {0}")]
    Head(&'static str),
    #[error("the response head is larger than 64 KiB or has more than 100 fields")]
    HeadTooLarge,
    #[error("the response has both transfer-encoding and content-length")]
    AmbiguousFraming,
    #[error("the response's content-length is not one number")]
    BadLength,
    #[error("a chunk of the response body is malformed")]
    BadChunk,
    #[error("the response's trailer fields are malformed or too large")]
    BadTrailers,
    #[error(
        "the upstream answered 101 Switching Protocols to a request that asked for no upgrade"
    )]
    UnaskedUpgrade,
}

/// How the request body goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// `content-length` as the request carries it: the body's bytes as they are.
    Length,
    /// No known length: `transfer-encoding: chunked` is added.
    Chunked,
}

/// Writes `req`'s head (origin-form target, HTTP/1.1) into `dst`: the request line,
/// `host`, the client's fields as the map holds them but those `added` replaces, the
/// fields `added` sets, `transfer-encoding: chunked` for a chunked body, and the
/// empty line.
pub fn encode_head<B>(
    dst: &mut Vec<u8>,
    req: &Request<B>,
    host: &HeaderValue,
    added: &Added<'_>,
    framing: RequestFraming,
) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let method = req.method().as_str();
    dst.reserve(method.len() + target.len() + 24 + host.len() + 48 * req.headers().len());
    dst.extend_from_slice(method.as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    dst.extend_from_slice(host.as_bytes());
    dst.extend_from_slice(b"\r\n");
    for (name, value) in req.headers() {
        if !added.drops(name) {
            field(dst, name, value);
        }
    }
    for (name, value) in added.fields() {
        field(dst, name, value);
    }
    if framing == RequestFraming::Chunked {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

fn field(dst: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    let (n, v) = (name.as_str().as_bytes(), value.as_bytes());
    dst.reserve(n.len() + v.len() + 4);
    dst.extend_from_slice(n);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(v);
    dst.extend_from_slice(b"\r\n");
}

/// How the request body of `req` is framed upstream: none when it has ended already,
/// its `content-length` when it has one (the proxy sets it canonical), else chunked.
pub fn request_framing<B: http_body::Body>(req: &Request<B>) -> RequestFraming {
    if req.body().is_end_stream() {
        RequestFraming::Empty
    } else if req.headers().contains_key(CONTENT_LENGTH) {
        RequestFraming::Length
    } else {
        RequestFraming::Chunked
    }
}

/// Appends one chunk of a chunked request body: size line, data, CRLF.
pub fn encode_chunk(dst: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return; // a zero-length chunk would end the body
    }
    let mut digits = [0u8; 16];
    let mut n = data.len();
    let mut i = digits.len();
    while n > 0 || i == digits.len() {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
    }
    dst.reserve(digits.len() - i + data.len() + 4);
    dst.extend_from_slice(&digits[i..]);
    dst.extend_from_slice(b"\r\n");
    dst.extend_from_slice(data);
    dst.extend_from_slice(b"\r\n");
}

/// The end of a chunked request body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A response head read off a connection.
#[derive(Debug)]
pub struct Head {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The connection can carry another request once this response has ended.
    pub keep_alive: bool,
    /// The hop-by-hop fields (RFC 9110 §7.6.1) are not in `parts.headers`, but for a
    /// `connection` field that names other fields: then it is, and those fields are
    /// still to be removed ([`super::headers::strip_hop_by_hop`]).
    pub connection_names_fields: bool,
}

/// Names of at most this many bytes are kept by [`NameCache`].
const CACHED_NAME_BYTES: usize = 32;

/// Field names kept by [`NameCache`]: the first this many of an answer.
const CACHED_NAMES: usize = 16;

/// The field names of a connection's last answer, by position. An upstream sends the
/// same names in the same order answer after answer, so a name equal to the one at its
/// position last time is taken from here instead of parsed again (and, for a name
/// `http` does not know, allocated again): a byte comparison instead of lower-casing
/// and a lookup.
#[derive(Default)]
pub struct NameCache {
    /// By position. Every position below [`CACHED_NAMES`] of the last answer has an
    /// entry, so the next name always has its place (`i <= names.len()`).
    names: Vec<CachedName>,
}

struct CachedName {
    raw: [u8; CACHED_NAME_BYTES],
    /// 0: the name there was too long to keep (a field name is never empty, so
    /// nothing matches it).
    len: u8,
    name: HeaderName,
}

impl NameCache {
    /// The name whose bytes, as received, are `raw`, at position `i` of its answer;
    /// `None` when they are not a valid field name.
    fn name(&mut self, i: usize, raw: &[u8]) -> Option<HeaderName> {
        if let Some(c) = self.names.get(i) {
            if c.len != 0 && c.raw[..usize::from(c.len)] == *raw {
                return Some(c.name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw).ok()?;
        if i < CACHED_NAMES && i <= self.names.len() {
            let mut c = CachedName {
                raw: [0; CACHED_NAME_BYTES],
                len: 0,
                name: name.clone(),
            };
            if raw.len() <= CACHED_NAME_BYTES {
                c.raw[..raw.len()].copy_from_slice(raw);
                c.len = raw.len() as u8;
            }
            if i == self.names.len() {
                self.names.push(c);
            } else {
                self.names[i] = c;
            }
        }
        Some(name)
    }
}

/// Parses a response head at the start of `buf`. `Ok(None)`: not complete yet.
/// Interim answers (1xx other than 101) are consumed and skipped. On success the head's
/// bytes are gone from `buf`, which starts with the body.
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    names: &mut NameCache,
) -> Result<Option<Head>, ProtocolError> {
    loop {
        // (start, end) of each name and value, so the head can be split off as one
        // `Bytes` that the values then share
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let (len, code, minor, count) = {
            let mut headers =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                buf,
                &mut headers,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                    return Err(ProtocolError::HeadTooLarge)
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::HeadTooLarge),
                Err(e) => return Err(ProtocolError::Head(parse_error(e))),
            };
            if len > MAX_HEAD_BYTES {
                return Err(ProtocolError::HeadTooLarge);
            }
            let base = buf.as_ptr() as usize;
            let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
            for (span, h) in spans.iter_mut().zip(resp.headers.iter()) {
                let (n, v) = (offset(h.name.as_bytes()), offset(h.value));
                *span = (n, n + h.name.len() as u32, v, v + h.value.len() as u32);
            }
            let code = resp.code.unwrap_or(0);
            (len, code, resp.version.unwrap_or(1), resp.headers.len())
        };
        let status = StatusCode::from_u16(code).map_err(|_| ProtocolError::Head("status code"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(ProtocolError::UnaskedUpgrade);
            }
            // 100 Continue, 103 Early Hints: not forwarded; the final answer follows
            let _ = buf.split_to(len);
            continue;
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        let mut length: Option<u64> = None;
        let mut chunked = None;
        let mut close = minor == 0;
        let mut connection_names_fields = false;
        for (i, &(n0, n1, v0, v1)) in spans[..count].iter().enumerate() {
            let name = names
                .name(i, &head[n0 as usize..n1 as usize])
                .ok_or(ProtocolError::Head("field name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
                .map_err(|_| ProtocolError::Head("field value"))?;
            if name == CONTENT_LENGTH {
                let n = parse_length(value.as_bytes()).ok_or(ProtocolError::BadLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(ProtocolError::BadLength);
                }
                length = Some(n);
            } else if hop_by_hop_bit(&name) != 0 {
                // not forwarded: read here, and left out of the map
                if name == TRANSFER_ENCODING {
                    // the last coding of the last line decides
                    chunked = Some(last_token_is(value.as_bytes(), b"chunked"));
                } else if name == CONNECTION {
                    let v = value.as_bytes();
                    if has_token(v, b"close") {
                        close = true;
                    } else if minor == 0 && has_token(v, b"keep-alive") {
                        close = false;
                    }
                    if names_a_field(v) {
                        connection_names_fields = true;
                        headers.append(name, value);
                    }
                }
                continue;
            }
            headers.append(name, value);
        }
        let bodiless = *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = match (bodiless, chunked, length) {
            (true, _, _) => Framing::Empty,
            (false, Some(_), Some(_)) => return Err(ProtocolError::AmbiguousFraming),
            (false, Some(true), None) => Framing::Chunked,
            // a coding that does not end in chunked: read until the close
            (false, Some(false), None) => Framing::Close,
            (false, None, Some(n)) => Framing::Length(n),
            (false, None, None) => Framing::Close,
        };
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        parts.headers = headers;
        return Ok(Some(Head {
            parts,
            keep_alive: !close && framing != Framing::Close,
            framing,
            connection_names_fields,
        }));
    }
}

/// What httparse found wrong, in words.
fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "field name",
        httparse::Error::HeaderValue => "field value",
        httparse::Error::NewLine => "line end",
        httparse::Error::Status => "status code",
        httparse::Error::Version => "version",
        _ => "syntax",
    }
}

/// A `content-length` value: digits, or a list of equal numbers (`5, 5`).
fn parse_length(v: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Whether a comma-separated list holds `token` (ASCII case-insensitive).
fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether a `connection` value names anything but `close`, `keep-alive` and
/// hop-by-hop fields (RFC 9110 §7.6.1: the fields it names are removed as well).
fn names_a_field(v: &[u8]) -> bool {
    v.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        !t.is_empty() && !t.eq_ignore_ascii_case(b"close") && !is_hop_by_hop_name(t)
    })
}

/// Whether the last element of a comma-separated list is `token`.
fn last_token_is(v: &[u8], token: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunks {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields (read and dropped), bytes read so far.
    Trailers(usize),
    Done,
}

/// What [`Chunks::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body has ended (the last chunk and the trailer section were read).
    End,
}

impl Chunks {
    /// Reads as far as `buf` allows: the next piece of data, the end, or a request for
    /// more bytes. Trailer fields are read and dropped (the `trailer` field that
    /// announces them is not forwarded either).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match *self {
                Chunks::Size => {
                    if !buf.first().is_some_and(u8::is_ascii_hexdigit) {
                        return if buf.is_empty() {
                            Ok(Decoded::More)
                        } else {
                            Err(ProtocolError::BadChunk)
                        };
                    }
                    match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((n, size))) => {
                            let _ = buf.split_to(n);
                            *self = if size == 0 {
                                Chunks::Trailers(0)
                            } else {
                                Chunks::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                            return Err(ProtocolError::BadChunk)
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::More),
                        Err(_) => return Err(ProtocolError::BadChunk),
                    }
                }
                Chunks::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunks::DataEnd
                    } else {
                        Chunks::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunks::DataEnd => match buf.as_ref() {
                    [b'\r', b'\n', ..] => {
                        let _ = buf.split_to(2);
                        *self = Chunks::Size;
                    }
                    [] | [b'\r'] => return Ok(Decoded::More),
                    _ => return Err(ProtocolError::BadChunk),
                },
                Chunks::Trailers(seen) => {
                    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                        return if seen + buf.len() > MAX_TRAILER_BYTES {
                            Err(ProtocolError::BadTrailers)
                        } else {
                            Ok(Decoded::More)
                        };
                    };
                    let line = buf.split_to(end + 1);
                    if !line.ends_with(b"\r\n") {
                        return Err(ProtocolError::BadTrailers);
                    }
                    if line.len() == 2 {
                        *self = Chunks::Done;
                    } else if seen + line.len() > MAX_TRAILER_BYTES {
                        return Err(ProtocolError::BadTrailers);
                    } else {
                        *self = Chunks::Trailers(seen + line.len());
                    }
                }
                Chunks::Done => return Ok(Decoded::End),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &str, method: &Method) -> Result<Option<(Head, BytesMut)>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        parse_head(&mut buf, method, &mut NameCache::default()).map(|h| h.map(|h| (h, buf)))
    }

    fn ok(bytes: &str) -> (Head, BytesMut) {
        match head(bytes, &Method::GET) {
            Ok(Some(h)) => h,
            other => panic!("{bytes:?}: {other:?}"),
        }
    }

    /// The field names and values of `bytes`' head, parsed with `names`.
    fn fields_with(names: &mut NameCache, bytes: &str) -> Vec<(String, String)> {
        let mut buf = BytesMut::from(bytes);
        let h = match parse_head(&mut buf, &Method::GET, names) {
            Ok(Some(h)) => h,
            other => panic!("{bytes:?}: {other:?}"),
        };
        h.parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn a_connections_names_are_reused_only_when_their_bytes_are_the_same() {
        let mut names = NameCache::default();
        let long = format!("X-{}", "y".repeat(40));
        let many: String = (0..20).map(|i| format!("X-F{i}: {i}\r\n")).collect();
        let first = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Custom: 1\r\n{long}: 2\r\n\
             {many}Content-Length: 0\r\n\r\n"
        );
        let want = |custom: &str| {
            let mut w = vec![
                ("content-type".to_owned(), "text/plain".to_owned()),
                (custom.to_owned(), "1".to_owned()),
                (long.to_lowercase(), "2".to_owned()),
            ];
            w.extend((0..20).map(|i| (format!("x-f{i}"), i.to_string())));
            w.push(("content-length".to_owned(), "0".to_owned()));
            w
        };
        // the same answer twice: the second is read from the kept names
        assert_eq!(fields_with(&mut names, &first), want("x-custom"));
        assert_eq!(fields_with(&mut names, &first), want("x-custom"));
        // another name at a kept position, and the same name in other letters
        let second = first.replace("X-Custom", "X-Other");
        assert_eq!(fields_with(&mut names, &second), want("x-other"));
        let third = first.replace("X-Custom", "x-CUSTOM");
        assert_eq!(fields_with(&mut names, &third), want("x-custom"));
        // fewer fields, then more again
        assert_eq!(
            fields_with(&mut names, "HTTP/1.1 204 No Content\r\nX-F0: a\r\n\r\n"),
            vec![("x-f0".to_owned(), "a".to_owned())]
        );
        assert_eq!(fields_with(&mut names, &first), want("x-custom"));
    }

    #[test]
    fn request_heads_are_written_as_the_map_holds_them() {
        let req = Request::post("http://ignored.example/a/b?q=1")
            .header("host", "client.example")
            .header("x-a", "1")
            .header("authorization", "Bearer secret")
            .header("x-a", "2")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        let host = HeaderValue::from_static("up:80");
        let rid = HeaderValue::from_static("r1");
        encode_head(
            &mut out,
            &req,
            &host,
            &Added::request_id(&rid),
            RequestFraming::Chunked,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a/b?q=1 HTTP/1.1\r\nhost: up:80\r\nx-a: 1\r\nx-a: 2\r\n\
             x-request-id: r1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_chunk(&mut out, b"hello, world, in 26 bytes!");
        encode_chunk(&mut out, b"");
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(out, b"1a\r\nhello, world, in 26 bytes!\r\n0\r\n\r\n");
    }

    #[test]
    fn framing_of_responses() {
        let (h, rest) = ok(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\
             Keep-Alive: timeout=5\r\nX-A: b\r\n\r\nokNEXT",
        );
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.keep_alive);
        // hop-by-hop fields are not in the map; nothing else to strip
        assert_eq!(h.parts.headers.len(), 2, "{:?}", h.parts.headers);
        assert!(!h.connection_names_fields);
        let h = ok("HTTP/1.1 200 OK\r\nConnection: x-private, keep-alive\r\nX-Private: 1\r\nContent-Length: 0\r\n\r\n").0;
        assert!(h.connection_names_fields);
        assert!(h.parts.headers.contains_key("connection"));
        let h = ok("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nokNEXT").0;
        assert_eq!(&rest[..], b"okNEXT");
        assert_eq!(h.parts.headers["x-a"], "b");
        assert_eq!(h.parts.status, StatusCode::OK);

        let (h, _) = ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        let (h, _) = ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let (h, _) = ok("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let (h, _) = ok("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        let (h, _) = ok("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nConnection: Close\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), false));
        let (h, _) = ok("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, _) = ok("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
        let (h, rest) = ok("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            (h.parts.status, h.framing),
            (StatusCode::CREATED, Framing::Length(0))
        );
        assert!(rest.is_empty());
        match head(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            &Method::HEAD,
        ) {
            Ok(Some((h, _))) => assert_eq!(h.framing, Framing::Empty),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Len", &Method::GET),
            Ok(None)
        ));
    }

    #[test]
    fn ambiguous_responses_are_refused() {
        for (bytes, want) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
                ProtocolError::AmbiguousFraming,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
                ProtocolError::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n",
                ProtocolError::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n",
                ProtocolError::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
                ProtocolError::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                ProtocolError::BadLength,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\n\r\n",
                ProtocolError::UnaskedUpgrade,
            ),
        ] {
            assert_eq!(head(bytes, &Method::GET).err(), Some(want), "{bytes:?}");
        }
        assert!(matches!(
            head("HTTP/1.1 2000 OK\r\n\r\n", &Method::GET),
            Err(ProtocolError::Head(_))
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", &Method::GET),
            Err(ProtocolError::Head(_))
        ));
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(
            head(&many, &Method::GET).err(),
            Some(ProtocolError::HeadTooLarge)
        );
        let long = format!("HTTP/1.1 200 OK\r\nA: {}", "b".repeat(MAX_HEAD_BYTES + 1));
        assert_eq!(
            head(&long, &Method::GET).err(),
            Some(ProtocolError::HeadTooLarge)
        );
    }

    fn decode_all(mut pieces: Vec<&[u8]>) -> Result<(Vec<u8>, BytesMut), ProtocolError> {
        let mut c = Chunks::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        pieces.reverse();
        loop {
            match c.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => {
                    // what was not fed yet comes after the body
                    while let Some(p) = pieces.pop() {
                        buf.extend_from_slice(p);
                    }
                    return Ok((out, buf));
                }
                Decoded::More => match pieces.pop() {
                    Some(p) => buf.extend_from_slice(p),
                    None => return Err(ProtocolError::BadChunk),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_across_any_split() {
        let body: &[u8] =
            b"5;ext=\"v\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for cut in 0..body.len() {
            for cut2 in cut..body.len() {
                let (a, rest) = body.split_at(cut);
                let (b, c) = rest.split_at(cut2 - cut);
                let (out, left) = decode_all(vec![a, b, c]).unwrap();
                assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz");
                assert_eq!(&left[..], b"NEXT");
            }
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"x\r\nhello\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX-T: 1\n\r\n",
        ] {
            assert!(
                decode_all(vec![bad]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = [b"0\r\n".as_slice(), &vec![b'a'; MAX_TRAILER_BYTES + 1]].concat();
        assert_eq!(
            decode_all(vec![&big]).err(),
            Some(ProtocolError::BadTrailers)
        );
    }

    #[test]
    fn lengths() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"005"), Some(5));
        assert_eq!(parse_length(b"5 , 5"), Some(5));
        assert_eq!(parse_length(b"18446744073709551615"), None);
        assert_eq!(parse_length(b"5,"), None);
        assert_eq!(parse_length(b"-1"), None);
    }
}
