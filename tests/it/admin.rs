//! The admin API over real HTTP: every endpoint, its rules and its errors.

use crate::support::*;
use bytes::Bytes;
use http::Method;
use serde_json::json;

async fn revision(g: &TestGateway) -> u64 {
    let r = get(&format!("http://{}/readyz", g.admin), &[]).await;
    r.json()["revision"].as_u64().unwrap()
}

#[tokio::test]
async fn admin_token_is_required_and_checked() {
    let g = TestGateway::start().await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("test-admin-token"),
        Some("Basic x"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = get(&format!("http://{}/v1/agents", g.admin), &headers).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.error_code(), "unauthenticated");
    }
    // health, readiness and metrics need no token
    for p in ["/healthz", "/readyz"] {
        assert_eq!(
            get(&format!("http://{}{p}", g.admin), &[]).await.status,
            200
        );
    }
    assert_eq!(g.get_admin("/v1/agents").await.0, 200);
}

#[tokio::test]
async fn environments_in_pipeline_order() {
    let g = TestGateway::start().await;
    let (s, b) = g.get_admin("/v1/environments").await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({"environments": [
            {"name": "sandbox", "protected": false, "next": "staging"},
            {"name": "staging", "protected": false, "next": "production"},
            {"name": "production", "protected": true, "next": null},
        ]})
    );
}

#[tokio::test]
async fn agents_and_versions() {
    let g = TestGateway::start().await;
    let (s, b) = g
        .post(
            "/v1/agents",
            json!({"name": "support-bot", "description": "helps"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["name"], "support-bot");
    let (s, b) = g.post("/v1/agents", json!({"name": "support-bot"})).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let (s, b) = g.post("/v1/agents", json!({"name": "Support_Bot"})).await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"].as_str().unwrap().starts_with("name:"),
        "{b}"
    );

    let (s, v1) = g
        .post(
            "/v1/agents/support-bot/versions",
            json!({"upstreams": ["http://127.0.0.1:9001"], "config": {"model": "m1", "tools": ["a"]}, "description": "first"}),
        )
        .await;
    assert_eq!(s, 201, "{v1}");
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["state"], "running");
    assert!(v1["digest"].as_str().unwrap().starts_with("sha256:"));
    let (_, v2) = g
        .post(
            "/v1/agents/support-bot/versions",
            json!({"upstreams": ["http://127.0.0.1:9002"], "config": {"model": "m2", "tools": ["a", "b"]}}),
        )
        .await;
    assert_eq!(v2["version"], "v2");

    let (s, b) = g
        .post(
            "/v1/agents/support-bot/versions",
            json!({"upstreams": ["ftp://x"]}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (422, Some("invalid_version"))
    );
    let (s, b) = g
        .post("/v1/agents/support-bot/versions", json!({"upstreams": "x"}))
        .await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("upstreams:"),
        "{b}"
    );
    let (s, _) = g
        .post(
            "/v1/agents/nobody/versions",
            json!({"upstreams": ["http://h:1"]}),
        )
        .await;
    assert_eq!(s, 404);
    // a refused version does not use up a number
    let (_, v3) = g
        .post(
            "/v1/agents/support-bot/versions",
            json!({"upstreams": ["http://127.0.0.1:9003"]}),
        )
        .await;
    assert_eq!(v3["version"], "v3");

    let (s, list) = g.get_admin("/v1/agents/support-bot/versions").await;
    assert_eq!(s, 200);
    let labels: Vec<_> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].clone())
        .collect();
    assert_eq!(labels, [json!("v1"), json!("v2"), json!("v3")]);
    let (s, one) = g.get_admin("/v1/agents/support-bot/versions/v2").await;
    assert_eq!(s, 200);
    assert_eq!(one, v2);
    assert_eq!(
        g.get_admin("/v1/agents/support-bot/versions/v9").await.0,
        404
    );

    let (s, d) = g
        .get_admin("/v1/agents/support-bot/versions/v1/diff/v2")
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        (d["from"].as_str(), d["to"].as_str()),
        (Some("v1"), Some("v2"))
    );
    let changes = d["changes"].as_array().unwrap();
    let find = |p: &str| changes.iter().find(|c| c["path"] == p).cloned();
    assert_eq!(
        find("/config/model").unwrap(),
        json!({"path": "/config/model", "from": "m1", "to": "m2"})
    );
    assert_eq!(find("/config/tools/1").unwrap()["to"], "b");
    assert_eq!(find("/upstreams/0").unwrap()["to"], "http://127.0.0.1:9002");
    assert_eq!(find("/description").unwrap()["from"], "first");

    let (s, agents) = g.get_admin("/v1/agents").await;
    assert_eq!(s, 200);
    assert_eq!(agents["agents"][0]["name"], "support-bot");
}

#[tokio::test]
async fn deploy_promote_confirm_and_snapshot() {
    let g = TestGateway::start().await;
    g.post("/v1/agents", json!({"name": "bot"})).await;
    for _ in 0..2 {
        let up = accepting().await;
        g.post(
            "/v1/agents/bot/versions",
            json!({"upstreams": [format!("http://{up}")]}),
        )
        .await;
    }
    let (s, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(s, 200);
    assert_eq!(
        snap["environments"],
        json!({"sandbox": null, "staging": null, "production": null})
    );

    let (s, m) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v1", "reason": "first"}),
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["action"], "deploy");
    assert_eq!(m["version"], "v1");
    assert_eq!(m["previous"], json!(null));
    assert_eq!(m["reason"], "first");
    assert_eq!(m["environment"], "staging");
    for k in ["actor", "revision", "at", "agent"] {
        assert!(!m[k].is_null(), "move has {k}");
    }

    // production is protected: nothing moves without confirm
    let before = revision(&g).await;
    let (s, b) = g
        .post("/v1/agents/bot/environments/staging/promote", json!({}))
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (428, Some("confirmation_required"))
    );
    assert_eq!(revision(&g).await, before, "nothing written");
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/production/deploy",
            json!({"version": "v2"}),
        )
        .await;
    assert_eq!(s, 428, "{b}");

    let (s, m) = g
        .post(
            "/v1/agents/bot/environments/staging/promote",
            json!({"confirm": true}),
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(
        (m["environment"].as_str(), m["version"].as_str()),
        (Some("production"), Some("v1"))
    );
    assert_eq!(m["action"], "promote");

    // promote to a named stage; promoting from an empty one is a conflict
    let (s, m) = g
        .post(
            "/v1/agents/bot/environments/staging/promote",
            json!({"to": "sandbox"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), m["environment"].as_str()),
        (200, Some("sandbox"))
    );
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/production/promote",
            json!({"confirm": true}),
        )
        .await;
    assert_eq!(s, 409, "last stage: {b}");
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/qa/deploy",
            json!({"version": "v1"}),
        )
        .await;
    assert_eq!(s, 404, "{b}");

    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(snap["environments"]["production"]["version"], "v1");
    assert_eq!(snap["environments"]["staging"]["version"], "v1");
    assert!(snap["environments"]["production"]["since"].is_string());
    assert!(
        snap["environments"]["production"]["revision"]
            .as_u64()
            .unwrap()
            > 0
    );

    // deploying what is live already is a conflict, not a silent no-op
    let (s, _) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v1"}),
        )
        .await;
    assert_eq!(s, 409);

    // undeploy empties the environment
    let (s, m) = g
        .post("/v1/agents/bot/environments/sandbox/undeploy", json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(m["version"], json!(null));
    assert_eq!(m["previous"], "v1");
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(snap["environments"]["sandbox"], json!(null));
    let (s, b) = g
        .post("/v1/agents/bot/environments/sandbox/undeploy", json!({}))
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("not_deployed"))
    );
}

#[tokio::test]
async fn rollback_walks_back_and_history_is_newest_first() {
    let g = TestGateway::start().await;
    g.post("/v1/agents", json!({"name": "bot"})).await;
    for _ in 1..=4 {
        let up = accepting().await;
        g.post(
            "/v1/agents/bot/versions",
            json!({"upstreams": [format!("http://{up}")]}),
        )
        .await;
    }
    for v in ["v1", "v2", "v3"] {
        g.post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": v}),
        )
        .await;
    }
    let path = "/v1/agents/bot/environments/staging/rollback";
    let (s, m) = g.post(path, json!({"reason": "bad answers"})).await;
    assert_eq!(
        (s.as_u16(), m["version"].as_str(), m["previous"].as_str()),
        (200, Some("v2"), Some("v3"))
    );
    let (_, m) = g.post(path, json!({})).await;
    assert_eq!(m["version"], "v1");
    let (s, b) = g.post(path, json!({})).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{b}"
    );

    // to_version: only versions that served here before
    let (s, m) = g.post(path, json!({"to_version": "v3"})).await;
    assert_eq!((s.as_u16(), m["version"].as_str()), (200, Some("v3")));
    let (s, b) = g.post(path, json!({"to_version": "v4"})).await;
    assert_eq!(s, 409, "v4 never served staging: {b}");
    let (s, _) = g.post(path, json!({"to_version": "v9"})).await;
    assert_eq!(s, 404);

    let (s, h) = g
        .get_admin("/v1/agents/bot/environments/staging/history")
        .await;
    assert_eq!(s, 200);
    let entries = h["entries"].as_array().unwrap();
    let seq: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["version"].as_str().unwrap_or("-").into(),
            )
        })
        .collect();
    let want = [
        ("rollback", "v3"),
        ("rollback", "v1"),
        ("rollback", "v2"),
        ("deploy", "v3"),
        ("deploy", "v2"),
        ("deploy", "v1"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, v)| (a.to_string(), v.to_string()))
        .collect();
    assert_eq!(seq, want);
    let revs: Vec<u64> = entries
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert!(
        revs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {revs:?}"
    );
    assert_eq!(entries[3]["reason"], json!(null));
    assert_eq!(entries[2]["reason"], "bad answers");

    let (_, page) = g
        .get_admin(&format!(
            "/v1/agents/bot/environments/staging/history?limit=2&before={}",
            revs[1]
        ))
        .await;
    let page_revs: Vec<u64> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(page_revs, revs[2..4]);
}

#[tokio::test]
async fn expected_revision_conflicts_change_nothing() {
    let g = TestGateway::start().await;
    g.post("/v1/agents", json!({"name": "bot"})).await;
    for _ in 0..2 {
        let up = accepting().await;
        g.post(
            "/v1/agents/bot/versions",
            json!({"upstreams": [format!("http://{up}")]}),
        )
        .await;
    }
    let deploy = "/v1/agents/bot/environments/staging/deploy";
    let (s, _) = g
        .post(deploy, json!({"version": "v1", "expected_revision": 0}))
        .await;
    assert_eq!(s, 200, "an environment that never moved is at revision 0");
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    let rev = snap["environments"]["staging"]["revision"]
        .as_u64()
        .unwrap();
    let before = revision(&g).await;
    let (s, b) = g
        .post(
            deploy,
            json!({"version": "v2", "expected_revision": rev - 1}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("revision_conflict"))
    );
    assert_eq!(revision(&g).await, before);
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(snap["environments"]["staging"]["version"], "v1");
    let (s, _) = g
        .post(deploy, json!({"version": "v2", "expected_revision": rev}))
        .await;
    assert_eq!(s, 200);

    // two operators racing with the same expected revision: exactly one wins
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    let rev = snap["environments"]["staging"]["revision"]
        .as_u64()
        .unwrap();
    let body = json!({"version": "v1", "expected_revision": rev});
    let (a, b) = tokio::join!(
        g.post(deploy, body.clone()),
        g.post(
            "/v1/agents/bot/environments/staging/rollback",
            json!({"expected_revision": rev})
        )
    );
    let mut statuses = [a.0.as_u16(), b.0.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
}

#[tokio::test]
async fn stopped_versions_cannot_move_and_other_agents_versions_are_refused() {
    let g = TestGateway::start().await;
    let up = format!("http://{}", accepting().await);
    for a in ["bot", "other"] {
        g.post("/v1/agents", json!({"name": a})).await;
        g.post(
            &format!("/v1/agents/{a}/versions"),
            json!({"upstreams": [up]}),
        )
        .await;
    }
    g.post("/v1/agents/bot/versions", json!({"upstreams": [up]}))
        .await;
    let (s, v) = g.post("/v1/agents/bot/versions/v2/stop", json!({})).await;
    assert_eq!((s.as_u16(), v["state"].as_str()), (200, Some("stopped")));
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v2"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("version_stopped"))
    );
    assert!(
        b["error"]["message"].as_str().unwrap().contains("v2"),
        "{b}"
    );
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "other/v1"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (422, Some("invalid_version"))
    );
    assert!(
        b["error"]["message"].as_str().unwrap().contains("other"),
        "{b}"
    );
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v7"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // a stopped version cannot be promoted either
    g.post("/v1/agents/bot/versions/v2/start", json!({})).await;
    g.post(
        "/v1/agents/bot/environments/staging/deploy",
        json!({"version": "v2"}),
    )
    .await;
    g.post("/v1/agents/bot/versions/v2/stop", json!({})).await;
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/promote",
            json!({"confirm": true}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("version_stopped"))
    );
    let (s, v) = g.post("/v1/agents/bot/versions/v2/start", json!({})).await;
    assert_eq!((s.as_u16(), v["state"].as_str()), (200, Some("running")));
}

#[tokio::test]
async fn tokens_are_shown_once_listed_without_secrets_and_revocable() {
    let g = TestGateway::start().await;
    g.post("/v1/agents", json!({"name": "bot"})).await;
    let (s, t) = g
        .post(
            "/v1/agents/bot/environments/staging/tokens",
            json!({"name": "ci", "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let secret = t["token"].as_str().unwrap();
    assert!(
        secret.starts_with("swy_") && secret.len() >= 4 + 64,
        "{secret}"
    );
    assert_eq!(t["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(
        (
            t["agent"].as_str(),
            t["environment"].as_str(),
            t["name"].as_str()
        ),
        (Some("bot"), Some("staging"), Some("ci"))
    );

    let (s, list) = g
        .get_admin("/v1/agents/bot/environments/staging/tokens")
        .await;
    assert_eq!(s, 200);
    let text = list.to_string();
    assert!(!text.contains(secret), "list must not carry the secret");
    assert!(!text.contains("\"token\""));
    assert_eq!(list["tokens"][0]["id"], t["id"]);
    assert_eq!(list["tokens"][0]["revoked_at"], json!(null));

    // the database holds only the hash
    let db = std::fs::read(&g.store_path).unwrap_or_default();
    let wal = std::fs::read(g.store_path.with_extension("db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }

    let id = t["id"].as_str().unwrap();
    let (s, _) = g
        .admin(Method::DELETE, &format!("/v1/tokens/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (_, list) = g
        .get_admin("/v1/agents/bot/environments/staging/tokens")
        .await;
    assert!(list["tokens"][0]["revoked_at"].is_string());
    assert_eq!(
        g.admin(Method::DELETE, "/v1/tokens/tok_nope", None).await.0,
        404
    );

    for bad in [
        json!({"expires_at": "tomorrow"}),
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        json!({"name": 5}),
    ] {
        let (s, b) = g
            .post("/v1/agents/bot/environments/staging/tokens", bad.clone())
            .await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    assert_eq!(
        g.post("/v1/agents/bot/environments/qa/tokens", json!({}))
            .await
            .0,
        404
    );
    assert_eq!(
        g.post("/v1/agents/nobody/environments/staging/tokens", json!({}))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let g = TestGateway::start().await;
    g.post("/v1/agents", json!({"name": "bot"})).await;
    g.post(
        "/v1/agents/bot/versions",
        json!({"upstreams": ["http://127.0.0.1:1"]}),
    )
    .await;
    let before = revision(&g).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let url = |p: &str| format!("http://{}{}", g.admin, p);
    let cases: Vec<(&str, Bytes, u16, &str)> = vec![
        (
            "/v1/agents",
            Bytes::from_static(b"{not json"),
            400,
            "invalid JSON",
        ),
        (
            "/v1/agents",
            Bytes::from_static(b"[1,2]"),
            400,
            "invalid JSON",
        ),
        (
            "/v1/agents",
            Bytes::from_static(br#"{"name": 7}"#),
            400,
            "name:",
        ),
        (
            "/v1/agents",
            Bytes::from_static(br#"{"name": "ok", "colour": "red"}"#),
            400,
            "colour",
        ),
        (
            "/v1/agents",
            Bytes::from_static(br#"{"name": "-bad"}"#),
            400,
            "name:",
        ),
        (
            "/v1/agents/bot/environments/staging/deploy",
            Bytes::from_static(br#"{"version": 1}"#),
            400,
            "version:",
        ),
        (
            "/v1/agents/bot/environments/staging/deploy",
            Bytes::from_static(br#"{"version": "latest"}"#),
            400,
            "version:",
        ),
        (
            "/v1/agents/bot/environments/staging/deploy",
            Bytes::from_static(br#"{"version": "v1", "confirm": "yes"}"#),
            400,
            "confirm:",
        ),
        (
            "/v1/agents/bot/environments/staging/deploy",
            Bytes::from_static(br#"{"version": "v1", "expected_revision": -1}"#),
            400,
            "expected_revision:",
        ),
        (
            "/v1/agents/bot/environments/staging/rollback",
            Bytes::from_static(br#"{"to": "prod"}"#),
            400,
            "to:",
        ),
        (
            "/v1/agents/bot/versions",
            Bytes::from_static(br#"{"upstreams": ["http://h:1"], "config": [1]}"#),
            400,
            "config",
        ),
        (
            "/v1/agents/bot/versions",
            Bytes::from(vec![b' '; 2 * 1024 * 1024]),
            413,
            "limited",
        ),
    ];
    for (path, body, status, needle) in cases {
        let r = send(Method::POST, &url(path), &[("authorization", &auth)], body).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            msg.contains(needle),
            "{path}: {msg:?} should mention {needle:?}"
        );
        r.error_code();
    }
    assert_eq!(revision(&g).await, before, "nothing was written");
    let (s, _) = g.get_admin("/v1/agents/bot/versions").await;
    assert_eq!(s, 200);

    let r = send(
        Method::PUT,
        &url("/v1/agents"),
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 405);
    let r = get(&url("/v1/nothing/here"), &[("authorization", &auth)]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (404, "not_found")
    );
}

#[tokio::test]
async fn a_restart_restores_everything() {
    let g = TestGateway::start().await;
    let up = echo_upstream("v2").await;
    g.agent_with_versions("bot", &[up, up]).await;
    g.deploy("bot", "staging", "v1").await;
    g.deploy("bot", "staging", "v2").await;
    let (token, _) = g.token("bot", "staging").await;
    let (_, snap_before) = g.get_admin("/v1/agents/bot").await;
    let (_, hist_before) = g
        .get_admin("/v1/agents/bot/environments/staging/history")
        .await;
    let dir = g.dir();
    g.stop().await;

    let g = TestGateway::builder().dir(dir).start().await;
    assert_eq!(g.get_admin("/v1/agents/bot").await.1, snap_before);
    assert_eq!(
        g.get_admin("/v1/agents/bot/environments/staging/history")
            .await
            .1,
        hist_before
    );
    // the routing table is loaded before client traffic is served
    let r = get(&g.url("/"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchyard-version"), Some("v2"));
    // and the undo stack survived: rollback still walks back
    let (s, m) = g
        .post("/v1/agents/bot/environments/staging/rollback", json!({}))
        .await;
    assert_eq!((s.as_u16(), m["version"].as_str()), (200, Some("v1")));
}
