//! Deployment tokens: minted (the secret shown once), listed without secrets,
//! suspended and resumed, revoked.

use super::error::ApiError;
use super::{
    agent, created_with_secret, env, json_response, no_content, no_randomness, parse_json, Admin,
    AdminResponse, Call,
};
use crate::domain::parse_time;
use crate::domain::token::mint;
use crate::store::{Command, Outcome};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

/// `/v1/agents/{agent}/environments/{env}/tokens` and `/v1/tokens/{id}`.
pub(super) async fn route(admin: &Admin, c: &Call<'_>) -> Result<AdminResponse, ApiError> {
    match (c.method, c.segs) {
        (&Method::GET, ["agents", a, "environments", e, "tokens"]) => {
            let tokens = admin.store.tokens(agent(a)?, env(e)?).await?;
            Ok(json_response(StatusCode::OK, &json!({ "tokens": tokens })))
        }
        (&Method::POST, ["agents", a, "environments", e, "tokens"]) => {
            let b: TokenBody = parse_json(&c.body)?;
            let expires_at = match &b.expires_at {
                Some(s) => Some(parse_time(s).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "expires_at: {:?} is not an RFC 3339 time like 2030-01-01T00:00:00Z",
                        crate::domain::names::truncate(s, 60)
                    ))
                })?),
                None => None,
            };
            let minted = mint().map_err(no_randomness)?;
            let cmd = Command::CreateToken {
                agent: agent(a)?,
                environment: env(e)?,
                name: b.name.unwrap_or_default(),
                expires_at,
                id: minted.id,
                hash: minted.hash,
                scopes: b.scopes.unwrap_or_default(),
                created_by: c.who.name.clone(),
            };
            let applied = admin.execute(cmd, &c.who.name).await?;
            let Outcome::Token(t) = applied.outcome else {
                return Err(ApiError::internal("unexpected outcome"));
            };
            Ok(created_with_secret(&t, minted.secret))
        }
        (&Method::POST, ["tokens", id, op @ ("suspend" | "resume")]) => {
            let cmd = Command::SuspendToken {
                id: (*id).to_owned(),
                suspend: *op == "suspend",
            };
            let applied = admin.execute(cmd, &c.who.name).await?;
            Ok(super::outcome_response(StatusCode::OK, applied))
        }
        (&Method::DELETE, ["tokens", id]) => {
            let cmd = Command::RevokeToken {
                id: (*id).to_owned(),
            };
            admin.execute(cmd, &c.who.name).await?;
            Ok(no_content())
        }
        _ => Err(c.unmatched()),
    }
}
