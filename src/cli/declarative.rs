//! `switchyard export` and `switchyard apply -f FILE`: the deployment state as one JSON
//! document, and a store made to match one — what a GitOps pipeline calls.
//!
//! The document names versions by digest (their content), so it applies to any store:
//! a version missing there is created (whatever number it gets), and pointers and
//! canaries move to the version with the named digest. Secrets, tokens and hashes are
//! never in it. `apply` works out the plan from what the admin API shows, prints it,
//! and carries it out through the same calls as every other command (so roles, the
//! gate and `missing_secret` apply); a second apply of the same file has nothing to do.

use super::http::AdminClient;
use super::output::{confirm, print_json};
use super::ClientOpts;
use anyhow::{anyhow, bail, Context, Result};
use http::Method;
use serde_json::{json, Value};

/// The document's format version.
const FORMAT: u64 = 1;

/// The fields of a version that make it what it is (its digest is over these).
const VERSION_FIELDS: [&str; 6] = [
    "upstreams",
    "config",
    "description",
    "inject",
    "health",
    "min_healthy",
];

/// `export [--agent A]`.
pub(super) async fn export(agent: Option<String>, api: &AdminClient) -> Result<()> {
    print_json(&document(agent, api).await?);
    Ok(())
}

/// The state of every agent (or one) as the document.
async fn document(only: Option<String>, api: &AdminClient) -> Result<Value> {
    let envs = pipeline(api).await?;
    let names = super::http::agent_names(api, only).await?;
    let mut agents = Vec::new();
    for name in names {
        let snap = api.get(&format!("/v1/agents/{name}")).await?;
        let versions = api.get(&format!("/v1/agents/{name}/versions")).await?;
        let versions: Vec<Value> = versions["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let mut out = json!({
                    "version": v["version"],
                    "digest": v["digest"],
                    "state": v["state"],
                });
                for f in VERSION_FIELDS {
                    out[f] = v[f].clone();
                }
                out
            })
            .collect();
        let digest_of = |label: &Value| -> Value {
            versions
                .iter()
                .find(|v| v["version"] == *label)
                .map(|v| v["digest"].clone())
                .unwrap_or(Value::Null)
        };
        let mut environments = serde_json::Map::new();
        for (env, _) in &envs {
            let live = &snap["environments"][env];
            let canary = &live["canary"];
            let policy = api
                .get(&format!("/v1/agents/{name}/environments/{env}/policy"))
                .await?;
            environments.insert(
                env.clone(),
                json!({
                    "version": live["version"],
                    "digest": digest_of(&live["version"]),
                    "canary": if canary.is_null() { Value::Null } else { json!({
                        "version": canary["version"],
                        "digest": digest_of(&canary["version"]),
                        "weight": canary["weight"],
                    })},
                    "policy": policy,
                }),
            );
        }
        agents.push(json!({
            "name": name,
            "description": snap["description"],
            "versions": versions,
            "environments": environments,
        }));
    }
    Ok(json!({ "switchyard_export": FORMAT, "agents": agents }))
}

/// The pipeline: (name, protected), in order.
async fn pipeline(api: &AdminClient) -> Result<Vec<(String, bool)>> {
    Ok(api.get("/v1/environments").await?["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["protected"] == true)))
        .collect())
}

/// Which version a step names: one that exists, or the file's `i`-th, created earlier
/// in the same apply.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ver {
    Known(u64),
    Created(usize),
}

#[derive(Debug, Clone)]
enum Step {
    CreateAgent {
        agent: String,
        description: Value,
    },
    CreateVersion {
        agent: String,
        index: usize,
        spec: Value,
        digest: String,
    },
    State {
        agent: String,
        v: Ver,
        stop: bool,
    },
    Policy {
        agent: String,
        env: String,
        policy: Value,
    },
    CanaryAbort {
        agent: String,
        env: String,
    },
    Deploy {
        agent: String,
        env: String,
        v: Ver,
        from: Value,
    },
    Undeploy {
        agent: String,
        env: String,
        from: Value,
    },
    Canary {
        agent: String,
        env: String,
        v: Ver,
        weight: Value,
    },
}

impl Step {
    fn env(&self) -> Option<&str> {
        match self {
            Self::Policy { env, .. }
            | Self::CanaryAbort { env, .. }
            | Self::Deploy { env, .. }
            | Self::Undeploy { env, .. }
            | Self::Canary { env, .. } => Some(env),
            _ => None,
        }
    }

    fn moves(&self) -> bool {
        matches!(
            self,
            Self::CanaryAbort { .. }
                | Self::Deploy { .. }
                | Self::Undeploy { .. }
                | Self::Canary { .. }
        )
    }

    fn describe(&self, file: &Value) -> String {
        let ver = |agent: &str, v: &Ver| match v {
            Ver::Known(n) => format!("v{n}"),
            Ver::Created(i) => format!(
                "the new version of {agent} ({})",
                short(
                    file_version(file, agent, *i)["digest"]
                        .as_str()
                        .unwrap_or("")
                )
            ),
        };
        match self {
            Self::CreateAgent { agent, .. } => format!("create agent {agent}"),
            Self::CreateVersion { agent, digest, .. } => {
                format!("create a version of {agent} ({})", short(digest))
            }
            Self::State { agent, v, stop } => {
                format!(
                    "{} {agent} {}",
                    if *stop { "stop" } else { "start" },
                    ver(agent, v)
                )
            }
            Self::Policy { agent, env, policy } => format!("policy {agent}/{env}: {policy}"),
            Self::CanaryAbort { agent, env } => format!("abort the canary of {agent}/{env}"),
            Self::Deploy {
                agent,
                env,
                v,
                from,
            } => format!("deploy {agent}/{env}: {} → {}", label(from), ver(agent, v)),
            Self::Undeploy { agent, env, from } => {
                format!("undeploy {agent}/{env} ({})", label(from))
            }
            Self::Canary {
                agent,
                env,
                v,
                weight,
            } => {
                format!("canary {agent}/{env}: {} at {weight} %", ver(agent, v))
            }
        }
    }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn label(v: &Value) -> String {
    v.as_str().unwrap_or("nothing").to_owned()
}

fn file_version<'a>(file: &'a Value, agent: &str, i: usize) -> &'a Value {
    file["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == agent))
        .map_or(&Value::Null, |a| &a["versions"][i])
}

/// `apply -f FILE [--dry-run] [--yes] [--force]`.
pub(super) async fn apply(
    path: &str,
    dry_run: bool,
    yes: bool,
    force: bool,
    c: &ClientOpts,
    api: &AdminClient,
) -> Result<()> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the document from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("-f {path}: cannot read it"))?
    };
    let file: Value =
        serde_json::from_str(&text).with_context(|| format!("-f {path}: not a JSON document"))?;
    if file["switchyard_export"] != FORMAT {
        bail!("-f {path}: not a switchyard export (format {FORMAT})");
    }
    let envs = pipeline(api).await?;
    let steps = plan(&file, &envs, api).await?;
    if c.json {
        let list: Vec<Value> = steps
            .iter()
            .map(|s| Value::String(s.describe(&file)))
            .collect();
        print_json(&json!({"dry_run": dry_run, "plan": list}));
    } else if steps.is_empty() {
        println!("nothing to change");
    } else {
        println!("plan ({} steps):", steps.len());
        for (i, s) in steps.iter().enumerate() {
            println!("  {:>2}. {}", i + 1, s.describe(&file));
        }
    }
    if dry_run || steps.is_empty() {
        return Ok(());
    }
    let protected: Vec<&str> = {
        let mut p: Vec<&str> = steps
            .iter()
            .filter(|s| s.moves())
            .filter_map(|s| s.env())
            .filter(|e| envs.iter().any(|(n, p)| n == e && *p))
            .collect();
        p.dedup();
        p
    };
    if !protected.is_empty()
        && !confirm(
            &format!("apply, moving protected {}", protected.join(", ")),
            yes,
        )?
    {
        bail!("nothing applied");
    }
    execute(&steps, &file, force, api).await?;
    if !c.json {
        println!("applied {} steps", steps.len());
    }
    Ok(())
}

/// The steps that make the store match `file`, in the order they must run: agents and
/// versions first, then starts, policies, canary aborts, moves, canaries, and stops
/// last (a version is stopped only once nothing needs it).
async fn plan(file: &Value, envs: &[(String, bool)], api: &AdminClient) -> Result<Vec<Step>> {
    let mut creates = Vec::new();
    let (mut starts, mut policies, mut aborts, mut moves, mut canaries, mut stops) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let existing_agents = super::http::agent_names(api, None).await?;
    for a in file["agents"].as_array().into_iter().flatten() {
        let agent = a["name"]
            .as_str()
            .ok_or_else(|| anyhow!("an agent without a name"))?
            .to_owned();
        let exists = existing_agents.contains(&agent);
        if !exists {
            creates.push(Step::CreateAgent {
                agent: agent.clone(),
                description: a["description"].clone(),
            });
        }
        let (have, snap) = if exists {
            (
                api.get(&format!("/v1/agents/{agent}/versions")).await?["versions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                api.get(&format!("/v1/agents/{agent}")).await?,
            )
        } else {
            (vec![], Value::Null)
        };
        // each version of the file is one of the store's with its digest (once each,
        // the one with the same label first), or is created
        let wanted = a["versions"].as_array().cloned().unwrap_or_default();
        let mut used = vec![false; have.len()];
        let mut resolved: Vec<Ver> = Vec::with_capacity(wanted.len());
        for (i, w) in wanted.iter().enumerate() {
            let digest = w["digest"]
                .as_str()
                .ok_or_else(|| anyhow!("{agent}: version {i} has no digest"))?;
            let pick = have
                .iter()
                .enumerate()
                .filter(|(j, h)| !used[*j] && h["digest"] == digest)
                .min_by_key(|(_, h)| (h["version"] != w["version"], number(&h["version"])));
            match pick {
                Some((j, h)) => {
                    used[j] = true;
                    let n = number(&h["version"]);
                    resolved.push(Ver::Known(n));
                    if h["state"] != w["state"] {
                        let stop = w["state"] == "stopped";
                        let step = Step::State {
                            agent: agent.clone(),
                            v: Ver::Known(n),
                            stop,
                        };
                        if stop {
                            stops.push(step)
                        } else {
                            starts.push(step)
                        }
                    }
                }
                None => {
                    let mut spec = serde_json::Map::new();
                    for f in VERSION_FIELDS {
                        if !w[f].is_null() {
                            spec.insert(f.into(), w[f].clone());
                        }
                    }
                    creates.push(Step::CreateVersion {
                        agent: agent.clone(),
                        index: i,
                        spec: Value::Object(spec),
                        digest: digest.to_owned(),
                    });
                    resolved.push(Ver::Created(i));
                    if w["state"] == "stopped" {
                        stops.push(Step::State {
                            agent: agent.clone(),
                            v: Ver::Created(i),
                            stop: true,
                        });
                    }
                }
            }
        }
        // a digest (and the file's label) to the version it resolved to
        let find = |digest: &Value, lbl: &Value| -> Result<Ver> {
            let mut best = None;
            for (i, w) in wanted.iter().enumerate() {
                if w["digest"] == *digest && (best.is_none() || w["version"] == *lbl) {
                    best = Some(resolved[i]);
                }
            }
            best.ok_or_else(|| anyhow!("{agent}: {digest} is not among the file's versions"))
        };
        for (env, _) in envs {
            let Some(e) = a["environments"].get(env) else {
                continue; // not in the file: left as it is
            };
            let live = &snap["environments"][env];
            let live_v = (!live["version"].is_null()).then(|| number(&live["version"]));
            let live_canary = &live["canary"];
            let current_policy = if exists {
                api.get(&format!("/v1/agents/{agent}/environments/{env}/policy"))
                    .await?
            } else {
                Value::Null
            };
            if !e["policy"].is_null() && e["policy"] != current_policy {
                policies.push(Step::Policy {
                    agent: agent.clone(),
                    env: env.clone(),
                    policy: e["policy"].clone(),
                });
            }
            let target = if e["digest"].is_null() {
                None
            } else {
                Some(find(&e["digest"], &e["version"])?)
            };
            let canary = if e["canary"].is_null() {
                None
            } else {
                Some((
                    find(&e["canary"]["digest"], &e["canary"]["version"])?,
                    e["canary"]["weight"].clone(),
                ))
            };
            let same = |v: Ver, n: Option<u64>| matches!(v, Ver::Known(k) if Some(k) == n);
            let live_canary_v = (!live_canary.is_null()).then(|| number(&live_canary["version"]));
            let main_moves = match target {
                Some(t) => !same(t, live_v),
                None => live_v.is_some(),
            };
            let canary_same = match canary {
                Some((v, _)) => same(v, live_canary_v),
                None => live_canary_v.is_none(),
            };
            if live_canary_v.is_some() && (main_moves || !canary_same) {
                aborts.push(Step::CanaryAbort {
                    agent: agent.clone(),
                    env: env.clone(),
                });
            }
            if main_moves {
                moves.push(match target {
                    Some(v) => Step::Deploy {
                        agent: agent.clone(),
                        env: env.clone(),
                        v,
                        from: live["version"].clone(),
                    },
                    None => Step::Undeploy {
                        agent: agent.clone(),
                        env: env.clone(),
                        from: live["version"].clone(),
                    },
                });
            }
            if let Some((v, weight)) = canary {
                let weight_same = live_canary["weight"] == weight;
                if main_moves || !canary_same || !weight_same {
                    canaries.push(Step::Canary {
                        agent: agent.clone(),
                        env: env.clone(),
                        v,
                        weight,
                    });
                }
            }
        }
    }
    Ok([creates, starts, policies, aborts, moves, canaries, stops].concat())
}

/// `v12` → 12.
fn number(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.strip_prefix('v'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn execute(steps: &[Step], file: &Value, force: bool, api: &AdminClient) -> Result<()> {
    // the numbers the versions created here got: (agent, file index) → number
    let mut created: Vec<(String, usize, u64)> = Vec::new();
    let num = |created: &[(String, usize, u64)], agent: &str, v: &Ver| -> Result<u64> {
        match v {
            Ver::Known(n) => Ok(*n),
            Ver::Created(i) => created
                .iter()
                .find(|(a, j, _)| a == agent && j == i)
                .map(|(_, _, n)| *n)
                .ok_or_else(|| anyhow!("{agent}: a version to be created was not")),
        }
    };
    for (k, s) in steps.iter().enumerate() {
        let step = k + 1;
        let doing = s.describe(file);
        let r: Result<()> = async {
            match s {
                Step::CreateAgent { agent, description } => {
                    api.call(
                        Method::POST,
                        "/v1/agents",
                        Some(json!({"name": agent, "description": description})),
                    )
                    .await?;
                }
                Step::CreateVersion {
                    agent,
                    index,
                    spec,
                    digest,
                } => {
                    let v = api
                        .call(
                            Method::POST,
                            &format!("/v1/agents/{agent}/versions"),
                            Some(spec.clone()),
                        )
                        .await?;
                    if v["digest"] != digest.as_str() {
                        bail!(
                            "the version created has digest {}, not the file's {digest}: the file's fields were edited",
                            v["digest"]
                        );
                    }
                    created.push((agent.clone(), *index, number(&v["version"])));
                }
                Step::State { agent, v, stop } => {
                    let n = num(&created, agent, v)?;
                    let op = if *stop { "stop" } else { "start" };
                    api.call(
                        Method::POST,
                        &format!("/v1/agents/{agent}/versions/v{n}/{op}"),
                        None,
                    )
                    .await?;
                }
                Step::Policy { agent, env, policy } => {
                    api.call(
                        Method::PUT,
                        &format!("/v1/agents/{agent}/environments/{env}/policy"),
                        Some(policy.clone()),
                    )
                    .await?;
                }
                Step::CanaryAbort { agent, env } => {
                    api.call(
                        Method::POST,
                        &format!("/v1/agents/{agent}/environments/{env}/canary/abort"),
                        Some(json!({"confirm": true, "reason": "switchyard apply"})),
                    )
                    .await?;
                }
                Step::Deploy { agent, env, v, .. } => {
                    let n = num(&created, agent, v)?;
                    api.call(
                        Method::POST,
                        &format!("/v1/agents/{agent}/environments/{env}/deploy"),
                        Some(json!({"version": format!("v{n}"), "confirm": true, "force": force, "reason": "switchyard apply"})),
                    )
                    .await?;
                }
                Step::Undeploy { agent, env, .. } => {
                    api.call(
                        Method::POST,
                        &format!("/v1/agents/{agent}/environments/{env}/undeploy"),
                        Some(json!({"confirm": true, "reason": "switchyard apply"})),
                    )
                    .await?;
                }
                Step::Canary {
                    agent,
                    env,
                    v,
                    weight,
                } => {
                    let n = num(&created, agent, v)?;
                    api.call(
                        Method::POST,
                        &format!("/v1/agents/{agent}/environments/{env}/canary"),
                        Some(json!({"version": format!("v{n}"), "weight": weight, "confirm": true, "force": force, "reason": "switchyard apply"})),
                    )
                    .await?;
                }
            }
            Ok(())
        }
        .await;
        r.with_context(|| format!("step {step} ({doing}); the steps before it were applied"))?;
    }
    Ok(())
}
