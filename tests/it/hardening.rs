//! Hostile HTTP/1.1 framing: every ambiguous request is refused (400, connection
//! closed) or handled exactly as RFC 9112 allows, and never reaches the upstream in a
//! form it could read differently. Raw sockets on the client side; a counting upstream.

use crate::support::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends raw bytes, reads until the gateway closes the connection (or 3 s pass).
/// Returns what came back and whether the connection was closed.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_never_forwarded() {
    let g = TestGateway::start().await;
    let seen = Arc::new(AtomicU64::new(0));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        seen.fetch_add(1, Ordering::SeqCst);
                        echo_answer("v1", req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    }
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let cases = [
        ("two different content-lengths", format!("POST / HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")),
        ("invalid content-length", format!("POST / HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: +5\r\n\r\nhello")),
        ("final coding not chunked", format!("POST / HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n")),
        ("coding other than chunked", format!("POST / HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: gzip\r\n\r\nhello")),
        ("whitespace before the colon", format!("POST / HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n")),
        ("obs-fold", format!("GET / HTTP/1.1\r\nHost: x\r\n{auth}X-A: a\r\n b\r\n\r\n")),
        ("bare CR", format!("GET / HTTP/1.1\rHost: x\r\n{auth}\r\n")),
        ("missing host", format!("GET / HTTP/1.1\r\n{auth}\r\n")),
        ("two hosts", format!("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n{auth}\r\n")),
        ("transfer-encoding in HTTP/1.0", format!("POST / HTTP/1.0\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
    ];
    for (what, req) in &cases {
        let (resp, closed) = raw(g.client, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
        assert!(closed, "{what}: the connection stays open");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a refused request reached the upstream"
    );

    // both content-length and transfer-encoding: processed as chunked, as RFC 9112
    // §6.3 allows, the client's content-length never forwarded, and the connection
    // closed after
    let req = format!(
        "POST /te HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    let (resp, closed) = raw(g.client, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = &resp[resp.find('{').unwrap()..resp.rfind('}').unwrap() + 1];
    let seen_req: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        seen_req["body_len"], 5,
        "the chunked framing won: {seen_req}"
    );
    // the client's length (3) never; the gateway's own, of the body it read whole
    assert_eq!(seen_req["headers"]["content-length"], "5", "{seen_req}");
    assert!(closed, "the connection is closed after a CL+TE request");
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // an h2c upgrade request is never passed on as an upgrade
    let req = format!("GET /up HTTP/1.1\r\nHost: x\r\n{auth}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
    let (resp, _) = raw(g.client, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = &resp[resp.find('{').unwrap()..resp.rfind('}').unwrap() + 1];
    let seen_req: serde_json::Value = serde_json::from_str(body).unwrap();
    for h in ["upgrade", "http2-settings", "connection"] {
        assert!(
            seen_req["headers"].get(h).is_none(),
            "{h} reached the upstream: {seen_req}"
        );
    }
}

/// CVE-2023-44487: HEADERS then RST_STREAM, again and again, on one connection. The
/// gateway ends that connection with GOAWAY well within 1,000 streams, and keeps
/// serving everyone else.
#[tokio::test]
async fn http2_rapid_reset_is_cut_off() {
    let g = TestGateway::start().await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);

    let tcp = TcpStream::connect(g.client).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut opened = 0u32;
    for _ in 0..1000 {
        let req = http::Request::get(format!("http://{}/", g.client))
            .header("authorization", auth.as_str())
            .body(())
            .unwrap();
        match client.send_request(req, true) {
            Ok((_resp, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                opened += 1;
            }
            Err(_) => break,
        }
        match tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await {
            Ok(Ok(c)) => client = c,
            _ => break,
        }
        if opened % 50 == 0 {
            // let frames from the server (a GOAWAY) arrive
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(
        opened < 1000,
        "GOAWAY within the first 1,000 streams (opened {opened})"
    );
    // the server ended the connection: GOAWAY, then close
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    match ended {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => assert!(e.is_go_away() || e.is_io() || e.reason().is_some(), "{e:?}"),
        other => {
            panic!("the connection was not ended by the server after {opened} resets: {other:?}")
        }
    }
    // other clients are served as usual
    assert_eq!(
        get(&g.url("/"), &[("authorization", &auth)]).await.status,
        200
    );
}

/// Slowloris: many connections dribbling their headers a byte at a time are each
/// closed within the head timeout, while a normal client keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_others_served() {
    let g = TestGateway::builder()
        .limits(|l| l.header_read_timeout_ms = 500)
        .start()
        .await;
    let up = echo_upstream("v1").await;
    g.agent_with_versions("bot", &[up]).await;
    g.deploy("bot", "staging", "v1").await;
    let (token, _) = g.token("bot", "staging").await;
    let auth = bearer(&token);

    let started = std::time::Instant::now();
    let slow: Vec<_> = (0..100)
        .map(|_| {
            let addr = g.client;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await
                    .unwrap();
                // one byte every 100 ms, for up to 5 s, until the gateway hangs up
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if s.write_all(b"a").await.is_err() {
                        break;
                    }
                    let mut buf = [0u8; 256];
                    match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => break, // an answer (408) then the close
                        Err(_) => {}
                    }
                }
                std::time::Instant::now()
            })
        })
        .collect();
    // a normal client meanwhile: answered, and quickly
    for _ in 0..10 {
        let t = std::time::Instant::now();
        assert_eq!(
            get(&g.url("/"), &[("authorization", &auth)]).await.status,
            200
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a normal request waited {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in slow {
        let closed_at = s.await.unwrap();
        assert!(
            closed_at - started < Duration::from_millis(2500),
            "a slowloris connection lived {:?}",
            closed_at - started
        );
    }
}

/// An upstream answer with conflicting or invalid framing is never passed on: the
/// client gets 502 and the next request is served on a fresh upstream connection.
#[tokio::test]
async fn upstream_responses_with_bad_framing_become_502() {
    let g = TestGateway::start().await;
    let answers = [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
    ];
    for (i, answer) in answers.iter().enumerate() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = l.local_addr().unwrap();
        let raw_answer = answer.to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let answer = raw_answer.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let agent = format!("bad{i}");
        g.agent_with_versions(&agent, &[up]).await;
        g.deploy(&agent, "staging", "v1").await;
        let (token, _) = g.token(&agent, "staging").await;
        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let req = http::Request::get(g.url("/"))
            .header("authorization", bearer(&token))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = match client.request(req).await {
            Ok(r) => r,
            // a broken body behind a good head: the answer was already under way, so
            // the connection is aborted rather than completed with the bad bytes
            Err(e) if i == 2 => {
                assert!(format!("{e:?}").contains("IncompleteMessage"), "{e:?}");
                continue;
            }
            Err(e) => panic!("{answer}: {e:?}"),
        };
        if resp.status() == 200 {
            // the head was fine, the body broke: the client's response is cut off, never
            // completed with the bad bytes
            let body = http_body_util::BodyExt::collect(resp.into_body()).await;
            assert!(
                body.is_err(),
                "{answer}: a broken body was passed on as complete"
            );
        } else {
            assert_eq!(resp.status(), 502, "{answer}");
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "upstream_unavailable", "{answer}");
        }
    }
}

/// 10,000 requests with missing, malformed, unknown, revoked and expired tokens: every
/// one refused with its code, none reaches the upstream; and no token (the valid one
/// included) ever shows in the log, the metrics, an error body or an upstream request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_never_reach_the_upstream_and_no_secret_leaks() {
    use http::Method;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let b = Binary::start(dir.path(), "").await;
    let (up, seen) = counting_upstream("v1").await;
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
    let tokens = "/v1/agents/bot/environments/staging/tokens";
    let mint = |expires: Option<String>| {
        let body = match expires {
            Some(t) => json!({ "expires_at": t }),
            None => json!({}),
        };
        let b = &b;
        async move {
            let (_, t) = b
                .admin_call(Method::POST, tokens, Some(body))
                .await
                .unwrap();
            (
                t["token"].as_str().unwrap().to_owned(),
                t["id"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (valid, _) = mint(None).await;
    let (revoked, revoked_id) = mint(None).await;
    let soon = switchyard::domain::format_time(switchyard::domain::now_ms() + 1000);
    let (expired, _) = mint(Some(soon)).await;
    b.admin_call(Method::DELETE, &format!("/v1/tokens/{revoked_id}"), None)
        .await
        .unwrap();
    let mut secrets = vec![valid.clone(), revoked.clone(), expired.clone()];
    // the valid token works, and its request arrives without it
    let url = format!("http://{}/ok", b.client);
    assert_eq!(
        get(&url, &[("authorization", &bearer(&valid))])
            .await
            .status,
        200
    );
    assert_eq!(seen.heads(), 1);
    eventually("the expiring token has expired", || async {
        get(&url, &[("authorization", &bearer(&expired))])
            .await
            .status
            == 403
    })
    .await;
    // (until it expired, the expiring token was served too)
    let served = seen.heads();

    let kinds: Vec<(Option<String>, u16, &str)> = vec![
        (None, 401, "unauthenticated"),
        (Some("Bearer".into()), 401, "unauthenticated"),
        (Some(format!("Basic {valid}")), 401, "unauthenticated"),
        (Some(format!("Bearer{valid}")), 401, "unauthenticated"),
        (Some(format!("Bearer {valid}x")), 401, "unauthenticated"),
        (
            Some(format!("Bearer {}", &valid[..valid.len() - 1])),
            401,
            "unauthenticated",
        ),
        (
            Some("Bearer swy_unknown-token".into()),
            401,
            "unauthenticated",
        ),
        (Some(bearer(&revoked)), 403, "token_revoked"),
        (Some(bearer(&expired)), 403, "token_expired"),
    ];
    for (auth, _, _) in &kinds {
        if let Some(a) = auth {
            secrets.push(a.clone());
        }
    }
    let kinds = Arc::new(kinds);
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let (kinds, base) = (Arc::clone(&kinds), format!("http://{}", b.client));
            let (valid, revoked, expired) = (valid.clone(), revoked.clone(), expired.clone());
            tokio::spawn(async move {
                let client: hyper_util::client::legacy::Client<
                    _,
                    http_body_util::Empty<bytes::Bytes>,
                > = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http();
                for i in 0..1250usize {
                    let (auth, status, code) = &kinds[(w * 1250 + i) % kinds.len()];
                    let mut req = http::Request::get(format!("{base}/r/{w}/{i}"));
                    if let Some(a) = auth {
                        req = req.header("authorization", a);
                    }
                    let resp = client
                        .request(req.body(http_body_util::Empty::new()).unwrap())
                        .await
                        .unwrap();
                    assert_eq!(resp.status().as_u16(), *status, "{auth:?}");
                    let body = http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    let text = String::from_utf8_lossy(&body);
                    assert!(text.contains(&format!("\"code\":\"{code}\"")), "{text}");
                    for s in [&valid, &revoked, &expired] {
                        assert!(!text.contains(s.as_str()), "an error body carries a token");
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        seen.heads(),
        served,
        "a refused request reached the upstream"
    );
    let upstream_saw = seen.text.lock().unwrap().clone();
    assert!(!upstream_saw.to_ascii_lowercase().contains("authorization"));
    let metrics = get(&format!("http://{}/metrics", b.admin), &[])
        .await
        .text();
    eventually("the access log ran", || async {
        b.log_text().contains("\"status\":403")
    })
    .await;
    let log = b.log_text();
    for s in &secrets {
        let s = s
            .trim_start_matches("Bearer")
            .trim_start_matches("Basic")
            .trim();
        if s.len() < 8 {
            continue;
        }
        for (what, text) in [
            ("upstream", &upstream_saw),
            ("metrics", &metrics),
            ("log", &log),
        ] {
            assert!(!text.contains(s), "the {what} carries {s}");
        }
    }
}
