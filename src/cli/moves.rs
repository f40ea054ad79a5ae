//! Pointer moves (deploy, promote, rollback, undeploy, canaries), policies, status
//! and history.

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
        ClientCmd::Canary {
            ref args,
            weight,
            ref reason,
            expected_revision,
            dry_run,
            force,
            ..
        } => {
            let mut body = with_common(json!({}), reason, expected_revision, dry_run);
            let (agent, env, op, what) = match args.first().map(String::as_str) {
                Some(op @ ("complete" | "abort")) => {
                    if weight.is_some() {
                        bail!("--weight is for starting a canary or changing its weight");
                    }
                    let what = if op == "complete" {
                        "Complete the canary".to_owned()
                    } else {
                        "Abort the canary".to_owned()
                    };
                    (&args[1], &args[2], format!("canary/{op}"), what)
                }
                _ => {
                    let w = weight
                        .ok_or_else(|| anyhow!("give the canary's share: --weight PERCENT"))?;
                    body["version"] = json!(args[2]);
                    body["weight"] = json!(w);
                    let what = format!("Canary {} at {w} %", args[2]);
                    (&args[0], &args[1], "canary".to_owned(), what)
                }
            };
            if force {
                body["force"] = json!(true);
            }
            let m = MoveCall {
                agent,
                env,
                op: &op,
                target_env: env,
                what,
            };
            do_move(api, c, m, body).await?;
        }
        ClientCmd::Policy {
            ref agent,
            ref environment,
            sticky,
            follow,
            ref ttl,
            ref drain,
            ref auto_rollback,
            no_auto_rollback,
            ..
        } => {
            let path = format!("/v1/agents/{agent}/environments/{environment}/policy");
            let mut patch = serde_json::Map::new();
            if sticky {
                patch.insert("session_affinity".into(), json!("sticky"));
            }
            if follow {
                patch.insert("session_affinity".into(), json!("follow"));
            }
            if let Some(t) = ttl {
                patch.insert("session_ttl_s".into(), json!(seconds("--ttl", t)?));
            }
            if let Some(d) = drain {
                patch.insert("stream_drain_s".into(), json!(seconds("--drain", d)?));
            }
            if let Some(a) = auto_rollback {
                patch.insert("auto_rollback".into(), auto_rollback_spec(a)?);
            }
            if no_auto_rollback {
                patch.insert("auto_rollback".into(), Value::Null);
            }
            let v = if patch.is_empty() {
                api.get(&path).await?
            } else {
                api.call(Method::PUT, &path, Some(Value::Object(patch)))
                    .await?
            };
            if c.json {
                print_json(&v);
            } else {
                print!("{}", policy_text(&v));
            }
        }
        ClientCmd::Status {
            agent, interval, ..
        } => {
            let agents = super::http::agent_names(api, agent).await?;
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
                            canary_cell(&p["canary"]),
                            bake_cell(&p["bake"]),
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
                            "ENDPOINTS",
                            "CANARY",
                            "BAKE"
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

/// `v2 10%`, or `-` without a canary.
fn canary_cell(c: &Value) -> String {
    if c.is_null() {
        return "-".into();
    }
    format!("{} {}%", cell(&c["version"]), cell(&c["weight"]))
}

/// `v2 until 12:40:00Z (3/120 errors)` while a version is under watch, else `-`.
fn bake_cell(b: &Value) -> String {
    if b.is_null() {
        return "-".into();
    }
    let until = b["until"].as_str().unwrap_or("-");
    let clock = until.split('T').nth(1).unwrap_or(until);
    format!(
        "{} until {} ({}/{} errors in {} s)",
        cell(&b["version"]),
        clock.split('.').next().unwrap_or(clock),
        cell(&b["window"]["errors"]),
        cell(&b["window"]["requests"]),
        cell(&b["window"]["seconds"])
    )
}

/// A duration as seconds: `90`, `90s`, `30m`, `2h`, `1d`.
fn seconds(flag: &str, s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("{flag}: {s:?} is not a duration like 90s, 30m or 2h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{flag}: unknown unit {unit:?}; use s, m, h or d"),
    };
    Ok(n * mult)
}

/// `window=30s,errors=5%,min=20,p99=800ms,bake=10m` as the policy's `auto_rollback`.
fn auto_rollback_spec(s: &str) -> Result<Value> {
    let mut v = serde_json::Map::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, val) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--auto-rollback: {part:?} is not key=value"))?;
        match k {
            "window" => {
                v.insert(
                    "window_s".into(),
                    json!(seconds("--auto-rollback window", val)?),
                );
            }
            "bake" => {
                v.insert(
                    "bake_s".into(),
                    json!(seconds("--auto-rollback bake", val)?),
                );
            }
            "min" => {
                let n: u64 = val
                    .parse()
                    .map_err(|_| anyhow!("--auto-rollback min: a number of requests"))?;
                v.insert("min_requests".into(), json!(n));
            }
            "errors" => {
                let pct: f64 = val
                    .trim_end_matches('%')
                    .parse()
                    .map_err(|_| anyhow!("--auto-rollback errors: a percentage like 5%"))?;
                v.insert("max_error_rate".into(), json!(pct / 100.0));
            }
            "p99" => {
                let ms = match val.strip_suffix("ms") {
                    Some(n) => n.parse::<u64>().ok(),
                    None => seconds("--auto-rollback p99", val).ok().map(|s| s * 1000),
                }
                .ok_or_else(|| anyhow!("--auto-rollback p99: a time like 800ms or 2s"))?;
                v.insert("max_ttfb_p99_ms".into(), json!(ms));
            }
            _ => bail!("--auto-rollback: unknown key {k:?}; use window, errors, min, p99, bake"),
        }
    }
    Ok(Value::Object(v))
}

/// A policy for a person.
fn policy_text(p: &Value) -> String {
    let mut s = format!(
        "session affinity: {} (pins hold {} s after their last use)
stream drain: {} s
",
        cell(&p["session_affinity"]),
        cell(&p["session_ttl_s"]),
        cell(&p["stream_drain_s"])
    );
    let a = &p["auto_rollback"];
    if a.is_null() {
        s.push_str(
            "automatic rollback: off
",
        );
    } else {
        let rate = a["max_error_rate"].as_f64().unwrap_or(0.0) * 100.0;
        s.push_str(&format!(
            "automatic rollback: error rate over {rate}% with at least {} requests in {} s, for {} s after each forward move",
            cell(&a["min_requests"]),
            cell(&a["window_s"]),
            cell(&a["bake_s"])
        ));
        if !a["max_ttfb_p99_ms"].is_null() {
            s.push_str(&format!(
                ", or first-byte p99 over {} ms",
                cell(&a["max_ttfb_p99_ms"])
            ));
        }
        s.push('\n');
    }
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
    use super::{auto_rollback_spec, endpoints_cell, seconds};
    use serde_json::json;

    #[test]
    fn durations_and_rollback_specs_parse() {
        assert_eq!(seconds("t", "90").unwrap(), 90);
        assert_eq!(seconds("t", "30m").unwrap(), 1800);
        assert_eq!(seconds("t", "2h").unwrap(), 7200);
        assert!(seconds("t", "2w").is_err());
        assert!(seconds("t", "m").is_err());
        assert_eq!(
            auto_rollback_spec("window=30s,errors=5%,min=20,p99=800ms,bake=10m").unwrap(),
            json!({"window_s": 30, "max_error_rate": 0.05, "min_requests": 20, "max_ttfb_p99_ms": 800, "bake_s": 600})
        );
        assert_eq!(auto_rollback_spec("").unwrap(), json!({}));
        assert!(auto_rollback_spec("errors").is_err());
        assert!(auto_rollback_spec("speed=3").is_err());
    }

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
