//! What the routing table takes in memory: the resident-set growth from 300,000
//! routes (100,000 agents × 3 environments), then from 1,000,000 tokens on them.
//!
//! Run: `cargo bench --bench memory` (Linux: reads /proc/self/statm).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use switchyard::domain::token::hash_token;
use switchyard::domain::{AgentName, Change, EnvName, TokenRecord, VersionSpec};
use switchyard::routing::RoutingTable;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    const AGENTS: usize = 100_000;
    const TOKENS: usize = 1_000_000;
    let envs: Vec<EnvName> = ["sandbox", "staging", "production"]
        .iter()
        .map(|e| EnvName::parse("e", e).unwrap())
        .collect();
    let table = RoutingTable::new();
    let base = rss_bytes();
    for a in 0..AGENTS {
        let agent = AgentName::parse("a", &format!("agent-{a:06}")).unwrap();
        let version = VersionSpec {
            upstreams: vec![format!("http://10.0.{}.{}:8080", a / 250 % 250, a % 250)],
            ..Default::default()
        }
        .build(agent.clone(), 1, "bench".into(), 0)
        .unwrap();
        for env in &envs {
            table.apply(&Change::Route {
                agent: agent.clone(),
                environment: env.clone(),
                revision: 1,
                version: Some(version.clone()),
                extra: None,
            });
        }
    }
    let after_routes = rss_bytes();
    for i in 0..TOKENS {
        let slot = i % (AGENTS * 3);
        let agent = AgentName::parse("a", &format!("agent-{:06}", slot / 3)).unwrap();
        let env = &envs[slot % 3];
        let secret = format!(
            "swy_{:064x}",
            (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        table.apply(&Change::Token(TokenRecord {
            created_by: String::new(),
            last_used_at: None,
            id: format!("tok_{i:016x}"),
            agent,
            environment: env.clone(),
            name: String::new(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            suspended_at: None,
            scopes: vec![],
            hash: hash_token(secret.as_bytes()),
        }));
    }
    let after_tokens = rss_bytes();
    let routes = (after_routes - base) as f64;
    let tokens = (after_tokens - after_routes) as f64;
    println!(
        "routing table: {} routes: {:.1} MiB RSS ({:.0} B/route); {} tokens: {:.1} MiB RSS ({:.0} B/token); total {:.1} MiB",
        table.slot_count(),
        routes / 1048576.0,
        routes / table.slot_count() as f64,
        table.token_count(),
        tokens / 1048576.0,
        tokens / table.token_count() as f64,
        (after_tokens - base) as f64 / 1048576.0
    );
}
