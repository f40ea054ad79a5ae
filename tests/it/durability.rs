//! kill -9 in the middle of a burst of admin writes: every write that was answered
//! 2xx is there after a restart, and no move is half applied.

use crate::support::*;
use http::Method;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
enum Acked {
    Agent(String),
    Version(String, String),
    Move {
        agent: String,
        revision: u64,
        version: String,
    },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let b = Binary::start(dir.path(), "").await;
    let admin = b.admin;
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let fired = Arc::new(AtomicUsize::new(0));
    const WRITERS: usize = 4;
    const AGENTS_PER_WRITER: usize = 20; // 3 writes each: 240 writes in all

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let acked = Arc::clone(&acked);
        let fired = Arc::clone(&fired);
        tasks.push(tokio::spawn(async move {
            for i in 0..AGENTS_PER_WRITER {
                let name = format!("w{w}-a{i}");
                fired.fetch_add(1, Ordering::Relaxed);
                match admin_call(
                    admin,
                    Method::POST,
                    "/v1/agents",
                    Some(json!({"name": name})),
                )
                .await
                {
                    Some((s, _)) if s.is_success() => {
                        acked.lock().unwrap().push(Acked::Agent(name.clone()))
                    }
                    _ => {
                        fired.fetch_add(2, Ordering::Relaxed); // the two writes that depend on it
                        continue;
                    }
                }
                fired.fetch_add(1, Ordering::Relaxed);
                let body = json!({"upstreams": [format!("http://127.0.0.1:{}", 1000 + i)]});
                match admin_call(
                    admin,
                    Method::POST,
                    &format!("/v1/agents/{name}/versions"),
                    Some(body),
                )
                .await
                {
                    Some((s, v)) if s.is_success() => acked.lock().unwrap().push(Acked::Version(
                        name.clone(),
                        v["version"].as_str().unwrap().into(),
                    )),
                    _ => {
                        fired.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                fired.fetch_add(1, Ordering::Relaxed);
                let path = format!("/v1/agents/{name}/environments/staging/deploy");
                if let Some((s, m)) =
                    admin_call(admin, Method::POST, &path, Some(json!({"version": "v1"}))).await
                {
                    if s.is_success() {
                        acked.lock().unwrap().push(Acked::Move {
                            agent: name.clone(),
                            revision: m["revision"].as_u64().unwrap(),
                            version: m["version"].as_str().unwrap().into(),
                        });
                    }
                }
            }
        }));
    }
    // kill in the middle of the burst
    eventually("half the burst acknowledged", || async {
        acked.lock().unwrap().len() >= 100
    })
    .await;
    let mut b = b;
    b.signal("KILL");
    b.wait_exit(10).await;
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        fired.load(Ordering::Relaxed) >= 200,
        "the burst had at least 200 writes"
    );
    assert!(
        acked.len() < WRITERS * AGENTS_PER_WRITER * 3,
        "the kill landed mid-burst"
    );

    let b2 = Binary::start(dir.path(), "").await;
    for a in &acked {
        match a {
            Acked::Agent(name) => {
                let (s, _) = b2
                    .admin_call(Method::GET, &format!("/v1/agents/{name}"), None)
                    .await
                    .unwrap();
                assert_eq!(s, 200, "agent {name} was acknowledged");
            }
            Acked::Version(name, v) => {
                let (s, _) = b2
                    .admin_call(
                        Method::GET,
                        &format!("/v1/agents/{name}/versions/{v}"),
                        None,
                    )
                    .await
                    .unwrap();
                assert_eq!(s, 200, "{name} {v} was acknowledged");
            }
            Acked::Move {
                agent,
                revision,
                version,
            } => {
                let (_, h) = b2
                    .admin_call(
                        Method::GET,
                        &format!("/v1/agents/{agent}/environments/staging/history"),
                        None,
                    )
                    .await
                    .unwrap();
                let e = &h["entries"][0];
                assert_eq!(e["revision"].as_u64(), Some(*revision), "{agent}: {h}");
                assert_eq!(e["version"].as_str(), Some(version.as_str()));
            }
        }
    }
    // no half-applied move: every pointer agrees with the newest row of its history
    let (_, agents) = b2
        .admin_call(Method::GET, "/v1/agents", None)
        .await
        .unwrap();
    for a in agents["agents"].as_array().unwrap() {
        let name = a["name"].as_str().unwrap();
        let (_, snap) = b2
            .admin_call(Method::GET, &format!("/v1/agents/{name}"), None)
            .await
            .unwrap();
        let (_, h) = b2
            .admin_call(
                Method::GET,
                &format!("/v1/agents/{name}/environments/staging/history"),
                None,
            )
            .await
            .unwrap();
        let ptr = &snap["environments"]["staging"];
        match h["entries"].as_array().unwrap().first() {
            Some(e) => {
                assert_eq!(ptr["version"], e["version"], "{name}");
                assert_eq!(ptr["revision"], e["revision"], "{name}");
            }
            None => assert_eq!(*ptr, Value::Null, "{name}"),
        }
    }
}

/// SIGKILL keeps the page cache, so the test above passes without any fsync. This one
/// watches the system calls: every admin write answered 201 must be preceded, since
/// the answer before it, by an fsync or fdatasync of the SQLite database or its WAL.
/// (Fails with `synchronous=OFF`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_was_synced_before_its_answer() {
    let has_strace = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_strace {
        assert!(
            std::env::var("CI").is_err(),
            "strace is required in CI (.ci/run installs it)"
        );
        skipped(
            "durability::every_acknowledged_write_was_synced_before_its_answer",
            "no strace (apt-get install strace)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("strace.out");
    let trace_arg = trace.to_str().unwrap().to_owned();
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-y",
        "-s",
        "24",
        "-e",
        "trace=fsync,fdatasync,write,writev,sendto,sendmsg",
        "-o",
        &trace_arg,
    ];
    let mut b = Binary::start_wrapped(dir.path(), "", "info", &wrapper).await;
    const WRITES: usize = 20;
    for i in 0..WRITES {
        let (s, body) = b
            .admin_call(
                Method::POST,
                "/v1/agents",
                Some(json!({ "name": format!("synced-{i}") })),
            )
            .await
            .unwrap();
        assert_eq!(s, 201, "{body}");
    }
    // the child is strace: stop the gateway it traces, and strace ends with it
    let pid = b.child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let gateway = children.split_whitespace().next().expect("strace's child");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", gateway])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    b.wait_exit(20).await;
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut synced = false;
    let mut acks = 0;
    for line in text.lines() {
        let call = line
            .split_once(' ')
            .map_or(line, |(_, rest)| rest.trim_start());
        if (call.starts_with("fdatasync(") || call.starts_with("fsync("))
            && (call.contains(".db>") || call.contains(".db-wal>"))
        {
            synced = true;
        } else if call.contains("HTTP/1.1 201") {
            assert!(
                synced,
                "answer {} went out with no sync of the database since the answer before:\n{line}",
                acks + 1
            );
            synced = false;
            acks += 1;
        }
    }
    assert_eq!(acks, WRITES, "every 201 was seen in the trace");
}
