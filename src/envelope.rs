//! What the client and admin listeners share: the error envelope every failure uses,
//! `{"error":{"code","message","request_id"}}`, request ids, and the bearer-token
//! parser.

use bytes::Bytes;
use http::HeaderValue;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Renders the envelope. `code` and `message` are fixed strings or built from
/// validated input; serde_json escapes them either way.
pub fn error_json(code: &str, message: &str, request_id: &str) -> Bytes {
    // written field by field into one buffer: no JSON value is built per answer (a
    // flood of refused requests costs no more than the answers' bytes)
    let mut out = String::with_capacity(48 + code.len() + message.len() + request_id.len());
    out.push_str("{\"error\":{\"code\":");
    push_json_str(code, &mut out);
    out.push_str(",\"message\":");
    push_json_str(message, &mut out);
    out.push_str(",\"request_id\":");
    push_json_str(request_id, &mut out);
    out.push_str("}}");
    Bytes::from(out)
}

/// Quotes `s` as it is when it is printable ASCII with nothing to escape (in JSON or in
/// `Debug` form); `false`, and nothing written, when it needs escaping.
pub fn push_plain_str(s: &str, out: &mut String) -> bool {
    let plain = s
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
    plain
}

/// A JSON string: as it is when nothing needs escaping, else serde_json's escaping.
pub fn push_json_str(s: &str, out: &mut String) {
    if !push_plain_str(s, out) {
        // a `str` always serializes; "-" only keeps the text valid if that changed
        let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"-\"".into());
        out.push_str(&quoted);
    }
}

fn process_prefix() -> u32 {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        // a fixed prefix is still unique within this process; only its spread suffers
        let _ = getrandom::fill(&mut b);
        u32::from_le_bytes(b)
    })
}

/// Request-id numbers a thread takes from the process at a time.
const ID_BLOCK: u64 = 1 << 12;

/// The next request-id number of the process, for the next thread that needs a block.
static NEXT_ID_BLOCK: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's block of request-id numbers: the next one and the block's end.
    static ID_RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The next request-id number: unique in the process. Each thread takes a block of
/// [`ID_BLOCK`] numbers from the process at a time, so the process-wide counter is
/// written once per 4,096 ids, not by every request (two workers would otherwise pass
/// its cache line back and forth on every request).
fn next_id_number() -> u64 {
    ID_RANGE.with(|r| {
        let (mut next, mut end) = r.get();
        if next == end {
            next = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        r.set((next + 1, end));
        next
    })
}

/// A new request id: 24 hex digits, a random per-process prefix and a number unique
/// in the process. No lock, no process-wide write per id, one small allocation for
/// the header value.
pub fn new_request_id() -> HeaderValue {
    let n = next_id_number();
    let mut buf = [0u8; 24];
    let prefix = process_prefix();
    hex::encode_to_slice(prefix.to_be_bytes(), &mut buf[..8]).ok();
    hex::encode_to_slice(n.to_be_bytes(), &mut buf[8..]).ok();
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Keeps a client's request id when it is sane: 1–128 characters of
/// `[A-Za-z0-9._:-]`.
pub fn sane_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// The request id to use: the client's `x-request-id` when sane, a new one otherwise.
pub fn request_id_of(sent: Option<&HeaderValue>) -> HeaderValue {
    match sent {
        Some(v) if sane_request_id(v) => v.clone(),
        _ => new_request_id(),
    }
}

/// The token of `Authorization: Bearer <token>`: the scheme matched
/// case-insensitively (RFC 9110 §11.1), the token trimmed and otherwise exact.
pub fn bearer(v: &[u8]) -> Option<&[u8]> {
    if v.len() <= 7 || !v[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let t = v[7..].trim_ascii();
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_json_whatever_the_text() {
        for (code, message, rid) in [
            ("bad_request", "plain", "r1"),
            (
                "x",
                "quote \" backslash \\ newline \n tab \t nul \u{0} é ☃",
                "r\"2",
            ),
            ("", "", ""),
        ] {
            let b = error_json(code, message, rid);
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["error"]["code"], code);
            assert_eq!(v["error"]["message"], message);
            assert_eq!(v["error"]["request_id"], rid);
            assert_eq!(v["error"].as_object().unwrap().len(), 3);
        }
    }

    #[test]
    fn envelope_shape() {
        let b = error_json("not_found", "agent \"x\" not found", "r1");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "agent \"x\" not found");
        assert_eq!(v["error"]["request_id"], "r1");
    }

    #[test]
    fn request_ids_are_unique_and_sane() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(sane_request_id(&a));
        assert!(!sane_request_id(&HeaderValue::from_static("a b")));
        assert!(!sane_request_id(&HeaderValue::from_static("")));
        let long = "x".repeat(129);
        assert!(!sane_request_id(&HeaderValue::from_str(&long).unwrap()));
    }

    #[test]
    fn request_ids_from_many_threads_never_repeat() {
        // each thread crosses a block boundary at least twice
        let per_thread = (2 * ID_BLOCK + 7) as usize;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|_| new_request_id())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert_eq!(id.len(), 24);
                assert!(seen.insert(id), "a request id repeated");
            }
        }
        assert_eq!(seen.len(), 4 * per_thread);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"abc"), None);
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mine = HeaderValue::from_static("abc-1");
        assert_eq!(request_id_of(Some(&mine)), mine);
        let bad = HeaderValue::from_static("a b");
        assert_ne!(request_id_of(Some(&bad)), bad);
        assert_eq!(request_id_of(None).len(), 24);
    }
}
