//! A fleet: several gateways on one PostgreSQL. Moves and revocations made through one
//! node reach the others; a cut connection or a database restart only delays them; the
//! database is never on the request path.

use crate::support::*;
use http::Method;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn with_app(url: &str, app: &str) -> String {
    format!("{url}?application_name={app}")
}

async fn served_version(g: &TestGateway, auth: &str) -> (u16, Option<String>) {
    let r = get(&g.url("/"), &[("authorization", auth)]).await;
    (
        r.status.as_u16(),
        r.header("x-switchyard-version").map(str::to_owned),
    )
}

/// Two nodes on a fresh database, agent `bot` with v1 and v2, staging on v1, a token.
async fn two_nodes(test: &str) -> Option<(TestGateway, TestGateway, String, String, String)> {
    let url = postgres_db(test).await?;
    let a = TestGateway::builder()
        .store(&with_app(&url, "switchyard-a"))
        .start()
        .await;
    let b = TestGateway::builder()
        .store(&with_app(&url, "switchyard-b"))
        .start()
        .await;
    let v1 = echo_upstream("v1").await;
    let v2 = echo_upstream("v2").await;
    a.agent_with_versions("bot", &[v1, v2]).await;
    a.deploy("bot", "staging", "v1").await;
    let (token, id) = a.token("bot", "staging").await;
    Some((a, b, bearer(&token), id, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_and_revocations_reach_every_node() {
    let _pg = PG_LOCK.read().await;
    let Some((a, b, auth, id, _)) =
        two_nodes("fleet::moves_and_revocations_reach_every_node").await
    else {
        return;
    };
    eventually("B serves v1", || async {
        served_version(&b, &auth).await == (200, Some("v1".into()))
    })
    .await;
    a.deploy("bot", "staging", "v2").await;
    eventually("B serves v2", || async {
        served_version(&b, &auth).await == (200, Some("v2".into()))
    })
    .await;
    // a move made through B reaches A too
    let (s, body) = b
        .post("/v1/agents/bot/environments/staging/rollback", json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    eventually("A serves v1", || async {
        served_version(&a, &auth).await == (200, Some("v1".into()))
    })
    .await;
    // a suspension made through B reaches A, and so does the resume through A
    let (s, body) = b.post(&format!("/v1/tokens/{id}/suspend"), json!({})).await;
    assert_eq!(s, 200, "{body}");
    eventually("A refuses the suspended token", || async {
        let r = get(&a.url("/"), &[("authorization", auth.as_str())]).await;
        r.status == 403 && r.error_code() == "token_suspended"
    })
    .await;
    let (s, body) = a.post(&format!("/v1/tokens/{id}/resume"), json!({})).await;
    assert_eq!(s, 200, "{body}");
    eventually("B serves the resumed token", || async {
        served_version(&b, &auth).await == (200, Some("v1".into()))
    })
    .await;
    let (s, _) = a
        .admin(Method::DELETE, &format!("/v1/tokens/{id}"), None)
        .await;
    assert_eq!(s, 204);
    eventually("B refuses the revoked token", || async {
        served_version(&b, &auth).await.0 == 403
    })
    .await;
    // the two nodes agree on the applied revision
    let applied = |g: &TestGateway| {
        let url = format!("http://{}/metrics", g.admin);
        async move {
            let text = get(&url, &[]).await.text();
            text.lines()
                .find(|l| l.starts_with("switchyard_fleet_applied_revision "))
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        }
    };
    // both read each time: A follows its own writes through the feed too, and may
    // still be a notification behind B when first asked
    eventually("A and B have applied the same revision", || async {
        let (ra, rb) = (applied(&a).await, applied(&b).await);
        ra.is_some() && ra == rb
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_connection_was_cut_converges() {
    let _pg = PG_LOCK.read().await;
    let Some((a, b, auth, _, url)) =
        two_nodes("fleet::a_node_whose_connection_was_cut_converges").await
    else {
        return;
    };
    eventually("B serves v1", || async {
        served_version(&b, &auth).await.1.as_deref() == Some("v1")
    })
    .await;
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let killed = admin
        .query(
            // only this test's node B: other fleet tests run beside this one, with
            // nodes of the same name in databases of their own
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'switchyard-b' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert!(!killed.is_empty(), "B had connections to cut");
    // the move happens while B is disconnected: it misses the notification
    a.deploy("bot", "staging", "v2").await;
    eventually("B converges on v2", || async {
        served_version(&b, &auth).await.1.as_deref() == Some("v2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_nothing() {
    let test = "fleet::a_database_restart_under_load_loses_nothing";
    let _pg = PG_LOCK.write().await;
    if std::env::var("SWITCHYARD_TEST_PG_STOP").is_err()
        || std::env::var("SWITCHYARD_TEST_PG_START").is_err()
    {
        assert!(
            std::env::var("CI").is_err(),
            "{test}: SWITCHYARD_TEST_PG_STOP/START are required in CI"
        );
        skipped(test, "set SWITCHYARD_TEST_PG_STOP and SWITCHYARD_TEST_PG_START (shell commands; .ci/run does)");
        return;
    }
    let Some((a, b, auth, _, _)) = two_nodes(test).await else {
        return;
    };
    eventually("B serves v1", || async {
        served_version(&b, &auth).await.1.as_deref() == Some("v1")
    })
    .await;

    // load on both nodes for the whole test
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for g in [&a, &b] {
        let (stop, ok, failed, url, auth) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
            g.url("/"),
            auth.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let r = get(&url, &[("authorization", &auth)]).await;
                if r.status == 200 { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    assert_eq!(
        tokio::task::spawn_blocking(|| run_env_command("SWITCHYARD_TEST_PG_STOP"))
            .await
            .unwrap(),
        Some(true)
    );
    let during = ok.load(Ordering::Relaxed);
    // with the database down: writes are refused clearly, routing and readiness go on
    let (s, body) = a
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v2"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), body["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );
    for g in [&a, &b] {
        assert_eq!(
            get(&format!("http://{}/readyz", g.admin), &[]).await.status,
            200
        );
    }
    eventually("the metric says the store is down", || async {
        get(&format!("http://{}/metrics", a.admin), &[])
            .await
            .text()
            .contains("switchyard_store_up 0")
    })
    .await;
    eventually(
        "traffic keeps flowing while the database is down",
        || async { ok.load(Ordering::Relaxed) > during + 50 },
    )
    .await;

    assert_eq!(
        tokio::task::spawn_blocking(|| run_env_command("SWITCHYARD_TEST_PG_START"))
            .await
            .unwrap(),
        Some(true)
    );
    // once it is back: writes work again, and the other node converges
    eventually("A accepts writes again", || async {
        a.post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v2"}),
        )
        .await
        .0 == 200
    })
    .await;
    eventually("B converges on v2", || async {
        served_version(&b, &auth).await.1.as_deref() == Some("v2")
    })
    .await;
    eventually("the metric says the store is up", || async {
        get(&format!("http://{}/metrics", a.admin), &[])
            .await
            .text()
            .contains("switchyard_store_up 1")
    })
    .await;
    stop.store(true, Ordering::Release);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the restart"
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
    // nothing acknowledged before the restart was lost
    let (_, h) = b
        .get_admin("/v1/agents/bot/environments/staging/history")
        .await;
    let versions: Vec<_> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].clone())
        .collect();
    assert_eq!(versions, [json!("v2"), json!("v1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_share_one_schema() {
    let _pg = PG_LOCK.read().await;
    let Some(url) = postgres_db("fleet::nodes_starting_together_share_one_schema").await else {
        return;
    };
    let nodes =
        futures_util::future::join_all((0..3).map(|_| TestGateway::builder().store(&url).start()))
            .await;
    let (s, _) = nodes[0].post("/v1/agents", json!({"name": "bot"})).await;
    assert_eq!(s, 201);
    for n in &nodes[1..] {
        assert_eq!(n.get_admin("/v1/agents/bot").await.0, 200);
    }
}

/// A node stopped for longer than the change feed's retention (here 1 s) finds the
/// events it missed pruned: it reloads the whole state and routes by it. The apply
/// lag of what it applies through the feed is observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_feed_retention_reloads_the_whole_state() {
    let _pg = PG_LOCK.read().await;
    let Some(url) = postgres_db("fleet::a_node_behind_the_feed_retention_reloads").await else {
        return;
    };
    let a = TestGateway::builder()
        .store(&with_app(&url, "switchyard-a"))
        .config(|c| c.fleet.feed_retention_s = 1)
        .start()
        .await;
    let (v1, v2) = (echo_upstream("v1").await, echo_upstream("v2").await);
    a.agent_with_versions("bot", &[v1, v2]).await;
    a.deploy("bot", "staging", "v1").await;
    let (token, _) = a.token("bot", "staging").await;
    let auth = bearer(&token);
    let dir = tempfile::tempdir().unwrap();
    let b = Binary::start(
        dir.path(),
        &format!(
            "store = \"{}\"\n[fleet]\nfeed_retention_s = 1\n",
            with_app(&url, "switchyard-b")
        ),
    )
    .await;
    let served_by_b = || async {
        let r = get(
            &format!("http://{}/", b.client),
            &[("authorization", &auth)],
        )
        .await;
        (
            r.status.as_u16(),
            r.json()["version"].as_str().map(str::to_owned),
        )
    };
    assert_eq!(served_by_b().await, (200, Some("v1".into())));
    a.deploy("bot", "staging", "v2").await;
    eventually("B follows the feed to v2", || async {
        served_by_b().await == (200, Some("v2".into()))
    })
    .await;
    let lag = get(&format!("http://{}/metrics", b.admin), &[])
        .await
        .text();
    assert!(
        lag.lines().any(
            |l| l.starts_with("switchyard_store_apply_lag_seconds_count") && !l.ends_with(" 0")
        ),
        "{lag}"
    );

    // B stops; A moves on; the feed is pruned past what B has seen
    b.signal("STOP");
    a.deploy("bot", "staging", "v1").await;
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let head: i64 = db
        .query_one("SELECT max(revision) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    eventually("A prunes the feed past B's cursor", || async {
        let floor: i64 = db
            .query_one("SELECT value FROM meta WHERE key = 'feed_floor'", &[])
            .await
            .unwrap()
            .get(0);
        floor >= head
    })
    .await;
    b.signal("CONT");
    eventually("B reloads and serves v1", || async {
        served_by_b().await == (200, Some("v1".into()))
    })
    .await;
    assert!(
        b.log_text().contains("fell behind the change feed"),
        "{}",
        b.log_text()
    );
}
