//! Versions with several upstream replicas: balancing, passive ejection and
//! re-admission, retries and their budget, and the health view — judged by what the
//! replicas themselves saw.

use crate::support::*;
use bytes::Bytes;
use http::Method;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// A replica that can be killed (listener and connections closed at once, so
/// connects are refused) and counts the requests it answered.
struct Replica {
    addr: SocketAddr,
    answered: Arc<AtomicU64>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Replica {
    async fn start(label: &'static str) -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), label)
    }

    /// A new replica on the address of a killed one.
    async fn revive(addr: SocketAddr, label: &'static str) -> Self {
        Self::on(TcpListener::bind(addr).await.unwrap(), label)
    }

    fn on(l: TcpListener, label: &'static str) -> Self {
        let addr = l.local_addr().unwrap();
        let answered = Arc::new(AtomicU64::new(0));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let (a, t) = (Arc::clone(&answered), Arc::clone(&tasks));
        let accept = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let a = Arc::clone(&a);
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        a.fetch_add(1, Ordering::SeqCst);
                        echo_answer(label, req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
                t.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Self {
            addr,
            answered,
            tasks,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    async fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        // the aborted tasks drop their sockets on their next poll
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A replica that accepts connections and reads forever, never answering.
async fn black_hole() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

async fn gateway(upstream: &str) -> TestGateway {
    let cfg: switchyard::config::UpstreamConfig = toml::from_str(upstream).unwrap();
    TestGateway::builder()
        .config(move |c| c.upstream = cfg)
        .start()
        .await
}

/// Agent `bot` with v1 on `upstreams`, deployed to staging; the client's token.
async fn deployed(g: &TestGateway, upstreams: &[SocketAddr]) -> String {
    let (s, b) = g.post("/v1/agents", json!({"name": "bot"})).await;
    assert_eq!(s, 201, "{b}");
    let urls: Vec<String> = upstreams.iter().map(|u| format!("http://{u}")).collect();
    let (s, b) = g
        .post("/v1/agents/bot/versions", json!({"upstreams": urls}))
        .await;
    assert_eq!(s, 201, "{b}");
    g.deploy("bot", "staging", "v1").await;
    bearer(&g.token("bot", "staging").await.0)
}

async fn health(g: &TestGateway) -> Vec<serde_json::Value> {
    let (s, b) = g.get_admin("/v1/agents/bot/versions/v1/health").await;
    assert_eq!(s, 200, "{b}");
    b["endpoints"].as_array().unwrap().clone()
}

fn state_of(h: &[serde_json::Value], addr: SocketAddr) -> String {
    let url = format!("http://{addr}");
    h.iter()
        .find(|e| e["url"] == url.as_str())
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn metric_sum(g: &TestGateway, prefix: &str) -> f64 {
    let text = get(&format!("http://{}/metrics", g.admin), &[])
        .await
        .text();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `n` requests from `clients` concurrent clients, GET and POST alternating; the
/// statuses of the GETs and of the POSTs.
async fn load(url: &str, auth: &str, clients: usize, n: usize) -> (Vec<u16>, Vec<u16>) {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (url, auth) = (url.to_owned(), auth.to_owned());
            tokio::spawn(async move {
                let (mut gets, mut posts) = (Vec::new(), Vec::new());
                for i in 0..n / clients {
                    let h = [("authorization", auth.as_str())];
                    if (i + c) % 2 == 0 {
                        // a retried request keeps its request id
                        let rid = format!("rid-{c}-{i}");
                        let r = get(&url, &[h[0], ("x-request-id", rid.as_str())]).await;
                        if r.status == 200 {
                            assert_eq!(r.json()["headers"]["x-request-id"], rid.as_str());
                        }
                        gets.push(r.status.as_u16());
                    } else {
                        let body = Bytes::from_static(b"{\"q\":1}");
                        posts.push(send(Method::POST, &url, &h, body).await.status.as_u16());
                    }
                }
                (gets, posts)
            })
        })
        .collect();
    let (mut gets, mut posts) = (Vec::new(), Vec::new());
    for t in tasks {
        let (g, p) = t.await.unwrap();
        gets.extend(g);
        posts.extend(p);
    }
    (gets, posts)
}

#[tokio::test]
async fn a_killed_replica_is_ejected_its_requests_retried_and_it_is_readmitted() {
    let g = gateway("consecutive_failures = 3\nejection_base_ms = 2500").await;
    let replicas = [
        Replica::start("a").await,
        Replica::start("b").await,
        Replica::start("c").await,
    ];
    let addrs: Vec<_> = replicas.iter().map(|r| r.addr).collect();
    let auth = deployed(&g, &addrs).await;
    let url = g.url("/");

    let (gets, posts) = load(&url, &auth, 4, 120).await;
    assert!(gets.iter().chain(&posts).all(|s| *s == 200));
    for r in &replicas {
        assert!(
            r.answered() > 10,
            "every replica takes a share: {}",
            r.answered()
        );
    }

    // b dies under load: its pooled connections close, new ones are refused
    replicas[1].kill().await;
    let killed_at = std::time::SystemTime::now();
    let (gets, posts) = load(&url, &auth, 4, 200).await;
    let failed_gets = gets.iter().filter(|s| **s != 200).count();
    let failed_posts = posts.iter().filter(|s| **s != 200).count();
    assert_eq!(
        failed_gets, 0,
        "GETs are retried on another replica: {gets:?}"
    );
    assert!(failed_posts <= 3, "{failed_posts} POSTs failed: {posts:?}");
    let h = health(&g).await;
    assert_eq!(state_of(&h, addrs[1]), "ejected", "{h:?}");
    // the failure that ejected it is its last: how long the ejection took to learn
    let b_url = format!("http://{}", addrs[1]);
    let b_health = h.iter().find(|e| e["url"] == b_url.as_str()).unwrap();
    let checked = time::OffsetDateTime::parse(
        b_health["checked_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let learned = std::time::SystemTime::from(checked)
        .duration_since(killed_at)
        .unwrap_or_default();
    eprintln!(
        "replica killed: {failed_gets} GETs and {failed_posts} POSTs of 200 failed; ejected {learned:?} after the kill"
    );
    assert!(
        learned < Duration::from_secs(2),
        "ejected {learned:?} after the kill"
    );
    assert!(metric_sum(&g, "switchyard_upstream_ejections_total{").await >= 1.0);
    assert!(metric_sum(&g, "switchyard_upstream_retries_total{").await >= 1.0);
    let ejected_at = Instant::now();
    let down = format!(
        "switchyard_upstream_endpoint_up{{agent=\"bot\",version=\"v1\",endpoint=\"{}\"}} 0",
        addrs[1]
    );
    let text = get(&format!("http://{}/metrics", g.admin), &[])
        .await
        .text();
    assert!(text.contains(&down), "{text}");

    // back on the same address: nothing reaches it while the ejection lasts …
    let b = Replica::revive(addrs[1], "b").await;
    let (gets, posts) = load(&url, &auth, 4, 40).await;
    assert!(gets.iter().chain(&posts).all(|s| *s == 200));
    assert!(
        ejected_at.elapsed() < Duration::from_millis(2000),
        "too slow to judge"
    );
    assert_eq!(b.answered(), 0, "an ejected replica gets no request");

    // … and it is used again once the ejection is over
    tokio::time::sleep(Duration::from_millis(2600).saturating_sub(ejected_at.elapsed())).await;
    let (gets, posts) = load(&url, &auth, 4, 120).await;
    assert!(gets.iter().chain(&posts).all(|s| *s == 200));
    assert!(b.answered() > 5, "re-admitted: {}", b.answered());
    assert_eq!(state_of(&health(&g).await, addrs[1]), "healthy");
    g.stop().await;
}

#[tokio::test]
async fn a_black_holed_replica_costs_a_bounded_number_of_timeouts_then_is_ejected() {
    let g = TestGateway::builder()
        .limits(|l| l.upstream_response_timeout_ms = 300)
        .config(|c| {
            c.upstream.consecutive_failures = 2;
            c.upstream.ejection_base_ms = 60_000;
        })
        .start()
        .await;
    let good = Replica::start("good").await;
    let hole = black_hole().await;
    let auth = deployed(&g, &[good.addr, hole]).await;
    let url = g.url("/");
    let h = [("authorization", auth.as_str())];
    let mut statuses = Vec::new();
    let started = Instant::now();
    for _ in 0..40 {
        statuses.push(get(&url, &h).await.status.as_u16());
    }
    let timeouts = statuses.iter().filter(|s| **s == 504).count();
    assert!(
        timeouts <= 2,
        "at most consecutive_failures timeouts: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        40 - timeouts
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded cost: {:?}",
        started.elapsed()
    );
    let hs = health(&g).await;
    assert_eq!(state_of(&hs, hole), "ejected", "{hs:?}");
    let e = hs
        .iter()
        .find(|e| e["url"] == format!("http://{hole}").as_str())
        .unwrap();
    assert!(e["last_error"].as_str().unwrap().contains("in time"), "{e}");
    g.stop().await;
}

#[tokio::test]
async fn retries_stay_within_the_budget_when_every_replica_fails() {
    let g = gateway(
        "retry_budget_percent = 10\nretry_budget_min_per_s = 0\nconsecutive_failures = 1000",
    )
    .await;
    let (a, b) = (dead_address().await, dead_address().await);
    let auth = deployed(&g, &[a, b]).await;
    let url = g.url("/");
    let h = [("authorization", auth.as_str())];
    for _ in 0..100 {
        assert_eq!(get(&url, &h).await.status, 502);
    }
    let retries = metric_sum(&g, "switchyard_upstream_retries_total{").await;
    assert!(
        (1.0..=10.0).contains(&retries),
        "10 % of 100 requests at most, and some: {retries}"
    );
    g.stop().await;
}

#[tokio::test]
async fn a_single_endpoint_version_is_never_ejected_and_health_is_reported() {
    let g = gateway("consecutive_failures = 1").await;
    let dead = dead_address().await;
    let auth = deployed(&g, &[dead]).await;
    let h = [("authorization", auth.as_str())];
    for _ in 0..5 {
        assert_eq!(get(&g.url("/"), &h).await.status, 502);
    }
    let hs = health(&g).await;
    // half of one endpoint is none: it stays eligible, its failures counted
    assert_eq!(state_of(&hs, dead), "unhealthy", "{hs:?}");
    assert_eq!(hs[0]["consecutive_failures"], 5);
    assert!(hs[0]["checked_at"].is_string());
    let (s, b) = g.get_admin("/v1/agents/bot/versions/v9/health").await;
    assert_eq!(s, 404, "{b}");
    g.stop().await;
}
