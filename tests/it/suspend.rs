//! Deployment tokens suspended and resumed: a suspended token answers 403
//! `token_suspended` from the next request (the worker's cache of verified tokens
//! included), is listed with `suspended_at`, and works again once resumed; a revoked
//! one cannot be suspended or resumed. Judged by what the client receives and the
//! upstream answers.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn a_suspended_token_is_refused_until_resumed() {
    let g = TestGateway::start().await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, id) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    let h = [("authorization", auth.as_str())];
    // verified once: the worker has it cached
    for _ in 0..3 {
        assert_eq!(get(&g.url("/"), &h).await.json()["version"], "v1");
    }

    let (s, t) = g.post(&format!("/v1/tokens/{id}/suspend"), json!({})).await;
    assert_eq!(s, 200, "{t}");
    let since = t["suspended_at"].as_str().unwrap().to_owned();
    let r = get(&g.url("/"), &h).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (403, "token_suspended".into())
    );
    // suspending again keeps the first time; the list shows it
    let (s, t) = g.post(&format!("/v1/tokens/{id}/suspend"), json!({})).await;
    assert_eq!(
        (s.as_u16(), t["suspended_at"].as_str()),
        (200, Some(since.as_str()))
    );
    let (_, list) = g
        .get_admin("/v1/agents/bot/environments/staging/tokens")
        .await;
    assert_eq!(list["tokens"][0]["suspended_at"], since.as_str(), "{list}");
    let text = get(&format!("http://{}/metrics", g.admin), &[])
        .await
        .text();
    assert!(
        text.contains(r#"switchyard_auth_failures_total{reason="suspended"} 1"#),
        "{text}"
    );

    let (s, t) = g.post(&format!("/v1/tokens/{id}/resume"), json!({})).await;
    assert_eq!(
        (s.as_u16(), t["suspended_at"].clone()),
        (200, serde_json::Value::Null)
    );
    assert_eq!(get(&g.url("/"), &h).await.json()["version"], "v1");

    // revoked: neither suspended nor resumed; unknown: 404
    let (s, _) = g
        .admin(http::Method::DELETE, &format!("/v1/tokens/{id}"), None)
        .await;
    assert_eq!(s, 204);
    for op in ["suspend", "resume"] {
        let (s, b) = g.post(&format!("/v1/tokens/{id}/{op}"), json!({})).await;
        assert_eq!(
            (s.as_u16(), b["error"]["code"].as_str()),
            (409, Some("conflict")),
            "{b}"
        );
    }
    let (s, _) = g.post("/v1/tokens/tok_nope/suspend", json!({})).await;
    assert_eq!(s, 404);
    let r = get(&g.url("/"), &h).await;
    assert_eq!(r.error_code(), "token_revoked");
}
