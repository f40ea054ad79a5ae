//! Dry runs: every move answers its plan with `"dry_run": true` and changes nothing —
//! revision, history, snapshot and routing stay as they were; a refusal the real move
//! would give is `allowed: false` with that refusal; an unresolvable request is its
//! error. Routing is judged by which upstream answers.

use crate::support::*;
use serde_json::{json, Value};

async fn state(g: &TestGateway, auth: &str) -> (Value, Value, String, u64) {
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    let (_, h) = g
        .get_admin("/v1/agents/bot/environments/staging/history")
        .await;
    let served = get(&g.url("/"), &[("authorization", auth)]).await.json()["version"]
        .as_str()
        .unwrap_or("-")
        .to_owned();
    let (_, ready) = g.get_admin("/readyz").await;
    (
        snap["environments"].clone(),
        h,
        served,
        ready["revision"].as_u64().unwrap(),
    )
}

async fn plan(g: &TestGateway, env: &str, op: &str, mut body: Value) -> Value {
    body["dry_run"] = json!(true);
    let (s, b) = g
        .post(&format!("/v1/agents/bot/environments/{env}/{op}"), body)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["dry_run"], true);
    b["plan"].clone()
}

#[tokio::test]
async fn every_move_has_a_plan_and_a_plan_changes_nothing() {
    let g = TestGateway::start().await;
    g.post("/v1/agents", json!({"name": "bot"})).await;
    let (one, two) = (echo_upstream("v1").await, echo_upstream("v2").await);
    let dead = dead_address().await;
    for up in [
        format!("http://{one}"),
        format!("http://{two}"),
        format!("http://{dead}"),
    ] {
        let (s, b) = g
            .post("/v1/agents/bot/versions", json!({"upstreams": [up]}))
            .await;
        assert_eq!(s, 201, "{b}");
    }
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    let before = state(&g, &auth).await;
    assert_eq!(before.2, "v1");
    let rev = before.0["staging"]["revision"].as_u64().unwrap();

    // allowed: a deploy whose candidate answers
    let p = plan(&g, "staging", "deploy", json!({"version": "v2"})).await;
    assert_eq!(
        (
            p["action"].as_str(),
            p["environment"].as_str(),
            p["from"].as_str(),
            p["to"].as_str()
        ),
        (Some("deploy"), Some("staging"), Some("v1"), Some("v2")),
        "{p}"
    );
    assert_eq!(p["revision"], rev);
    assert_eq!(p["allowed"], true, "{p}");
    assert_eq!(p["refusal"], Value::Null);
    assert_eq!(p["checks"]["confirmation_required"], false);
    assert_eq!(p["checks"]["candidate_health"]["passed"], 1, "{p}");
    assert_eq!(p["checks"]["candidate_health"]["needed"], 1);
    assert_eq!(p["checks"]["missing_secrets"], json!([]));

    // refused by the gate: the refusal the real move would give, still 200
    let p = plan(&g, "staging", "deploy", json!({"version": "v3"})).await;
    assert_eq!(p["allowed"], false, "{p}");
    assert_eq!(p["refusal"]["status"], 409);
    assert_eq!(p["refusal"]["code"], "candidate_unhealthy");
    assert_eq!(p["checks"]["candidate_health"]["passed"], 0);
    let p = plan(
        &g,
        "staging",
        "deploy",
        json!({"version": "v3", "force": true}),
    )
    .await;
    assert_eq!(p["allowed"], true, "{p}");
    assert_eq!(p["checks"]["candidate_health"]["skipped"], "force");

    // into a protected environment without confirmation
    let p = plan(&g, "staging", "promote", json!({})).await;
    assert_eq!(
        (
            p["environment"].as_str(),
            p["from"].clone(),
            p["to"].as_str()
        ),
        (Some("production"), Value::Null, Some("v1")),
        "{p}"
    );
    assert_eq!(p["allowed"], false);
    assert_eq!(p["refusal"]["status"], 428);
    assert_eq!(p["refusal"]["code"], "confirmation_required");
    assert_eq!(p["checks"]["confirmation_required"], true);
    let p = plan(&g, "staging", "promote", json!({"confirm": true})).await;
    assert_eq!(p["allowed"], true, "{p}");

    // a stale expected revision, an already-live version, nothing to roll back
    let p = plan(
        &g,
        "staging",
        "deploy",
        json!({"version": "v2", "expected_revision": rev + 7}),
    )
    .await;
    assert_eq!(p["refusal"]["code"], "revision_conflict", "{p}");
    let p = plan(&g, "staging", "deploy", json!({"version": "v1"})).await;
    assert_eq!(p["refusal"]["code"], "conflict", "{p}");
    let p = plan(&g, "staging", "rollback", json!({})).await;
    assert_eq!(p["allowed"], false, "{p}");
    let p = plan(&g, "staging", "undeploy", json!({})).await;
    assert_eq!(
        (p["from"].as_str(), p["to"].clone(), p["allowed"].clone()),
        (Some("v1"), Value::Null, json!(true)),
        "{p}"
    );

    // what cannot be resolved is an error, not a plan
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v9", "dry_run": true}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{b}"
    );

    // nothing changed: pointers, history, revision, routing
    assert_eq!(state(&g, &auth).await, before);

    // the real move after its plan, then a rollback's plan
    g.deploy("bot", "staging", "v2").await;
    let p = plan(&g, "staging", "rollback", json!({})).await;
    assert_eq!(
        (p["from"].as_str(), p["to"].as_str(), p["allowed"].clone()),
        (Some("v2"), Some("v1"), json!(true)),
        "{p}"
    );
    assert_eq!(
        p["checks"]["candidate_health"],
        Value::Null,
        "a rollback is never probed"
    );
    assert_eq!(state(&g, &auth).await.2, "v2");
}
