//! Secrets end to end: injected into what the upstream receives (judged by the echo
//! upstream's own account), the environment's value winning, rotation without a move,
//! refusals that name what is missing or in use, and values that never reach an
//! answer, the log or the store's files in plain text. Also the deployment tokens'
//! `created_by` and `last_used_at`.

use crate::support::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const MODEL_KEY: &str = "sk-live-4f1c9a7e2b";
const MODEL_KEY_STAGING: &str = "sk-test-77aa01bd3c";

/// An agent `bot` whose v1 injects `authorization: Bearer MODEL_KEY` and
/// `x-org: ORG`; v2 injects nothing.
async fn agent_with_injecting_version(g: &TestGateway) {
    let up = echo_upstream("v1").await;
    let plain = echo_upstream("v2").await;
    let (s, b) = g.post("/v1/agents", json!({"name": "bot"})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = g
        .post(
            "/v1/agents/bot/versions",
            json!({
                "upstreams": [format!("http://{up}")],
                "inject": [
                    {"header": "Authorization", "secret": "MODEL_KEY", "format": "Bearer {}"},
                    {"header": "x-org", "secret": "ORG"},
                ],
            }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["inject"][0]["header"], "authorization");
    assert_eq!(b["inject"][1]["format"], "{}");
    let (s, b) = g
        .post(
            "/v1/agents/bot/versions",
            json!({"upstreams": [format!("http://{plain}")]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

async fn put_secret(g: &TestGateway, name: &str, body: Value) -> (StatusCode, Value) {
    g.admin(
        Method::PUT,
        &format!("/v1/agents/bot/secrets/{name}"),
        Some(body),
    )
    .await
}

async fn delete_secret(g: &TestGateway, path: &str) -> (StatusCode, Value) {
    g.admin_as(ADMIN_TOKEN, Method::DELETE, path, None, &[])
        .await
}

/// The headers the upstream saw for one request through the gateway.
async fn upstream_saw(g: &TestGateway, token: &str, extra: &[(&str, &str)]) -> Value {
    let auth = bearer(token);
    let mut h = vec![("authorization", auth.as_str())];
    h.extend_from_slice(extra);
    let r = get(&g.url("/chat"), &h).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["headers"].clone()
}

#[tokio::test]
async fn secrets_are_injected_with_the_environment_winning_and_rotate_without_a_move() {
    let g = TestGateway::start().await;
    agent_with_injecting_version(&g).await;
    let deploy = "/v1/agents/bot/environments/staging/deploy";

    // nothing set yet: the move is refused, naming both
    let (s, b) = g
        .post(deploy, json!({"version": "v1", "force": true}))
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "missing_secret");
    assert_eq!(
        b["error"]["details"]["missing"],
        json!(["MODEL_KEY", "ORG"])
    );
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("MODEL_KEY"));
    // the plan says the same, and changes nothing
    let (s, b) = g
        .post(deploy, json!({"version": "v1", "dry_run": true}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["plan"]["allowed"], false);
    assert_eq!(b["plan"]["refusal"]["code"], "missing_secret");
    assert_eq!(
        b["plan"]["checks"]["missing_secrets"],
        json!(["MODEL_KEY", "ORG"])
    );

    // agent-wide key, staging-only org: enough for staging
    let (s, b) = put_secret(&g, "MODEL_KEY", json!({"value": MODEL_KEY})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["name"], "MODEL_KEY");
    assert!(b["environment"].is_null());
    assert!(b.get("value").is_none());
    let (s, b) = put_secret(
        &g,
        "ORG",
        json!({"value": "org-staging", "environment": "staging"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["environment"], "staging");
    // production still lacks ORG
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/production/deploy",
            json!({"version": "v1", "force": true, "confirm": true}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["details"]["missing"].clone()),
        (409, json!(["ORG"]))
    );
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;

    // the client's own header of that name is replaced, not joined
    let h = upstream_saw(&g, &token, &[("x-org", "from-the-client")]).await;
    assert_eq!(h["authorization"], format!("Bearer {MODEL_KEY}"));
    assert_eq!(h["x-org"], "org-staging");

    // rotation: the staging value wins from the next request, with no move
    let (_, before) = g
        .get_admin("/v1/agents/bot/environments/staging/history")
        .await;
    let (s, _) = put_secret(
        &g,
        "MODEL_KEY",
        json!({"value": MODEL_KEY_STAGING, "environment": "staging"}),
    )
    .await;
    assert_eq!(s, 200);
    let h = upstream_saw(&g, &token, &[]).await;
    assert_eq!(h["authorization"], format!("Bearer {MODEL_KEY_STAGING}"));
    let (_, after) = g
        .get_admin("/v1/agents/bot/environments/staging/history")
        .await;
    assert_eq!(before["entries"].as_array().unwrap().len(), 1);
    assert_eq!(
        before["entries"], after["entries"],
        "a rotation is not a move"
    );

    // names and scopes are listed; no value anywhere in the answer
    let (s, list) = g.get_admin("/v1/agents/bot/secrets").await;
    assert_eq!(s, 200);
    let text = list.to_string();
    assert!(
        !text.contains(MODEL_KEY) && !text.contains(MODEL_KEY_STAGING),
        "{text}"
    );
    let scopes: Vec<(String, Value)> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["environment"].clone(),
            )
        })
        .collect();
    assert_eq!(
        scopes,
        [
            ("MODEL_KEY".to_owned(), Value::Null),
            ("MODEL_KEY".to_owned(), json!("staging")),
            ("ORG".to_owned(), json!("staging")),
        ]
    );

    // deleting the staging key falls back to the agent-wide one
    let (s, b) = delete_secret(&g, "/v1/agents/bot/secrets/MODEL_KEY?environment=staging").await;
    assert_eq!(s, 204, "{b}");
    let h = upstream_saw(&g, &token, &[]).await;
    assert_eq!(h["authorization"], format!("Bearer {MODEL_KEY}"));
    // the last value a live version needs cannot go
    for path in [
        "/v1/agents/bot/secrets/MODEL_KEY",
        "/v1/agents/bot/secrets/ORG?environment=staging",
    ] {
        let (s, b) = delete_secret(&g, path).await;
        assert_eq!(s, 409, "{path}: {b}");
        assert_eq!(b["error"]["code"], "secret_in_use");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("v1 in staging"),
            "{b}"
        );
    }
    let (s, b) = delete_secret(&g, "/v1/agents/bot/secrets/ORG").await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    // once the environment moves to a version that needs nothing, it can
    g.deploy("bot", "staging", "v2").await;
    let (s, b) = delete_secret(&g, "/v1/agents/bot/secrets/ORG?environment=staging").await;
    assert_eq!(s, 204, "{b}");
    // and rolling back to v1 is refused while ORG is unset for staging
    let (s, b) = g
        .post("/v1/agents/bot/environments/staging/rollback", json!({}))
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].clone()),
        (409, json!("missing_secret"))
    );

    // the audit: who did what to which name, never a value
    let (s, audit) = g.get_admin("/v1/agents/bot/secrets/audit").await;
    assert_eq!(s, 200);
    let entries = audit["audit"].as_array().unwrap();
    let actions: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["action"].as_str().unwrap(),
                e["name"].as_str().unwrap(),
                e["environment"].as_str().unwrap_or("*")
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "delete ORG staging",
            "delete MODEL_KEY staging",
            "set MODEL_KEY staging",
            "set ORG staging",
            "set MODEL_KEY *",
        ]
    );
    assert!(entries.iter().all(|e| e["actor"] == "bootstrap"));
    let text = audit.to_string();
    assert!(!text.contains(MODEL_KEY) && !text.contains("org-staging"));
    g.stop().await;
}

#[tokio::test]
async fn bad_secrets_and_injections_are_refused_clearly() {
    let g = TestGateway::start().await;
    agent_with_injecting_version(&g).await;
    for (name, body, status, code) in [
        (
            "MODEL_KEY",
            json!({"value": "a\r\nx-evil: 1"}),
            400,
            "bad_request",
        ),
        ("MODEL_KEY", json!({"value": ""}), 400, "bad_request"),
        ("model_key", json!({"value": "x"}), 400, "bad_request"),
        (
            "MODEL_KEY",
            json!({"value": "x", "environment": "moon"}),
            404,
            "not_found",
        ),
        ("MODEL_KEY", json!({"valeu": "x"}), 400, "bad_request"),
    ] {
        let (s, b) = put_secret(&g, name, body.clone()).await;
        assert_eq!(
            (s.as_u16(), b["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body}: {b}"
        );
        assert!(!b.to_string().contains("x-evil"), "{b}");
    }
    let (s, b) = put_secret(&g, "MODEL_KEY", json!({"value": "x"})).await;
    assert_eq!(s, 200, "{b}");
    let up = echo_upstream("v3").await;
    for inject in [
        json!([{"header": "host", "secret": "K"}]),
        json!([{"header": "x-switchyard-version", "secret": "K"}]),
        json!([{"header": "x-k", "secret": "K", "format": "no placeholder"}]),
        json!([{"header": "x-k", "secret": "lower"}]),
    ] {
        let (s, b) = g
            .post(
                "/v1/agents/bot/versions",
                json!({"upstreams": [format!("http://{up}")], "inject": inject}),
            )
            .await;
        assert_eq!(s, 422, "{inject}: {b}");
        assert_eq!(b["error"]["code"], "invalid_version");
    }
    // a gateway without a key cannot set secrets, and says why
    let keyless = TestGateway::builder().secret_key(None).start().await;
    let (s, _) = keyless.post("/v1/agents", json!({"name": "bot"})).await;
    assert_eq!(s, 201);
    let (s, b) = put_secret(&keyless, "MODEL_KEY", json!({"value": "x"})).await;
    assert_eq!(s, 409, "{b}");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("SWITCHYARD_SECRET_KEY"));
    keyless.stop().await;
    g.stop().await;
}

/// The real binary at trace level: the value reaches the upstream, and neither the
/// log nor the SQLite files (the database and its write-ahead log) hold it in plain
/// text; the files are the owner's only. A different key refuses to start.
#[tokio::test]
async fn values_never_reach_the_log_or_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let up = echo_upstream("v1").await;
    let value = "sk-plaintext-canary-93e1f0";
    let b = Binary::start_logging(dir.path(), "", "trace").await;
    let (s, body) = b
        .admin_call(Method::POST, "/v1/agents", Some(json!({"name": "bot"})))
        .await
        .unwrap();
    assert_eq!(s, 201, "{body}");
    let (s, body) = b
        .admin_call(
            Method::POST,
            "/v1/agents/bot/versions",
            Some(json!({"upstreams": [format!("http://{up}")],
                        "inject": [{"header": "x-api-key", "secret": "API_KEY"}]})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{body}");
    let (s, body) = b
        .admin_call(
            Method::PUT,
            "/v1/agents/bot/secrets/API_KEY",
            Some(json!({"value": value})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    b.deploy("bot", "staging", "v1").await;
    let (token, _) = b.token("bot", "staging").await;
    let r = get(
        &format!("http://{}/chat", b.client),
        &[("authorization", &bearer(&token)), ("x-api-key", "client")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["headers"]["x-api-key"],
        value,
        "the upstream got it"
    );
    assert!(r.header("x-api-key").is_none());
    // a refused delete and a bad write are logged too: still no value
    let _ = b
        .admin_call(Method::DELETE, "/v1/agents/bot/secrets/API_KEY", None)
        .await;
    let log = b.log_text();
    assert!(log.contains("secret set"), "the write is logged by name");
    assert!(!log.contains(value), "the value is in the log");
    let mut b = b;
    b.signal("TERM");
    b.wait_exit(20).await;
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("switchyard.db") {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{name} holds the value in plain text"
        );
    }
    assert!(files >= 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["switchyard.db", "secret.key"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
    // another key cannot open what is stored: a clear refusal to start
    let other = {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.path().join("secret.key")).unwrap();
        f.write_all(b"b3RoZXIta2V5LW9mLXRoaXJ0eS10d28tYnl0ZXMtISE=")
            .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(dir.path().join("test.toml"))
            .env("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("SWITCHYARD_SECRET_KEY")
            .output()
            .unwrap()
    };
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("sealed with key"), "{err}");
    // a malformed key is refused whether or not secrets exist
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(dir.path().join("test.toml"))
        .env("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SWITCHYARD_SECRET_KEY", "not-a-key")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SWITCHYARD_SECRET_KEY"));
}

/// Two nodes on one PostgreSQL: a value set on one is used by the other from its
/// next request (through the change feed), and PostgreSQL keeps no plain text.
#[tokio::test]
async fn a_rotation_reaches_every_node_of_a_fleet() {
    let Some(url) = postgres_db("secrets_fleet").await else {
        return skipped("secrets_fleet", "no PostgreSQL");
    };
    let a = TestGateway::builder().store(&url).start().await;
    let b = TestGateway::builder().store(&url).start().await;
    agent_with_injecting_version(&a).await;
    for (name, v) in [("MODEL_KEY", "fleet-one"), ("ORG", "org")] {
        let (s, body) = put_secret(&a, name, json!({"value": v})).await;
        assert_eq!(s, 200, "{body}");
    }
    a.deploy("bot", "staging", "v1").await;
    let (token, _) = a.token("bot", "staging").await;
    eventually("node b serves v1 with the key", || async {
        let r = get(&b.url("/chat"), &[("authorization", &bearer(&token))]).await;
        r.status == 200 && r.json()["headers"]["authorization"] == "Bearer fleet-one"
    })
    .await;
    let (s, _) = put_secret(&a, "MODEL_KEY", json!({"value": "fleet-two"})).await;
    assert_eq!(s, 200);
    eventually("node b uses the new value", || async {
        let r = get(&b.url("/chat"), &[("authorization", &bearer(&token))]).await;
        r.json()["headers"]["authorization"] == "Bearer fleet-two"
    })
    .await;
    // what PostgreSQL holds: no value in any column of the table
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query("SELECT s::text FROM secrets s", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let text: String = r.get(0);
        assert!(!text.contains("fleet-"), "{text}");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn tokens_say_who_minted_them_and_when_they_were_last_used() {
    let g = TestGateway::start().await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (s, minted) = g
        .post(
            "/v1/admin-tokens",
            json!({"name": "ci-deployer", "role": "deployer"}),
        )
        .await;
    assert_eq!(s, 201, "{minted}");
    let deployer = minted["token"].as_str().unwrap();
    let (s, t) = g
        .admin_as(
            deployer,
            Method::POST,
            "/v1/agents/bot/environments/staging/tokens",
            Some(json!({"name": "web"})),
            &[],
        )
        .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["created_by"], "ci-deployer");
    assert!(t["last_used_at"].is_null());
    let token = t["token"].as_str().unwrap().to_owned();
    let list = || async {
        let (_, l) = g
            .get_admin("/v1/agents/bot/environments/staging/tokens")
            .await;
        l["tokens"][0].clone()
    };
    // unused: stays null past a few flushes
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(list().await["last_used_at"].is_null());
    let before = switchyard::domain::now_ms();
    for _ in 0..5 {
        assert_eq!(
            get(&g.url("/"), &[("authorization", &bearer(&token))])
                .await
                .status,
            200
        );
    }
    eventually("last_used_at is recorded", || async {
        !list().await["last_used_at"].is_null()
    })
    .await;
    let used = list().await;
    let at = switchyard::domain::parse_time(used["last_used_at"].as_str().unwrap()).unwrap();
    assert!(
        at >= before - 1000 && at <= switchyard::domain::now_ms(),
        "{used}"
    );
    assert_eq!(used["created_by"], "ci-deployer");
    // more uses within the minute write nothing new
    for _ in 0..5 {
        get(&g.url("/"), &[("authorization", &bearer(&token))]).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(list().await["last_used_at"], used["last_used_at"]);
    g.stop().await;
}

/// The CLI: a version with `--inject`, a value piped on stdin (never a flag), the list
/// and the audit without values, a refused delete with the API's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_values_from_stdin_and_never_prints_them() {
    use std::io::Write;
    let g = TestGateway::start().await;
    let up = echo_upstream("v1").await;
    let (s, _) = g.post("/v1/agents", json!({"name": "bot"})).await;
    assert_eq!(s, 201);
    let admin = g.admin;
    let cli = move |args: Vec<String>, stdin: Option<String>| {
        tokio::task::spawn_blocking(move || {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .args(&args)
                .env("SWITCHYARD_ADMIN_URL", format!("http://{admin}"))
                .env("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
            drop(input);
            let out = child.wait_with_output().unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (code, out) = cli(
        args(&[
            "versions",
            "create",
            "bot",
            "--upstream",
            &format!("http://{up}"),
            "--inject",
            "authorization=MODEL_KEY:Bearer {}",
        ]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(
        args(&["secret", "set", "bot", "MODEL_KEY", "--env", "staging"]),
        Some(format!("{MODEL_KEY}\n")),
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(MODEL_KEY), "{out}");
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    // the trailing line end of stdin is not part of the value
    let h = upstream_saw(&g, &token, &[]).await;
    assert_eq!(h["authorization"], format!("Bearer {MODEL_KEY}"));
    for a in [
        &["secret", "list", "bot"][..],
        &["secret", "audit", "bot"][..],
    ] {
        let (code, out) = cli(args(a), None).await.unwrap();
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("MODEL_KEY") && out.contains("staging"),
            "{out}"
        );
        assert!(!out.contains(MODEL_KEY), "{out}");
    }
    let (code, out) = cli(
        args(&["secret", "delete", "bot", "MODEL_KEY", "--env", "staging"]),
        None,
    )
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        out.contains("secret_in_use") || out.contains("v1 in staging"),
        "{out}"
    );
    // nothing on stdin: a clear refusal, nothing sent
    let (code, out) = cli(
        args(&["secret", "set", "bot", "OTHER"]),
        Some(String::new()),
    )
    .await
    .unwrap();
    assert_ne!(code, 0);
    assert!(out.contains("no value given"), "{out}");
    g.stop().await;
}
