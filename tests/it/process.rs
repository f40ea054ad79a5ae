//! The real binary: graceful shutdown on SIGTERM, and the CLI against a live gateway.

use crate::support::*;
use http::Method;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::Arc;
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

pub(crate) fn cli(
    admin: std::net::SocketAddr,
    token: &str,
    args: &[&str],
) -> (i32, String, String) {
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

/// The CLI's admin-token and whoami commands, and a deployer's token used by the CLI:
/// its moves carry its name and the --on-behalf-of text, admin tokens stay out of reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_admin_tokens_and_identities() {
    let g = TestGateway::start().await;
    let admin = g.admin;
    let run = move |token: String, args: Vec<&str>| {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            cli(admin, &token, &refs)
        })
    };
    let boot = ADMIN_TOKEN.to_string();
    let (code, out, err) = run(boot.clone(), vec!["whoami"]).await.unwrap();
    assert_eq!((code, out.trim()), (0, "bootstrap (admin)"), "{err}");
    let (code, out, err) = run(
        boot.clone(),
        vec![
            "admin-token",
            "create",
            "ci",
            "--role",
            "deployer",
            "--json",
        ],
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    let ci = made["token"].as_str().unwrap().to_owned();
    let (code, out, _) = run(boot.clone(), vec!["admin-token", "list"])
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(
        out.starts_with("ID") && out.contains("ci") && out.contains("deployer"),
        "{out}"
    );
    assert!(!out.contains(&ci), "a list never shows a secret");

    let (code, out, _) = run(ci.clone(), vec!["whoami"]).await.unwrap();
    assert_eq!((code, out.trim()), (0, "ci (deployer)"));
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    let (code, out, err) = run(
        ci.clone(),
        vec![
            "deploy",
            "bot",
            "staging",
            "v1",
            "--on-behalf-of",
            "pipeline 7",
            "--json",
        ],
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let mv: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (mv["actor"].as_str(), mv["on_behalf_of"].as_str()),
        (Some("ci"), Some("pipeline 7"))
    );
    // a deployer may not mint admin tokens: one line naming the code
    let (code, _, err) = run(
        ci.clone(),
        vec!["admin-token", "create", "x", "--role", "admin"],
    )
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("forbidden") && err.trim().lines().count() == 1,
        "{err}"
    );
    let id = made["id"].as_str().unwrap();
    let (code, _, err) = run(boot, vec!["admin-token", "revoke", id]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(ci, vec!["whoami"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("admin token was refused"), "{err}");
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
    for _ in 0..2 {
        let port = format!("http://{}", accepting().await);
        let (code, _, err) = run(vec![
            "versions",
            "create",
            "bot",
            "--upstream",
            &port,
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

    // a dry run prints the plan and moves nothing
    let (code, out, err) = run(vec!["deploy", "bot", "staging", "v2", "--dry-run"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("plan: deploy bot/staging: v1 → v2"), "{out}");
    assert!(
        out.contains("allowed: yes") && out.contains("1 of 1 endpoints passed"),
        "{out}"
    );
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(snap["environments"]["staging"]["version"], "v1");

    // production is protected: without a terminal and without --yes, nothing moves;
    // the plan is shown before the question
    let (code, _, err) = run(vec!["promote", "bot", "staging"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("plan: promote bot/production: - → v1"),
        "{err}"
    );
    assert!(err.lines().last().unwrap_or("").contains("--yes"), "{err}");
    // a dry run with --yes plans the confirmed move
    let (code, out, err) = run(vec!["promote", "bot", "staging", "--dry-run", "--yes"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("allowed: yes") && out.contains("confirmation: required"),
        "{out}"
    );
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
            .any(|l| l.contains("production") && l.contains("v1") && l.contains("1/1 up")),
        "{out}"
    );
    assert!(
        out.lines().next().unwrap_or("").contains("ENDPOINTS"),
        "{out}"
    );
    let (_, out, _) = run(vec!["history", "bot", "staging", "--json"])
        .await
        .unwrap();
    let h: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h["entries"][0]["action"], "rollback");
    let (_, out, _) = run(vec!["diff", "bot", "v1", "v2"]).await.unwrap();
    assert!(out.contains("/upstreams/0"), "{out}");

    // the health gate: a version whose endpoint refuses does not go live …
    let dead = format!("http://{}", dead_address().await);
    let (code, _, err) = run(vec!["versions", "create", "bot", "--upstream", &dead])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(vec!["deploy", "bot", "sandbox", "v3"]).await.unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("not healthy"), "{err}");
    // … unless forced, and the history says so
    let (code, _, err) = run(vec!["deploy", "bot", "sandbox", "v3", "--force"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(vec!["history", "bot", "sandbox"]).await.unwrap();
    assert!(out.contains("FORCED") && out.contains("true"), "{out}");
    let (code, out, err) = run(vec!["versions", "show", "bot", "v3"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["health"][0]["url"], dead.as_str(), "{out}");
    assert_eq!(
        v["health"][0]["state"], "unknown",
        "no request has told yet: {out}"
    );

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

/// Creates agent `name` with one version on `up`, deploys it to staging and returns a
/// token for it, through the binary's admin API.
async fn deploy_on(b: &Binary, name: &str, up: std::net::SocketAddr) -> String {
    b.agent_with_versions(name, &[up]).await;
    b.deploy(name, "staging", "v1").await;
    b.token(name, "staging").await.0
}

/// A WebSocket upstream that echoes every message.
async fn websocket_echo() -> std::net::SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    up
}

/// SIGTERM in the middle of a load, with an SSE stream and a WebSocket open: every
/// request that reached the upstream is answered in full, the streams go on until the
/// drain deadline and end there, and the process exits 0 within deadline + 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_requests_and_ends_streams_at_the_deadline() {
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::BodyExt;
    use std::time::Instant;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    const DRAIN: Duration = Duration::from_millis(2000);
    let dir = tempfile::tempdir().unwrap();
    let mut b = Binary::start(dir.path(), "[limits]\ndrain_timeout_ms = 2000").await;
    let (up, seen) = counting_upstream("v1").await;
    let token = deploy_on(&b, "load", up).await;
    let sse_token = deploy_on(
        &b,
        "events",
        crate::streams::sse_upstream("v1", 16, 16, Duration::from_millis(100)).await,
    )
    .await;
    let ws_token = deploy_on(&b, "socket", websocket_echo().await).await;

    // the streams, open before the signal
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = http::Request::get(format!("http://{}/events", b.client))
        .header("authorization", bearer(&sse_token))
        .body(http_body_util::Empty::new())
        .unwrap();
    let mut events = client.request(req).await.unwrap().into_body();
    assert!(events.frame().await.unwrap().is_ok());
    let mut ws_req = format!("ws://{}/socket", b.client)
        .into_client_request()
        .unwrap();
    ws_req
        .headers_mut()
        .insert("authorization", bearer(&ws_token).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_req).await.unwrap();

    // the load: 6 clients, requests of 100 ms each, every one with its own id
    let stop_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let loaders: Vec<_> = (0..6)
        .map(|i| {
            let (url, auth, stop_at) = (
                format!("http://{}/slow/100", b.client),
                bearer(&token),
                Arc::clone(&stop_at),
            );
            tokio::spawn(async move {
                let client: hyper_util::client::legacy::Client<
                    _,
                    http_body_util::Empty<bytes::Bytes>,
                > = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http();
                let mut results = Vec::new();
                for n in 0..200 {
                    if stop_at.lock().unwrap().is_some_and(|t| Instant::now() > t) {
                        break;
                    }
                    let id = format!("load-{i}-{n}");
                    let req = http::Request::get(&url)
                        .header("authorization", &auth)
                        .header("x-request-id", &id)
                        .body(http_body_util::Empty::new())
                        .unwrap();
                    let outcome = match client.request(req).await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            match r.into_body().collect().await {
                                Ok(_) => Ok(status),
                                Err(e) => Err(format!("body: {e}")),
                            }
                        }
                        Err(e) => Err(format!("{e:?}")),
                    };
                    results.push((id, outcome, Instant::now()));
                }
                results
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let signalled = Instant::now();
    *stop_at.lock().unwrap() = Some(signalled + Duration::from_millis(500));
    b.signal("TERM");

    // the WebSocket still works after the signal
    tokio::time::sleep(Duration::from_millis(500)).await;
    ws.send(Message::text("still there?")).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "still there?");

    // both streams end at the deadline, not before
    let sse_end = tokio::spawn(async move {
        let mut text = Vec::new();
        loop {
            match events.frame().await {
                Some(Ok(f)) => text.extend_from_slice(f.data_ref().map_or(&[][..], |d| d)),
                _ => return (Instant::now(), String::from_utf8(text).unwrap()),
            }
        }
    });
    let ws_end = tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(c))) => {
                    return (
                        Instant::now(),
                        c.map(|c| (u16::from(c.code), c.reason.to_string())),
                    )
                }
                Some(Ok(_)) => continue,
                _ => return (Instant::now(), None),
            }
        }
    });
    let code = b.wait_exit(10).await;
    let exited = signalled.elapsed();
    assert_eq!(code, Some(0));
    assert!(
        exited <= DRAIN + Duration::from_secs(1),
        "exit {exited:?} after the signal"
    );
    // … each with its hint: the reconnect event after a whole event, close 1012
    let (sse_at, text) = sse_end.await.unwrap();
    assert!(
        text.ends_with("\n\nevent: switchyard-reconnect\ndata: {\"reason\":\"shutdown\",\"version\":\"v1\"}\n\n"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    let (ws_at, close) = ws_end.await.unwrap();
    assert_eq!(close, Some((1012, "shutdown".to_owned())));
    // the hint goes out a margin before the deadline (a quarter of it, at most 500 ms)
    for (what, end) in [("SSE", sse_at), ("WebSocket", ws_at)] {
        let at = end - signalled;
        assert!(
            at >= DRAIN - Duration::from_millis(800) && at <= DRAIN + Duration::from_secs(1),
            "the {what} stream ended {at:?} after the signal"
        );
    }

    // every request the upstream received was answered in full
    let upstream_saw = seen.text.lock().unwrap().clone();
    let (mut answered, mut after_signal) = (0, 0);
    for l in loaders {
        for (id, outcome, at) in l.await.unwrap() {
            let reached = upstream_saw.contains(&format!("x-request-id: {id}\n"));
            if reached {
                assert_eq!(outcome, Ok(200), "{id} reached the upstream but failed");
                answered += 1;
                if at > signalled {
                    after_signal += 1;
                }
            }
        }
    }
    assert!(answered > 20, "the load ran: {answered} answered");
    assert!(
        after_signal >= 1,
        "some requests were in flight at the signal and finished after it"
    );
}
