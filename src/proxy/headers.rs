//! Header rules between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1),
//! the forwarding headers, and what the gateway adds.
//!
//! Costs: one pass over the field names, a removal per hop-by-hop field present, and
//! no allocation unless the `connection` header names a field the message carries.

use crate::config::UnderscoreFields;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_SWITCHYARD_AGENT: HeaderName = HeaderName::from_static("x-switchyard-agent");
pub const X_SWITCHYARD_ENVIRONMENT: HeaderName =
    HeaderName::from_static("x-switchyard-environment");
pub const X_SWITCHYARD_VERSION: HeaderName = HeaderName::from_static("x-switchyard-version");
pub const X_SWITCHYARD_SESSION: HeaderName = HeaderName::from_static("x-switchyard-session");
pub const X_SWITCHYARD_SESSION_PIN: HeaderName =
    HeaderName::from_static("x-switchyard-session-pin");
pub const X_SWITCHYARD_PIN_VERSION: HeaderName =
    HeaderName::from_static("x-switchyard-pin-version");
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Fields that only concern one connection and are never forwarded. (Their name
/// lengths are listed in [`hop_by_hop_bit`].)
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Bits of [`hop_by_hop_bits`] the proxy asks about.
pub const CONNECTION_BIT: u8 = 1 << 0;
pub const TRANSFER_ENCODING_BIT: u8 = 1 << 5;
pub const UPGRADE_BIT: u8 = 1 << 6;

/// Whether any comma-separated token of the `name` fields equals `token`
/// (case-insensitively).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// An HTTP/1.1 WebSocket handshake: `connection: upgrade` and `upgrade: websocket`.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, &header::CONNECTION, "upgrade")
        && has_token(headers, &header::UPGRADE, "websocket")
}

/// The hop-by-hop fields a message carries: bit `i` set for `HOP_BY_HOP[i]`.
pub fn hop_by_hop_bits(headers: &HeaderMap) -> u8 {
    // one pass over the (few) names instead of a hash lookup per hop-by-hop name
    headers.keys().fold(0, |bits, k| bits | hop_by_hop_bit(k))
}

/// The bit of one field name in [`hop_by_hop_bits`] (0 for an end-to-end field).
pub fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    hop_by_hop_bit_of_len(name, name.as_str().len())
}

/// [`hop_by_hop_bit`] for a name whose length is known.
#[inline]
pub fn hop_by_hop_bit_of_len(name: &HeaderName, len: usize) -> u8 {
    // the length rules out most names at once
    match len {
        2 | 7 | 10 | 16 | 17 | 19 => HOP_BY_HOP
            .iter()
            .position(|h| h == name)
            .map_or(0, |i| 1 << i),
        _ => 0,
    }
}

/// Whether `name`, in any case, is a hop-by-hop field's name (no `HeaderName` made).
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
}

/// Removes hop-by-hop fields and every field the `connection` header names. With
/// `websocket`, the handshake's `connection: upgrade` and `upgrade: websocket` are
/// set again afterwards, so only a WebSocket upgrade is ever passed on.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, websocket: bool) {
    strip_hop_by_hop_bits(headers, hop_by_hop_bits(headers), websocket);
}

/// [`strip_hop_by_hop`] for a message whose [`hop_by_hop_bits`] are known.
pub fn strip_hop_by_hop_bits(headers: &mut HeaderMap, bits: u8, websocket: bool) {
    if bits != 0 {
        if bits & CONNECTION_BIT != 0 {
            remove_named_by_connection(headers);
        }
        for (i, h) in HOP_BY_HOP.iter().enumerate() {
            if bits & (1 << i) != 0 {
                headers.remove(h);
            }
        }
    }
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// Removes the fields that the `connection` header names. The usual tokens
/// (`keep-alive`, `close`, `upgrade`) name no field or a hop-by-hop one: those cost
/// no allocation.
fn remove_named_by_connection(headers: &mut HeaderMap) {
    let mut named: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        let Ok(v) = v.to_str() else { continue };
        if v.eq_ignore_ascii_case("keep-alive") || v.eq_ignore_ascii_case("close") {
            continue; // the usual values: no field to look for
        }
        for t in v.split(',').map(str::trim) {
            if t.is_empty() || is_hop_by_hop_name(t.as_bytes()) {
                continue;
            }
            if let Some(k) = headers.keys().find(|k| k.as_str().eq_ignore_ascii_case(t)) {
                named.push(k.clone());
            }
        }
    }
    for n in named {
        headers.remove(n);
    }
}

/// Whether a `host` value is `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2):
/// a reg-name of unreserved, percent-encoded and sub-delim characters, an IPv4
/// address (a reg-name by its characters) or a bracketed IPv6 literal, then an
/// optional port of at most 5 digits. An empty value is refused too (as nginx does):
/// a request through a gateway always names its host.
pub fn valid_host(v: &[u8]) -> bool {
    let (host_ok, rest) = if let Some(lit) = v.strip_prefix(b"[") {
        let Some(end) = lit.iter().position(|&c| c == b']') else {
            return false;
        };
        let ip = &lit[..end];
        let ok = !ip.is_empty()
            && ip
                .iter()
                .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
        (ok, &lit[end + 1..])
    } else {
        let end = v.iter().position(|&c| c == b':').unwrap_or(v.len());
        (end > 0 && reg_name(&v[..end]), &v[end..])
    };
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host_ok && port_ok
}

/// Bytes allowed as-is in a reg-name: unreserved and sub-delims (RFC 3986 §2.2, §2.3).
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        c += 1;
    }
    t
};

/// `*( unreserved / pct-encoded / sub-delims )` (RFC 3986 §3.2.2): one table lookup
/// per byte.
fn reg_name(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        if !REG_NAME[c as usize] {
            let hex = |j: usize| v.get(j).is_some_and(u8::is_ascii_hexdigit);
            if c != b'%' || !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 2;
        }
        i += 1;
    }
    true
}

/// Why a request's `transfer-encoding` cannot be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodingError {
    /// Not a list of coding names ending in exactly one `chunked` (→ 400).
    Invalid,
    /// A coding the gateway does not implement before the final `chunked` (→ 501).
    Unsupported,
}

/// Checks every `transfer-encoding` line of a request together as one list (RFC 9112
/// §6.1): the gateway implements `chunked` only, applied exactly once and last.
/// Empty elements, parameters and anything that is not a token are refused: another
/// hop could read them differently.
pub fn check_transfer_coding(headers: &HeaderMap) -> Result<(), CodingError> {
    let mut codings = 0usize;
    let mut chunked = 0usize;
    let mut chunked_last = false;
    for v in headers.get_all(header::TRANSFER_ENCODING) {
        for t in v.as_bytes().split(|&c| c == b',') {
            let t = t.trim_ascii();
            if t.is_empty() || !t.iter().all(|&c| is_tchar(c)) {
                return Err(CodingError::Invalid);
            }
            codings += 1;
            chunked_last = t.eq_ignore_ascii_case(b"chunked");
            chunked += usize::from(chunked_last);
        }
    }
    match (chunked, chunked_last, codings) {
        (1, true, 1) => Ok(()),
        (1, true, _) => Err(CodingError::Unsupported),
        _ => Err(CodingError::Invalid),
    }
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Fields a request must not carry under a name with `_` for `-`: a server that folds
/// `_` into `-` (CGI-style stacks) would read them as framing, hop-by-hop, credential
/// or forwarding fields the gateway controls.
const LOOKALIKE_TARGETS: [&str; 18] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-switchyard-agent",
    "x-switchyard-environment",
];

/// The lengths of [`LOOKALIKE_TARGETS`] and `x-switchyard-version`, one bit each: a
/// name of another length needs no scan for `_` when only look-alikes are dropped.
pub const LOOKALIKE_LENGTHS: u32 = {
    let mut m = 1u32 << 20; // x-switchyard-version
    let mut i = 0;
    while i < LOOKALIKE_TARGETS.len() {
        m |= 1 << LOOKALIKE_TARGETS[i].len();
        i += 1;
    }
    m
};

/// Whether a field name, with `_` read as `-`, is one the gateway controls (or
/// `x-switchyard-version`, which the upstream reads to know what it serves).
pub fn is_lookalike(name: &str) -> bool {
    let folded = |t: &str| {
        t.len() == name.len()
            && name
                .bytes()
                .zip(t.bytes())
                .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
    };
    LOOKALIKE_TARGETS.iter().any(|t| folded(t)) || folded("x-switchyard-version")
}

/// This hop's element of a `forwarded` field (RFC 7239 §4): `for`, `proto` and, when
/// known, `host`; an IPv6 address and the host are quoted.
pub fn forwarded_element(
    for_ip: &HeaderValue,
    proto: &HeaderValue,
    host: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    let ip = for_ip.to_str().ok()?;
    let mut s = if ip.contains(':') {
        format!("for=\"[{ip}]\"")
    } else {
        format!("for={ip}")
    };
    s.push_str(";proto=");
    s.push_str(proto.to_str().ok()?);
    if let Some(h) = host.and_then(|h| h.to_str().ok()) {
        // a valid host has no quote or backslash to escape
        s.push_str(";host=\"");
        s.push_str(h);
        s.push('"');
    }
    HeaderValue::from_str(&s).ok()
}

/// Replaces every `name` field with one value: the client's values, then `hop`, as
/// one comma-separated list.
pub fn append_hop(headers: &mut HeaderMap, name: &HeaderName, hop: &HeaderValue) {
    let mut joined: Vec<u8> = Vec::new();
    for v in headers.get_all(name) {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(hop.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(name, v);
    }
}

/// Removes the fields with `_` in their name that `mode` drops; returns how many.
pub fn drop_underscored(headers: &mut HeaderMap, mode: UnderscoreFields) -> usize {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            k.as_str().contains('_')
                && (mode == UnderscoreFields::DropAll || is_lookalike(k.as_str()))
        })
        .cloned()
        .collect();
    for k in &doomed {
        headers.remove(k);
    }
    doomed.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "close"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn connection_tokens_name_fields_case_insensitively() {
        let mut h = map(&[
            ("connection", "Keep-Alive, Content-Type"),
            ("content-type", "text/plain"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "yes"),
        ]);
        assert_eq!(hop_by_hop_bits(&h), 0b11);
        assert_eq!(hop_by_hop_bit(&header::CONNECTION), CONNECTION_BIT);
        assert_eq!(
            hop_by_hop_bit(&header::TRANSFER_ENCODING),
            TRANSFER_ENCODING_BIT
        );
        assert_eq!(hop_by_hop_bit(&header::UPGRADE), UPGRADE_BIT);
        for (i, h) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_bit(h), 1 << i, "{h}");
        }
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
        let mut plain = map(&[("content-type", "text/plain"), ("x-kept", "yes")]);
        assert_eq!(hop_by_hop_bits(&plain), 0);
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain.len(), 2);
    }

    #[test]
    fn websocket_handshakes_keep_their_upgrade() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_websocket_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
        let h2c = map(&[
            ("connection", "upgrade, http2-settings"),
            ("upgrade", "h2c"),
        ]);
        assert!(!is_websocket_upgrade(&h2c));
    }

    #[test]
    fn host_values() {
        for ok in [
            "x",
            "example.com",
            "example.com:8080",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "a-b_c~d.e",
            "xn--bcher-kva.example",
            "%41b",
            "h:",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "a b", "a\tb", "a/b", "a@b", "a?b", "a#b", ":80", "[::1", "[]", "[::1]x", "h:8o",
            "h:123456", "h:1:2", "%4", "%zz", "a\"b", "a<b", "[v1.x]",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn transfer_codings() {
        let te = |lines: &[&str]| {
            let pairs: Vec<_> = lines.iter().map(|l| ("transfer-encoding", *l)).collect();
            check_transfer_coding(&map(&pairs))
        };
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["Chunked"]), Ok(()));
        assert_eq!(te(&[" chunked\t"]), Ok(()));
        for invalid in [
            &["chunked, chunked"][..],
            &["chunked", "chunked"],
            &["chunked,chunked"],
            &["chunked, identity"],
            &["chunked, gzip"],
            &["chunked,"],
            &[", chunked"],
            &["chunked;q=1"],
            &["gzip"],
            &[""],
            &["gzip, chunked, chunked"],
            &["identity"],
        ] {
            assert_eq!(te(invalid), Err(CodingError::Invalid), "{invalid:?}");
        }
        for unsupported in [
            &["gzip, chunked"][..],
            &["gzip", "chunked"],
            &["x-foo, chunked"],
        ] {
            assert_eq!(
                te(unsupported),
                Err(CodingError::Unsupported),
                "{unsupported:?}"
            );
        }
    }

    #[test]
    fn underscore_lookalikes() {
        for t in LOOKALIKE_TARGETS.iter().chain(&["x-switchyard-version"]) {
            assert!(
                t.len() < 32 && LOOKALIKE_LENGTHS & (1 << t.len()) != 0,
                "{t}"
            );
        }
        for l in [
            "transfer_encoding",
            "content_length",
            "x_forwarded_for",
            "x_switchyard_version",
            "proxy_authorization",
            "x-forwarded_host",
            "keep_alive",
        ] {
            assert!(is_lookalike(l), "{l}");
        }
        for n in [
            "x_custom",
            "content_type",
            "transfer_encodings",
            "content_lengthx",
        ] {
            assert!(!is_lookalike(n), "{n}");
        }
        let mut h = map(&[
            ("transfer_encoding", "chunked"),
            ("content_length", "5"),
            ("x_custom", "1"),
            ("x-kept", "1"),
        ]);
        assert_eq!(
            drop_underscored(&mut h, UnderscoreFields::DropLookalikes),
            2
        );
        assert!(h.contains_key("x_custom") && h.contains_key("x-kept"));
        assert_eq!(drop_underscored(&mut h, UnderscoreFields::DropAll), 1);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn forwarded_elements_and_hops() {
        let ip4 = HeaderValue::from_static("10.0.0.1");
        let ip6 = HeaderValue::from_static("::1");
        let http = HeaderValue::from_static("http");
        let host = HeaderValue::from_static("api.example:8080");
        assert_eq!(
            forwarded_element(&ip4, &http, Some(&host)).unwrap(),
            "for=10.0.0.1;proto=http;host=\"api.example:8080\""
        );
        assert_eq!(
            forwarded_element(&ip6, &http, None).unwrap(),
            "for=\"[::1]\";proto=http"
        );
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        append_hop(&mut h, &HeaderName::from_static("x-forwarded-for"), &ip4);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        let mut empty = HeaderMap::new();
        append_hop(&mut empty, &header::FORWARDED, &ip4);
        assert_eq!(empty["forwarded"], "10.0.0.1");
    }
}
