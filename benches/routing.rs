//! Routing-table costs at 1 k, 100 k and 1 M tokens and routes: token → live route
//! resolution (what every request pays) and a pointer swap (what every move pays).
//!
//! Run: `cargo bench --bench routing`. The per-request figure includes the SHA-256 of
//! the presented token.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use switchyard::domain::token::hash_token;
use switchyard::domain::{AgentName, Change, EnvName, TokenRecord, VersionSpec};
use switchyard::routing::RoutingTable;

fn build(n: usize) -> (RoutingTable, Vec<String>, Vec<(AgentName, EnvName)>) {
    let table = RoutingTable::new();
    let envs: Vec<EnvName> = ["sandbox", "staging", "production"]
        .iter()
        .map(|e| EnvName::parse("e", e).expect("env"))
        .collect();
    let agents = (n / 3).max(1);
    let mut slots = Vec::with_capacity(agents * 3);
    for a in 0..agents {
        let agent = AgentName::parse("a", &format!("agent-{a}")).expect("agent");
        let version = VersionSpec {
            upstreams: vec![format!("http://127.0.0.1:{}", 1000 + a % 50000)],
            ..Default::default()
        }
        .build(agent.clone(), 1, "bench".into(), 0)
        .expect("version");
        for env in &envs {
            table.apply(&Change::Route {
                agent: agent.clone(),
                environment: env.clone(),
                revision: 1,
                version: Some(version.clone()),
            });
            slots.push((agent.clone(), env.clone()));
        }
    }
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let secret = format!("swy_{i:064x}");
        let (agent, env) = &slots[i % slots.len()];
        table.apply(&Change::Token(TokenRecord {
            id: format!("tok_{i}"),
            agent: agent.clone(),
            environment: env.clone(),
            name: String::new(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            hash: hash_token(secret.as_bytes()),
        }));
        tokens.push(secret);
    }
    (table, tokens, slots)
}

fn resolve(c: &mut Criterion) {
    let mut g = c.benchmark_group("resolve");
    for n in [1_000usize, 100_000, 1_000_000] {
        let (table, tokens, _) = build(n);
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 7919) % tokens.len();
                let hash = hash_token(tokens[i].as_bytes());
                let slot = table.authenticate(&hash).expect("known token");
                let route = slot.route();
                black_box(route.target.as_ref().map(|t| t.first_endpoint()));
            })
        });
    }
    g.finish();
}

fn swap(c: &mut Criterion) {
    let mut g = c.benchmark_group("swap");
    for n in [1_000usize, 100_000, 1_000_000] {
        let (table, _, slots) = build(n);
        let versions: Vec<_> = (1..=2)
            .map(|v| {
                VersionSpec {
                    upstreams: vec![format!("http://127.0.0.1:{}", 2000 + v)],
                    ..Default::default()
                }
                .build(slots[0].0.clone(), v, "bench".into(), 0)
                .expect("version")
            })
            .collect();
        let mut rev = 1u64;
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                rev += 1;
                i = (i + 7919) % slots.len();
                let (agent, env) = &slots[i];
                table.apply(&Change::Route {
                    agent: agent.clone(),
                    environment: env.clone(),
                    revision: rev,
                    version: Some(versions[(rev % 2) as usize].clone()),
                });
            })
        });
    }
    g.finish();
}

criterion_group!(benches, resolve, swap);
criterion_main!(benches);
