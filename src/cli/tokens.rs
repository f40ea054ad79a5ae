//! Deployment tokens and named admin tokens: mint (the secret shown once), list, revoke.

use super::http::AdminClient;
use super::output::{cell, print_json, show};
use super::{AdminTokenCmd, TokenCmd};
use super::{ClientCmd, ClientOpts};
use anyhow::{bail, Result};
use http::Method;
use serde_json::json;

const GROUP: &str = "token";

/// `token …`, `admin-token …` and `whoami`.
pub(super) async fn run(cmd: ClientCmd, c: &ClientOpts, api: &AdminClient) -> Result<()> {
    match cmd {
        ClientCmd::Token { action, .. } => match action {
            TokenCmd::Create {
                agent,
                environment,
                name,
                expires_at,
                scopes,
            } => {
                let v = api
                    .call(
                        Method::POST,
                        &format!("/v1/agents/{agent}/environments/{environment}/tokens"),
                        Some(json!({"name": name, "expires_at": expires_at, "scopes": scopes})),
                    )
                    .await?;
                if c.json {
                    print_json(&v);
                } else {
                    println!(
                        "token {} for {agent}/{environment} (shown once, store it now):\n{}",
                        cell(&v["id"]),
                        cell(&v["token"])
                    );
                }
            }
            TokenCmd::List { agent, environment } => {
                let v = api
                    .get(&format!(
                        "/v1/agents/{agent}/environments/{environment}/tokens"
                    ))
                    .await?;
                show(
                    c,
                    &v,
                    "tokens",
                    &[
                        ("ID", "id"),
                        ("NAME", "name"),
                        ("CREATED", "created_at"),
                        ("EXPIRES", "expires_at"),
                        ("REVOKED", "revoked_at"),
                        ("SUSPENDED", "suspended_at"),
                        ("SCOPES", "scopes"),
                        ("BY", "created_by"),
                        ("LAST USED", "last_used_at"),
                    ],
                );
            }
            TokenCmd::Suspend { ref id } | TokenCmd::Resume { ref id } => {
                let op = if matches!(action, TokenCmd::Suspend { .. }) {
                    "suspend"
                } else {
                    "resume"
                };
                let v = api
                    .call(Method::POST, &format!("/v1/tokens/{id}/{op}"), None)
                    .await?;
                if c.json {
                    print_json(&v);
                } else {
                    println!("{op}ed {id}");
                }
            }
            TokenCmd::Revoke { id } => {
                api.call(Method::DELETE, &format!("/v1/tokens/{id}"), None)
                    .await?;
                if c.json {
                    print_json(&json!({"revoked": id}));
                } else {
                    println!("revoked {id}");
                }
            }
        },
        ClientCmd::AdminToken { action, .. } => match action {
            AdminTokenCmd::Create { name, role } => {
                let v = api
                    .call(
                        Method::POST,
                        "/v1/admin-tokens",
                        Some(json!({"name": name, "role": role})),
                    )
                    .await?;
                if c.json {
                    print_json(&v);
                } else {
                    println!(
                        "admin token {} ({}, {}) (shown once, store it now):\n{}",
                        cell(&v["id"]),
                        cell(&v["name"]),
                        cell(&v["role"]),
                        cell(&v["token"])
                    );
                }
            }
            AdminTokenCmd::List => {
                let v = api.get("/v1/admin-tokens").await?;
                show(
                    c,
                    &v,
                    "admin_tokens",
                    &[
                        ("ID", "id"),
                        ("NAME", "name"),
                        ("ROLE", "role"),
                        ("CREATED", "created_at"),
                        ("BY", "created_by"),
                        ("REVOKED", "revoked_at"),
                    ],
                );
            }
            AdminTokenCmd::Revoke { id } => {
                api.call(Method::DELETE, &format!("/v1/admin-tokens/{id}"), None)
                    .await?;
                if c.json {
                    print_json(&json!({"revoked": id}));
                } else {
                    println!("revoked {id}");
                }
            }
        },
        ClientCmd::Whoami { .. } => {
            let v = api.get("/v1/whoami").await?;
            if c.json {
                print_json(&v);
            } else {
                println!("{} ({})", cell(&v["name"]), cell(&v["role"]));
            }
        }
        _ => bail!("not a {} command", GROUP),
    }
    Ok(())
}
