//! The admin API: JSON under `/v1`, behind admin bearer tokens, plus `/healthz`,
//! `/readyz` and `/metrics`.
//!
//! A call goes: identify the caller (the configured bootstrap token, or a named admin
//! token looked up in the store, so a token made or revoked on any node counts on
//! every node at its next call) → check its role against the call's class → the
//! resource's handler ([`agents`], [`moves`], [`tokens`], [`identities`]). A mutation
//! is parsed and validated, then committed, applied to the routing table and logged
//! in a task of its own ([`Admin::execute`]) — hyper drops a request's future when its
//! client goes, and a commit must never lose its apply. The answer follows the apply,
//! so a client request that starts after the 200 sees the new state on this node.
//!
//! Owns request parsing and the JSON shapes of answers; never touches SQL, and never
//! logs a token secret. Every error is an [`ApiError`] of one [`error::Code`].

mod agents;
pub mod autoroll;
mod console;
pub mod error;
mod gate;
mod identities;
mod moves;
pub mod openapi;
mod ops;
mod secrets;
mod tokens;

use crate::domain::identity::BOOTSTRAP;
use crate::domain::names::version_label;
use crate::domain::token::hash_token;
use crate::domain::{AgentName, EnvName, Identity, Role, VersionRef};
use crate::envelope::{bearer, error_json, request_id_of};
use crate::routing::RoutingTable;
use crate::store::{Applied, Command, Outcome, Store};
use bytes::Bytes;
use error::{ApiError, Code};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tracing::Instrument;

/// Largest admin request body, bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// Who a caller acts for (a CI job, a person behind a shared tool): kept in history
/// beside the actor, never as the actor.
const ON_BEHALF_OF: &str = "x-switchyard-on-behalf-of";
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Shared state of the admin listener.
pub struct Admin {
    store: Store,
    table: Arc<RoutingTable>,
    bootstrap_hash: [u8; 32],
    ready: Arc<AtomicBool>,
}

pub type AdminResponse = Response<Full<Bytes>>;

/// One authenticated `/v1` call, as the resource handlers see it.
struct Call<'a> {
    method: &'a Method,
    /// The path's segments after `v1`.
    segs: &'a [&'a str],
    path: &'a str,
    query: &'a str,
    who: Identity,
    on_behalf_of: Option<String>,
    body: Bytes,
}

impl Call<'_> {
    /// The answer to a path no handler matched: 405 when the path exists with another
    /// method, 404 otherwise.
    fn unmatched(&self) -> ApiError {
        if known_path(self.segs) {
            ApiError::new(
                Code::MethodNotAllowed,
                format!(
                    "{} is not allowed on {}",
                    self.method,
                    truncate_path(self.path)
                ),
            )
        } else {
            ApiError::not_found(format!("no such endpoint: {}", truncate_path(self.path)))
        }
    }
}

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
            bootstrap_hash: hash_token(admin_token.as_bytes()),
            ready,
        }
    }

    /// Serves one admin request. Never fails: errors become envelopes.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Result<AdminResponse, Infallible>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let request_id = request_id_of(req.headers().get("x-request-id"));
        let rid = request_id.to_str().unwrap_or("-").to_owned();
        let span = tracing::info_span!(
            "admin",
            request_id = %rid,
            method = %req.method(),
            path = truncate_path(req.uri().path()),
            actor = tracing::field::Empty,
        );
        let mut resp = match self.route(req).instrument(span.clone()).await {
            Ok(r) => r,
            Err(e) => {
                let _enter = span.enter();
                if e.status().is_server_error() {
                    tracing::warn!(error.code = e.code_name(), "admin request failed");
                }
                let body = match &e.details {
                    None => error_json(e.code_name(), &e.message, &rid),
                    // rare (a refused gate): a JSON value is fine here
                    Some(d) => Bytes::from(
                        serde_json::json!({"error": {"code": e.code_name(), "message": e.message, "request_id": rid, "details": d}})
                            .to_string(),
                    ),
                };
                let mut r = Response::new(Full::new(body));
                *r.status_mut() = e.status();
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
        let method = req.method().clone();
        if let Some(file) = path.strip_prefix("/ui/") {
            return console::serve(&method, file).ok_or_else(|| {
                ApiError::not_found(format!("no such endpoint: {}", truncate_path(&path)))
            });
        }
        if path == "/ui" {
            // the console's asset URLs are relative to /ui/
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            r.headers_mut()
                .insert(http::header::LOCATION, HeaderValue::from_static("/ui/"));
            return Ok(r);
        }
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match segs.as_slice() {
            ["healthz"] => return ops::healthz(&method),
            ["readyz"] => return ops::readyz(self, &method),
            ["metrics"] => return ops::metrics(self, &method),
            // the contract itself is public: clients are generated from it
            ["v1", "openapi.json"] if method == Method::GET || method == Method::HEAD => {
                static DOC: std::sync::LazyLock<Bytes> = std::sync::LazyLock::new(|| {
                    Bytes::from(serde_json::to_vec(&openapi::document()).unwrap_or_default())
                });
                let mut r = Response::new(Full::new(DOC.clone()));
                r.headers_mut().insert(CONTENT_TYPE, JSON);
                return Ok(r);
            }
            ["v1", rest @ ..] => rest,
            _ => {
                return Err(ApiError::not_found(format!(
                    "no such endpoint: {}",
                    truncate_path(&path)
                )))
            }
        };
        let who = self.identify(&req).await?;
        tracing::Span::current().record("actor", who.name.as_str());
        let needed = required_role(&method, rest);
        if !who.role.allows(needed) {
            return Err(ApiError::new(
                Code::Forbidden,
                format!(
                    "{} {} needs the {} role; {:?} is a {}",
                    method,
                    truncate_path(&path),
                    needed.as_str(),
                    who.name,
                    who.role.as_str()
                ),
            ));
        }
        let on_behalf_of = on_behalf_of(&req)?;
        let body = read_body(req).await?;
        let call = Call {
            method: &method,
            segs: rest,
            path: &path,
            query: &query,
            who,
            on_behalf_of,
            body,
        };
        match rest.first().copied() {
            Some("environments") => agents::environments(self, &call),
            Some("agents") => match rest.get(2).copied() {
                Some("environments") => match rest.get(4).copied() {
                    Some("tokens") => tokens::route(self, &call).await,
                    _ => moves::route(self, &call).await,
                },
                Some("secrets") => secrets::route(self, &call).await,
                _ => agents::route(self, &call).await,
            },
            Some("tokens") => tokens::route(self, &call).await,
            Some("admin-tokens" | "whoami") => identities::route(self, &call).await,
            _ => Err(call.unmatched()),
        }
    }

    /// Who presents the request's bearer token: the bootstrap token (compared in
    /// constant time, both sides hashed so lengths leak nothing), or a named admin
    /// token that the store knows and has not revoked.
    async fn identify<B>(&self, req: &Request<B>) -> Result<Identity, ApiError> {
        let unauthenticated = || {
            ApiError::new(
                Code::Unauthenticated,
                "missing or unknown admin token: send Authorization: Bearer <admin token>",
            )
        };
        let token = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
            .ok_or_else(unauthenticated)?;
        let presented = hash_token(token);
        if bool::from(presented.ct_eq(&self.bootstrap_hash)) {
            return Ok(Identity {
                name: BOOTSTRAP.into(),
                role: Role::Admin,
            });
        }
        // looked up by its hash: the secret itself is never compared or stored
        match self.store.admin_identity(presented).await? {
            Some(t) => Ok(Identity {
                name: t.name,
                role: t.role,
            }),
            None => Err(unauthenticated()),
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
        tokio::spawn(
            async move {
                let applied = store.execute(cmd).await?;
                commit_followers(&table, &applied, &actor);
                Ok::<_, crate::store::Error>(applied)
            }
            .in_current_span(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error.detail = %e, "admin write task failed");
            ApiError::internal("the write task failed; read the state before retrying")
        })?
        .map_err(ApiError::from)
    }
}

/// The role a call needs: every read is a viewer's; admin tokens are an admin's; every
/// other write is a deployer's.
fn required_role(method: &Method, segs: &[&str]) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Viewer
    } else if segs.first() == Some(&"admin-tokens")
        || matches!(segs, ["agents", _, "environments", _, "policy"])
    {
        Role::Admin
    } else {
        Role::Deployer
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
    let revision = applied.revision;
    match &applied.outcome {
        Outcome::Move(m) => tracing::info!(
            actor = %m.actor,
            on_behalf_of = m.on_behalf_of.as_deref().unwrap_or(""),
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
            tracing::info!(actor, agent = %a.name, revision, "agent created")
        }
        Outcome::Version(v) => {
            tracing::info!(actor, agent = %v.agent, version = %v.label(), state = v.state.as_str(), revision, "version written")
        }
        Outcome::Token(t) => {
            tracing::info!(actor, token.id = %t.id, agent = %t.agent, environment = %t.environment, revoked = t.revoked_at.is_some(), revision, "token written")
        }
        Outcome::AdminToken(t) => {
            tracing::info!(actor, admin_token.id = %t.id, admin_token.name = %t.name, role = t.role.as_str(), revoked = t.revoked_at.is_some(), revision, "admin token written")
        }
        Outcome::Policy(p) => {
            tracing::info!(actor, affinity = ?p.session_affinity, auto_rollback = p.auto_rollback.is_some(), revision, "policy written")
        }
        // the name and scope only: a value never reaches a log
        Outcome::Secret(s) => {
            tracing::info!(actor, secret = %s.name, environment = s.environment.as_ref().map_or("*", |e| e.as_str()), revision, "secret set")
        }
        Outcome::Deleted => tracing::info!(actor, revision, "deleted"),
    }
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
            | ["agents", _, "versions", _, "stop" | "start" | "health"]
            | [
                "agents",
                _,
                "environments",
                _,
                "deploy"
                    | "promote"
                    | "rollback"
                    | "undeploy"
                    | "history"
                    | "tokens"
                    | "canary"
                    | "policy"
            ]
            | [
                "agents",
                _,
                "environments",
                _,
                "canary",
                "complete" | "abort"
            ]
            | ["agents", _, "environments", _, "policy", "history"]
            | ["agents", _, "secrets"]
            | ["agents", _, "secrets", _]
            | ["tokens", _]
            | ["tokens", _, "suspend" | "resume"]
            | ["admin-tokens"]
            | ["admin-tokens", _]
            | ["whoami"]
    )
}

fn truncate_path(p: &str) -> &str {
    crate::domain::names::truncate(p, 200)
}

/// `x-switchyard-on-behalf-of`, when sent: 1–128 printable ASCII characters.
fn on_behalf_of<B>(req: &Request<B>) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get(ON_BEHALF_OF) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("");
    let ok =
        !s.is_empty() && s.len() <= 128 && s.bytes().all(|c| c.is_ascii_graphic() || c == b' ');
    if ok {
        Ok(Some(s.to_owned()))
    } else {
        Err(ApiError::bad_request(format!(
            "{ON_BEHALF_OF}: use 1-128 printable ASCII characters"
        )))
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
            Code::BodyTooLarge,
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
        Outcome::AdminToken(t) => json_response(status, t),
        Outcome::Policy(p) => json_response(status, p),
        Outcome::Secret(s) => json_response(status, s),
        Outcome::Deleted => no_content(),
    }
}

/// 201 with a freshly minted token's record and, this once, its secret as `token`.
fn created_with_secret(record: &impl serde::Serialize, secret: String) -> AdminResponse {
    let mut v = serde_json::to_value(record).unwrap_or(serde_json::Value::Null);
    v["token"] = serde_json::Value::String(secret);
    json_response(StatusCode::CREATED, &v)
}

/// The answer when the OS gives no randomness to mint a token from.
fn no_randomness(e: getrandom::Error) -> ApiError {
    tracing::error!(error.detail = %e, "no randomness from the OS");
    ApiError::internal("cannot mint a token")
}

fn no_content() -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_field() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct B {
            #[serde(default)]
            confirm: bool,
        }
        let e = parse_json::<B>(&Bytes::from_static(br#"{"confirm": "yes"}"#)).unwrap_err();
        assert!(e.message.starts_with("confirm:"), "{}", e.message);
        let e = parse_json::<B>(&Bytes::from_static(br#"{"verison": "v1"}"#)).unwrap_err();
        assert!(e.message.contains("verison"), "{}", e.message);
        let e = parse_json::<B>(&Bytes::from_static(b"{not json")).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(parse_json::<B>(&Bytes::from_static(b"  ")).is_ok());
    }

    #[test]
    fn roles_by_call_class() {
        assert_eq!(required_role(&Method::GET, &["admin-tokens"]), Role::Viewer);
        assert_eq!(required_role(&Method::POST, &["admin-tokens"]), Role::Admin);
        assert_eq!(
            required_role(&Method::DELETE, &["admin-tokens", "x"]),
            Role::Admin
        );
        assert_eq!(
            required_role(
                &Method::POST,
                &["agents", "a", "environments", "e", "deploy"]
            ),
            Role::Deployer
        );
        assert_eq!(
            required_role(&Method::DELETE, &["tokens", "x"]),
            Role::Deployer
        );
    }
}
