//! Progressive delivery end to end: canary splits judged by which upstream answered,
//! sticky sessions with signed pins, evaluation pins, and rollback by the gateway
//! itself when a new version fails under a steady bounded load.

use crate::support::*;
use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Which upstream served a request with these headers (from the upstream's own
/// answer), and the response's session pin.
async fn served(
    c: &Http,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Option<String>) {
    let mut req = Request::builder().uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = c
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let pin = resp
        .headers()
        .get("x-switchyard-session-pin")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, v["version"].as_str().map(str::to_owned), pin)
}

/// The version that served each session key, `concurrency` at a time.
async fn split(url: &str, auth: &str, keys: &[String]) -> HashMap<String, String> {
    let c = client();
    futures_util::stream::iter(keys.iter().cloned())
        .map(|k| {
            let c = c.clone();
            async move {
                let (s, v, _) = served(
                    &c,
                    url,
                    &[("authorization", auth), ("x-switchyard-session", &k)],
                )
                .await;
                assert_eq!(s, 200);
                (k, v.unwrap())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

async fn canary(g: &TestGateway, body: Value) -> (http::StatusCode, Value) {
    g.post("/v1/agents/bot/environments/staging/canary", body)
        .await
}

async fn history(g: &TestGateway, env: &str) -> Vec<Value> {
    let (_, h) = g
        .get_admin(&format!("/v1/agents/bot/environments/{env}/history"))
        .await;
    h["entries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_takes_its_share_of_sessions_and_keeps_them_as_it_grows() {
    let g = TestGateway::start().await;
    let (v1, v2) = (echo_upstream("v1").await, echo_upstream("v2").await);
    g.agent_with_versions("bot", &[v1, v2]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);

    // nothing open: abort and complete have nothing to act on
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/canary/abort",
            json!({}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("no_canary")),
        "{b}"
    );
    let (s, b) = canary(&g, json!({"version": "v2", "weight": 10.001})).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = canary(&g, json!({"version": "v1", "weight": 10})).await;
    assert_eq!(s, 409, "the live version is no canary: {b}");

    let (s, b) = canary(
        &g,
        json!({"version": "v2", "weight": 10, "reason": "try v2"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["action"], "canary_start");
    assert_eq!(b["weight"], 10.0);
    assert_eq!(b["version"], "v2");
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    let c = &snap["environments"]["staging"]["canary"];
    assert_eq!(
        (c["version"].as_str(), c["weight"].as_f64()),
        (Some("v2"), Some(10.0)),
        "{snap}"
    );
    assert!(c["since"].is_string());
    assert_eq!(snap["environments"]["staging"]["version"], "v1");

    let keys: Vec<String> = (0..10_000).map(|i| format!("session-{i}")).collect();
    let at10 = split(&g.url("/"), &auth, &keys).await;
    let in_canary: Vec<&String> = at10
        .iter()
        .filter(|(_, v)| *v == "v2")
        .map(|(k, _)| k)
        .collect();
    assert!(
        (900..=1100).contains(&in_canary.len()),
        "{} of 10000 sessions at 10 %",
        in_canary.len()
    );
    // the same key, the same answer
    let again = split(&g.url("/"), &auth, &keys[..500]).await;
    for (k, v) in &again {
        assert_eq!(&at10[k], v, "{k}");
    }

    // deploy and promote wait for the canary to end
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/deploy",
            json!({"version": "v2", "force": true}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("canary_open")),
        "{b}"
    );

    let (s, b) = canary(&g, json!({"version": "v2", "weight": 50})).await;
    assert_eq!(
        (s.as_u16(), b["action"].as_str()),
        (200, Some("canary_weight")),
        "{b}"
    );
    let at50 = split(&g.url("/"), &auth, &keys[..3000]).await;
    let moved_out = at50
        .iter()
        .filter(|(k, v)| at10[*k] == "v2" && *v != "v2")
        .count();
    assert_eq!(
        moved_out, 0,
        "raising the weight moves no session out of the canary"
    );
    let share = at50.values().filter(|v| *v == "v2").count();
    assert!((1350..=1650).contains(&share), "{share} of 3000 at 50 %");

    // a rollback while the canary is open aborts the canary only
    let (s, b) = g
        .post("/v1/agents/bot/environments/staging/rollback", json!({}))
        .await;
    assert_eq!(
        (s.as_u16(), b["action"].as_str()),
        (200, Some("canary_abort")),
        "{b}"
    );
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(snap["environments"]["staging"]["canary"], Value::Null);
    assert_eq!(snap["environments"]["staging"]["version"], "v1");
    let after = split(&g.url("/"), &auth, &keys[..200]).await;
    assert!(
        after.values().all(|v| v == "v1"),
        "the abort took every session back"
    );

    // start again (a new draw) and complete: v2 is the environment's version
    let (s, _) = canary(&g, json!({"version": "v2", "weight": 25})).await;
    assert_eq!(s, 200);
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/canary/complete",
            json!({"reason": "good"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["action"].as_str()),
        (200, Some("canary_complete")),
        "{b}"
    );
    let done = split(&g.url("/"), &auth, &keys[..200]).await;
    assert!(done.values().all(|v| v == "v2"));
    let actions: Vec<String> = history(&g, "staging")
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "canary_complete",
            "canary_start",
            "canary_abort",
            "canary_weight",
            "canary_start",
            "deploy"
        ]
    );
    // a completed canary is a forward move: a rollback returns to v1
    let (s, b) = g
        .post("/v1/agents/bot/environments/staging/rollback", json!({}))
        .await;
    assert_eq!(
        (s.as_u16(), b["version"].as_str()),
        (200, Some("v1")),
        "{b}"
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_plan_and_its_gate() {
    let g = TestGateway::start().await;
    let v1 = echo_upstream("v1").await;
    let dead = dead_address().await;
    g.agent_with_versions("bot", &[v1, dead]).await;
    g.deploy("bot", "staging", "v1").await;
    let (s, b) = canary(&g, json!({"version": "v2", "weight": 5, "dry_run": true})).await;
    assert_eq!(s, 200, "{b}");
    let p = &b["plan"];
    assert_eq!(p["action"], "canary_start");
    assert_eq!(
        p["allowed"], false,
        "the gate refuses a dead candidate: {p}"
    );
    assert_eq!(p["refusal"]["code"], "candidate_unhealthy");
    assert_eq!(p["checks"]["canary"]["after"]["weight"], 5.0);
    let (s, b) = canary(&g, json!({"version": "v2", "weight": 5})).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (409, Some("candidate_unhealthy"))
    );
    let (s, b) = canary(&g, json!({"version": "v2", "weight": 5, "force": true})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["forced"], true);
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/canary/abort",
            json!({"dry_run": true}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["plan"]["checks"]["releases_pins"], true, "{b}");
    g.stop().await;
}

async fn sticky(g: &TestGateway) {
    let (s, b) = g
        .admin(
            http::Method::PUT,
            "/v1/agents/bot/environments/staging/policy",
            Some(json!({"session_affinity": "sticky", "session_ttl_s": 600})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["session_affinity"], "sticky");
    assert_eq!(b["stream_drain_s"], 60, "fields left out keep their values");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_keep_their_version_until_it_is_released() {
    let g = TestGateway::start().await;
    let (v1, v2, v3) = (
        echo_upstream("v1").await,
        echo_upstream("v2").await,
        echo_upstream("v3").await,
    );
    g.agent_with_versions("bot", &[v1, v2, v3]).await;
    g.deploy("bot", "staging", "v1").await;
    sticky(&g).await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    let c = client();
    let url = g.url("/");
    let ask = |session: &'static str, pin: Option<String>| {
        let (c, url, auth) = (c.clone(), url.clone(), auth.clone());
        async move {
            let mut h = vec![
                ("authorization", auth.as_str()),
                ("x-switchyard-session", session),
            ];
            let pin_s = pin.unwrap_or_default();
            if !pin_s.is_empty() {
                h.push(("x-switchyard-session-pin", pin_s.as_str()));
            }
            let (s, v, p) = served(&c, &url, &h).await;
            assert_eq!(s, 200);
            (v.unwrap(), p)
        }
    };

    let (v, pin1) = ask("s1", None).await;
    assert_eq!(v, "v1");
    let pin1 = pin1.expect("a sticky session gets a pin");
    // without a session key there is nothing to pin
    let (_, _, none) = served(&c, &url, &[("authorization", &auth)]).await;
    assert_eq!(none, None);

    g.deploy("bot", "staging", "v2").await;
    let (v, refreshed) = ask("s1", Some(pin1.clone())).await;
    assert_eq!(v, "v1", "the pin keeps the session on v1 after a deploy");
    assert!(refreshed.is_some(), "and is refreshed");
    assert_eq!(
        ask("s1", None).await.0,
        "v2",
        "without the pin it follows the pointer"
    );
    // a pin changed in one digit is ignored, never an error
    let mut bad = pin1.clone().into_bytes();
    bad[3] = if bad[3] == b'0' { b'1' } else { b'0' };
    assert_eq!(
        ask("s1", Some(String::from_utf8(bad).unwrap())).await.0,
        "v2"
    );
    assert_eq!(ask("s1", Some("nonsense".into())).await.0, "v2");

    // a session that began on v3 moves off it when a rollback releases v3
    g.deploy("bot", "staging", "v3").await;
    let (v, pin3) = ask("s3", None).await;
    assert_eq!(v, "v3");
    let (s, b) = g
        .post("/v1/agents/bot/environments/staging/rollback", json!({}))
        .await;
    assert_eq!(
        (s.as_u16(), b["version"].as_str()),
        (200, Some("v2")),
        "{b}"
    );
    assert_eq!(ask("s3", pin3).await.0, "v2", "released by the rollback");
    assert_eq!(
        ask("s1", Some(pin1.clone())).await.0,
        "v1",
        "v1's pins still hold"
    );

    // a stop releases v1 everywhere, and a later start does not revive its pins
    let (s, b) = g.post("/v1/agents/bot/versions/v1/stop", json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(ask("s1", Some(pin1.clone())).await.0, "v2");
    let (s, _) = g.post("/v1/agents/bot/versions/v1/start", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(ask("s1", Some(pin1)).await.0, "v2");

    // a pin for another environment is foreign here
    let (ptoken, _) = g.token("bot", "production").await;
    g.deploy("bot", "production", "v1").await;
    let (s, b) = g
        .admin(
            http::Method::PUT,
            "/v1/agents/bot/environments/production/policy",
            Some(json!({"session_affinity": "sticky"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, v, prod_pin) = served(
        &c,
        &url,
        &[
            ("authorization", &bearer(&ptoken)),
            ("x-switchyard-session", "s9"),
        ],
    )
    .await;
    assert_eq!(v.as_deref(), Some("v1"));
    assert_eq!(
        ask("s9", prod_pin).await.0,
        "v2",
        "a foreign pin is ignored"
    );

    let (_, h) = g
        .get_admin("/v1/agents/bot/environments/staging/policy/history")
        .await;
    let e = &h["entries"][0];
    assert_eq!(
        (
            e["actor"].as_str(),
            e["before"]["session_affinity"].as_str(),
            e["after"]["session_affinity"].as_str()
        ),
        (Some("bootstrap"), Some("follow"), Some("sticky")),
        "{h}"
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keys_and_pins_travel_in_cookies_when_configured() {
    let g = TestGateway::builder()
        .config(|c| c.routing.session_cookie = "sid".into())
        .start()
        .await;
    let (v1, v2) = (echo_upstream("v1").await, echo_upstream("v2").await);
    g.agent_with_versions("bot", &[v1, v2]).await;
    g.deploy("bot", "staging", "v1").await;
    sticky(&g).await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);
    let r = get(
        &g.url("/"),
        &[("authorization", &auth), ("cookie", "a=b; sid=abc")],
    )
    .await;
    assert_eq!(r.json()["version"], "v1");
    let set = r.header("set-cookie").expect("a pin cookie").to_owned();
    assert!(
        set.starts_with("swy_pin=") && set.contains("HttpOnly"),
        "{set}"
    );
    let pin = set
        .trim_start_matches("swy_pin=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    g.deploy("bot", "staging", "v2").await;
    let cookie = format!("sid=abc; swy_pin={pin}");
    let r = get(
        &g.url("/"),
        &[("authorization", &auth), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.json()["version"], "v1", "the cookie pin holds");
    let r = get(
        &g.url("/"),
        &[("authorization", &auth), ("cookie", "sid=abc")],
    )
    .await;
    assert_eq!(r.json()["version"], "v2");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_pins_need_the_scope_and_a_version_that_served() {
    let g = TestGateway::start().await;
    let (v1, v2, v3) = (
        echo_upstream("v1").await,
        echo_upstream("v2").await,
        echo_upstream("v3").await,
    );
    g.agent_with_versions("bot", &[v1, v2, v3]).await;
    g.deploy("bot", "staging", "v1").await;
    g.deploy("bot", "staging", "v2").await;
    let (plain, _) = g.token("bot", "staging").await;
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/tokens",
            json!({"name": "eval", "scopes": ["pin"]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["scopes"], json!(["pin"]));
    let eval = b["token"].as_str().unwrap().to_owned();
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/tokens",
            json!({"scopes": ["root"]}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (_, list) = g
        .get_admin("/v1/agents/bot/environments/staging/tokens")
        .await;
    assert!(list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["scopes"] == json!(["pin"])));

    let pinned = |tok: String, v: &'static str| {
        let url = g.url("/");
        async move {
            get(
                &url,
                &[
                    ("authorization", &bearer(&tok)),
                    ("x-switchyard-pin-version", v),
                ],
            )
            .await
        }
    };
    let r = pinned(eval.clone(), "v1").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["version"].as_str()),
        (200, Some("v1"))
    );
    assert_eq!(r.header("x-switchyard-version"), Some("v1"));
    assert_eq!(
        r.json()["headers"]["x-switchyard-pin-version"],
        Value::Null,
        "the pin is not passed on"
    );
    let r = pinned(plain.clone(), "v1").await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (403, "pin_not_allowed".into())
    );
    let r = pinned(eval.clone(), "v3").await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "pin_unavailable".into()),
        "never served"
    );
    let r = pinned(eval.clone(), "v9").await;
    assert_eq!(r.status, 422);
    let (s, _) = g.post("/v1/agents/bot/versions/v1/stop", json!({})).await;
    assert_eq!(s, 200);
    let r = pinned(eval.clone(), "v1").await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "pin_unavailable".into()),
        "stopped"
    );
    // without the header the token is a plain one
    let r = get(&g.url("/"), &[("authorization", &bearer(&eval))]).await;
    assert_eq!(r.json()["version"], "v2");
    let m = get(
        &format!("http://{}/metrics", g.admin),
        &[("authorization", &bearer(ADMIN_TOKEN))],
    )
    .await;
    assert!(
        m.text()
            .contains(r#"switchyard_pinned_requests_total{kind="evaluation"} 1"#),
        "{}",
        m.text()
    );
    g.stop().await;
}

/// An upstream that answers 500 to every other request, labelled `label`.
pub(crate) async fn flaky_upstream(label: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let n = Arc::clone(&n);
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let i = n.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let mut r = hyper::Response::new(Full::new(Bytes::from(
                            json!({"version": label}).to_string(),
                        )));
                        if i % 2 == 0 {
                            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// Sends a steady bounded load (one request every 10 ms, at most `max`) until `stop`
/// says so; counts the 5xx answers the clients saw.
async fn steady_load(url: String, auth: String, max: u64, stop: impl Fn() -> bool) -> (u64, u64) {
    let c = client();
    let (mut sent, mut errors) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while sent < max && !stop() {
        tick.tick().await;
        let (s, _, _) = served(&c, &url, &[("authorization", &auth)]).await;
        sent += 1;
        if s >= 500 {
            errors += 1;
        }
    }
    (sent, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_version_is_rolled_back_by_the_gateway_within_its_window() {
    let g = TestGateway::start().await;
    let good = echo_upstream("v1").await;
    let bad = flaky_upstream("v2").await;
    g.agent_with_versions("bot", &[good, bad]).await;
    g.deploy("bot", "staging", "v1").await;
    let window_s = 3;
    let (s, b) = g
        .admin(
            http::Method::PUT,
            "/v1/agents/bot/environments/staging/policy",
            Some(json!({"auto_rollback": {"window_s": window_s, "min_requests": 20, "max_error_rate": 0.2, "bake_s": 120}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);

    // a healthy version under the same watch is left alone
    let (sent, errors) = steady_load(g.url("/"), auth.clone(), 100, || false).await;
    assert_eq!((sent, errors), (100, 0));

    g.deploy("bot", "staging", "v2").await;
    let deployed = Instant::now();
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(
        snap["environments"]["staging"]["bake"]["version"], "v2",
        "{snap}"
    );
    let rolled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, auth, rolled) = (g.url("/"), auth.clone(), Arc::clone(&rolled));
        tokio::spawn(async move {
            steady_load(url, auth, 2000, || rolled.load(Ordering::Relaxed)).await
        })
    };
    let deadline = Duration::from_secs(window_s + 2);
    let entry = loop {
        let h = history(&g, "staging").await;
        if h[0]["action"] == "auto_rollback" {
            rolled.store(true, Ordering::Relaxed);
            break h[0].clone();
        }
        assert!(
            deployed.elapsed() < deadline + Duration::from_secs(3),
            "no rollback: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = deployed.elapsed();
    assert!(took <= deadline, "rolled back after {took:?}");
    let (sent, errors) = load.await.unwrap();
    eprintln!(
        "auto-rollback: {took:?} after the deploy; clients saw {errors} errors in {sent} requests"
    );
    assert_eq!(entry["actor"], "switchyard");
    assert_eq!(
        (entry["version"].as_str(), entry["previous"].as_str()),
        (Some("v1"), Some("v2"))
    );
    let reason = entry["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("error rate 0.") && reason.contains(&format!("over {window_s} s > 0.2")),
        "{reason}"
    );
    // the errors clients saw: about half of what v2 served before the breach was seen
    assert!(errors >= 10, "{errors} errors");
    assert!(errors <= sent / 2 + 1, "{errors} of {sent}");
    assert!(errors <= 100 * (window_s + 2) / 2, "{errors} of {sent}");
    let h = history(&g, "staging").await;
    assert_eq!(
        h.iter().filter(|e| e["action"] == "auto_rollback").count(),
        1
    );
    // routing: v1 answers again
    let r = get(&g.url("/"), &[("authorization", &auth)]).await;
    assert_eq!(r.json()["version"], "v1");
    let m = get(
        &format!("http://{}/metrics", g.admin),
        &[("authorization", &bearer(ADMIN_TOKEN))],
    )
    .await;
    assert!(
        m.text()
            .contains(r#"switchyard_auto_rollbacks_total{agent="bot",environment="staging"} 1"#),
        "{}",
        m.text()
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_aborted_by_the_gateway() {
    let g = TestGateway::start().await;
    let good = echo_upstream("v1").await;
    let bad = flaky_upstream("v2").await;
    g.agent_with_versions("bot", &[good, bad]).await;
    g.deploy("bot", "staging", "v1").await;
    let (s, b) = g
        .admin(
            http::Method::PUT,
            "/v1/agents/bot/environments/staging/policy",
            Some(json!({"auto_rollback": {"window_s": 2, "min_requests": 10, "max_error_rate": 0.2}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (token, _) = g.token("bot", "staging").await;
    let (s, b) = canary(&g, json!({"version": "v2", "weight": 50, "force": true})).await;
    assert_eq!(s, 200, "{b}");
    let rolled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, auth, rolled) = (g.url("/"), bearer(&token), Arc::clone(&rolled));
        tokio::spawn(async move {
            steady_load(url, auth, 1000, || rolled.load(Ordering::Relaxed)).await
        })
    };
    let started = Instant::now();
    let entry = loop {
        let h = history(&g, "staging").await;
        if h[0]["actor"] == "switchyard" {
            rolled.store(true, Ordering::Relaxed);
            break h[0].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "no abort: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    load.await.unwrap();
    assert_eq!(entry["action"], "canary_abort", "{entry}");
    assert_eq!(entry["version"], "v2");
    let (_, snap) = g.get_admin("/v1/agents/bot").await;
    assert_eq!(snap["environments"]["staging"]["canary"], Value::Null);
    assert_eq!(snap["environments"]["staging"]["version"], "v1");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_for_admins_and_checked() {
    let g = TestGateway::start().await;
    g.post("/v1/agents", json!({"name": "bot"})).await;
    let (_, p) = g
        .get_admin("/v1/agents/bot/environments/staging/policy")
        .await;
    assert_eq!(
        p,
        json!({"session_affinity": "follow", "session_ttl_s": 1800, "stream_drain_s": 60, "auto_rollback": null})
    );
    let (s, b) = g
        .post(
            "/v1/admin-tokens",
            json!({"name": "ci", "role": "deployer"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let deployer = b["token"].as_str().unwrap().to_owned();
    let (s, b) = g
        .admin_as(
            &deployer,
            http::Method::PUT,
            "/v1/agents/bot/environments/staging/policy",
            Some(json!({"session_affinity": "sticky"})),
            &[],
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{b}"
    );
    for bad in [
        json!({"session_ttl_s": 0}),
        json!({"session_affinity": "glue"}),
        json!({"auto_rollback": {"max_error_rate": 1.5}}),
        json!({"auto_rollback": {"window_s": 0}}),
        json!({"nope": 1}),
    ] {
        let (s, b) = g
            .admin(
                http::Method::PUT,
                "/v1/agents/bot/environments/staging/policy",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    let (s, b) = g
        .admin(
            http::Method::PUT,
            "/v1/agents/bot/environments/staging/policy",
            Some(json!({"auto_rollback": {}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["auto_rollback"]["window_s"], 30);
    assert_eq!(b["auto_rollback"]["bake_s"], 600);
    let (_, h) = g
        .get_admin("/v1/agents/bot/environments/staging/policy/history")
        .await;
    assert_eq!(
        h["entries"].as_array().unwrap().len(),
        1,
        "refused changes are not recorded"
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_assign_alike_and_roll_back_once() {
    let _pg = PG_LOCK.read().await;
    let Some(url) = postgres_db("canary::two_nodes_assign_alike_and_roll_back_once").await else {
        return;
    };
    let a = TestGateway::builder().store(&url).start().await;
    let b = TestGateway::builder().store(&url).start().await;
    let good = echo_upstream("v1").await;
    let (two, bad) = (echo_upstream("v2").await, flaky_upstream("v3").await);
    a.agent_with_versions("bot", &[good, two, bad]).await;
    a.deploy("bot", "staging", "v1").await;
    let (token, _) = a.token("bot", "staging").await;
    let auth = bearer(&token);
    let (s, body) = canary(&a, json!({"version": "v2", "weight": 20})).await;
    assert_eq!(s, 200, "{body}");
    let c = client();
    eventually("node b knows the canary", || {
        let (c, u, auth) = (c.clone(), b.url("/"), auth.clone());
        async move {
            let mut seen = false;
            for i in 0..50 {
                let k = format!("k{i}");
                let h = [
                    ("authorization", auth.as_str()),
                    ("x-switchyard-session", k.as_str()),
                ];
                seen |= served(&c, &u, &h).await.1.as_deref() == Some("v2");
            }
            seen
        }
    })
    .await;
    let keys: Vec<String> = (0..1000).map(|i| format!("fleet-{i}")).collect();
    let on_a = split(&a.url("/"), &auth, &keys).await;
    let on_b = split(&b.url("/"), &auth, &keys).await;
    assert_eq!(on_a, on_b, "every node answers the same");
    let share = on_a.values().filter(|v| *v == "v2").count();
    assert!((150..=250).contains(&share), "{share} of 1000 at 20 %");

    // both nodes watch a failing v3 under load: one rollback is recorded
    let (s, body) = a
        .post(
            "/v1/agents/bot/environments/staging/canary/complete",
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = a
        .admin(
            http::Method::PUT,
            "/v1/agents/bot/environments/staging/policy",
            Some(json!({"auto_rollback": {"window_s": 2, "min_requests": 10, "max_error_rate": 0.2}})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    a.deploy("bot", "staging", "v3").await;
    eventually("node b serves v3", || {
        let (u, auth) = (b.url("/"), auth.clone());
        async move {
            get(&u, &[("authorization", &auth)])
                .await
                .header("x-switchyard-version")
                == Some("v3")
        }
    })
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads: Vec<_> = [a.url("/"), b.url("/")]
        .into_iter()
        .map(|u| {
            let (auth, stop) = (auth.clone(), Arc::clone(&stop));
            tokio::spawn(
                async move { steady_load(u, auth, 800, || stop.load(Ordering::Relaxed)).await },
            )
        })
        .collect();
    let started = Instant::now();
    loop {
        let h = history(&a, "staging").await;
        if h[0]["actor"] == "switchyard" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "no rollback: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // let both nodes' watchers have their say, then count
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.await.unwrap();
    }
    let h = history(&a, "staging").await;
    let autos: Vec<&Value> = h.iter().filter(|e| e["actor"] == "switchyard").collect();
    assert_eq!(autos.len(), 1, "{h:?}");
    assert_eq!(autos[0]["action"], "auto_rollback");
    assert_eq!(autos[0]["version"], "v2");
    a.stop().await;
    b.stop().await;
}
