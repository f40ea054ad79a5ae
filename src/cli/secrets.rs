//! `secret set | list | delete | audit`. A value is read from stdin or from a prompt
//! that does not echo — never from a flag, where the shell history and `ps` would
//! keep it.

use super::http::AdminClient;
use super::output::{print_json, show};
use super::{ClientOpts, SecretCmd};
use anyhow::{bail, Context, Result};
use http::Method;
use serde_json::json;
use std::io::{IsTerminal, Read};

pub(super) async fn run(action: SecretCmd, c: &ClientOpts, api: &AdminClient) -> Result<()> {
    match action {
        SecretCmd::Set {
            agent,
            name,
            environment,
        } => {
            let value = read_value(&name)?;
            let v = api
                .call(
                    Method::PUT,
                    &format!("/v1/agents/{agent}/secrets/{name}"),
                    Some(json!({"value": value, "environment": environment})),
                )
                .await?;
            drop(value);
            if c.json {
                print_json(&v);
            } else {
                let scope = environment.as_deref().unwrap_or("every environment");
                println!("set {name} of {agent} for {scope}");
            }
        }
        SecretCmd::List { agent } => {
            let v = api.get(&format!("/v1/agents/{agent}/secrets")).await?;
            show(
                c,
                &v,
                "secrets",
                &[
                    ("NAME", "name"),
                    ("ENVIRONMENT", "environment"),
                    ("UPDATED", "updated_at"),
                ],
            );
        }
        SecretCmd::Delete {
            agent,
            name,
            environment,
        } => {
            let query = environment
                .as_deref()
                .map(|e| format!("?environment={e}"))
                .unwrap_or_default();
            api.call(
                Method::DELETE,
                &format!("/v1/agents/{agent}/secrets/{name}{query}"),
                None,
            )
            .await?;
            if c.json {
                print_json(&json!({"deleted": name, "environment": environment}));
            } else {
                println!("deleted {name} of {agent}");
            }
        }
        SecretCmd::Audit { agent } => {
            let v = api
                .get(&format!("/v1/agents/{agent}/secrets/audit"))
                .await?;
            show(
                c,
                &v,
                "audit",
                &[
                    ("REVISION", "revision"),
                    ("AT", "at"),
                    ("ACTION", "action"),
                    ("NAME", "name"),
                    ("ENVIRONMENT", "environment"),
                    ("ACTOR", "actor"),
                    ("ON BEHALF OF", "on_behalf_of"),
                ],
            );
        }
    }
    Ok(())
}

/// The value: a prompt without echo on a terminal, else all of stdin less one
/// trailing line end.
fn read_value(name: &str) -> Result<String> {
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("value of {name}: "))
            .context("reading the value from the terminal")?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the value from stdin (it must be UTF-8 text)")?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        s
    };
    if value.is_empty() {
        bail!("no value given: pipe it on stdin or type it at the prompt");
    }
    Ok(value)
}
