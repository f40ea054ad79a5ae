//! The web console in a real browser: `tests/console/console_test.py` drives Debian's
//! chromium with Playwright against this gateway — sign-in, the snapshot, a deploy
//! with its plan and typed confirmation, a rollback by keyboard, a move by the CLI
//! appearing within 2 s, the diff, a token minted (shown once) and revoked, a secret
//! set, a viewer with no buttons, a wrong token refused. Screenshots go to
//! `$SWITCHYARD_SCREENSHOTS` (the README's come from there) or a temporary directory.

use crate::support::*;
use serde_json::json;
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let ready = std::process::Command::new("python3")
        .args(["-c", "import playwright"])
        .status()
        .is_ok_and(|s| s.success())
        && Path::new("/usr/bin/chromium").exists();
    if !ready {
        assert!(
            std::env::var("CI").is_err(),
            "CI needs python3 with playwright and Debian's chromium (.ci/run installs them)"
        );
        return skipped("console", "no playwright or chromium");
    }
    let g = TestGateway::start().await;
    let (u1, u2) = (echo_upstream("v1").await, echo_upstream("v2").await);
    g.agent_with_versions("bot", &[u1, u2]).await;
    g.deploy("bot", "staging", "v1").await;
    g.deploy("bot", "production", "v1").await;
    let (s, viewer) = g
        .post(
            "/v1/admin-tokens",
            json!({"name": "oncall", "role": "viewer"}),
        )
        .await;
    assert_eq!(s, 201, "{viewer}");
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    let shots = std::env::var("SWITCHYARD_SCREENSHOTS").ok();
    let tmp = tempfile::tempdir().unwrap();
    let shots = shots.unwrap_or_else(|| tmp.path().display().to_string());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/console_test.py");
    let admin = format!("http://{}", g.admin);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .args([
                "--admin",
                &admin,
                "--token",
                ADMIN_TOKEN,
                "--viewer",
                &viewer,
            ])
            .args(["--cli", env!("CARGO_BIN_EXE_switchyard"), "--shots", &shots])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("console: all checks passed"), "{text}");
    g.stop().await;
}
