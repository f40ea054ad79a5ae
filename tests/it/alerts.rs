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
