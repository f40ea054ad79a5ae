//! Header rules between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1),
//! the forwarding headers, and what the gateway adds.
//!
//! Costs: one pass over the field names, a removal per hop-by-hop field present, and
//! no allocation unless the `connection` header names a field the message carries.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_SWITCHYARD_AGENT: HeaderName = HeaderName::from_static("x-switchyard-agent");
pub const X_SWITCHYARD_ENVIRONMENT: HeaderName =
    HeaderName::from_static("x-switchyard-environment");
pub const X_SWITCHYARD_VERSION: HeaderName = HeaderName::from_static("x-switchyard-version");
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
    // the length rules out most names at once
    match name.as_str().len() {
        2 | 7 | 10 | 16 | 17 | 19 => HOP_BY_HOP
            .iter()
            .position(|h| h == name)
            .map_or(0, |i| 1 << i),
        _ => 0,
    }
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
            let hop = HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(t));
            if t.is_empty() || hop {
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
}
