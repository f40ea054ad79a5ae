//! The alert rules in `contrib/prometheus` are checked by Prometheus's own tool:
//! `promtool check rules` (they parse) and `promtool test rules` (each alert fires on
//! the series its unit test gives and stays silent on the others), and each metric they
//! name is one the gateway exposes.

use crate::support::*;
use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus"))
        .output();
    match out {
        Ok(o) => Some((
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "promtool is required in CI (.ci/run installs prometheus)"
            );
            skipped("alerts", "no promtool (Debian package prometheus)");
            None
        }
    }
}

#[test]
fn alert_rules_parse_and_their_unit_tests_pass() {
    let Some((ok, out)) = promtool(&["check", "rules", "alerts.yml"]) else {
        return;
    };
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
    let Some((ok, out)) = promtool(&["test", "rules", "alerts_test.yml"]) else {
        return;
    };
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_name_only_metrics_a_real_scrape_shows() {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/alerts.yml"),
    )
    .unwrap();
    let mut named = Vec::new();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("switchyard_") && !named.contains(&word) {
            named.push(word);
        }
    }
    assert_eq!(named.len(), 5, "{named:?}");
    // a gateway that has served, moved and rolled back by itself shows every series
    let g = TestGateway::start().await;
    let good = echo_upstream("v1").await;
    let bad = crate::canary::flaky_upstream("v2").await;
    g.agent_with_versions("bot", &[good, bad]).await;
    g.deploy("bot", "staging", "v1").await;
    let (s, b) = g
        .admin(
            http::Method::PUT,
            "/v1/agents/bot/environments/staging/policy",
            Some(serde_json::json!({"auto_rollback": {"window_s": 2, "min_requests": 6, "max_error_rate": 0.2}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    g.deploy("bot", "staging", "v2").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    let metrics = format!("http://{}/metrics", g.admin);
    let admin_auth = bearer(ADMIN_TOKEN);
    let mut scrape = String::new();
    for _ in 0..200 {
        get(&g.url("/"), &[("authorization", &auth)]).await;
        scrape = get(&metrics, &[("authorization", &admin_auth)])
            .await
            .text();
        if scrape.contains("switchyard_auto_rollbacks_total{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for n in &named {
        let shown = scrape.lines().any(|l| {
            !l.starts_with('#') && l.starts_with(n) && l[n.len()..].starts_with(['{', ' '])
        });
        assert!(shown, "{n} is not in a real scrape:\n{scrape}");
    }
    g.stop().await;
}

/// Every PromQL expression of the Grafana dashboard (panels and annotations), with its
/// template variables filled in.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/switchyard.json"),
    )
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for a in dash["annotations"]["list"].as_array().unwrap() {
        out.push(a["expr"].as_str().unwrap().to_owned());
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(metric{…}, label) is Grafana's; its selector is PromQL
            let inner = q.trim_start_matches("label_values(");
            out.push(inner[..inner.rfind(',').unwrap()].to_owned());
        }
    }
    out.iter()
        .map(|e| {
            e.replace("$__rate_interval", "5m")
                .replace("$agent", ".*")
                .replace("$environment", ".*")
        })
        .collect()
}

#[test]
fn dashboard_queries_parse() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{}", queries.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(q).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.yml");
    std::fs::write(&file, rules).unwrap();
    let Some((ok, out)) = promtool(&["check", "rules", file.to_str().unwrap()]) else {
        return;
    };
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
}

/// The metrics the dashboard names are all in a scrape of a real gateway that served,
/// failed over between dead replicas, rolled back by itself and ended a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_names_only_metrics_a_real_scrape_shows() {
    let mut named: Vec<String> = Vec::new();
    for q in dashboard_queries() {
        for word in q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let w = word
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            if w.starts_with("switchyard_") && !named.iter().any(|n| n == w) {
                named.push(w.to_owned());
            }
        }
    }
    assert!(named.len() >= 18, "{named:?}");
    let g = TestGateway::builder()
        .config(|c| c.upstream.consecutive_failures = 2)
        .start()
        .await;
    let good =
        crate::streams::sse_upstream("v1", 64, 64, std::time::Duration::from_millis(20)).await;
    let flaky = crate::canary::flaky_upstream("v2").await;
    g.agent_with_versions("bot", &[good, flaky]).await;
    let (dead_a, dead_b) = (dead_address().await, dead_address().await);
    let (s, b) = g
        .post(
            "/v1/agents/bot/versions",
            serde_json::json!({
                "upstreams": [format!("http://{dead_a}"), format!("http://{dead_b}")],
                "health": {"path": "/healthz", "interval_ms": 100, "timeout_ms": 50, "unhealthy_threshold": 1},
            }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let policy = |body: serde_json::Value| async {
        let (s, b) = g
            .admin(
                http::Method::PUT,
                "/v1/agents/bot/environments/staging/policy",
                Some(body),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    };
    policy(serde_json::json!({"stream_drain_s": 0})).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    // an SSE stream that a move ends
    let events = tokio::spawn({
        let (url, auth) = (g.url("/events"), auth.clone());
        async move { get(&url, &[("authorization", &auth)]).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // dead replicas: retries, ejections, no healthy endpoint
    g.deploy("bot", "staging", "v3").await;
    assert!(events
        .await
        .unwrap()
        .text()
        .contains("switchyard-reconnect"));
    // both found unhealthy by the active check: requests find no healthy endpoint
    let metrics = format!("http://{}/metrics", g.admin);
    for _ in 0..100 {
        get(&g.url("/"), &[("authorization", &auth)]).await;
        let text = get(&metrics, &[]).await.text();
        if text.contains("switchyard_upstream_no_healthy_total{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    get(&g.url("/"), &[("authorization", "Bearer swy_nope")]).await;
    // a failing version under an automatic rollback policy
    policy(serde_json::json!({"auto_rollback": {"window_s": 2, "min_requests": 6, "max_error_rate": 0.2}})).await;
    g.deploy("bot", "staging", "v2").await;
    let mut scrape = String::new();
    for _ in 0..200 {
        get(&g.url("/"), &[("authorization", &auth)]).await;
        scrape = get(&metrics, &[]).await.text();
        if scrape.contains("switchyard_auto_rollbacks_total{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let missing: Vec<&String> = named
        .iter()
        .filter(|n| {
            !scrape.lines().any(|l| {
                !l.starts_with('#')
                    && l.starts_with(n.as_str())
                    && l[n.len()..].starts_with(['{', ' ', '_'])
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not in a real scrape: {missing:?}\n{scrape}"
    );
    g.stop().await;
}
