//! The deployment-token header: any bytes a client can put in `Authorization`. The
//! parser never panics, only ever yields a trimmed, non-empty token after a
//! case-insensitive `Bearer `, and authentication succeeds for exactly the one token
//! the table knows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use switchyard::domain::names::{AgentName, EnvName};
use switchyard::domain::token::{hash_token, TokenRecord};
use switchyard::domain::Change;
use switchyard::envelope::bearer;
use switchyard::routing::{AuthError, RoutingTable};

const KNOWN: &[u8] = b"swy_known-token-0123456789";
const REVOKED: &[u8] = b"swy_revoked-token";
const SUSPENDED: &[u8] = b"swy_suspended-token";

fn table() -> &'static RoutingTable {
    static T: OnceLock<RoutingTable> = OnceLock::new();
    T.get_or_init(|| {
        let t = RoutingTable::new();
        let (agent, env) = match (AgentName::parse("a", "bot"), EnvName::parse("e", "staging")) {
            (Ok(a), Ok(e)) => (a, e),
            _ => panic!("fixed names are valid"),
        };
        for (token, revoked, suspended) in [
            (KNOWN, None, None),
            (REVOKED, Some(1), None),
            (SUSPENDED, None, Some(1)),
        ] {
            t.apply(&Change::Token(TokenRecord {
                created_by: String::new(),
                last_used_at: None,
                id: "tok".into(),
                agent: agent.clone(),
                environment: env.clone(),
                name: "fuzz".into(),
                created_at: 0,
                expires_at: None,
                revoked_at: revoked,
                suspended_at: suspended,
                scopes: vec![],
                hash: hash_token(token),
            }));
        }
        t
    })
}

fuzz_target!(|data: &[u8]| {
    // only what a header value can carry reaches the parser
    let Ok(v) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let Some(token) = bearer(v.as_bytes()) else {
        return;
    };
    assert!(!token.is_empty());
    assert!(data.len() > 7 && data[..7].eq_ignore_ascii_case(b"bearer "));
    assert_eq!(token, token.trim_ascii());
    // the data plane's path: the worker's cache of verified tokens first
    match table().authenticate_token(token) {
        Ok(slot) => {
            assert_eq!(token, KNOWN);
            assert_eq!(slot.agent.as_str(), "bot");
        }
        Err(AuthError::Revoked) => assert_eq!(token, REVOKED),
        Err(AuthError::Suspended) => assert_eq!(token, SUSPENDED),
        Err(AuthError::Unknown) => {
            assert!(token != KNOWN && token != REVOKED && token != SUSPENDED)
        }
        Err(AuthError::Expired) => panic!("no token here expires"),
    }
});
