//! Observability as an operator sees it: scrape /metrics, read the logs.

use crate::support::*;
use bytes::Bytes;
use http::Method;
use serde_json::json;
use std::process::Command;

async fn scrape(g: &TestGateway) -> String {
    let r = get(&format!("http://{}/metrics", g.admin), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    r.text()
}

/// The value of the series whose line starts with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

#[tokio::test]
async fn routing_metrics_follow_traffic_and_moves() {
    let g = TestGateway::start().await;
    let v1 = echo_upstream("v1").await;
    let v2 = echo_upstream("v2").await;
    g.agent_with_versions("bot", &[v1, v2]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    for _ in 0..3 {
        assert_eq!(
            get(&g.url("/ok"), &[("authorization", &auth)]).await.status,
            200
        );
    }
    get(&g.url("/"), &[("authorization", "Bearer swy_unknown")]).await;
    get(&g.url("/"), &[]).await;
    get(
        &g.url("/"),
        &[
            ("authorization", &auth),
            ("x-switchyard-environment", "production"),
        ],
    )
    .await;

    let text = scrape(&g).await;
    let ok = r#"switchyard_requests_total{agent="bot",environment="staging",version="v1",status_class="2xx"}"#;
    assert_eq!(value(&text, ok), Some(3.0), "{text}");
    assert_eq!(
        value(&text, r#"switchyard_auth_failures_total{reason="unknown"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"switchyard_auth_failures_total{reason="missing"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"switchyard_auth_failures_total{reason="wrong_environment"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"switchyard_request_duration_seconds_count{agent="bot",environment="staging",version="v1"}"#
        ),
        Some(3.0),
        "auth failures count as auth failures, not on a route"
    );
    assert_eq!(
        value(
            &text,
            r#"switchyard_upstream_first_byte_seconds_count{agent="bot",environment="staging",version="v1"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            r#"switchyard_deployment_info{agent="bot",environment="staging",version="v1"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"switchyard_pointer_moves_total{action="deploy"}"#),
        Some(1.0)
    );
    assert_eq!(value(&text, "switchyard_requests_in_flight"), Some(0.0));
    assert!(value(&text, "switchyard_client_connections").is_some());
    let rev = value(&text, "switchyard_control_plane_revision").unwrap();
    assert!(rev > 0.0);
    assert!(text.contains("switchyard_build_info{version="));

    // a move: the old deployment series disappears, the new one appears
    g.deploy("bot", "staging", "v2").await;
    get(&g.url("/ok"), &[("authorization", &auth)]).await;
    let text = scrape(&g).await;
    assert!(!text
        .contains(r#"switchyard_deployment_info{agent="bot",environment="staging",version="v1"}"#));
    assert_eq!(
        value(
            &text,
            r#"switchyard_deployment_info{agent="bot",environment="staging",version="v2"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"switchyard_requests_total{agent="bot",environment="staging",version="v2",status_class="2xx"}"#
        ),
        Some(1.0)
    );
    assert!(value(&text, "switchyard_control_plane_revision").unwrap() > rev);
    g.post("/v1/agents/bot/environments/staging/undeploy", json!({}))
        .await;
    let text = scrape(&g).await;
    assert!(
        !text.contains(r#"switchyard_deployment_info{agent="bot""#),
        "undeployed: no series"
    );
    assert_eq!(
        value(
            &text,
            r#"switchyard_pointer_moves_total{action="undeploy"}"#
        ),
        Some(1.0)
    );

    // upstream errors by kind
    let dead = dead_address().await;
    g.post(
        "/v1/agents/bot/versions",
        json!({"upstreams": [format!("http://{dead}")]}),
    )
    .await;
    g.deploy("bot", "staging", "v3").await;
    assert_eq!(
        get(&g.url("/"), &[("authorization", &auth)]).await.status,
        502
    );
    let text = scrape(&g).await;
    assert_eq!(
        value(
            &text,
            r#"switchyard_upstream_errors_total{agent="bot",environment="staging",kind="connect"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"switchyard_requests_total{agent="bot",environment="staging",version="v3",status_class="5xx"}"#
        ),
        Some(1.0)
    );

    // the snapshot carries the slot's own counters for `switchyard status`
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(snap["traffic"]["staging"]["errors"], 1);
    assert_eq!(snap["traffic"]["staging"]["requests"], 5);
}

#[tokio::test]
async fn series_do_not_grow_with_paths_or_bad_tokens() {
    let g = TestGateway::start().await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    // one of each outcome first, so every series that can exist does
    get(&g.url("/warm"), &[("authorization", &auth)]).await;
    get(&g.url("/warm"), &[("authorization", "Bearer swy_warm")]).await;
    let before = scrape(&g).await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    for i in 0..10_000u32 {
        let (uri, tok) = if i % 2 == 0 {
            (
                g.url(&format!("/path/{i}?q={i}")),
                format!("Bearer swy_invalid_{i}"),
            )
        } else {
            (g.url(&format!("/other/{i}")), auth.clone())
        };
        let req = http::Request::get(uri)
            .header("authorization", tok)
            .header("x-request-id", format!("rid-{i}"))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert!(resp.status() == 200 || resp.status() == 401);
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    }
    let after = scrape(&g).await;
    assert_eq!(series_count(&after), series_count(&before), "series grew");
    for needle in ["/path/", "/other/", "swy_", "rid-"] {
        assert!(!after.contains(needle), "a label carries {needle}");
    }
    // the only address in a label is the configured upstream's (`endpoint`), never a
    // client's
    let upstream = format!("endpoint=\"{up}\"");
    for line in after.lines().filter(|l| l.contains("127.0.0.1")) {
        assert!(
            line.starts_with("switchyard_upstream_endpoint_up{") && line.contains(&upstream),
            "an address in a label: {line}"
        );
    }
    assert_eq!(
        value(
            &after,
            r#"switchyard_auth_failures_total{reason="unknown"}"#
        ),
        Some(5001.0)
    );
}

#[tokio::test]
async fn promtool_accepts_a_real_scrape() {
    let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        assert!(
            std::env::var("CI").is_err(),
            "promtool is required in CI (Debian package prometheus)"
        );
        eprintln!("SKIPPED promtool_accepts_a_real_scrape: promtool not installed (apt-get install prometheus)");
        return;
    };
    let g = TestGateway::start().await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    get(&g.url("/"), &[("authorization", &bearer(&token))]).await;
    get(&g.url("/"), &[]).await;
    let text = scrape(&g).await;
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Agent `bot` with v1 on `up` deployed to staging ("ship it"); a token's secret.
async fn deploy_bot(b: &Binary, up: std::net::SocketAddr) -> String {
    b.admin_call(Method::POST, "/v1/agents", Some(json!({"name": "bot"})))
        .await
        .unwrap();
    b.admin_call(
        Method::POST,
        "/v1/agents/bot/versions",
        Some(json!({"upstreams": [format!("http://{up}")]})),
    )
    .await
    .unwrap();
    b.admin_call(
        Method::POST,
        "/v1/agents/bot/environments/staging/deploy",
        Some(json!({"version": "v1", "reason": "ship it"})),
    )
    .await
    .unwrap();
    let (_, t) = b
        .admin_call(
            Method::POST,
            "/v1/agents/bot/environments/staging/tokens",
            Some(json!({})),
        )
        .await
        .unwrap();
    t["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_and_move_logs_carry_their_fields_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let b = Binary::start(dir.path(), "").await;
    let up = echo_upstream("v1").await;
    let secret = deploy_bot(&b, up).await;
    let r = get(
        &format!("http://{}/logged?token={secret}", b.client),
        &[
            ("authorization", &bearer(&secret)),
            ("x-request-id", "log-check-1"),
            ("cookie", "session=abc"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    eventually("access log written", || async {
        b.log_text().contains("log-check-1")
    })
    .await;
    let log = b.log_text();
    let access: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["request_id"] == "log-check-1")
        .unwrap();
    assert_eq!(access["agent"], "bot");
    assert_eq!(access["environment"], "staging");
    assert_eq!(access["version"], "v1");
    assert_eq!(access["status"], 200);
    assert_eq!(access["upstream.addr"], up.to_string());
    assert!(access["bytes"].as_u64().unwrap() > 0);
    assert!(access["duration_us"].is_u64());
    let moved: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "pointer moved")
        .unwrap();
    assert_eq!(
        (moved["from"].as_str(), moved["to"].as_str()),
        (Some("-"), Some("v1"))
    );
    assert_eq!(moved["reason"], "ship it");
    assert!(moved["actor"].is_string() && moved["revision"].is_u64());
    assert!(!log.contains(&secret), "the token secret reached the log");
    assert!(!log.contains(&secret[4..20]));
    assert!(!log.contains("session=abc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filter_governs_the_access_log_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Binary::start_logging(dir.path(), "", "info,switchyard::access=off").await;
    let up = echo_upstream("v1").await;
    let secret = deploy_bot(&b, up).await;
    for _ in 0..3 {
        let r = get(
            &format!("http://{}/quiet", b.client),
            &[("authorization", &bearer(&secret))],
        )
        .await;
        assert_eq!(r.status, 200);
    }
    // a stopped gateway has finished every request: the whole log is there
    b.signal("TERM");
    assert_eq!(b.wait_exit(15).await, Some(0));
    eventually("log read to the end", || async {
        b.log_text().contains("\"stopped\"")
    })
    .await;
    let log = b.log_text();
    assert!(log.contains("pointer moved"), "other info lines are kept");
    assert!(
        !log.contains("switchyard::access"),
        "the filter turned the access log off: {log}"
    );
}
