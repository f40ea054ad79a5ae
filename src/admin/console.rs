//! `GET /ui/`: the web console. Its three files are compiled into the binary (no
//! runtime files, no CDN, no build step) and served with a strict Content-Security-
//! Policy: scripts and styles from this origin only, nothing inline, no framing. The
//! console holds the admin token in the tab's session storage and sends it as a bearer
//! header to the `/v1` API like any client, so roles apply.

use super::AdminResponse;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's file at `path` (under `/ui/`), or None.
pub(super) fn serve(method: &Method, path: &str) -> Option<AdminResponse> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let (body, ty) = match path {
        "" | "index.html" => (INDEX, "text/html; charset=utf-8"),
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ty));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_inline_and_every_page_locked_down() {
        // the CSP forbids inline script and style: the page must not need them
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        assert!(!INDEX.contains("onclick") && !INDEX.contains("<style"));
        assert!(INDEX.contains(r#"<script src="app.js""#));
        assert!(
            !SCRIPT.contains("innerHTML ="),
            "text goes in as text, never as markup"
        );
        assert!(
            !SCRIPT.contains("localStorage"),
            "the token lives in session storage only"
        );
        for p in ["", "app.js", "app.css"] {
            let r = serve(&Method::GET, p).unwrap();
            assert_eq!(r.headers()["x-frame-options"], "DENY");
            assert!(r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'"));
        }
        assert!(serve(&Method::POST, "").is_none());
        assert!(serve(&Method::GET, "../secret").is_none());
    }
}
