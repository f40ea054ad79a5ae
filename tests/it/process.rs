//! The real binary: graceful shutdown on SIGTERM, and the CLI against a live gateway.

use crate::support::*;
use http::Method;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Binary::start(dir.path(), "[limits]\ndrain_timeout_ms = 5000").await;
    let up = echo_upstream("v1").await;
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
        Some(json!({"version": "v1"})),
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
    let auth = bearer(t["token"].as_str().unwrap());
    let url = format!("http://{}/slow/1000", b.client);
    let in_flight = tokio::spawn(async move { get(&url, &[("authorization", &auth)]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.signal("TERM");
    let r = in_flight.await.unwrap();
    assert_eq!(
        r.status,
        200,
        "the in-flight request finished: {}",
        r.text()
    );
    assert_eq!(b.wait_exit(7).await, Some(0));
    // the secret never reached the log
    assert!(!b.log_text().contains(t["token"].as_str().unwrap()));
}

fn cli(admin: std::net::SocketAddr, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_ADMIN_URL", format!("http://{admin}"))
        .env("SWITCHYARD_ADMIN_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cli runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drives_the_admin_api() {
    let g = TestGateway::start().await;
    let admin = g.admin;
    let run = move |args: Vec<&str>| {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            cli(admin, ADMIN_TOKEN, &refs)
        })
    };

    let (code, out, err) = run(vec!["agents", "create", "bot", "--description", "a bot"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("bot"));
    for port in ["http://127.0.0.1:9001", "http://127.0.0.1:9002"] {
        let (code, _, err) = run(vec![
            "versions",
            "create",
            "bot",
            "--upstream",
            port,
            "--config",
            r#"{"model":"m"}"#,
        ])
        .await
        .unwrap();
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, _) = run(vec!["versions", "list", "bot"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(
        out.starts_with("VERSION") && out.contains("v1") && out.contains("v2"),
        "{out}"
    );

    let (code, out, err) = run(vec!["deploy", "bot", "staging", "v1", "--reason", "first"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deploy bot/staging: - → v1"), "{out}");

    // production is protected: without a terminal and without --yes, nothing moves
    let (code, _, err) = run(vec!["promote", "bot", "staging"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("--yes") && err.lines().count() == 1, "{err}");
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(snap["environments"]["production"], Value::Null);
    let (code, out, err) = run(vec!["promote", "bot", "staging", "--yes", "--json"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let mv: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (mv["environment"].as_str(), mv["version"].as_str()),
        (Some("production"), Some("v1"))
    );

    run(vec!["deploy", "bot", "staging", "v2"]).await.unwrap();
    let (code, out, _) = run(vec!["rollback", "bot", "staging"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("v2 → v1"), "{out}");
    let (_, out, _) = run(vec!["status", "bot"]).await.unwrap();
    assert!(
        out.lines()
            .any(|l| l.contains("production") && l.contains("v1")),
        "{out}"
    );
    let (_, out, _) = run(vec!["history", "bot", "staging", "--json"])
        .await
        .unwrap();
    let h: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h["entries"][0]["action"], "rollback");
    let (_, out, _) = run(vec!["diff", "bot", "v1", "v2"]).await.unwrap();
    assert!(out.contains("/upstreams/0"), "{out}");

    let (code, out, _) = run(vec!["token", "create", "bot", "staging", "--name", "ci"])
        .await
        .unwrap();
    assert_eq!(code, 0);
    let secret = out
        .split_whitespace()
        .find(|w| w.starts_with("swy_"))
        .unwrap()
        .to_owned();
    let (_, out, _) = run(vec!["token", "list", "bot", "staging"]).await.unwrap();
    assert!(!out.contains(&secret) && out.contains("ci"), "{out}");
    let id = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let (code, _, _) = run(vec!["token", "revoke", &id]).await.unwrap();
    assert_eq!(code, 0);
    let (code, out, _) = run(vec!["stop", "bot", "v2"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("stopped"));

    // errors: one line, non-zero exit
    let (code, _, err) = run(vec!["deploy", "bot", "staging", "v9"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("not_found") && err.lines().count() == 1,
        "{err}"
    );
    let (code, _, err) = tokio::task::spawn_blocking(move || cli(admin, "wrong", &["agents"]))
        .await
        .unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("admin token was refused") && err.lines().count() == 1,
        "{err}"
    );
    let dead = dead_address().await;
    let (code, _, err) = tokio::task::spawn_blocking(move || cli(dead, ADMIN_TOKEN, &["status"]))
        .await
        .unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot reach") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn bad_config_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = \"nowhere\"\n", "listen"),
        ("[limits]\nmax_body_bytes = \"big\"\n", "line 2"),
        ("lisen = \"127.0.0.1:1\"\n", "lisen"),
    ];
    for (text, needle) in cases {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("SWITCHYARD_ADMIN_TOKEN", "x")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle) && !err.contains("panicked"), "{err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "serve",
            "--store",
            "sqlite:///proc/forbidden/x.db",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("SWITCHYARD_ADMIN_TOKEN", "x")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("store") && err.trim().lines().count() == 1,
        "{err}"
    );
}
