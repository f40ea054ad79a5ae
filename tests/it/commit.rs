//! A committed change reaches the routing table of the node that made it, whatever the
//! admin client does: moves and revocations sent on connections that close right after
//! the request is written (hyper then drops the request's future), judged by what the
//! upstream says it is and by what the store says.

use crate::support::*;
use http::Method;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Writes one admin request on a fresh connection and closes it `delay_us` later,
/// without reading the answer.
async fn send_and_leave(admin: SocketAddr, method: &str, path: &str, body: &Value, delay_us: u64) {
    let body = body.to_string();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    if delay_us > 0 {
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
    }
    // a reset rather than a FIN: the gateway sees the client gone at once
    #[allow(deprecated)] // a few bytes in flight at most: drop does not block
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

/// The store's view: the snapshot's staging version and revision.
async fn snapshot(b: &Binary) -> (Option<String>, u64) {
    let (_, s) = b
        .admin_call(Method::GET, "/v1/agents/bot", None)
        .await
        .unwrap();
    let e = &s["environments"]["staging"];
    (
        e["version"].as_str().map(str::to_owned),
        e["revision"].as_u64().unwrap_or(0),
    )
}

/// What the upstream that answers a request through the gateway says it is.
async fn served(client: SocketAddr, token: &str) -> (u16, Option<String>) {
    let r = get(
        &format!("http://{client}/"),
        &[("authorization", &bearer(token))],
    )
    .await;
    let v = if r.status == 200 {
        r.json()["version"].as_str().map(str::to_owned)
    } else {
        None
    };
    (r.status.as_u16(), v)
}

/// Polls `check` until it holds, at most `bound` after `since`.
async fn within<F, Fut>(what: &str, since: Instant, bound: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            return;
        }
        assert!(since.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_applied_even_when_the_admin_client_leaves_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = Binary::start(dir.path(), "").await;
    let (v1, v2) = (echo_upstream("v1").await, echo_upstream("v2").await);
    b.agent_with_versions("bot", &[v1, v2]).await;
    b.deploy("bot", "staging", "v1").await;
    let (token, _) = b.token("bot", "staging").await;

    let mut committed = 0;
    for i in 0..200u64 {
        let (live, revision) = snapshot(&b).await;
        let target = if live.as_deref() == Some("v1") {
            "v2"
        } else {
            "v1"
        };
        send_and_leave(
            b.admin,
            "POST",
            "/v1/agents/bot/environments/staging/deploy",
            // past the health gate: its probe runs before the commit, in the request,
            // and a client that leaves during it cancels the move (nothing committed)
            &json!({ "version": target, "force": true }),
            (i % 5) * 500,
        )
        .await;
        // the request was written whole, so the store commits it; wait until it says so
        // (a request dropped before its commit would be allowed, and is counted)
        let mut now = snapshot(&b).await;
        let waited = Instant::now();
        while now.1 == revision && waited.elapsed() < Duration::from_millis(500) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            now = snapshot(&b).await;
        }
        let since = Instant::now();
        if now.1 != revision {
            committed += 1;
            assert_eq!(now.0.as_deref(), Some(target), "move {i}");
        }
        // (the store is read again each time: a request left uncommitted above may
        // still commit late, and then it must be served too)
        within(
            &format!("move {i}: the upstream that serves is the store's"),
            since,
            Duration::from_millis(100),
            || async { served(b.client, &token).await.1 == snapshot(&b).await.0 },
        )
        .await;
    }
    eprintln!("{committed} of 200 moves committed");
    assert!(
        committed >= 150,
        "only {committed} of 200 moves committed: the test no longer tests what it says"
    );

    // revocations: 40 tokens, each revoked on a connection closed at once
    let mut tokens = Vec::new();
    for _ in 0..40 {
        let (secret, id) = b.token("bot", "staging").await;
        tokens.push((id, secret));
    }
    for (i, (id, secret)) in tokens.iter().enumerate() {
        assert_eq!(served(b.client, secret).await.0, 200);
        send_and_leave(
            b.admin,
            "DELETE",
            &format!("/v1/tokens/{id}"),
            &json!({}),
            (i as u64 % 5) * 500,
        )
        .await;
        let waited = Instant::now();
        let revoked = loop {
            let (_, list) = b
                .admin_call(
                    Method::GET,
                    "/v1/agents/bot/environments/staging/tokens",
                    None,
                )
                .await
                .unwrap();
            let revoked = list["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == id.as_str() && !t["revoked_at"].is_null());
            if revoked || waited.elapsed() > Duration::from_millis(500) {
                break revoked;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if revoked {
            within(
                &format!("revocation {i}: the token answers 403"),
                Instant::now(),
                Duration::from_millis(100),
                || async { served(b.client, secret).await.0 == 403 },
            )
            .await;
        }
    }
    // every committed move left its log line: as many as the history holds
    let (_, h) = b
        .admin_call(
            Method::GET,
            "/v1/agents/bot/environments/staging/history?limit=1000",
            None,
        )
        .await
        .unwrap();
    let entries = h["entries"].as_array().unwrap().len();
    assert!(entries > committed, "{entries} history entries");
    eventually("a `pointer moved` line per history entry", || async {
        b.log_text().matches("pointer moved").count() == entries
    })
    .await;
}
