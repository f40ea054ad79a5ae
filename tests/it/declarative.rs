//! `switchyard export` and `switchyard apply -f` with the real binary against real
//! gateways: a document applied to an empty store rebuilds the same state, a second
//! apply changes nothing, drift is shown by the plan and corrected, protected moves
//! need --yes, and secrets, tokens and hashes are never exported.

use crate::support::*;
use http::Method;
use serde_json::{json, Value};
use std::io::Write;

async fn run(admin: std::net::SocketAddr, args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::process::cli(admin, ADMIN_TOKEN, &a)
    })
    .await
    .unwrap()
}

async fn ok(g: &TestGateway, method: Method, path: &str, body: Value) -> Value {
    let (s, b) = g.admin(method, path, Some(body)).await;
    assert!(s.is_success(), "{path}: {s} {b}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_apply_rebuilds_the_state_and_a_second_apply_changes_nothing() {
    let (u1, u2) = (echo_upstream("v1").await, echo_upstream("v2").await);
    let a = TestGateway::start().await;
    ok(
        &a,
        Method::POST,
        "/v1/agents",
        json!({"name": "bot", "description": "support"}),
    )
    .await;
    ok(&a, Method::POST, "/v1/agents", json!({"name": "quiet"})).await;
    let versions = [
        json!({"upstreams": [format!("http://{u1}")], "config": {"model": "small"}}),
        json!({"upstreams": [format!("http://{u2}")], "config": {"model": "large"},
               "inject": [{"header": "authorization", "secret": "MODEL_KEY", "format": "Bearer {}"}],
               "health": {"path": "/healthz"}}),
        json!({"upstreams": [format!("http://{u1}")], "description": "retired"}),
        // the same content as v1: a second version with one digest
        json!({"upstreams": [format!("http://{u1}")], "config": {"model": "small"}}),
    ];
    for v in &versions {
        ok(&a, Method::POST, "/v1/agents/bot/versions", v.clone()).await;
    }
    ok(
        &a,
        Method::POST,
        "/v1/agents/bot/versions/v3/stop",
        json!({}),
    )
    .await;
    ok(
        &a,
        Method::PUT,
        "/v1/agents/bot/secrets/MODEL_KEY",
        json!({"value": "sk-never-exported"}),
    )
    .await;
    let deploy = |env: &str, v: &str| {
        (
            format!("/v1/agents/bot/environments/{env}/deploy"),
            json!({"version": v, "confirm": true}),
        )
    };
    for (env, v) in [("sandbox", "v4"), ("staging", "v2"), ("production", "v1")] {
        let (p, b) = deploy(env, v);
        ok(&a, Method::POST, &p, b).await;
    }
    ok(
        &a,
        Method::POST,
        "/v1/agents/bot/environments/staging/canary",
        json!({"version": "v1", "weight": 12.5}),
    )
    .await;
    ok(
        &a,
        Method::PUT,
        "/v1/agents/bot/environments/production/policy",
        json!({"session_affinity": "sticky", "stream_drain_s": 30}),
    )
    .await;
    a.token("bot", "staging").await;

    let (code, doc_a, err) = run(a.admin, &["export"]).await;
    assert_eq!(code, 0, "{err}");
    for never in ["sk-never-exported", "swy_", "hash", "\"token"] {
        assert!(!doc_a.contains(never), "{never} in the export:\n{doc_a}");
    }
    let parsed: Value = serde_json::from_str(&doc_a).unwrap();
    assert_eq!(parsed["agents"][0]["versions"].as_array().unwrap().len(), 4);
    assert_eq!(
        parsed["agents"][0]["environments"]["staging"]["canary"]["weight"],
        12.5
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(doc_a.as_bytes())
        .unwrap();
    let f = file.to_str().unwrap();

    // an empty store: the plan, then (secrets are never exported) the refusal, then
    // with the secret set, the same state
    let b = TestGateway::start().await;
    let (code, plan, err) = run(b.admin, &["apply", "-f", f, "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        plan.contains("create agent bot") && plan.contains("deploy bot/production"),
        "{plan}"
    );
    let (_, empty) = b.get_admin("/v1/agents").await;
    assert_eq!(empty["agents"], json!([]), "a dry run changes nothing");
    let (code, _, err) = run(b.admin, &["apply", "-f", f]).await;
    assert_ne!(code, 0, "production is protected: --yes is needed");
    assert!(err.contains("--yes"), "{err}");
    let (code, out, err) = run(b.admin, &["apply", "-f", f, "--yes"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("missing_secret") || err.contains("MODEL_KEY"),
        "{err}"
    );
    ok(
        &b,
        Method::PUT,
        "/v1/agents/bot/secrets/MODEL_KEY",
        json!({"value": "sk-b"}),
    )
    .await;
    let (code, out, err) = run(b.admin, &["apply", "-f", f, "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, doc_b, err) = run(b.admin, &["export"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&doc_b).unwrap(),
        parsed,
        "the same state"
    );
    // traffic follows it: staging serves v2's upstream
    let (token, _) = b.token("bot", "production").await;
    let r = get(&b.url("/"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(r.json()["version"], "v1");

    // twice: nothing to do
    let (code, out, _) = run(b.admin, &["apply", "-f", f, "--yes"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "nothing to change");

    // drift: the plan names it, a dry run leaves it, an apply corrects it
    let (p, body) = deploy("production", "v2");
    ok(&b, Method::POST, &p, body).await;
    ok(
        &b,
        Method::POST,
        "/v1/agents/bot/environments/staging/canary/abort",
        json!({}),
    )
    .await;
    ok(
        &b,
        Method::POST,
        "/v1/agents/bot/versions/v3/start",
        json!({}),
    )
    .await;
    let (code, plan, _) = run(b.admin, &["apply", "-f", f, "--dry-run"]).await;
    assert_eq!(code, 0);
    for step in [
        "deploy bot/production: v2 → v1",
        "canary bot/staging: v1 at 12.5 %",
        "stop bot v3",
    ] {
        assert!(plan.contains(step), "{step}:\n{plan}");
    }
    let (_, snap) = b.get_admin("/v1/agents/bot").await;
    assert_eq!(snap["environments"]["production"]["version"], "v2");
    let (code, out, err) = run(b.admin, &["apply", "-f", f, "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (_, doc_c, _) = run(b.admin, &["export"]).await;
    assert_eq!(serde_json::from_str::<Value>(&doc_c).unwrap(), parsed);
    // the moves are in history like any other, with the apply as their reason
    let (_, h) = b
        .get_admin("/v1/agents/bot/environments/production/history")
        .await;
    assert_eq!(h["entries"][0]["reason"], "switchyard apply");
    a.stop().await;
    b.stop().await;
}
