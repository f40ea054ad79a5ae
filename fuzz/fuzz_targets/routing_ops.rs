//! The routing table under random sequences of changes, checked after every step
//! against a model that is too simple to be wrong: a map from slot to (revision,
//! version) that only moves forward in revision, and a map from token to its last
//! record. Lookups, revisions and the slot set must agree with the model.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use switchyard::domain::names::{AgentName, EnvName};
use switchyard::domain::token::{hash_token, TokenRecord};
use switchyard::domain::version::{Version, VersionState};
use switchyard::domain::Change;
use switchyard::routing::{AuthError, RoutingTable};

const AGENTS: [&str; 3] = ["alpha", "beta", "gamma"];
const ENVS: [&str; 3] = ["sandbox", "staging", "production"];

#[derive(Arbitrary, Debug)]
enum Op {
    Route {
        slot: u8,
        revision: u8,
        version: Option<u8>,
        stopped: bool,
    },
    Token {
        token: u8,
        slot: u8,
        revoked: bool,
        expired: bool,
    },
    Auth {
        token: u8,
    },
    Resolve {
        slot: u8,
    },
}

fn names(slot: u8) -> (AgentName, EnvName) {
    let i = slot as usize % 9;
    match (
        AgentName::parse("agent", AGENTS[i / 3]),
        EnvName::parse("environment", ENVS[i % 3]),
    ) {
        (Ok(a), Ok(e)) => (a, e),
        _ => panic!("fixed names are valid"),
    }
}

fn secret(token: u8) -> Vec<u8> {
    format!("swy_token-{}", token % 16).into_bytes()
}

#[derive(Default)]
struct Model {
    /// slot → (revision, version number, stopped)
    routes: HashMap<usize, (u64, Option<(u32, bool)>)>,
    /// token → (slot, revoked, expired)
    tokens: HashMap<u8, (usize, bool, bool)>,
    revision: u64,
}

fuzz_target!(|ops: Vec<Op>| {
    let table = RoutingTable::new();
    let mut model = Model::default();
    for op in ops.iter().take(256) {
        match *op {
            Op::Route {
                slot,
                revision,
                version,
                stopped,
            } => {
                let (agent, environment) = names(slot);
                let revision = u64::from(revision);
                let version = version.map(|n| Version {
                    agent: agent.clone(),
                    number: u32::from(n) + 1,
                    upstreams: vec![format!("http://127.0.0.1:{}", 9000 + u32::from(n))],
                    config: serde_json::Value::Null,
                    description: String::new(),
                    author: String::new(),
                    digest: String::new(),
                    state: if stopped {
                        VersionState::Stopped
                    } else {
                        VersionState::Running
                    },
                    created_at: 0,
                    health: None,
                    min_healthy: 1,
                    inject: vec![],
                });
                table.apply(&Change::Route {
                    agent,
                    environment,
                    revision,
                    version: version.clone(),
                    extra: None,
                });
                let entry = model.routes.entry(slot as usize % 9).or_insert((0, None));
                if entry.0 <= revision {
                    *entry = (revision, version.map(|v| (v.number, stopped)));
                }
                model.revision = model.revision.max(revision);
            }
            Op::Token {
                token,
                slot,
                revoked,
                expired,
            } => {
                let (agent, environment) = names(slot);
                table.apply(&Change::Token(TokenRecord {
                    created_by: String::new(),
                    last_used_at: None,
                    id: format!("t{}", token % 16),
                    agent,
                    environment,
                    name: String::new(),
                    created_at: 0,
                    expires_at: expired.then_some(1),
                    revoked_at: revoked.then_some(1),
                    suspended_at: None,
                    scopes: vec![],
                    hash: hash_token(&secret(token)),
                }));
                model
                    .tokens
                    .insert(token % 16, (slot as usize % 9, revoked, expired));
                model.routes.entry(slot as usize % 9).or_insert((0, None));
            }
            Op::Auth { token } => {
                // the data plane's path: the worker's cache of verified tokens first
                let got = table.authenticate_token(&secret(token));
                match (model.tokens.get(&(token % 16)), got) {
                    (None, Err(AuthError::Unknown)) => {}
                    (Some((_, true, _)), Err(AuthError::Revoked)) => {}
                    (Some((_, false, true)), Err(AuthError::Expired)) => {}
                    (Some((slot, false, false)), Ok(s)) => {
                        let (a, e) = names(*slot as u8);
                        assert_eq!((&s.agent, &s.environment), (&a, &e));
                    }
                    (want, got) => panic!("token {token}: model {want:?}, table {got:?}"),
                }
            }
            Op::Resolve { slot } => {
                let (agent, environment) = names(slot);
                let found = table.find_slot(&agent, &environment);
                match (model.routes.get(&(slot as usize % 9)), found) {
                    (None, None) => {}
                    (Some((revision, version)), Some(s)) => {
                        let route = s.route();
                        assert_eq!(route.revision, *revision);
                        let got = route.target.as_ref().map(|t| (t.version, t.stopped));
                        assert_eq!(got, *version);
                        if let Some(t) = &route.target {
                            assert_eq!(
                                t.label.to_str().ok(),
                                Some(format!("v{}", t.version)).as_deref()
                            );
                            assert_eq!(t.endpoints.len(), 1);
                        }
                    }
                    (want, got) => {
                        panic!("slot {slot}: model {want:?}, table has {}", got.is_some())
                    }
                }
            }
        }
        assert_eq!(table.revision(), model.revision);
    }
    assert_eq!(table.slot_count(), model.routes.len());
    assert_eq!(table.token_count(), model.tokens.len());
});
