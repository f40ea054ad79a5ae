//! Fleet figures: `NODES` gateway nodes (3 by default; one worker thread each) on one
//! PostgreSQL, `MOVES` moves (1,000 by default) made through node A; for each, the
//! time from A's 200 until every other node routes to the new version (read from
//! their routing tables, polled every 50 µs). Also the admin move latency on
//! PostgreSQL and, for comparison, on the embedded SQLite store.
//!
//! Run: `SWITCHYARD_BENCH_POSTGRES_URL=postgres://user@127.0.0.1:PORT/postgres \
//!       NODES=20 MOVES=300 cargo bench --bench fleet`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::config::Config;
use switchyard::domain::{AgentName, EnvName};
use switchyard::routing::RoutingTable;
use switchyard::server::{run, Gateway, Listeners};
use switchyard::store::Store;
use tokio::net::TcpListener;

const TOKEN: &str = "bench-admin-token";

struct Node {
    admin: SocketAddr,
    table: Arc<RoutingTable>,
}

async fn start(store_url: &str) -> Node {
    let mut config = Config {
        store: store_url.to_owned(),
        workers: 1,
        ..Config::default()
    };
    config.log.access_log = false;
    let pipeline = Arc::new(config.pipeline().unwrap());
    let store = Store::open(store_url, pipeline).unwrap();
    let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let gw = Gateway::new(config, store, TOKEN.into());
    let table = Arc::clone(&gw.table);
    tokio::spawn(async move {
        run(
            gw,
            Listeners {
                client,
                admin,
                tls: None,
            },
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    let node = Node {
        admin: admin_addr,
        table,
    };
    for _ in 0..500 {
        if call(node.admin, "GET", "/readyz", None).await.0 == 200 {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("node did not become ready");
}

async fn call(admin: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    thread_local! {
        static CLIENT: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
    }
    let client = CLIENT.with(|c| c.clone());
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        ))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn seed(a: &Node) {
    call(a.admin, "POST", "/v1/agents", Some(json!({"name": "bot"}))).await;
    for port in [9001, 9002] {
        let (s, _) = call(
            a.admin,
            "POST",
            "/v1/agents/bot/versions",
            Some(json!({"upstreams": [format!("http://127.0.0.1:{port}")]})),
        )
        .await;
        assert_eq!(s, 201);
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<40} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.99),
        v[v.len() - 1]
    );
}

/// Moves staging back and forth `moves` times through `a`; returns A's admin latency
/// and, for each follower, the time from A's 200 until its table routes to the new
/// version.
async fn moves(a: &Node, followers: &[&Node], moves: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (agent, env) = (
        AgentName::parse("a", "bot").unwrap(),
        EnvName::parse("e", "staging").unwrap(),
    );
    let mut admin = Vec::with_capacity(moves);
    let mut seen = vec![Vec::with_capacity(moves); followers.len()];
    for i in 0..moves {
        let v = (i % 2 + 1) as u32;
        let t0 = Instant::now();
        let (s, b) = call(
            a.admin,
            "POST",
            "/v1/agents/bot/environments/staging/deploy",
            Some(json!({"version": format!("v{v}")})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let acked = Instant::now();
        admin.push((acked - t0).as_secs_f64() * 1e3);
        let mut pending: Vec<usize> = (0..followers.len()).collect();
        let deadline = acked + Duration::from_secs(10);
        while !pending.is_empty() {
            pending.retain(|&k| {
                let live = followers[k]
                    .table
                    .find_slot(&agent, &env)
                    .and_then(|s| s.route().target.as_ref().map(|t| t.version));
                if live == Some(v) {
                    seen[k].push(acked.elapsed().as_secs_f64() * 1e3);
                    false
                } else {
                    true
                }
            });
            assert!(Instant::now() < deadline, "a follower never saw move {i}");
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_micros(50)).await;
            }
        }
    }
    (admin, seen)
}

fn main() {
    let n: usize = std::env::var("MOVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Ok(base) = std::env::var("SWITCHYARD_BENCH_POSTGRES_URL") else {
            eprintln!("set SWITCHYARD_BENCH_POSTGRES_URL=postgres://user@127.0.0.1:PORT/postgres to run the fleet figures");
            return;
        };
        let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let db = format!("sy_bench_{}", std::process::id());
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).await.unwrap();
        client.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
        let url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);
        let nodes: usize = std::env::var("NODES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
            .max(2);
        let a = start(&url).await;
        let mut others = Vec::new();
        for _ in 1..nodes {
            others.push(start(&url).await);
        }
        seed(&a).await;
        let followers: Vec<&Node> = others.iter().collect();
        let (admin_pg, seen) = moves(&a, &followers, n).await;
        println!("{nodes} nodes on one PostgreSQL, {n} moves through node A (times from A's 200):");
        for (k, s) in seen.iter().enumerate().take(2) {
            summary(&format!("propagation to node {}", k + 2), s.clone());
        }
        summary("propagation, every node (all samples)", seen.concat());
        // the slowest node per move: when the move has reached the whole fleet
        let last: Vec<f64> = (0..n)
            .map(|i| seen.iter().map(|s| s[i]).fold(0.0, f64::max))
            .collect();
        summary("propagation to the last node", last);
        summary("admin move latency, PostgreSQL", admin_pg);

        let dir = tempfile::tempdir().unwrap();
        let s = start(&format!("sqlite://{}", dir.path().join("bench.db").display())).await;
        seed(&s).await;
        let (admin_sqlite, _) = moves(&s, &[], n).await;
        summary("admin move latency, SQLite", admin_sqlite);
        drop(client);
    });
}
