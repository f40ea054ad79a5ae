//! Pointer moves (deploy, promote, rollback, undeploy), status and history.

use super::http::AdminClient;
use super::output::{cell, print_json, show, table};
use super::output::{confirm, move_line};
use super::{ClientCmd, ClientOpts};
use anyhow::{anyhow, bail, Result};
use http::Method;
use serde_json::{json, Value};

const GROUP: &str = "move";

/// `deploy`, `promote`, `rollback`, `undeploy`, `status`, `history`.
pub(super) async fn run(cmd: ClientCmd, c: &ClientOpts, api: &AdminClient) -> Result<()> {
    match cmd {
        ClientCmd::Deploy {
            ref agent,
            ref environment,
            ref version,
            ref reason,
            expected_revision,
            force,
            dry_run,
            ..
        } => {
            let mut body = with_common(
                json!({"version": version}),
                reason,
                expected_revision,
                dry_run,
            );
            if force {
                body["force"] = json!(true);
            }
            let m = MoveCall {
                agent,
                env: environment,
                op: "deploy",
                target_env: environment,
                what: format!("Deploy {version}"),
            };
            do_move(api, c, m, body).await?;
        }
        ClientCmd::Promote {
            ref agent,
            ref environment,
            ref to,
            ref reason,
            expected_revision,
            force,
            dry_run,
            ..
        } => {
            let target = match to {
                Some(t) => t.clone(),
                None => next_stage(api, environment).await?.ok_or_else(|| {
                    anyhow!("{environment} is the last stage; name a target with --to")
                })?,
            };
            let mut body = with_common(json!({}), reason, expected_revision, dry_run);
            if let Some(t) = to {
                body["to"] = json!(t);
            }
            if force {
                body["force"] = json!(true);
            }
            let m = MoveCall {
                agent,
                env: environment,
                op: "promote",
                target_env: &target,
                what: format!("Promote {environment}'s version"),
            };
            do_move(api, c, m, body).await?;
        }
        ClientCmd::Rollback {
            ref agent,
            ref environment,
            ref to_version,
            ref reason,
            expected_revision,
            dry_run,
            ..
        } => {
            let mut body = with_common(json!({}), reason, expected_revision, dry_run);
            if let Some(t) = to_version {
                body["to_version"] = json!(t);
            }
            let m = MoveCall {
                agent,
                env: environment,
                op: "rollback",
                target_env: environment,
                what: "Roll back".into(),
            };
            do_move(api, c, m, body).await?;
        }
        ClientCmd::Undeploy {
            ref agent,
            ref environment,
            ref reason,
            expected_revision,
            dry_run,
            ..
        } => {
            let body = with_common(json!({}), reason, expected_revision, dry_run);
            let m = MoveCall {
                agent,
                env: environment,
                op: "undeploy",
                target_env: environment,
                what: "Undeploy".into(),
            };
            do_move(api, c, m, body).await?;
        }
        ClientCmd::Status {
            agent, interval, ..
        } => {
            let agents: Vec<String> = match agent {
                Some(a) => vec![a],
                None => api.get("/v1/agents").await?["agents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["name"].as_str().map(str::to_owned))
                    .collect(),
            };
            let sample = |agents: Vec<String>| async move {
                let mut out = Vec::new();
                for a in &agents {
                    out.push(api.get(&format!("/v1/agents/{a}")).await?);
                }
                Ok::<_, anyhow::Error>(out)
            };
            let first = sample(agents.clone()).await?;
            let interval = interval.clamp(0.1, 60.0);
            tokio::time::sleep(std::time::Duration::from_secs_f64(interval)).await;
            let snapshots = sample(agents).await?;
            let rate = |i: usize, env: &str, key: &str| {
                let now = snapshots[i]["traffic"][env][key].as_u64().unwrap_or(0);
                let before = first
                    .get(i)
                    .and_then(|s| s["traffic"][env][key].as_u64())
                    .unwrap_or(now);
                now.saturating_sub(before) as f64 / interval
            };
            if c.json {
                print_json(&json!({ "agents": snapshots, "interval_seconds": interval }));
            } else {
                let order = api.get("/v1/environments").await?;
                let envs: Vec<String> = order["environments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["name"].as_str().map(str::to_owned))
                    .collect();
                let mut rows = Vec::new();
                for (i, s) in snapshots.iter().enumerate() {
                    for e in &envs {
                        let p = &s["environments"][e];
                        rows.push(vec![
                            cell(&s["name"]),
                            e.clone(),
                            cell(&p["version"]),
                            cell(&p["since"]),
                            cell(&p["revision"]),
                            format!("{:.1}", rate(i, e, "requests")),
                            format!("{:.1}", rate(i, e, "errors")),
                            endpoints_cell(&s["endpoints"][e]),
                        ]);
                    }
                }
                print!(
                    "{}",
                    table(
                        &[
                            "AGENT",
                            "ENVIRONMENT",
                            "VERSION",
                            "SINCE",
                            "REVISION",
                            "REQ/S",
                            "5XX/S",
                            "ENDPOINTS"
                        ],
                        &rows
                    )
                );
            }
        }
        ClientCmd::History {
            agent,
            environment,
            limit,
            ..
        } => {
            let v = api
                .get(&format!(
                    "/v1/agents/{agent}/environments/{environment}/history?limit={limit}"
                ))
                .await?;
            show(
                c,
                &v,
                "entries",
                &[
                    ("REVISION", "revision"),
                    ("AT", "at"),
                    ("ACTION", "action"),
                    ("FROM", "previous"),
                    ("TO", "version"),
                    ("ACTOR", "actor"),
                    ("FOR", "on_behalf_of"),
                    ("FORCED", "forced"),
                    ("REASON", "reason"),
                ],
            );
        }
        _ => bail!("not a {} command", GROUP),
    }
    Ok(())
}

/// A plan as lines for a person: the move, whether it is allowed (or the refusal),
/// confirmation and the candidate's health.
fn plan_text(agent: &str, p: &Value) -> String {
    let mut s = format!(
        "plan: {} {agent}/{}: {} → {} (revision {})\n",
        cell(&p["action"]),
        cell(&p["environment"]),
        cell(&p["from"]),
        cell(&p["to"]),
        cell(&p["revision"])
    );
    if p["allowed"] == true {
        s.push_str("allowed: yes\n");
    } else {
        let r = &p["refusal"];
        s.push_str(&format!(
            "allowed: no — {} {}: {}\n",
            cell(&r["status"]),
            cell(&r["code"]),
            cell(&r["message"])
        ));
    }
    let checks = &p["checks"];
    let confirmation = if checks["confirmation_required"] == true {
        "required (protected environment)"
    } else {
        "not required"
    };
    s.push_str(&format!("confirmation: {confirmation}\n"));
    let h = &checks["candidate_health"];
    let health = if h.is_null() {
        "not probed".to_owned()
    } else if h["skipped"].is_string() {
        "skipped (force)".to_owned()
    } else {
        format!(
            "{} of {} endpoints passed, {} needed",
            cell(&h["passed"]),
            h["endpoints"].as_array().map_or(0, Vec::len),
            cell(&h["needed"])
        )
    };
    s.push_str(&format!("candidate health: {health}\n"));
    s
}

/// `3/3 up`, or with the ones out named by state: `1/3 up (1 ejected, 1 unhealthy)`.
fn endpoints_cell(e: &Value) -> String {
    let Some(total) = e["total"].as_u64() else {
        return "-".into();
    };
    let n = |k: &str| e[k].as_u64().unwrap_or(0);
    let up = total - n("ejected") - n("unhealthy");
    let out: Vec<String> = ["ejected", "unhealthy"]
        .iter()
        .filter(|k| n(k) > 0)
        .map(|k| format!("{} {k}", n(k)))
        .collect();
    if out.is_empty() {
        format!("{up}/{total} up")
    } else {
        format!("{up}/{total} up ({})", out.join(", "))
    }
}

/// Whether moving `target` needs confirmation, from the pipeline the gateway serves.
async fn protected(api: &AdminClient, target: &str) -> Result<bool> {
    let envs = api.get("/v1/environments").await?;
    Ok(envs["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["name"] == target && e["protected"] == true))
}

async fn next_stage(api: &AdminClient, env: &str) -> Result<Option<String>> {
    let envs = api.get("/v1/environments").await?;
    Ok(envs["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == env)
        .and_then(|e| e["next"].as_str().map(str::to_owned)))
}

/// One pointer move: `op` on `env`, which moves `target_env` (differs for promote).
struct MoveCall<'a> {
    agent: &'a str,
    env: &'a str,
    op: &'a str,
    target_env: &'a str,
    what: String,
}

async fn do_move(
    api: &AdminClient,
    c: &ClientOpts,
    m: MoveCall<'_>,
    mut body: Value,
) -> Result<()> {
    let MoveCall {
        agent,
        env,
        op,
        target_env,
        what,
    } = m;
    let path = format!("/v1/agents/{agent}/environments/{env}/{op}");
    if body["dry_run"] == true {
        // with --yes the plan is that of the confirmed move
        if c.yes {
            body["confirm"] = json!(true);
        }
        let v = api.call(Method::POST, &path, Some(body)).await?;
        if c.json {
            print_json(&v);
        } else {
            print!("{}", plan_text(agent, &v["plan"]));
        }
        return Ok(());
    }
    if protected(api, target_env).await? {
        if !c.yes {
            // the plan first, so the operator sees what they confirm
            let mut dry = body.clone();
            dry["dry_run"] = json!(true);
            dry["confirm"] = json!(true);
            if let Ok(v) = api.call(Method::POST, &path, Some(dry)).await {
                eprint!("{}", plan_text(agent, &v["plan"]));
            }
        }
        if !confirm(
            &format!("{what} in protected environment {target_env} of {agent}?"),
            c.yes,
        )? {
            bail!("not confirmed; nothing changed");
        }
        body["confirm"] = json!(true);
    }
    let v = api.call(Method::POST, &path, Some(body)).await?;
    if c.json {
        print_json(&v);
    } else {
        println!("{}", move_line(&v));
    }
    Ok(())
}

fn with_common(
    mut body: Value,
    reason: &Option<String>,
    expected: Option<u64>,
    dry_run: bool,
) -> Value {
    if dry_run {
        body["dry_run"] = json!(true);
    }
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    if let Some(e) = expected {
        body["expected_revision"] = json!(e);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::endpoints_cell;
    use serde_json::json;

    #[test]
    fn endpoint_health_reads_as_up_of_total_with_the_ones_out() {
        assert_eq!(endpoints_cell(&json!(null)), "-");
        assert_eq!(endpoints_cell(&json!({"total": 3, "healthy": 3})), "3/3 up");
        assert_eq!(
            endpoints_cell(&json!({"total": 3, "ejected": 1, "unhealthy": 1, "unknown": 1})),
            "1/3 up (1 ejected, 1 unhealthy)"
        );
    }
}
