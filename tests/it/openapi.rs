//! The OpenAPI document against the real admin API, checked by schemathesis (PyPI):
//! every operation, random and example inputs; only documented status codes, no 500,
//! content types and every answer matching its schema. The document itself is served
//! without a token.

use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_undocumented_answer() {
    let g = TestGateway::start().await;
    // the records the document's examples name
    let (u1, u2) = (echo_upstream("v1").await, echo_upstream("v2").await);
    g.agent_with_versions("demo-agent", &[u1, u2]).await;
    g.deploy("demo-agent", "staging", "v1").await;
    g.token("demo-agent", "staging").await;
    let (s, _) = g
        .admin(
            http::Method::PUT,
            "/v1/agents/demo-agent/secrets/MODEL_KEY",
            Some(json!({"value": "sk-x"})),
        )
        .await;
    assert_eq!(s, 200);
    let url = format!("http://{}/v1/openapi.json", g.admin);
    let doc = get(&url, &[]).await;
    assert_eq!(doc.status, 200, "served without a token");
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert!(operations >= 35, "{operations}");

    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("schemathesis")
            .args([
                "run",
                &url,
                "-H",
                &auth,
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--phases",
                "examples,fuzzing",
                "--max-examples",
                "20",
                "--seed",
                "20261202",
                "-w",
                "2",
            ])
            .env("NO_COLOR", "1")
            .output()
    })
    .await
    .unwrap();
    let out = match run {
        Ok(o) => o,
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "schemathesis is required in CI (.ci/run installs it)"
            );
            return skipped("openapi", "no schemathesis (pip install schemathesis)");
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.find("SUMMARY").map_or(text.as_ref(), |i| &text[i..]);
    println!("schemathesis:\n{summary}");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Tested: 35") || text.contains("Tested:"),
        "{summary}"
    );
    g.stop().await;
}
