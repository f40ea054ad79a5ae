//! Streams across moves: an SSE stream or a WebSocket open on a version that a move
//! takes out of the environment goes on for the environment's `stream_drain_s`, then
//! ends with the hint — between events, between frames — naming the version now live.
//! Streams on the version that stays are untouched. (SIGTERM: `process.rs`.)

use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An SSE upstream: events `data: <label>:<n>:xxx…` of `size` bytes each (before the
/// blank line), each written in `piece`-byte chunks `gap` apart, until the client goes.
pub(crate) async fn sse_upstream(
    label: &'static str,
    size: usize,
    piece: usize,
    gap: Duration,
) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for n in 0u64.. {
                    let mut event = format!("data: {label}:{n}:");
                    while event.len() < size {
                        event.push('x');
                    }
                    event.push_str("\n\n");
                    for p in event.as_bytes().chunks(piece) {
                        let mut chunk = format!("{:x}\r\n", p.len()).into_bytes();
                        chunk.extend_from_slice(p);
                        chunk.extend_from_slice(b"\r\n");
                        if s.write_all(&chunk).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(gap).await;
                    }
                }
            });
        }
    });
    up
}

/// Opens an SSE stream through the gateway and reads it to its end (at most `limit`):
/// the text received and when it ended.
fn read_stream(
    url: String,
    token: String,
    limit: Duration,
) -> tokio::task::JoinHandle<(String, Instant)> {
    tokio::spawn(async move {
        let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let req = http::Request::get(url)
            .header("authorization", bearer(&token))
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut text = Vec::new();
        let stop = tokio::time::sleep(limit);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                f = body.frame() => match f {
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            text.extend_from_slice(d);
                        }
                    }
                    _ => break,
                },
                _ = &mut stop => break,
            }
        }
        (String::from_utf8(text).unwrap(), Instant::now())
    })
}

/// The events of a stream's text, each checked whole: `<label>:<n>:` then `x` up to
/// `size`; the hint, if any, is returned apart and must be last.
fn events(text: &str, size: usize) -> (Vec<String>, Option<serde_json::Value>) {
    assert!(text.ends_with("\n\n"), "the stream ends between events");
    let mut seen = Vec::new();
    let mut hint = None;
    for e in text.trim_end_matches("\n\n").split("\n\n") {
        assert!(hint.is_none(), "nothing follows the hint: {e:.80}");
        if let Some(rest) = e.strip_prefix("event: switchyard-reconnect\ndata: ") {
            hint = Some(serde_json::from_str(rest).unwrap());
            continue;
        }
        let data = e
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("an event: {e:.80}"));
        assert_eq!(
            data.len() + "data: ".len(),
            size,
            "a whole event: {:.80}",
            data
        );
        let mut parts = data.splitn(3, ':');
        let label = parts.next().unwrap().to_owned();
        parts.next().unwrap().parse::<u64>().unwrap();
        assert!(parts.next().unwrap().bytes().all(|b| b == b'x'));
        seen.push(label);
    }
    (seen, hint)
}

async fn set_drain(g: &TestGateway, env: &str, secs: u32) {
    let (s, b) = g
        .admin(
            http::Method::PUT,
            &format!("/v1/agents/bot/environments/{env}/policy"),
            Some(json!({"stream_drain_s": secs})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn metric(g: &TestGateway, needle: &str) -> bool {
    get(&format!("http://{}/metrics", g.admin), &[])
        .await
        .text()
        .contains(needle)
}

#[tokio::test]
async fn an_sse_stream_ends_with_the_hint_after_the_drain_and_others_are_untouched() {
    let g = TestGateway::start().await;
    let v1 = sse_upstream("v1", 64, 64, Duration::from_millis(20)).await;
    let v2 = sse_upstream("v2", 64, 64, Duration::from_millis(20)).await;
    g.agent_with_versions("bot", &[v1, v2]).await;
    g.deploy("bot", "staging", "v1").await;
    g.deploy("bot", "production", "v1").await;
    set_drain(&g, "staging", 1).await;
    let (staging, _) = g.token("bot", "staging").await;
    let (production, _) = g.token("bot", "production").await;
    let moving = read_stream(g.url("/events"), staging.clone(), Duration::from_secs(10));
    let staying = read_stream(g.url("/events"), production, Duration::from_millis(2500));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let moved = Instant::now();
    g.deploy("bot", "staging", "v2").await;
    let (text, ended) = moving.await.unwrap();
    let after = ended - moved;
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_secs(3),
        "ended {after:?} after the move"
    );
    let (labels, hint) = events(&text, 64);
    assert!(
        labels.len() > 20 && labels.iter().all(|l| l == "v1"),
        "{labels:?}"
    );
    assert_eq!(hint, Some(json!({"reason": "redeploy", "version": "v2"})));

    // production's stream on v1 went on, with no hint, until the client stopped
    let (text, _) = staying.await.unwrap();
    let complete = &text[..text.rfind("\n\n").unwrap() + 2];
    let (labels, hint) = events(complete, 64);
    assert!(hint.is_none());
    assert!(labels.len() > 30, "{} events", labels.len());
    // a new stream in staging is on v2 and stays so across a move that keeps it
    let fresh = read_stream(g.url("/events"), staging, Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(200)).await;
    set_drain(&g, "staging", 0).await; // a route change that moves nothing
    let (text, _) = fresh.await.unwrap();
    assert!(!text.contains("switchyard-reconnect"));
    assert!(text.starts_with("data: v2:"));
    assert!(metric(&g, "switchyard_streams_ended_total{reason=\"redeploy\"} 1").await);
    g.stop().await;
}

/// Events of 256 KiB written in 16 KiB pieces 5 ms apart: the drain deadline falls
/// inside one, and the hint waits for its end.
#[tokio::test]
async fn an_event_larger_than_a_read_is_never_split_by_the_hint() {
    const SIZE: usize = 256 * 1024;
    let g = TestGateway::start().await;
    let v1 = sse_upstream("v1", SIZE, 16 * 1024, Duration::from_millis(5)).await;
    let v2 = sse_upstream("v2", 64, 64, Duration::from_millis(20)).await;
    g.agent_with_versions("bot", &[v1, v2]).await;
    g.deploy("bot", "staging", "v1").await;
    set_drain(&g, "staging", 1).await;
    let (token, _) = g.token("bot", "staging").await;
    for _ in 0..3 {
        let stream = read_stream(g.url("/events"), token.clone(), Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(150)).await;
        g.deploy("bot", "staging", "v2").await;
        let (text, _) = stream.await.unwrap();
        let (labels, hint) = events(&text, SIZE);
        assert!(!labels.is_empty());
        assert_eq!(hint.unwrap()["version"], "v2");
        g.deploy("bot", "staging", "v1").await;
    }
    g.stop().await;
}

/// A WebSocket upstream that alternates a text message and a 100 KiB binary frame,
/// the frame written raw in 8 KiB pieces 10 ms apart (so a frame is usually in flight).
async fn chatty_websocket() -> SocketAddr {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                for n in 0u64.. {
                    if ws.send(Message::text(format!("tick {n}"))).await.is_err() {
                        return;
                    }
                    let mut frame = vec![0x82, 127];
                    frame.extend_from_slice(&(100u64 * 1024).to_be_bytes());
                    frame.extend(std::iter::repeat_n(n as u8, 100 * 1024));
                    for piece in frame.chunks(8 * 1024) {
                        if ws.get_mut().write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            });
        }
    });
    up
}

#[tokio::test]
async fn a_websocket_across_a_rollback_gets_close_1012() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let g = TestGateway::start().await;
    let v1 = chatty_websocket().await;
    let v2 = chatty_websocket().await;
    g.agent_with_versions("bot", &[v1, v2]).await;
    g.deploy("bot", "staging", "v1").await;
    g.deploy("bot", "staging", "v2").await;
    set_drain(&g, "staging", 1).await;
    let (token, _) = g.token("bot", "staging").await;
    for round in 0..3 {
        let mut req = format!("ws://{}/socket", g.client)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", bearer(&token).parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300 + 37 * round)).await;
        let moved = Instant::now();
        let (s, b) = if round % 2 == 0 {
            g.post("/v1/agents/bot/environments/staging/rollback", json!({}))
                .await
        } else {
            g.post(
                "/v1/agents/bot/environments/staging/deploy",
                json!({"version": "v2", "force": true}),
            )
            .await
        };
        assert_eq!(s, 200, "{b}");
        let (mut texts, mut binaries) = (0, 0);
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => texts += 1,
                Ok(Some(Ok(Message::Binary(b)))) => {
                    assert_eq!(b.len(), 100 * 1024, "a whole frame");
                    binaries += 1;
                }
                Ok(Some(Ok(Message::Close(c)))) => break c,
                other => panic!("{other:?} before a close frame"),
            }
        };
        let after = moved.elapsed();
        let close = close.expect("a close frame with a code");
        assert_eq!(close.code, CloseCode::Restart); // 1012
        assert_eq!(close.reason.as_str(), "redeploy");
        assert!(
            after >= Duration::from_millis(950),
            "closed {after:?} after the move"
        );
        assert!(
            texts >= 5 && binaries >= 5,
            "{texts} texts, {binaries} binaries"
        );
    }
    // counted by the relay task just after it writes the close frame, which the client
    // can read first
    eventually("three streams counted as ended by redeploy", || {
        metric(&g, "switchyard_streams_ended_total{reason=\"redeploy\"} 3")
    })
    .await;
    g.stop().await;
}

/// Sticky sessions keep a conversation on its version across a forward deploy: its
/// stream is untouched; a rollback releases the version and ends it.
#[tokio::test]
async fn sticky_streams_stay_across_a_forward_deploy_and_end_at_a_rollback() {
    let g = TestGateway::start().await;
    let v1 = sse_upstream("v1", 64, 64, Duration::from_millis(20)).await;
    let v2 = sse_upstream("v2", 64, 64, Duration::from_millis(20)).await;
    g.agent_with_versions("bot", &[v1, v2]).await;
    g.deploy("bot", "staging", "v1").await;
    let (s, b) = g
        .admin(
            http::Method::PUT,
            "/v1/agents/bot/environments/staging/policy",
            Some(json!({"session_affinity": "sticky", "stream_drain_s": 0})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (token, _) = g.token("bot", "staging").await;
    let stream = read_stream(g.url("/events"), token, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(200)).await;
    g.deploy("bot", "staging", "v2").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !stream.is_finished(),
        "a forward deploy keeps a sticky stream"
    );
    let (s, b) = g
        .post("/v1/agents/bot/environments/staging/rollback", json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    // rolled back to v1: v2 is released, but the stream is on v1, which stays
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!stream.is_finished(), "the stream's version did not leave");
    g.deploy("bot", "staging", "v2").await;
    let (s, _) = g
        .post("/v1/agents/bot/environments/staging/rollback", json!({}))
        .await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stream.is_finished());
    // an undeploy releases every version
    let (s, b) = g
        .post(
            "/v1/agents/bot/environments/staging/undeploy",
            json!({"confirm": true}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (text, _) = stream.await.unwrap();
    let (_, hint) = events(&text, 64);
    assert_eq!(hint, Some(json!({"reason": "redeploy", "version": null})));
    g.stop().await;
}
