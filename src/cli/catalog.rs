//! Reading the catalog: the pipeline, agents, versions and their diff; stop and start.

use super::http::AdminClient;
use super::output::{cell, print_json, show, table};
use super::{AgentsCmd, VersionsCmd};
use super::{ClientCmd, ClientOpts};
use anyhow::{bail, Context, Result};
use http::Method;
use serde_json::{json, Value};

const GROUP: &str = "catalog";

/// `environments`, `agents`, `versions`, `diff`, `stop`, `start`.
pub(super) async fn run(cmd: ClientCmd, c: &ClientOpts, api: &AdminClient) -> Result<()> {
    match cmd {
        ClientCmd::Environments { .. } => {
            let v = api.get("/v1/environments").await?;
            show(
                c,
                &v,
                "environments",
                &[
                    ("ENVIRONMENT", "name"),
                    ("PROTECTED", "protected"),
                    ("NEXT", "next"),
                ],
            );
        }
        ClientCmd::Agents { action: None, .. } => {
            let v = api.get("/v1/agents").await?;
            show(
                c,
                &v,
                "agents",
                &[
                    ("AGENT", "name"),
                    ("CREATED", "created_at"),
                    ("DESCRIPTION", "description"),
                ],
            );
        }
        ClientCmd::Agents {
            action: Some(AgentsCmd::Create { name, description }),
            ..
        } => {
            let v = api
                .call(
                    Method::POST,
                    "/v1/agents",
                    Some(json!({"name": name, "description": description})),
                )
                .await?;
            if c.json {
                print_json(&v);
            } else {
                println!("created agent {}", cell(&v["name"]));
            }
        }
        ClientCmd::Versions { action, .. } => match action {
            VersionsCmd::List { agent } => {
                let v = api.get(&format!("/v1/agents/{agent}/versions")).await?;
                if c.json {
                    print_json(&v);
                } else {
                    let rows: Vec<Vec<String>> = v["versions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| {
                            let ups: Vec<String> = x["upstreams"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(cell)
                                .collect();
                            vec![
                                cell(&x["version"]),
                                cell(&x["state"]),
                                cell(&x["created_at"]),
                                cell(&x["author"]),
                                ups.join(","),
                                cell(&x["description"]),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &[
                                "VERSION",
                                "STATE",
                                "CREATED",
                                "AUTHOR",
                                "UPSTREAMS",
                                "DESCRIPTION"
                            ],
                            &rows
                        )
                    );
                }
            }
            VersionsCmd::Show { agent, version } => {
                let mut v = api
                    .get(&format!("/v1/agents/{agent}/versions/{version}"))
                    .await?;
                // this node's view of the endpoints beside the record
                let h = api
                    .get(&format!("/v1/agents/{agent}/versions/{version}/health"))
                    .await?;
                v["health"] = h["endpoints"].clone();
                print_json(&v);
            }
            VersionsCmd::Create {
                agent,
                upstreams,
                config,
                description,
                inject,
            } => {
                let inject = inject
                    .iter()
                    .map(|i| parse_inject(i))
                    .collect::<Result<Vec<_>>>()?;
                let config: Option<Value> = match config {
                    Some(s) => {
                        let text = match s.strip_prefix('@') {
                            Some(path) => std::fs::read_to_string(path)
                                .with_context(|| format!("--config: cannot read {path}"))?,
                            None => s,
                        };
                        Some(serde_json::from_str(&text).context("--config: not valid JSON")?)
                    }
                    None => None,
                };
                let v = api
                    .call(
                        Method::POST,
                        &format!("/v1/agents/{agent}/versions"),
                        Some(json!({"upstreams": upstreams, "config": config, "description": description, "inject": inject})),
                    )
                    .await?;
                if c.json {
                    print_json(&v);
                } else {
                    println!(
                        "created {} {} ({})",
                        cell(&v["agent"]),
                        cell(&v["version"]),
                        cell(&v["digest"])
                    );
                }
            }
        },
        ClientCmd::Diff {
            agent, from, to, ..
        } => {
            let v = api
                .get(&format!("/v1/agents/{agent}/versions/{from}/diff/{to}"))
                .await?;
            if !c.json {
                println!("{} → {}", cell(&v["from"]), cell(&v["to"]));
            }
            show(
                c,
                &v,
                "changes",
                &[("PATH", "path"), ("FROM", "from"), ("TO", "to")],
            );
        }
        ClientCmd::Stop { agent, version, .. } => {
            state_cmd(api, c, &agent, &version, "stop").await?
        }
        ClientCmd::Start { agent, version, .. } => {
            state_cmd(api, c, &agent, &version, "start").await?
        }
        _ => bail!("not a {} command", GROUP),
    }
    Ok(())
}

async fn state_cmd(
    api: &AdminClient,
    c: &ClientOpts,
    agent: &str,
    version: &str,
    op: &str,
) -> Result<()> {
    let v = api
        .call(
            Method::POST,
            &format!("/v1/agents/{agent}/versions/{version}/{op}"),
            None,
        )
        .await?;
    if c.json {
        print_json(&v);
    } else {
        println!(
            "{} {} is {}",
            cell(&v["agent"]),
            cell(&v["version"]),
            cell(&v["state"])
        );
    }
    Ok(())
}

/// `HEADER=SECRET[:FORMAT]` as the API's injection object.
fn parse_inject(s: &str) -> Result<Value> {
    let Some((header, rest)) = s.split_once('=') else {
        anyhow::bail!("--inject {s:?}: write HEADER=SECRET or HEADER=SECRET:FORMAT");
    };
    Ok(match rest.split_once(':') {
        Some((secret, format)) => json!({"header": header, "secret": secret, "format": format}),
        None => json!({"header": header, "secret": rest}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injections_from_the_command_line() {
        assert_eq!(
            parse_inject("authorization=KEY:Bearer {}").unwrap(),
            json!({"header": "authorization", "secret": "KEY", "format": "Bearer {}"})
        );
        assert_eq!(
            parse_inject("x-key=KEY").unwrap(),
            json!({"header": "x-key", "secret": "KEY"})
        );
        assert!(parse_inject("x-key").is_err());
    }
}
