//! The bundled demo: two small upstreams on loopback that say which version they
//! are (and can stream), and a demo agent whose production runs v2 with v1 behind it,
//! so a newcomer sees a rollback change the answer.

use crate::domain::token::mint;
use crate::domain::{AgentName, EnvName, MoveKind, MoveRequest, VersionRef, VersionSpec};
use crate::store::{Command, Error, Outcome, Store};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub const DEMO_AGENT: &str = "demo-agent";
pub const DEMO_ENV: &str = "production";

/// A response body fed from a channel: what the demo streams with.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

async fn answer(label: &'static str, req: Request<Incoming>) -> Response<ChannelBody> {
    let (tx, rx) = mpsc::channel(4);
    let mut resp = Response::new(ChannelBody(rx));
    if req.uri().path() == "/stream" {
        resp.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("text/event-stream"),
        );
        tokio::spawn(async move {
            for n in 1..=5 {
                let ev = format!("data: {{\"version\":\"{label}\",\"event\":{n}}}\n\n");
                if tx.send(Bytes::from(ev)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    } else {
        resp.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        let body = serde_json::json!({
            "agent": DEMO_AGENT,
            "version": label,
            "message": format!("hello from {DEMO_AGENT} {label}"),
            "path": req.uri().path(),
            "environment": req.headers().get("x-switchyard-environment").and_then(|v| v.to_str().ok()),
        });
        let _ = tx.try_send(Bytes::from(format!("{body}\n")));
        *resp.status_mut() = StatusCode::OK;
    }
    resp
}

/// Serves a demo upstream on `listener` that answers as version `label`.
pub fn spawn_upstream(listener: TcpListener, label: &'static str) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                let svc =
                    service_fn(
                        move |req| async move { Ok::<_, Infallible>(answer(label, req).await) },
                    );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// Creates the demo agent on first start (v1 and v2 on the two demo ports, production
/// moved to v1 then v2) and mints a fresh production token. Returns the token.
/// Starts the two demo upstreams on loopback `ports` and seeds the store; returns a
/// production token. Errors name the setting.
pub async fn start(store: &Store, ports: [u16; 2]) -> anyhow::Result<String> {
    use anyhow::Context;
    for (port, label) in [(ports[0], "v1"), (ports[1], "v2")] {
        let l = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("demo.ports: cannot listen on 127.0.0.1:{port}"))?;
        spawn_upstream(l, label);
    }
    Ok(seed(store, ports).await?)
}

pub async fn seed(store: &Store, ports: [u16; 2]) -> Result<String, Error> {
    let agent = AgentName::parse("agent", DEMO_AGENT)?;
    let env = EnvName::parse("environment", DEMO_ENV)?;
    let actor = "demo".to_string();
    let fresh = match store
        .execute(Command::CreateAgent {
            name: agent.clone(),
            description: "the bundled demo agent".into(),
        })
        .await
    {
        Ok(_) => true,
        Err(Error::Domain(crate::domain::DomainError::AgentExists(_))) => false,
        Err(e) => return Err(e),
    };
    if fresh {
        for (i, port) in ports.iter().enumerate() {
            let spec = VersionSpec {
                upstreams: vec![format!("http://127.0.0.1:{port}")],
                config: Some(serde_json::json!({
                    "model": if i == 0 { "demo-small" } else { "demo-large" },
                    "temperature": 0.2,
                })),
                description: Some(format!("demo version {}", i + 1)),
                ..Default::default()
            };
            store
                .execute(Command::CreateVersion {
                    agent: agent.clone(),
                    spec,
                    author: actor.clone(),
                })
                .await?;
        }
        for n in [1, 2] {
            store
                .execute(Command::Move(MoveRequest {
                    agent: agent.clone(),
                    environment: env.clone(),
                    kind: MoveKind::Deploy {
                        version: VersionRef {
                            agent: None,
                            number: n,
                        },
                    },
                    actor: actor.clone(),
                    on_behalf_of: None,
                    reason: Some("demo setup".into()),
                    confirm: true,
                    expected_revision: None,
                    force: false,
                    expect_version: None,
                }))
                .await?;
        }
    }
    let minted = mint().map_err(|e| Error::Backend(format!("no randomness: {e}")))?;
    let applied = store
        .execute(Command::CreateToken {
            scopes: vec![],
            created_by: "demo".into(),
            agent,
            environment: env,
            name: "demo".into(),
            expires_at: None,
            id: minted.id,
            hash: minted.hash,
        })
        .await?;
    match applied.outcome {
        Outcome::Token(_) => Ok(minted.secret),
        _ => Err(Error::Backend("unexpected outcome".into())),
    }
}
