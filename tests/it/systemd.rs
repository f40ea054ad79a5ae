//! The systemd unit in `contrib/systemd` is checked by `systemd-analyze verify` (no
//! warning allowed), and the binary tells a service manager `READY=1` once its state is
//! loaded and `STOPPING=1` when SIGTERM starts the drain, on `NOTIFY_SOCKET` as
//! systemd's `Type=notify` expects.

use crate::support::*;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

#[test]
fn the_unit_file_verifies_without_a_warning() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/switchyard.service"),
    )
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("DynamicUser=yes"));
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("StateDirectory=switchyard"));
    // the ExecStart binary must exist for verify: point it at this build
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.service");
    std::fs::write(
        &file,
        unit.replace(
            "/usr/local/bin/switchyard",
            env!("CARGO_BIN_EXE_switchyard"),
        ),
    )
    .unwrap();
    let out = match std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
    {
        Ok(o) => o,
        Err(_) => return skipped("systemd unit", "no systemd-analyze"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_manager_hears_ready_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let cfg = dir.path().join("test.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstore = \"sqlite://{}\"\n[limits]\ndrain_timeout_ms = 500\n",
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let recv = move |sock: &UnixDatagram| {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let sock = tokio::task::spawn_blocking(move || {
        let first = recv(&sock);
        (sock, first)
    });
    let (sock, first) = sock.await.unwrap();
    assert_eq!(first, "READY=1\n");
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let second = tokio::task::spawn_blocking(move || recv(&sock))
        .await
        .unwrap();
    assert_eq!(second, "STOPPING=1\n");
    assert!(child.wait().unwrap().success());
    // ready was said after the state was loaded, not before
    let log = log.join().unwrap();
    assert!(log.contains("state loaded; ready"), "{log}");
}
