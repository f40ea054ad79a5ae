//! The admin API: random sequences of calls (known and garbage paths, structured and
//! raw JSON bodies, with and without the admin token) against a real `Admin` on an
//! in-memory SQLite store. Every answer is a 2xx or a 4xx with the error envelope
//! (never a 5xx), and at the end the routing table equals one rebuilt from the store.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use switchyard::admin::Admin;
use switchyard::config::Config;
use switchyard::routing::RoutingTable;
use switchyard::store::Store;

const ADMIN: &str = "fuzz-admin-token";
const AGENTS: [&str; 2] = ["bot", "other"];
const ENVS: [&str; 3] = ["sandbox", "staging", "production"];
const VERSIONS: [&str; 3] = ["v1", "v2", "v3"];
const KEYS: [&str; 12] = [
    "name",
    "description",
    "upstreams",
    "config",
    "version",
    "to",
    "to_version",
    "reason",
    "confirm",
    "expected_revision",
    "expires_at",
    "bogus",
];

#[derive(Arbitrary, Debug)]
enum Seg {
    Known(u8),
    Raw(String),
}

impl Seg {
    fn of(&self, known: &[&str]) -> String {
        match self {
            Seg::Known(i) => known[*i as usize % known.len()].to_owned(),
            Seg::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Path {
    Environments,
    Agents,
    Agent(Seg),
    Versions(Seg),
    Version(Seg, Seg),
    Diff(Seg, Seg, Seg),
    StopStart(Seg, Seg, bool),
    Move(Seg, Seg, u8),
    History(Seg, Seg, String),
    Tokens(Seg, Seg),
    Token(String),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Known(u8),
    Url(u16),
    List(Vec<u16>),
    Time(u32),
}

impl Scalar {
    fn value(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => json!(b),
            Scalar::Int(n) => json!(n),
            Scalar::Str(s) => json!(s),
            Scalar::Known(i) => {
                let all: Vec<&str> = AGENTS
                    .iter()
                    .chain(&ENVS)
                    .chain(&VERSIONS)
                    .copied()
                    .collect();
                json!(all[*i as usize % all.len()])
            }
            Scalar::Url(p) => json!([format!("http://127.0.0.1:{p}")]),
            Scalar::List(ps) => json!(ps
                .iter()
                .map(|p| format!("http://10.0.0.1:{p}"))
                .collect::<Vec<_>>()),
            Scalar::Time(s) => json!(format!("2026-{:02}-01T00:00:{:02}Z", s % 14, s % 61)),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Body {
    Empty,
    Raw(Vec<u8>),
    Fields(Vec<(u8, Scalar)>),
}

impl Body {
    fn bytes(&self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::Raw(b) => Bytes::from(b.clone()),
            Body::Fields(fields) => {
                let mut m = Map::new();
                for (k, v) in fields {
                    m.insert(KEYS[*k as usize % KEYS.len()].to_owned(), v.value());
                }
                Bytes::from(Value::Object(m).to_string())
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Call {
    method: u8,
    path: Path,
    body: Body,
    unauthorized: bool,
}

fn path(p: &Path) -> String {
    let (a, e, v) = (&AGENTS[..], &ENVS[..], &VERSIONS[..]);
    match p {
        Path::Environments => "/v1/environments".into(),
        Path::Agents => "/v1/agents".into(),
        Path::Agent(x) => format!("/v1/agents/{}", x.of(a)),
        Path::Versions(x) => format!("/v1/agents/{}/versions", x.of(a)),
        Path::Version(x, y) => format!("/v1/agents/{}/versions/{}", x.of(a), y.of(v)),
        Path::Diff(x, y, z) => format!(
            "/v1/agents/{}/versions/{}/diff/{}",
            x.of(a),
            y.of(v),
            z.of(v)
        ),
        Path::StopStart(x, y, stop) => format!(
            "/v1/agents/{}/versions/{}/{}",
            x.of(a),
            y.of(v),
            if *stop { "stop" } else { "start" }
        ),
        Path::Move(x, y, op) => format!(
            "/v1/agents/{}/environments/{}/{}",
            x.of(a),
            y.of(e),
            ["deploy", "promote", "rollback", "bogus"][*op as usize % 4]
        ),
        Path::History(x, y, q) => format!(
            "/v1/agents/{}/environments/{}/history?{q}",
            x.of(a),
            y.of(e)
        ),
        Path::Tokens(x, y) => format!("/v1/agents/{}/environments/{}/tokens", x.of(a), y.of(e)),
        Path::Token(id) => format!("/v1/tokens/{id}"),
        Path::Raw(s) => s.clone(),
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        }
    })
}

fuzz_target!(|calls: Vec<Call>| {
    let config = Config::default();
    let Ok(pipeline) = config.pipeline() else {
        panic!("the default pipeline is valid")
    };
    let pipeline = Arc::new(pipeline);
    let store = match Store::open("sqlite://:memory:", Arc::clone(&pipeline)) {
        Ok(s) => s,
        Err(e) => panic!("in-memory store: {e}"),
    };
    let table = Arc::new(RoutingTable::new());
    let admin = Arc::new(Admin::new(
        store.clone(),
        Arc::clone(&table),
        ADMIN,
        Arc::new(AtomicBool::new(true)),
    ));
    runtime().block_on(async {
        for call in calls.iter().take(64) {
            let method = ["GET", "POST", "DELETE", "PUT"][call.method as usize % 4];
            let uri = path(&call.path);
            let mut req = http::Request::builder().method(method).uri(&uri);
            if !call.unauthorized {
                req = req.header("authorization", format!("Bearer {ADMIN}"));
            }
            let Ok(req) = req.body(Full::new(call.body.bytes())) else {
                continue; // not a request a client could send
            };
            let resp = match Arc::clone(&admin).handle(req).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            let status = resp.status();
            let body = match resp.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => match e {},
            };
            assert!(
                !status.is_server_error(),
                "{method} {uri}: {status} {body:?}"
            );
            if uri.starts_with("/v1") && call.unauthorized {
                assert_eq!(status, 401, "{method} {uri} without the admin token");
            }
            if !status.is_success() {
                let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                    panic!("{method} {uri}: {status}: not JSON ({e}): {body:?}")
                });
                let err = &v["error"];
                assert!(err["code"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
                assert!(
                    err["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{v}"
                );
                assert!(err["request_id"].as_str().is_some(), "{v}");
            } else if !body.is_empty() && uri != "/metrics" {
                assert!(
                    serde_json::from_slice::<Value>(&body).is_ok(),
                    "{method} {uri}: {body:?}"
                );
            }
        }
        // what the table serves is what the store holds
        let snap = match store.snapshot().await {
            Ok(s) => s,
            Err(e) => panic!("snapshot: {e}"),
        };
        let rebuilt = RoutingTable::new();
        for c in &snap.changes {
            rebuilt.apply(c);
        }
        let (mut want, mut got) = (rebuilt.deployments(), table.deployments());
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(table.token_count(), rebuilt.token_count());
    });
});
