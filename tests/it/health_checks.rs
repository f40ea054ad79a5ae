//! Active health checks: a version's `health` rule is probed while an environment
//! points at it; an endpoint that fails it gets no traffic until it passes again;
//! the checks stop when the version is no longer live; the gate uses the same path
//! and the version's `min_healthy`. Judged by what the replicas saw.

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A replica whose `/healthz` answers 503 while `sick` is set; it counts health
/// probes and other requests apart.
struct Replica {
    addr: SocketAddr,
    sick: Arc<AtomicBool>,
    probes: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
}

impl Replica {
    async fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (sick, probes, served) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s2, p2, v2) = (Arc::clone(&sick), Arc::clone(&probes), Arc::clone(&served));
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (sick, probes, served) = (Arc::clone(&s2), Arc::clone(&p2), Arc::clone(&v2));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                        let health = req.uri().path() == "/healthz";
                        let status = if health {
                            probes.fetch_add(1, Ordering::SeqCst);
                            if sick.load(Ordering::SeqCst) {
                                503
                            } else {
                                200
                            }
                        } else {
                            served.fetch_add(1, Ordering::SeqCst);
                            200
                        };
                        async move {
                            let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            sick,
            probes,
            served,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

const RULE: &str = r#"{"path": "/healthz", "interval_ms": 100, "timeout_ms": 100, "healthy_threshold": 1, "unhealthy_threshold": 2}"#;

async fn state_of(g: &TestGateway, url: &str) -> String {
    let (_, h) = g.get_admin("/v1/agents/bot/versions/v1/health").await;
    h["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == url)
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_endpoint_failing_its_check_gets_no_traffic_and_checks_follow_the_pointer() {
    let g = TestGateway::start().await;
    let (a, b) = (Replica::start().await, Replica::start().await);
    g.post("/v1/agents", json!({"name": "bot"})).await;
    let rule: serde_json::Value = serde_json::from_str(RULE).unwrap();
    let (s, v) = g
        .post(
            "/v1/agents/bot/versions",
            json!({"upstreams": [a.url(), b.url()], "health": rule, "min_healthy": 2}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["health"]["path"], "/healthz");
    assert_eq!(v["min_healthy"], 2);
    // the gate probes the health path of both (min_healthy 2)
    let deploy = "/v1/agents/bot/environments/staging/deploy";
    let (s, v) = g.post(deploy, json!({"version": "v1"})).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        b.probes.load(Ordering::SeqCst) >= 1,
        "the gate asked /healthz"
    );
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    let h = [("authorization", auth.as_str())];

    eventually("both healthy", || async {
        state_of(&g, &a.url()).await == "healthy" && state_of(&g, &b.url()).await == "healthy"
    })
    .await;
    b.sick.store(true, Ordering::SeqCst);
    eventually("b found unhealthy", || async {
        state_of(&g, &b.url()).await == "unhealthy"
    })
    .await;
    let before = b.served.load(Ordering::SeqCst);
    for _ in 0..40 {
        assert_eq!(get(&g.url("/"), &h).await.status, 200);
    }
    assert_eq!(
        b.served.load(Ordering::SeqCst),
        before,
        "an unhealthy endpoint gets no request"
    );
    let text = get(&format!("http://{}/metrics", g.admin), &[])
        .await
        .text();
    assert!(
        text.contains(&format!(
            "switchyard_upstream_endpoint_up{{agent=\"bot\",version=\"v1\",endpoint=\"{}\"}} 0",
            b.addr
        )),
        "{text}"
    );

    b.sick.store(false, Ordering::SeqCst);
    eventually("b healthy again", || async {
        state_of(&g, &b.url()).await == "healthy"
    })
    .await;
    for _ in 0..40 {
        assert_eq!(get(&g.url("/"), &h).await.status, 200);
    }
    assert!(b.served.load(Ordering::SeqCst) > before, "back in rotation");

    // no environment points at v1: its checks stop …
    let (s, v) = g
        .post("/v1/agents/bot/environments/staging/undeploy", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stopped_at = a.probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        a.probes.load(Ordering::SeqCst),
        stopped_at,
        "no checks for a version not live"
    );
    // … and start again when one does
    let (s, v) = g.post(deploy, json!({"version": "v1"})).await;
    assert_eq!(s, 200, "{v}");
    let restarted = a.probes.load(Ordering::SeqCst);
    eventually("checks again", || async {
        a.probes.load(Ordering::SeqCst) > restarted + 2
    })
    .await;
}

#[tokio::test]
async fn the_gate_asks_the_health_path_and_counts_min_healthy() {
    let g = TestGateway::start().await;
    let (a, b) = (Replica::start().await, Replica::start().await);
    b.sick.store(true, Ordering::SeqCst);
    g.post("/v1/agents", json!({"name": "bot"})).await;
    let rule: serde_json::Value = serde_json::from_str(RULE).unwrap();
    for min in [2, 1] {
        let (s, v) = g
            .post(
                "/v1/agents/bot/versions",
                json!({"upstreams": [a.url(), b.url()], "health": rule, "min_healthy": min}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let deploy = "/v1/agents/bot/environments/staging/deploy";
    // both accept connections, but b's health path answers 503: 1 of 2 passes
    let (s, v) = g.post(deploy, json!({"version": "v1"})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["details"]["min_healthy"], 2);
    let eps = v["error"]["details"]["endpoints"].as_array().unwrap();
    let bad = eps.iter().find(|e| e["url"] == b.url().as_str()).unwrap();
    assert!(bad["error"].as_str().unwrap().contains("503"), "{v}");
    // v2 needs one
    let (s, v) = g.post(deploy, json!({"version": "v2"})).await;
    assert_eq!(s, 200, "{v}");
    // rules are checked when the version is made
    for (body, field) in [
        (
            json!({"upstreams": [a.url()], "min_healthy": 2}),
            "min_healthy",
        ),
        (
            json!({"upstreams": [a.url()], "health": {"path": "healthz"}}),
            "health",
        ),
        (
            json!({"upstreams": [a.url()], "health": {"path": "/h", "interval_ms": 100, "timeout_ms": 500}}),
            "health",
        ),
    ] {
        let (s, v) = g.post("/v1/agents/bot/versions", body).await;
        assert_eq!(s, 422, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(field),
            "{v}"
        );
    }
}
