//! Named admin tokens with roles: each role against each class of call, revocation
//! on the next call, the actor in history, and (in a fleet) a token made on one node
//! working on another.

use crate::support::*;
use http::Method;
use serde_json::{json, Value};

/// Mints an admin token named `name` with `role` through the bootstrap token.
async fn mint(g: &TestGateway, name: &str, role: &str) -> (String, String) {
    let (s, b) = g
        .post("/v1/admin-tokens", json!({"name": name, "role": role}))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["role"], role);
    assert_eq!(b["created_by"], "bootstrap");
    let token = b["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("swa_"));
    (b["id"].as_str().unwrap().to_owned(), token)
}

#[tokio::test]
async fn each_role_against_each_class_of_call() {
    let g = TestGateway::start().await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    let (_, viewer) = mint(&g, "watcher", "viewer").await;
    let (_, deployer) = mint(&g, "ci-deployer", "deployer").await;
    let (_, admin) = mint(&g, "ops", "admin").await;

    // (method, path, body, the least role that may) — one call of every class
    let calls: Vec<(Method, &str, Option<Value>, &str)> = vec![
        (Method::GET, "/v1/agents", None, "viewer"),
        (Method::GET, "/v1/agents/bot/versions", None, "viewer"),
        (
            Method::GET,
            "/v1/agents/bot/environments/staging/history",
            None,
            "viewer",
        ),
        (Method::GET, "/v1/admin-tokens", None, "viewer"),
        (
            Method::POST,
            "/v1/agents",
            Some(json!({"name": "new-@@"})),
            "deployer",
        ),
        (
            Method::POST,
            "/v1/agents/bot/versions",
            Some(json!({"upstreams": [format!("http://{up}")]})),
            "deployer",
        ),
        (
            Method::POST,
            "/v1/agents/bot/environments/sandbox/deploy",
            Some(json!({"version": "v1"})),
            "deployer",
        ),
        (
            Method::POST,
            "/v1/agents/bot/versions/v1/stop",
            None,
            "deployer",
        ),
        (
            Method::POST,
            "/v1/agents/bot/versions/v1/start",
            None,
            "deployer",
        ),
        (
            Method::POST,
            "/v1/agents/bot/environments/sandbox/tokens",
            Some(json!({})),
            "deployer",
        ),
        (
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "made-by-@@", "role": "viewer"})),
            "admin",
        ),
    ];
    let rank = |r: &str| ["viewer", "deployer", "admin"].iter().position(|x| *x == r);
    for (who, token) in [
        ("viewer", &viewer),
        ("deployer", &deployer),
        ("admin", &admin),
    ] {
        let (s, me) = g
            .admin_as(token, Method::GET, "/v1/whoami", None, &[])
            .await;
        assert_eq!(s, 200);
        assert_eq!(me["role"], who);
        for (method, path, body, least) in &calls {
            // names made unique per caller
            let body = body
                .as_ref()
                .map(|b| serde_json::from_str(&b.to_string().replace("@@", who)).unwrap());
            let (s, b) = g.admin_as(token, method.clone(), path, body, &[]).await;
            if rank(who) >= rank(least) {
                assert!(s.is_success() || s == 409, "{who} {method} {path}: {s} {b}");
            } else {
                assert_eq!(s, 403, "{who} {method} {path}: {b}");
                assert_eq!(b["error"]["code"], "forbidden", "{b}");
            }
        }
    }
    // the bootstrap token is the admin named bootstrap
    let (_, me) = g.get_admin("/v1/whoami").await;
    assert_eq!(me, json!({"name": "bootstrap", "role": "admin"}));
    // lists never carry secrets or hashes
    let (_, list) = g.get_admin("/v1/admin-tokens").await;
    let text = list.to_string();
    assert!(!text.contains(&viewer) && !text.contains("hash"), "{text}");
    assert!(list["admin_tokens"].as_array().unwrap().len() >= 4);
}

#[tokio::test]
async fn history_names_the_token_and_keeps_on_behalf_of_apart() {
    let g = TestGateway::start().await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    let (_, deployer) = mint(&g, "ci-deployer", "deployer").await;
    let (s, m) = g
        .admin_as(
            &deployer,
            Method::POST,
            "/v1/agents/bot/environments/staging/deploy",
            Some(json!({"version": "v1"})),
            &[
                ("x-switchyard-on-behalf-of", "pipeline #42"),
                // the old actor header is not believed
                ("x-switchyard-actor", "somebody-else"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["actor"], "ci-deployer");
    assert_eq!(m["on_behalf_of"], "pipeline #42");
    let (_, h) = g
        .get_admin("/v1/agents/bot/environments/staging/history")
        .await;
    assert_eq!(h["entries"][0]["actor"], "ci-deployer", "{h}");
    assert_eq!(h["entries"][0]["on_behalf_of"], "pipeline #42", "{h}");
    assert!(!h.to_string().contains("somebody-else"));
    // a bad on-behalf-of value is refused
    let (s, b) = g
        .admin_as(
            &deployer,
            Method::POST,
            "/v1/agents/bot/environments/staging/undeploy",
            Some(json!({})),
            &[("x-switchyard-on-behalf-of", "")],
        )
        .await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_call_and_names_are_checked() {
    let g = TestGateway::start().await;
    let (id, token) = mint(&g, "temp", "admin").await;
    assert_eq!(
        g.admin_as(&token, Method::GET, "/v1/agents", None, &[])
            .await
            .0,
        200
    );
    // the scheme word is case-insensitive, the token exact
    assert_eq!(
        send(
            Method::GET,
            &format!("http://{}/v1/whoami", g.admin),
            &[("authorization", &format!("bEaReR {token}"))],
            Default::default()
        )
        .await
        .status,
        200
    );
    let upper = token.to_uppercase();
    assert_eq!(
        g.admin_as(&upper, Method::GET, "/v1/agents", None, &[])
            .await
            .0,
        401
    );
    // an active name cannot be taken twice; bootstrap is reserved; roles are checked
    let (s, b) = g
        .post(
            "/v1/admin-tokens",
            json!({"name": "temp", "role": "viewer"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    for bad in [
        json!({"name": "bootstrap", "role": "admin"}),
        json!({"name": "x", "role": "root"}),
        json!({"name": "a b", "role": "viewer"}),
        json!({"name": "x"}),
    ] {
        let (s, b) = g.post("/v1/admin-tokens", bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    let (s, _) = g
        .admin(Method::DELETE, &format!("/v1/admin-tokens/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, b) = g
        .admin_as(&token, Method::GET, "/v1/agents", None, &[])
        .await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["error"]["code"], "unauthenticated");
    let (s, _) = g
        .admin(Method::DELETE, "/v1/admin-tokens/adm_missing", None)
        .await;
    assert_eq!(s, 404);
    // the name is free again once revoked
    mint(&g, "temp", "viewer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_on_one_node_works_on_another() {
    let _pg = PG_LOCK.read().await;
    let Some(url) = postgres_db("identity::a_token_made_on_one_node_works_on_another").await else {
        return;
    };
    let a = TestGateway::builder().store(&url).start().await;
    let b = TestGateway::builder().store(&url).start().await;
    let (id, token) = mint(&a, "fleet-ops", "deployer").await;
    let (s, me) = b
        .admin_as(&token, Method::GET, "/v1/whoami", None, &[])
        .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["name"], "fleet-ops");
    let (s, _) = b
        .admin_as(
            &token,
            Method::POST,
            "/v1/agents",
            Some(json!({"name": "x"})),
            &[],
        )
        .await;
    assert_eq!(s, 201);
    // revoked through B: refused by A at its next call
    assert_eq!(
        b.admin(Method::DELETE, &format!("/v1/admin-tokens/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        a.admin_as(&token, Method::GET, "/v1/agents", None, &[])
            .await
            .0,
        401
    );
}
