//! Routing-table costs at 1 k, 100 k and 1 M tokens and routes: token → live route
//! resolution (what every request pays) and a pointer swap (what every move pays).
//!
//! Run: `cargo bench --bench routing`. The per-request figure is the data plane's own
//! path: the worker's cache of verified tokens (SHA-256 of the presented token on a
//! miss: uniformly random tokens over a large table miss it), the route, the endpoint.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use switchyard::domain::token::hash_token;
use switchyard::domain::{AgentName, Change, EnvName, TokenRecord, VersionSpec};
use switchyard::routing::RoutingTable;

/// Tokens as a request holds them: 68 contiguous bytes each.
type Secret = [u8; 68];

fn build(n: usize) -> (RoutingTable, Vec<Secret>, Vec<(AgentName, EnvName)>) {
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
                extra: None,
            });
            slots.push((agent.clone(), env.clone()));
        }
    }
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let secret = format!(
            "swy_{:064x}",
            (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        let (agent, env) = &slots[i % slots.len()];
        table.apply(&Change::Token(TokenRecord {
            created_by: String::new(),
            last_used_at: None,
            id: format!("tok_{i}"),
            agent: agent.clone(),
            environment: env.clone(),
            name: String::new(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            suspended_at: None,
            scopes: vec![],
            hash: hash_token(secret.as_bytes()),
        }));
        let mut b = [0u8; 68];
        b.copy_from_slice(secret.as_bytes());
        tokens.push(b);
    }
    (table, tokens, slots)
}

/// Token → live route, uniformly at random over all N tokens: every lookup a cache miss
/// once N outgrows the caches.
fn resolve(c: &mut Criterion) {
    let mut g = c.benchmark_group("resolve");
    for n in [1_000usize, 100_000, 1_000_000] {
        let (table, tokens, _) = build(n);
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 7919) % tokens.len();
                let slot = table.authenticate_token(&tokens[i]).expect("known token");
                let route = slot.route();
                let mut no_healthy = false;
                black_box(route.target.as_ref().map(|t| t.pick(0, &mut no_healthy)));
            })
        });
    }
    g.finish();
}

/// The same lookup with 1,000 active tokens spread over a table of N: what the size of
/// the table costs when the working set stays the same.
fn resolve_active(c: &mut Criterion) {
    let mut g = c.benchmark_group("resolve_1k_active");
    for n in [1_000usize, 100_000, 1_000_000] {
        let (table, tokens, _) = build(n);
        let active: Vec<Secret> = (0..1000).map(|k| tokens[(k * 7919) % n]).collect();
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % active.len();
                let slot = table.authenticate_token(&active[i]).expect("known token");
                let route = slot.route();
                let mut no_healthy = false;
                black_box(route.target.as_ref().map(|t| t.pick(0, &mut no_healthy)));
            })
        });
    }
    g.finish();
}

fn versions_for(agent: &AgentName) -> Vec<switchyard::domain::Version> {
    (1..=2)
        .map(|v| {
            VersionSpec {
                upstreams: vec![format!("http://127.0.0.1:{}", 2000 + v)],
                ..Default::default()
            }
            .build(agent.clone(), v, "bench".into(), 0)
            .expect("version")
        })
        .collect()
}

/// A pointer swap of a slot picked uniformly at random among all of them.
fn swap(c: &mut Criterion) {
    let mut g = c.benchmark_group("swap");
    for n in [1_000usize, 100_000, 1_000_000] {
        let (table, _, slots) = build(n);
        let versions = versions_for(&slots[0].0);
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
                    extra: None,
                });
            })
        });
    }
    g.finish();
}

/// The same swap over 1,000 active slots spread across a table of N.
fn swap_active(c: &mut Criterion) {
    let mut g = c.benchmark_group("swap_1k_active");
    for n in [1_000usize, 100_000, 1_000_000] {
        let (table, _, slots) = build(n);
        let versions = versions_for(&slots[0].0);
        let active: Vec<_> = (0..1000)
            .map(|k| slots[(k * 7919) % slots.len()].clone())
            .collect();
        let mut rev = 1u64;
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                rev += 1;
                i = (i + 1) % active.len();
                let (agent, env) = &active[i];
                table.apply(&Change::Route {
                    agent: agent.clone(),
                    environment: env.clone(),
                    revision: rev,
                    version: Some(versions[(rev % 2) as usize].clone()),
                    extra: None,
                });
            })
        });
    }
    g.finish();
}

criterion_group!(benches, resolve, resolve_active, swap, swap_active);
criterion_main!(benches);
