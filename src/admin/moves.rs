//! Pointer moves — deploy, promote, rollback, undeploy — and an environment's history.

use super::error::ApiError;
use super::{agent, env, json_response, outcome_response, parse_json, Admin, AdminResponse, Call};
use crate::domain::names::version_label;
use crate::domain::{AgentName, EnvName, MoveKind, MoveRequest, VersionRef};
use crate::store::Command;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

/// Default and largest page of history.
pub const HISTORY_PAGE: u32 = 100;
pub const HISTORY_MAX: u32 = 1000;

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
    #[serde(default)]
    force: bool,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    weight: Option<f64>,
}

/// `/v1/agents/{agent}/environments/{env}/{deploy|promote|rollback|undeploy|history}`.
pub(super) async fn route(admin: &Admin, c: &Call<'_>) -> Result<AdminResponse, ApiError> {
    match (c.method, c.segs) {
        (
            &Method::POST,
            ["agents", a, "environments", e, "canary", op @ ("complete" | "abort")],
        ) => {
            let op = if *op == "complete" {
                "canary/complete"
            } else {
                "canary/abort"
            };
            make_move(admin, c, op, a, e).await
        }
        (
            &Method::POST,
            ["agents", a, "environments", e, op @ ("deploy" | "promote" | "rollback" | "undeploy" | "canary")],
        ) => make_move(admin, c, op, a, e).await,
        (&Method::GET, ["agents", a, "environments", e, "policy"]) => {
            let p = admin.store.policy(agent(a)?, env(e)?).await?;
            Ok(json_response(StatusCode::OK, &p))
        }
        (&Method::PUT, ["agents", a, "environments", e, "policy"]) => {
            let patch: crate::domain::PolicyPatch = parse_json(&c.body)?;
            let cmd = Command::SetPolicy {
                agent: agent(a)?,
                environment: env(e)?,
                patch,
                actor: c.who.name.clone(),
            };
            let applied = admin.execute(cmd, &c.who.name).await?;
            Ok(outcome_response(StatusCode::OK, applied))
        }
        (&Method::GET, ["agents", a, "environments", e, "policy", "history"]) => {
            let (limit, _) = history_query(c.query)?;
            let entries = admin
                .store
                .policy_history(agent(a)?, env(e)?, limit)
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "entries": entries }),
            ))
        }
        (&Method::GET, ["agents", a, "environments", e, "history"]) => {
            let (limit, before) = history_query(c.query)?;
            let entries = admin
                .store
                .history(agent(a)?, env(e)?, limit, before)
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "entries": entries }),
            ))
        }
        _ => Err(c.unmatched()),
    }
}

/// One move: its plan when `dry_run`, else the gate (deploy, promote, a canary's
/// start) and the commit.
async fn make_move(
    admin: &Admin,
    c: &Call<'_>,
    op: &str,
    a: &str,
    e: &str,
) -> Result<AdminResponse, ApiError> {
    let (mut req, dry_run) = move_request(op, agent(a)?, env(e)?, &c.body, c.who.name.clone())?;
    req.on_behalf_of = c.on_behalf_of.clone();
    if dry_run {
        return plan(admin, req).await;
    }
    if !req.force {
        // deploy, promote and a canary's start: the candidate answers
        // first (a rollback is never held up by a probe)
        if let Some(v) = super::gate::candidate(admin, &req).await? {
            if !v.inject.is_empty() {
                // unset secrets refuse the move before any probe is made
                let plan = admin.store.plan_move(req.clone()).await?;
                if let Some(
                    e @ crate::store::Error::Domain(crate::domain::DomainError::MissingSecret {
                        ..
                    }),
                ) = plan.refusal
                {
                    return Err(e.into());
                }
            }
            super::gate::check(&admin.table, &v).await?;
            req.expect_version = Some(v.number);
        }
    }
    let span = tracing::info_span!("move", action = op, agent = %req.agent, environment = %req.environment);
    let applied = admin
        .execute(Command::Move(req), &c.who.name)
        .instrument(span)
        .await?;
    if op == "rollback" {
        if let crate::store::Outcome::Move(m) = &applied.outcome {
            return Ok(rollback_answer(admin, m).await);
        }
    }
    Ok(outcome_response(StatusCode::OK, applied))
}

/// A rollback's answer: the move and, since no probe held it up, the target's last
/// known health on this node (left out if the version cannot be read back now).
async fn rollback_answer(admin: &Admin, m: &crate::domain::Move) -> super::AdminResponse {
    let mut v = serde_json::to_value(m).unwrap_or(serde_json::Value::Null);
    if let Some(n) = m.version {
        let r = VersionRef {
            agent: None,
            number: n,
        };
        if let Ok(version) = admin.store.version(m.agent.clone(), r).await {
            v["health"] = super::agents::version_health(&admin.table, &version)["endpoints"].take();
        }
    }
    json_response(StatusCode::OK, &v)
}

/// A move's dry run: what it would do and whether it would be allowed, with nothing
/// changed (no revision, no history, no swap). The gate's probe runs and is awaited
/// here, so nothing is left running; a refusal the real move would give is reported
/// as `allowed: false` with that refusal, still 200.
async fn plan(admin: &Admin, req: MoveRequest) -> Result<super::AdminResponse, ApiError> {
    let plan = admin.store.plan_move(req.clone()).await?;
    let mut refusal = plan.refusal.map(ApiError::from);
    let gated = req.kind.is_gated() && plan.action != crate::domain::Action::CanaryWeight;
    let candidate_health = match plan.to {
        Some(_) if gated && req.force => json!({"skipped": "force"}),
        Some(n) if gated => {
            let r = VersionRef {
                agent: None,
                number: n,
            };
            let v = admin.store.version(req.agent.clone(), r).await?;
            let probed = super::gate::probe_all(&admin.table, &v).await;
            let shown = probed.to_json();
            if let Err(e) = super::gate::refusal(&v, probed) {
                refusal.get_or_insert(e);
            }
            shown
        }
        _ => serde_json::Value::Null,
    };
    let label = |n: Option<u32>| n.map(version_label);
    let body = json!({
        "dry_run": true,
        "plan": {
            "action": plan.action.as_str(),
            "environment": plan.environment.name.as_str(),
            "from": label(plan.from),
            "to": label(plan.to),
            "revision": plan.revision,
            "allowed": refusal.is_none(),
            "refusal": refusal.as_ref().map(|e| json!({
                "status": e.status().as_u16(),
                "code": e.code_name(),
                "message": e.message,
            })),
            "checks": {
                "confirmation_required": plan.environment.protected,
                "candidate_health": candidate_health,
                "missing_secrets": plan.missing_secrets,
                "canary": {
                    "before": plan.canary_before.map(|c| canary_json(&c)),
                    "after": plan.canary_after.map(|c| canary_json(&c)),
                },
                "releases_pins": !plan.releases.is_empty(),
            },
        },
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// A canary as answers show it: `{"version","weight","since"}`.
pub(super) fn canary_json(c: &crate::domain::Canary) -> serde_json::Value {
    json!({
        "version": version_label(c.version),
        "weight": crate::domain::release::weight_percent(c.weight),
        "since": (c.since > 0).then(|| crate::domain::format_time(c.since)),
    })
}

/// Builds a move request from a body; each action accepts only its own fields. The
/// second value: whether only its plan is asked for (`dry_run`).
fn move_request(
    op: &str,
    agent: AgentName,
    environment: EnvName,
    body: &Bytes,
    actor: String,
) -> Result<(MoveRequest, bool), ApiError> {
    let b: MoveBody = parse_json(body)?;
    let unexpected = |field: &str| ApiError::bad_request(format!("{field}: not accepted by {op}"));
    let refuse = |fields: &[(&str, bool)]| match fields.iter().find(|(_, set)| *set) {
        Some((f, _)) => Err(unexpected(f)),
        None => Ok(()),
    };
    if op != "canary" {
        refuse(&[("weight", b.weight.is_some())])?;
    }
    let kind = match op {
        "canary" => {
            refuse(&[
                ("to", b.to.is_some()),
                ("to_version", b.to_version.is_some()),
            ])?;
            let v = required_version(&b)?;
            let w = b
                .weight
                .ok_or_else(|| ApiError::bad_request("weight: missing field `weight`"))?;
            MoveKind::Canary {
                version: v,
                weight: crate::domain::release::parse_weight("weight", w)?,
            }
        }
        "canary/complete" | "canary/abort" => {
            refuse(&[
                ("version", b.version.is_some()),
                ("to", b.to.is_some()),
                ("to_version", b.to_version.is_some()),
                ("force", b.force && op == "canary/abort"),
            ])?;
            if op == "canary/complete" {
                MoveKind::CanaryComplete
            } else {
                MoveKind::CanaryAbort
            }
        }
        "deploy" => {
            refuse(&[
                ("to", b.to.is_some()),
                ("to_version", b.to_version.is_some()),
            ])?;
            let v = required_version(&b)?;
            MoveKind::Deploy { version: v }
        }
        "promote" => {
            refuse(&[
                ("version", b.version.is_some()),
                ("to_version", b.to_version.is_some()),
            ])?;
            MoveKind::Promote {
                to: b
                    .to
                    .as_deref()
                    .map(|t| EnvName::parse("to", t))
                    .transpose()?,
            }
        }
        "rollback" => {
            refuse(&[
                ("version", b.version.is_some()),
                ("to", b.to.is_some()),
                ("force", b.force),
            ])?;
            MoveKind::Rollback {
                to_version: b
                    .to_version
                    .as_deref()
                    .map(|v| VersionRef::parse("to_version", v))
                    .transpose()?,
            }
        }
        _ => {
            refuse(&[
                ("version", b.version.is_some()),
                ("to", b.to.is_some()),
                ("to_version", b.to_version.is_some()),
                ("force", b.force),
            ])?;
            MoveKind::Undeploy
        }
    };
    let req = MoveRequest {
        agent,
        environment,
        kind,
        actor,
        on_behalf_of: None,
        reason: b.reason.filter(|r| !r.is_empty()),
        confirm: b.confirm,
        expected_revision: b.expected_revision,
        force: b.force,
        expect_version: None,
    };
    Ok((req, b.dry_run))
}

/// `?limit=N&before=REV` of a history request.
/// The body's `version`, which the move needs.
fn required_version(b: &MoveBody) -> Result<VersionRef, ApiError> {
    let v = b
        .version
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("version: missing field `version`"))?;
    Ok(VersionRef::parse("version", v)?)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_bodies_accept_only_their_fields() {
        let a = AgentName::parse("a", "bot").unwrap();
        let e = EnvName::parse("e", "staging").unwrap();
        let body = Bytes::from_static(
            br#"{"version": "v2", "confirm": true, "expected_revision": 4, "dry_run": true}"#,
        );
        let (r, dry_run) =
            move_request("deploy", a.clone(), e.clone(), &body, "me".into()).unwrap();
        assert!(r.confirm && dry_run);
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
