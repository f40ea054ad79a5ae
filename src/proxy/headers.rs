//! Header rules between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1),
//! the forwarding headers, and what the gateway adds.
//!
//! Costs: no allocation unless the message carries a `connection` header that names
//! other fields (rare: HTTP/1.1 clients keep connections alive by default).

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

/// Fields that only concern one connection and are never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

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

/// Removes hop-by-hop fields and every field the `connection` header names. With
/// `websocket`, the handshake's `connection: upgrade` and `upgrade: websocket` are
/// set again afterwards, so only a WebSocket upgrade is ever passed on.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, websocket: bool) {
    // one pass over the (few) fields instead of a hash lookup per hop-by-hop name: most
    // messages carry none of them
    if headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        remove_hop_by_hop(headers);
    }
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

/// The size of a request head as the limit counts it: the target plus every
/// header name and value.
pub fn head_size(uri: &http::Uri, headers: &HeaderMap) -> usize {
    let target = uri.path_and_query().map(|p| p.as_str().len()).unwrap_or(1);
    headers
        .iter()
        .fold(target, |acc, (k, v)| acc + k.as_str().len() + v.len() + 4)
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
    fn head_size_counts_target_and_fields() {
        let uri: http::Uri = "/abc?d".parse().unwrap();
        let h = map(&[("a", "bc")]);
        assert_eq!(head_size(&uri, &h), 6 + 1 + 2 + 4);
    }
}
