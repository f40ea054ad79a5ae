//! Agents, their immutable versions, the diff of two versions, stop/start, the
//! deployment snapshot, and the pipeline.

use super::error::ApiError;
use super::{
    agent, json_response, outcome_response, parse_json, version_ref, Admin, AdminResponse, Call,
};
use crate::domain::names::version_label;
use crate::domain::{diff, format_time, AgentName, Pipeline, VersionSpec, VersionState};
use crate::store::Command;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAgentBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

/// `GET /v1/environments`: the pipeline in order.
pub(super) fn environments(admin: &Admin, c: &Call<'_>) -> Result<AdminResponse, ApiError> {
    match (c.method, c.segs) {
        (&Method::GET, ["environments"]) => Ok(json_response(
            StatusCode::OK,
            &pipeline_json(admin.store.pipeline()),
        )),
        _ => Err(c.unmatched()),
    }
}

fn pipeline_json(p: &Pipeline) -> Value {
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

/// `/v1/agents…` except environments' moves and tokens.
pub(super) async fn route(admin: &Admin, c: &Call<'_>) -> Result<AdminResponse, ApiError> {
    match (c.method, c.segs) {
        (&Method::GET, ["agents"]) => {
            let agents = admin.store.agents().await?;
            Ok(json_response(StatusCode::OK, &json!({ "agents": agents })))
        }
        (&Method::POST, ["agents"]) => {
            let b: CreateAgentBody = parse_json(&c.body)?;
            let name = AgentName::parse("name", &b.name)?;
            let cmd = Command::CreateAgent {
                name,
                description: b.description.unwrap_or_default(),
            };
            let applied = admin.execute(cmd, &c.who.name).await?;
            Ok(outcome_response(StatusCode::CREATED, applied))
        }
        (&Method::GET, ["agents", a]) => snapshot(admin, agent(a)?).await,
        (&Method::GET, ["agents", a, "versions"]) => {
            let versions = admin.store.versions(agent(a)?).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "versions": versions }),
            ))
        }
        (&Method::POST, ["agents", a, "versions"]) => {
            let spec: VersionSpec = parse_json(&c.body)?;
            let cmd = Command::CreateVersion {
                agent: agent(a)?,
                spec,
                author: c.who.name.clone(),
            };
            let applied = admin.execute(cmd, &c.who.name).await?;
            Ok(outcome_response(StatusCode::CREATED, applied))
        }
        (&Method::GET, ["agents", a, "versions", v]) => {
            let version = admin.store.version(agent(a)?, version_ref(v)?).await?;
            Ok(json_response(StatusCode::OK, &version))
        }
        (&Method::GET, ["agents", a, "versions", v, "health"]) => {
            let version = admin.store.version(agent(a)?, version_ref(v)?).await?;
            Ok(json_response(
                StatusCode::OK,
                &version_health(&admin.table, &version),
            ))
        }
        (&Method::GET, ["agents", a, "versions", x, "diff", y]) => {
            let a = agent(a)?;
            let from = admin.store.version(a.clone(), version_ref(x)?).await?;
            let to = admin.store.version(a, version_ref(y)?).await?;
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
            let cmd = Command::SetVersionState {
                agent: agent(a)?,
                version: version_ref(v)?,
                state,
            };
            let applied = admin.execute(cmd, &c.who.name).await?;
            Ok(outcome_response(StatusCode::OK, applied))
        }
        _ => Err(c.unmatched()),
    }
}

/// `GET /v1/agents/{agent}`: which version is live in each environment, since when,
/// and this node's request counters per environment.
async fn snapshot(admin: &Admin, name: AgentName) -> Result<AdminResponse, ApiError> {
    let d = admin.store.deployment(name).await?;
    let mut envs = serde_json::Map::new();
    let mut traffic = serde_json::Map::new();
    let mut endpoints = serde_json::Map::new();
    let now = crate::domain::now_ms();
    for (env, ptr) in &d.environments {
        if let Some(slot) = admin.table.find_slot(&d.agent.name, env) {
            traffic.insert(
                env.to_string(),
                json!({
                    "requests": slot.requests.load(Ordering::Relaxed),
                    "errors": slot.errors.load(Ordering::Relaxed),
                }),
            );
            // this node's view of the live version's endpoints, by state
            if let Some(t) = slot.route().target.as_ref() {
                let mut by_state = serde_json::Map::new();
                for ep in &t.endpoints {
                    let k = ep.state.state(now).as_str();
                    let n = by_state.get(k).and_then(Value::as_u64).unwrap_or(0);
                    by_state.insert(k.to_owned(), json!(n + 1));
                }
                by_state.insert("total".into(), json!(t.endpoints.len()));
                endpoints.insert(env.to_string(), Value::Object(by_state));
            }
        }
        let bake = admin
            .table
            .find_slot(&d.agent.name, env)
            .and_then(|s| s.route().bake.clone())
            .filter(|b| b.active(now))
            .map(|b| {
                let w = b.window(now);
                json!({
                    "version": version_label(b.version),
                    "canary": b.canary,
                    "until": format_time(b.until),
                    "window": {"seconds": b.spec.window_s, "requests": w.requests, "errors": w.errors},
                })
            });
        let v = match ptr.version {
            Some(n) => json!({
                "version": version_label(n),
                "since": format_time(ptr.since),
                "revision": ptr.revision,
                "canary": ptr.canary.map(|c| super::moves::canary_json(&c)),
                "bake": bake,
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
            "created_at": format_time(d.agent.created_at),
            "environments": envs,
            "traffic": traffic,
            "endpoints": endpoints,
        }),
    ))
}

/// This node's view of a version's endpoints (`GET …/versions/{v}/health`).
pub(super) fn version_health(
    table: &crate::routing::RoutingTable,
    version: &crate::domain::Version,
) -> serde_json::Value {
    let now = crate::domain::now_ms();
    let states = table.endpoint_states(&version.agent, &version.label(), &version.upstreams);
    let endpoints: Vec<_> = version
        .upstreams
        .iter()
        .zip(states)
        .map(|(url, s)| match s {
            Some(s) => json!({
                "url": url,
                "state": s.state(now).as_str(),
                "checked_at": s.checked_at().map(crate::domain::format_time),
                "last_error": s.last_error(),
                "consecutive_failures": s.consecutive_failures(),
                "outstanding": s.outstanding(),
            }),
            None => json!({
                "url": url,
                "state": "unknown",
                "checked_at": null,
                "last_error": null,
                "consecutive_failures": 0,
                "outstanding": 0,
            }),
        })
        .collect();
    json!({ "version": version.label(), "endpoints": endpoints })
}
