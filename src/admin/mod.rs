//! The admin API: JSON under `/v1`, behind the admin bearer token, plus `/healthz`,
//! `/readyz` and `/metrics`.
//!
//! A mutation goes: parse and validate the body → the store commits it (with its
//! history row) → the routing table applies the resulting changes → the answer. So a
//! client request that starts after the 200 sees the new state on this node.
//!
//! Owns request parsing and the JSON shapes of answers; never touches SQL, and never
//! logs a token secret.

pub mod error;

use crate::domain::names::version_label;
use crate::domain::token::mint;
use crate::domain::{
    diff, parse_time, AgentName, EnvName, MoveKind, MoveRequest, Pipeline, VersionRef, VersionSpec,
    VersionState,
};
use crate::envelope::{error_json, new_request_id, sane_request_id};
use crate::routing::RoutingTable;
use crate::store::{Applied, Command, Outcome, Store};
use crate::telemetry::render_state;
use bytes::Bytes;
use error::ApiError;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest admin request body, bytes.
pub const MAX_BODY: usize = 1024 * 1024;
/// Default and largest page of history.
pub const HISTORY_PAGE: u32 = 100;
pub const HISTORY_MAX: u32 = 1000;

const ACTOR_HEADER: &str = "x-switchyard-actor";
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Shared state of the admin listener.
pub struct Admin {
    store: Store,
    table: Arc<RoutingTable>,
    token_hash: [u8; 32],
    ready: Arc<AtomicBool>,
}

pub type AdminResponse = Response<Full<Bytes>>;

impl Admin {
    pub fn new(
        store: Store,
        table: Arc<RoutingTable>,
        admin_token: &str,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Self {
            store,
            table,
            token_hash: Sha256::digest(admin_token.as_bytes()).into(),
            ready,
        }
    }

    /// Compares the presented bearer token with the admin token in constant time
    /// (both are hashed first, so lengths leak nothing either).
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(v) = req.headers().get(AUTHORIZATION) else {
            return false;
        };
        let Some(token) = v.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(token).into();
        presented.ct_eq(&self.token_hash).into()
    }

    /// Serves one admin request. Never fails: errors become envelopes.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Result<AdminResponse, Infallible>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let request_id = match req.headers().get("x-request-id") {
            Some(v) if sane_request_id(v) => v.clone(),
            _ => new_request_id(),
        };
        let rid = request_id.to_str().unwrap_or("-").to_owned();
        let mut resp = match self.route(req).await {
            Ok(r) => r,
            Err(e) => {
                if e.status.is_server_error() {
                    tracing::warn!(request_id = %rid, error.code = e.code, "admin request failed");
                }
                let mut r = Response::new(Full::new(error_json(e.code, &e.message, &rid)));
                *r.status_mut() = e.status;
                r.headers_mut().insert(CONTENT_TYPE, JSON);
                r
            }
        };
        resp.headers_mut().insert("x-request-id", request_id);
        Ok(resp)
    }

    async fn route<B>(&self, req: Request<B>) -> Result<AdminResponse, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = req.method().clone();
        match segs.as_slice() {
            ["healthz"] => {
                return only_get(&method)
                    .map(|_| json_response(StatusCode::OK, &json!({"status": "ok"})))
            }
            ["readyz"] => {
                only_get(&method)?;
                return Ok(if self.ready.load(Ordering::Acquire) {
                    json_response(
                        StatusCode::OK,
                        &json!({"status": "ready", "revision": self.table.revision()}),
                    )
                } else {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"status": "loading"}),
                    )
                });
            }
            ["metrics"] => {
                only_get(&method)?;
                let up = if self.store.is_up() { 1.0 } else { 0.0 };
                let [requests, streams, connections] = self.table.metrics().load.gauges();
                let state = render_state(
                    &self.table.deployments(),
                    self.table.revision(),
                    &[
                        requests,
                        streams,
                        connections,
                        (
                            "switchyard_store_up",
                            "Whether the last store operation reached the store (1) or not (0).",
                            up,
                        ),
                        (
                            "switchyard_fleet_applied_revision",
                            "The change-feed revision this node has applied in order.",
                            self.table.feed_revision() as f64,
                        ),
                    ],
                );
                let text = self.table.metrics().render(&state);
                let mut r = Response::new(Full::new(Bytes::from(text)));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                return Ok(r);
            }
            ["v1", ..] => {}
            _ => {
                return Err(ApiError::not_found(format!(
                    "no such endpoint: {}",
                    truncate_path(&path)
                )))
            }
        }
        if !self.authorized(&req) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing or wrong admin token: send Authorization: Bearer <admin token>",
            ));
        }
        let actor = actor(&req)?;
        let body = read_body(req).await?;
        let p = self.store.pipeline().clone();
        match (&method, &segs[1..]) {
            (&Method::GET, ["environments"]) => {
                Ok(json_response(StatusCode::OK, &environments(&p)))
            }
            (&Method::GET, ["agents"]) => {
                let agents = self.store.agents().await?;
                Ok(json_response(StatusCode::OK, &json!({ "agents": agents })))
            }
            (&Method::POST, ["agents"]) => {
                let b: CreateAgentBody = parse_json(&body)?;
                let name = AgentName::parse("name", &b.name)?;
                let applied = self
                    .execute(
                        Command::CreateAgent {
                            name,
                            description: b.description.unwrap_or_default(),
                        },
                        &actor,
                    )
                    .await?;
                Ok(outcome_response(StatusCode::CREATED, applied))
            }
            (&Method::GET, ["agents", a]) => {
                let d = self.store.deployment(agent(a)?).await?;
                let mut envs = serde_json::Map::new();
                let mut traffic = serde_json::Map::new();
                for (env, ptr) in &d.environments {
                    if let Some(slot) = self.table.find_slot(&d.agent.name, env) {
                        traffic.insert(
                            env.to_string(),
                            json!({
                                "requests": slot.requests.load(Ordering::Relaxed),
                                "errors": slot.errors.load(Ordering::Relaxed),
                            }),
                        );
                    }
                    let v = match ptr.version {
                        Some(n) => json!({
                            "version": version_label(n),
                            "since": crate::domain::format_time(ptr.since),
                            "revision": ptr.revision,
                        }),
                        None => Value::Null,
                    };
                    envs.insert(env.to_string(), v);
                }
                Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "name": d.agent.name,
                        "description": d.agent.description,
                        "created_at": crate::domain::format_time(d.agent.created_at),
                        "environments": envs,
                        "traffic": traffic,
                    }),
                ))
            }
            (&Method::GET, ["agents", a, "versions"]) => {
                let versions = self.store.versions(agent(a)?).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "versions": versions }),
                ))
            }
            (&Method::POST, ["agents", a, "versions"]) => {
                let spec: VersionSpec = parse_json(&body)?;
                let applied = self
                    .execute(
                        Command::CreateVersion {
                            agent: agent(a)?,
                            spec,
                            author: actor.clone(),
                        },
                        &actor,
                    )
                    .await?;
                Ok(outcome_response(StatusCode::CREATED, applied))
            }
            (&Method::GET, ["agents", a, "versions", v]) => {
                let version = self.store.version(agent(a)?, version_ref(v)?).await?;
                Ok(json_response(StatusCode::OK, &version))
            }
            (&Method::GET, ["agents", a, "versions", x, "diff", y]) => {
                let a = agent(a)?;
                let from = self.store.version(a.clone(), version_ref(x)?).await?;
                let to = self.store.version(a, version_ref(y)?).await?;
                let changes = diff::diff_versions(&from, &to);
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "from": from.label(), "to": to.label(), "changes": changes }),
                ))
            }
            (&Method::POST, ["agents", a, "versions", v, op @ ("stop" | "start")]) => {
                let state = if *op == "stop" {
                    VersionState::Stopped
                } else {
                    VersionState::Running
                };
                let applied = self
                    .execute(
                        Command::SetVersionState {
                            agent: agent(a)?,
                            version: version_ref(v)?,
                            state,
                        },
                        &actor,
                    )
                    .await?;
                Ok(outcome_response(StatusCode::OK, applied))
            }
            (
                &Method::POST,
                ["agents", a, "environments", e, op @ ("deploy" | "promote" | "rollback" | "undeploy")],
            ) => {
                let req = move_request(op, agent(a)?, env(e)?, &body, actor.clone())?;
                let applied = self.execute(Command::Move(req), &actor).await?;
                Ok(outcome_response(StatusCode::OK, applied))
            }
            (&Method::GET, ["agents", a, "environments", e, "history"]) => {
                let (limit, before) = history_query(&query)?;
                let entries = self
                    .store
                    .history(agent(a)?, env(e)?, limit, before)
                    .await?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "entries": entries }),
                ))
            }
            (&Method::GET, ["agents", a, "environments", e, "tokens"]) => {
                let tokens = self.store.tokens(agent(a)?, env(e)?).await?;
                Ok(json_response(StatusCode::OK, &json!({ "tokens": tokens })))
            }
            (&Method::POST, ["agents", a, "environments", e, "tokens"]) => {
                let b: TokenBody = parse_json(&body)?;
                let expires_at = match &b.expires_at {
                    Some(s) => Some(parse_time(s).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "expires_at: {:?} is not an RFC 3339 time like 2030-01-01T00:00:00Z",
                            crate::domain::names::truncate(s, 60)
                        ))
                    })?),
                    None => None,
                };
                let minted = mint().map_err(|e| {
                    tracing::error!(error.detail = %e, "no randomness from the OS");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "cannot mint a token",
                    )
                })?;
                let applied = self
                    .execute(
                        Command::CreateToken {
                            agent: agent(a)?,
                            environment: env(e)?,
                            name: b.name.unwrap_or_default(),
                            expires_at,
                            id: minted.id,
                            hash: minted.hash,
                        },
                        &actor,
                    )
                    .await?;
                let Outcome::Token(t) = applied.outcome else {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "unexpected outcome",
                    ));
                };
                let mut v = serde_json::to_value(&t).unwrap_or(Value::Null);
                v["token"] = Value::String(minted.secret);
                Ok(json_response(StatusCode::CREATED, &v))
            }
            (&Method::DELETE, ["tokens", id]) => {
                self.execute(
                    Command::RevokeToken {
                        id: (*id).to_owned(),
                    },
                    &actor,
                )
                .await?;
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                Ok(r)
            }
            _ => Err(if known_path(&segs[1..]) {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{method} is not allowed on {}", truncate_path(&path)),
                )
            } else {
                ApiError::not_found(format!("no such endpoint: {}", truncate_path(&path)))
            }),
        }
    }

    /// Commits a command, then applies its changes to the routing table, then logs it
    /// — in a task of its own: hyper drops this request's future when the admin client
    /// goes away, and a commit must never be left without its apply (the node would go
    /// on routing by the old state until a restart).
    async fn execute(&self, cmd: Command, actor: &str) -> Result<Applied, ApiError> {
        let (store, table, actor) = (
            self.store.clone(),
            Arc::clone(&self.table),
            actor.to_owned(),
        );
        tokio::spawn(async move {
            let applied = store.execute(cmd).await?;
            commit_followers(&table, &applied, &actor);
            Ok::<_, crate::store::Error>(applied)
        })
        .await
        .map_err(|e| {
            tracing::error!(error.detail = %e, "admin write task failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the write task failed; read the state before retrying",
            )
        })?
        .map_err(ApiError::from)
    }
}

/// What follows a commit on the node that made it: the routing table, the revision,
/// the move counters and the log line.
fn commit_followers(table: &RoutingTable, applied: &Applied, actor: &str) {
    for c in &applied.changes {
        table.apply(c);
    }
    table.note_revision(applied.revision);
    if let Outcome::Move(m) = &applied.outcome {
        table.metrics().moves[m.action as usize].increment(1);
    }
    match &applied.outcome {
        Outcome::Move(m) => tracing::info!(
            actor = %m.actor,
            action = m.action.as_str(),
            agent = %m.agent,
            environment = %m.environment,
            from = m.previous.map(version_label).as_deref().unwrap_or("-"),
            to = m.version.map(version_label).as_deref().unwrap_or("-"),
            reason = m.reason.as_deref().unwrap_or(""),
            revision = m.revision,
            "pointer moved"
        ),
        Outcome::Agent(a) => {
            tracing::info!(actor, agent = %a.name, revision = applied.revision, "agent created")
        }
        Outcome::Version(v) => {
            tracing::info!(actor, agent = %v.agent, version = %v.label(), state = v.state.as_str(), revision = applied.revision, "version written")
        }
        Outcome::Token(t) => {
            tracing::info!(actor, token.id = %t.id, agent = %t.agent, environment = %t.environment, revoked = t.revoked_at.is_some(), revision = applied.revision, "token written")
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAgentBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    to_version: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    confirm: bool,
    #[serde(default)]
    expected_revision: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// Builds a move request from a body; each action accepts only its own fields.
fn move_request(
    op: &str,
    agent: AgentName,
    environment: EnvName,
    body: &Bytes,
    actor: String,
) -> Result<MoveRequest, ApiError> {
    let b: MoveBody = parse_json(body)?;
    let unexpected = |field: &str| ApiError::bad_request(format!("{field}: not accepted by {op}"));
    let kind = match op {
        "deploy" => {
            if b.to.is_some() {
                return Err(unexpected("to"));
            }
            if b.to_version.is_some() {
                return Err(unexpected("to_version"));
            }
            let v = b
                .version
                .as_deref()
                .ok_or_else(|| ApiError::bad_request("version: missing field `version`"))?;
            MoveKind::Deploy {
                version: VersionRef::parse("version", v)?,
            }
        }
        "promote" => {
            if b.version.is_some() {
                return Err(unexpected("version"));
            }
            if b.to_version.is_some() {
                return Err(unexpected("to_version"));
            }
            MoveKind::Promote {
                to: b
                    .to
                    .as_deref()
                    .map(|t| EnvName::parse("to", t))
                    .transpose()?,
            }
        }
        "rollback" => {
            if b.version.is_some() {
                return Err(unexpected("version"));
            }
            if b.to.is_some() {
                return Err(unexpected("to"));
            }
            MoveKind::Rollback {
                to_version: b
                    .to_version
                    .as_deref()
                    .map(|v| VersionRef::parse("to_version", v))
                    .transpose()?,
            }
        }
        _ => {
            for (field, set) in [
                ("version", b.version.is_some()),
                ("to", b.to.is_some()),
                ("to_version", b.to_version.is_some()),
            ] {
                if set {
                    return Err(unexpected(field));
                }
            }
            MoveKind::Undeploy
        }
    };
    Ok(MoveRequest {
        agent,
        environment,
        kind,
        actor,
        reason: b.reason.filter(|r| !r.is_empty()),
        confirm: b.confirm,
        expected_revision: b.expected_revision,
    })
}

fn environments(p: &Pipeline) -> Value {
    let envs: Vec<Value> = p
        .stages()
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "protected": s.protected,
                "next": p.next(&s.name).map(|n| n.name.to_string()),
            })
        })
        .collect();
    json!({ "environments": envs })
}

fn agent(s: &str) -> Result<AgentName, ApiError> {
    Ok(AgentName::parse("agent", s)?)
}

fn env(s: &str) -> Result<EnvName, ApiError> {
    Ok(EnvName::parse("environment", s)?)
}

fn version_ref(s: &str) -> Result<VersionRef, ApiError> {
    Ok(VersionRef::parse("version", s)?)
}

fn only_get(m: &Method) -> Result<(), ApiError> {
    if m == Method::GET || m == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} is not allowed here; use GET"),
        ))
    }
}

/// Whether a `/v1` path names an endpoint that exists with another method.
fn known_path(segs: &[&str]) -> bool {
    matches!(
        segs,
        ["environments"]
            | ["agents"]
            | ["agents", _]
            | ["agents", _, "versions"]
            | ["agents", _, "versions", _]
            | ["agents", _, "versions", _, "diff", _]
            | ["agents", _, "versions", _, "stop" | "start"]
            | [
                "agents",
                _,
                "environments",
                _,
                "deploy" | "promote" | "rollback" | "undeploy" | "history" | "tokens"
            ]
            | ["tokens", _]
    )
}

fn truncate_path(p: &str) -> &str {
    crate::domain::names::truncate(p, 200)
}

/// The actor recorded with a change: `x-switchyard-actor` if sane, else `admin`.
fn actor<B>(req: &Request<B>) -> Result<String, ApiError> {
    match req.headers().get(ACTOR_HEADER) {
        None => Ok("admin".into()),
        Some(v) => {
            let s = v.to_str().unwrap_or("");
            let ok = !s.is_empty()
                && s.len() <= 128
                && s.bytes().all(|c| c.is_ascii_graphic() || c == b' ');
            if ok {
                Ok(s.to_owned())
            } else {
                Err(ApiError::bad_request(format!(
                    "{ACTOR_HEADER}: use 1-128 printable ASCII characters"
                )))
            }
        }
    }
}

async fn read_body<B>(req: Request<B>) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("admin request bodies are limited to {MAX_BODY} bytes"),
        )),
        Err(_) => Err(ApiError::bad_request("the request body could not be read")),
    }
}

/// Parses a JSON body (an empty body is `{}`); errors name the field.
fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}"
    } else {
        body
    };
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid JSON body: expected a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let syntax = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        if syntax || matches!(path.as_str(), "." | "?" | "") {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })
}

/// `?limit=N&before=REV` of a history request.
fn history_query(q: &str) -> Result<(u32, Option<u64>), ApiError> {
    let mut limit = HISTORY_PAGE;
    let mut before = None;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "limit" => {
                limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=HISTORY_MAX).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit: a number from 1 to {HISTORY_MAX}"))
                    })?
            }
            "before" => {
                before = Some(
                    v.parse::<u64>()
                        .map_err(|_| ApiError::bad_request("before: a revision number"))?,
                )
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {:?}; use limit and before",
                    crate::domain::names::truncate(k, 40)
                )))
            }
        }
    }
    Ok((limit, before))
}

fn json_response(status: StatusCode, v: &impl serde::Serialize) -> AdminResponse {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r
}

fn outcome_response(status: StatusCode, applied: Applied) -> AdminResponse {
    match &applied.outcome {
        Outcome::Agent(a) => json_response(status, a),
        Outcome::Version(v) => json_response(status, v),
        Outcome::Move(m) => json_response(status, m),
        Outcome::Token(t) => json_response(status, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<MoveBody>(&Bytes::from_static(br#"{"confirm": "yes"}"#)).unwrap_err();
        assert!(e.message.starts_with("confirm:"), "{}", e.message);
        let e = parse_json::<MoveBody>(&Bytes::from_static(br#"{"verison": "v1"}"#)).unwrap_err();
        assert!(e.message.contains("verison"), "{}", e.message);
        let e = parse_json::<MoveBody>(&Bytes::from_static(b"{not json")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_json::<MoveBody>(&Bytes::from_static(b"  ")).is_ok());
    }

    #[test]
    fn move_bodies_accept_only_their_fields() {
        let a = AgentName::parse("a", "bot").unwrap();
        let e = EnvName::parse("e", "staging").unwrap();
        let body =
            Bytes::from_static(br#"{"version": "v2", "confirm": true, "expected_revision": 4}"#);
        let r = move_request("deploy", a.clone(), e.clone(), &body, "me".into()).unwrap();
        assert!(r.confirm);
        assert_eq!(r.expected_revision, Some(4));
        assert!(move_request("promote", a.clone(), e.clone(), &body, "me".into()).is_err());
        let missing =
            move_request("deploy", a.clone(), e.clone(), &Bytes::new(), "me".into()).unwrap_err();
        assert!(missing.message.contains("version"));
        let bad = Bytes::from_static(br#"{"to": "Prod"}"#);
        let e2 = move_request("promote", a, e, &bad, "me".into()).unwrap_err();
        assert!(e2.message.starts_with("to:"), "{}", e2.message);
    }

    #[test]
    fn history_query_bounds() {
        assert_eq!(history_query("").unwrap(), (HISTORY_PAGE, None));
        assert_eq!(history_query("limit=5&before=9").unwrap(), (5, Some(9)));
        assert!(history_query("limit=0").is_err());
        assert!(history_query("limit=100000").is_err());
        assert!(history_query("x=1").is_err());
    }
}
