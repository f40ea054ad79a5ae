//! The promotion gate: a deploy or promote of a version whose endpoints do not answer
//! is refused with nothing changed; `force` moves it and says so in the history; a
//! rollback never waits for a probe. Routing is judged by what the upstreams answer.

use crate::support::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A listener that never accepts: connects hang in its full backlog (of one) or
/// complete without anyone answering; the gate's probe must give up in time.
async fn black_hole() -> (SocketAddr, Vec<tokio::net::TcpStream>) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l: TcpListener = sock.listen(1).unwrap();
    let addr = l.local_addr().unwrap();
    // fill the backlog so that further SYNs are dropped
    let mut held = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            held.push(s);
        }
    }
    std::mem::forget(l);
    (addr, held)
}

async fn version(g: &TestGateway, upstreams: &[String]) {
    let (s, b) = g
        .post("/v1/agents/bot/versions", json!({ "upstreams": upstreams }))
        .await;
    assert_eq!(s, 201, "{b}");
}

async fn staging(g: &TestGateway) -> Value {
    g.get_admin("/v1/agents/bot").await.1["environments"]["staging"].clone()
}

#[tokio::test]
async fn a_candidate_that_does_not_answer_is_refused_and_nothing_changes() {
    let g = TestGateway::start().await;
    g.post("/v1/agents", json!({"name": "bot"})).await;
    let good = echo_upstream("v1").await;
    let dead = dead_address().await;
    version(&g, &[format!("http://{good}")]).await;
    version(&g, &[format!("http://{dead}")]).await;
    let deploy = "/v1/agents/bot/environments/staging/deploy";
    let (s, b) = g.post(deploy, json!({"version": "v1"})).await;
    assert_eq!(s, 200, "a candidate that answers goes live: {b}");
    assert_eq!(b["forced"], false);
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    let before = staging(&g).await;

    let (s, b) = g.post(deploy, json!({"version": "v2"})).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "candidate_unhealthy");
    let eps = b["error"]["details"]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0]["url"], format!("http://{dead}"));
    assert_eq!(eps[0]["passed"], false);
    assert!(eps[0]["error"].as_str().unwrap().contains("connect"), "{b}");
    assert_eq!(b["error"]["details"]["min_healthy"], 1);
    // nothing changed: pointer, revision, history, routing
    assert_eq!(staging(&g).await, before);
    let (_, h) = g
        .get_admin("/v1/agents/bot/environments/staging/history")
        .await;
    assert_eq!(h["entries"].as_array().unwrap().len(), 1, "{h}");
    let r = get(&g.url("/"), &[("authorization", &auth)]).await;
    assert_eq!(r.json()["version"], "v1", "still served by v1's upstream");

    // forced: it moves, and the history says so
    let (s, b) = g
        .post(
            deploy,
            json!({"version": "v2", "force": true, "reason": "known bad"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["forced"], true);
    let (_, h) = g
        .get_admin("/v1/agents/bot/environments/staging/history")
        .await;
    assert_eq!(h["entries"][0]["forced"], true, "{h}");
    assert_eq!(h["entries"][1]["forced"], false, "{h}");
    let r = get(&g.url("/"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 502, "now routed to the dead endpoint");

    // a rollback to a version that cannot answer is never held up by a probe
    let (s, _) = g.post(deploy, json!({"version": "v1"})).await;
    assert_eq!(s, 200);
    let started = Instant::now();
    let (s, b) = g
        .post("/v1/agents/bot/environments/staging/rollback", json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["version"], "v2");
    assert!(started.elapsed() < Duration::from_millis(500));
    // … and its answer carries what this node last knew of the target's endpoints
    assert_eq!(b["health"][0]["url"], format!("http://{dead}"), "{b}");
    assert_eq!(b["health"][0]["state"], "unhealthy", "{b}");
    // `force` belongs to the gated moves only
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/rollback",
            json!({"force": true}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
}

#[tokio::test]
async fn promote_is_gated_and_a_silent_candidate_is_refused_within_the_gate_timeout() {
    let g = TestGateway::builder()
        .config(|c| c.upstream.gate_timeout_ms = 400)
        .start()
        .await;
    g.post("/v1/agents", json!({"name": "bot"})).await;
    let (hole, _held) = black_hole().await;
    let alive = accepting().await;
    // one endpoint of two answers: enough for min_healthy 1
    version(&g, &[format!("http://{hole}"), format!("http://{alive}")]).await;
    version(&g, &[format!("http://{hole}")]).await;
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v1"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = g
        .post(
            "/v1/agents/bot/environments/sandbox/deploy",
            json!({"version": "v2", "force": true}),
        )
        .await;
    assert_eq!(s, 200);
    let started = Instant::now();
    let (s, b) = g
        .post("/v1/agents/bot/environments/sandbox/promote", json!({}))
        .await;
    let took = started.elapsed();
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "candidate_unhealthy");
    assert!(
        b["error"]["details"]["endpoints"][0]["error"]
            .as_str()
            .unwrap()
            .contains("400 ms"),
        "{b}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "bounded by the gate timeout: {took:?}"
    );
    assert_eq!(staging(&g).await["version"], "v1");
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/sandbox/promote",
            json!({"force": true}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(staging(&g).await["version"], "v2");
}
