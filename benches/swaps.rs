//! Moves pointers continuously through a running gateway's admin API: deploy v2, roll
//! back to v1, again and again, at `RATE` moves a second for `SECONDS`; prints how many
//! were made and their latency. Driven by `benches/load/swaps.sh` while wrk runs.
//!
//! Environment: ADMIN=127.0.0.1:28086 TOKEN=bench-admin-token AGENT=bench ENV=staging
//! RATE=60 SECONDS=20
#![allow(clippy::expect_used, clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};

fn env(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_owned())
}

fn main() {
    let admin = env("ADMIN", "127.0.0.1:28086");
    let token = env("TOKEN", "bench-admin-token");
    let (agent, environment) = (env("AGENT", "bench"), env("ENV", "staging"));
    let rate: f64 = env("RATE", "60").parse().unwrap();
    let seconds: f64 = env("SECONDS", "20").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now();
        let mut next = start;
        let (mut lat, mut failed) = (Vec::new(), 0u32);
        let mut i = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            let (op, body) = if i % 2 == 0 {
                ("deploy", r#"{"version":"v2"}"#)
            } else {
                ("rollback", "{}")
            };
            let req = http::Request::post(format!("http://{admin}/v1/agents/{agent}/environments/{environment}/{op}"))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            let t0 = Instant::now();
            let resp = client.request(req).await.unwrap();
            let ok = resp.status().is_success();
            let _ = resp.into_body().collect().await;
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            if !ok {
                failed += 1;
            }
            i += 1;
            next += period;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
        println!(
            "moves: {} in {:.1} s ({:.1}/s), failed {failed}; admin latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            lat.len(),
            elapsed,
            lat.len() as f64 / elapsed,
            pct(0.5),
            pct(0.99),
            lat[lat.len() - 1]
        );
    });
}
