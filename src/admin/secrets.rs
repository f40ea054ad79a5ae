//! Secrets: set (sealed here, with this node's key, before the store sees them),
//! listed by name and scope, deleted unless a live version needs them, and audited.
//! No answer, log line or error of this module carries a value.

use super::error::ApiError;
use super::{agent, env, json_response, parse_json, Admin, AdminResponse, Call};
use crate::domain::secret::{binding, check_name, check_value};
use crate::domain::{DomainError, EnvName};
use crate::store::Command;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

/// Most audit entries one answer lists.
const AUDIT_LIMIT: u32 = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    value: String,
    #[serde(default)]
    environment: Option<String>,
}

// no derive: a body must never be printed
impl std::fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBody")
    }
}

/// `/v1/agents/{agent}/secrets[/{NAME}|/audit]`.
pub(super) async fn route(admin: &Admin, c: &Call<'_>) -> Result<AdminResponse, ApiError> {
    match (c.method, c.segs) {
        (&Method::GET, ["agents", a, "secrets"]) => {
            let list: Vec<_> = admin
                .store
                .secrets(agent(a)?)
                .await?
                .iter()
                .map(|s| s.info())
                .collect();
            Ok(json_response(StatusCode::OK, &json!({ "secrets": list })))
        }
        (&Method::GET, ["agents", a, "secrets", "audit"]) => {
            let entries = admin.store.secret_audit(agent(a)?, AUDIT_LIMIT).await?;
            Ok(json_response(StatusCode::OK, &json!({ "audit": entries })))
        }
        (&Method::PUT, ["agents", a, "secrets", name]) => {
            let agent = agent(a)?;
            check_name("name", name)?;
            let b: SecretBody = parse_json(&c.body)?;
            check_value(&b.value)?;
            let environment = b.environment.as_deref().map(env).transpose()?;
            let key = admin.table.secret_key().ok_or_else(no_key)?;
            let sealed = key
                .seal(
                    &binding(&agent, environment.as_ref(), name),
                    b.value.as_bytes(),
                )
                .map_err(|e| {
                    tracing::error!(reason = %e, "a secret could not be sealed");
                    ApiError::internal("the secret could not be sealed; nothing was changed")
                })?;
            drop(b);
            let cmd = Command::SetSecret {
                agent,
                name: (*name).to_owned(),
                environment,
                sealed,
                actor: c.who.name.clone(),
                on_behalf_of: c.on_behalf_of.clone(),
            };
            let applied = admin.execute(cmd, &c.who.name).await?;
            Ok(super::outcome_response(StatusCode::OK, applied))
        }
        (&Method::DELETE, ["agents", a, "secrets", name]) => {
            let agent = agent(a)?;
            check_name("name", name)?;
            let cmd = Command::DeleteSecret {
                agent,
                name: (*name).to_owned(),
                environment: scope_query(c.query)?,
                actor: c.who.name.clone(),
                on_behalf_of: c.on_behalf_of.clone(),
            };
            let applied = admin.execute(cmd, &c.who.name).await?;
            Ok(super::outcome_response(StatusCode::NO_CONTENT, applied))
        }
        _ => Err(c.unmatched()),
    }
}

fn no_key() -> ApiError {
    DomainError::NoSecretKey(
        "this gateway has no secret key: set SWITCHYARD_SECRET_KEY (base64 of 32 bytes) on every node"
            .into(),
    )
    .into()
}

/// `?environment=E` of a delete (none: the agent-wide value).
fn scope_query(q: &str) -> Result<Option<EnvName>, ApiError> {
    let mut out = None;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("environment", v)) => out = Some(env(v)?),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {:?}; use environment",
                    crate::domain::names::truncate(pair, 40)
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_of_a_delete() {
        assert_eq!(scope_query("").unwrap(), None);
        assert_eq!(
            scope_query("environment=production")
                .unwrap()
                .unwrap()
                .as_str(),
            "production"
        );
        assert!(scope_query("env=production").is_err());
        assert!(scope_query("environment=Bad Name").is_err());
    }
}
